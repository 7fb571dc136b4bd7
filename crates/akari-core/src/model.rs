//! One decoder definition for llama, qwen2 and phi3, generic over the backend.
//!
//! Per layer: `x += o_proj(attn(rope(q), rope(k), v))` over `rms_norm(x)`, then
//! `x += down(silu(gate(h)) * up(h))` over `rms_norm(x)`. The families differ only in what
//! [`ModelConfig`] says (q/k/v bias, tied lm_head, rope scaling) — the readers have already
//! split Phi-3's fused projections.

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::rope;
use crate::sampler::{Candidates, Selection};
use crate::weights::{LayerTensor as L, ModelWeights, TensorKey};
use crate::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future that need not be `Send`: the browser's GPU and WebNN objects are not.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

struct Layer<B: Backend> {
    attn_norm: B::Vector,
    q: B::Matrix,
    k: B::Matrix,
    v: B::Matrix,
    q_bias: Option<B::Vector>,
    k_bias: Option<B::Vector>,
    v_bias: Option<B::Vector>,
    o: B::Matrix,
    ffn_norm: B::Vector,
    gate: B::Matrix,
    up: B::Matrix,
    down: B::Matrix,
}

/// A loaded model with its KV cache.
pub struct Model<B: Backend> {
    cfg: ModelConfig,
    /// Shared so a forward pass can run inside [`Backend::scope`] while borrowing the model.
    backend: Arc<B>,
    embed: B::Matrix,
    /// `None` when tied to the embedding.
    lm_head: Option<B::Matrix>,
    norm: B::Vector,
    layers: Vec<Layer<B>>,
    rope_short: B::Rope,
    /// Long-context frequencies and the sequence length past which they apply.
    rope_long: Option<(B::Rope, usize)>,
    cache: B::KvCache,
    max_seq: usize,
    pos: usize,
    /// Rows per forward pass; longer prompts are fed in chunks.
    chunk: usize,
    /// The greedy step recorded ahead of the last read, where the backend runs ahead.
    ahead: Option<Ahead<B>>,
}

/// A greedy decode step recorded before its input was known on the host: the backend fed
/// it the best token of the previous step's selection on the device
/// ([`Backend::embed_selected`]). It stands for feeding `token` at `pos`, and is used only if
/// that is what comes next (with a greedy selection, the only kind that runs ahead);
/// otherwise the step that does come overwrites its cache entry.
struct Ahead<B: Backend> {
    selected: B::Selected,
    pos: usize,
    token: u32,
}

/// The object-safe face of a [`Model`], so callers need not be generic over the backend.
pub trait LanguageModel: Send {
    fn config(&self) -> &ModelConfig;
    fn backend_name(&self) -> &'static str;
    /// The most tokens the cache holds.
    fn max_seq(&self) -> usize;
    /// Tokens in the cache.
    fn position(&self) -> usize;
    /// Appends `tokens` and returns the logits after the last one.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// [`LanguageModel::forward`] for callers that must not block: in the browser, a GPU's
    /// results arrive through the event loop, which a blocking wait would stall.
    fn forward_async<'a>(&'a mut self, tokens: &'a [u32]) -> LocalFuture<'a, Result<Vec<f32>>> {
        Box::pin(std::future::ready(self.forward(tokens)))
    }
    /// Appends `tokens` and returns the candidates `sel` asks for from the logits after the
    /// last one: what generation reads, a few hundred bytes instead of the whole row.
    fn forward_select(&mut self, tokens: &[u32], sel: &Selection) -> Result<Candidates> {
        Ok(sel.select(&self.forward(tokens)?))
    }
    /// [`LanguageModel::forward_select`] for callers that must not block.
    fn forward_select_async<'a>(
        &'a mut self,
        tokens: &'a [u32],
        sel: &'a Selection,
    ) -> LocalFuture<'a, Result<Candidates>> {
        Box::pin(async move { Ok(sel.select(&self.forward_async(tokens).await?)) })
    }
    /// Whether greedy decode records each step before the previous one is read back
    /// ([`Backend::runs_ahead`]).
    fn runs_ahead(&self) -> bool {
        false
    }
    /// Forgets everything after the first `pos` tokens.
    fn truncate(&mut self, pos: usize);
    fn reset(&mut self) {
        self.truncate(0);
    }
}

impl<B: Backend> Model<B> {
    /// Uploads `weights` (which must already be in formats the backend supports) and
    /// allocates a cache of `max_seq` tokens.
    pub fn load(backend: B, cfg: ModelConfig, mut w: ModelWeights, max_seq: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        fn take<B: Backend>(
            backend: &B,
            w: &mut ModelWeights,
            key: TensorKey,
            rows: usize,
            cols: usize,
        ) -> Result<B::Matrix> {
            let m = w.take_matrix(key)?;
            if m.rows != rows || m.cols != cols {
                return Err(Error::ShapeMismatch {
                    tensor: key.to_string(),
                    expected: vec![rows, cols],
                    got: vec![m.rows, m.cols],
                });
            }
            backend.upload_matrix(m)
        }
        let embed = take(&backend, &mut w, TensorKey::Embed, cfg.vocab_size, h)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(take(
                &backend,
                &mut w,
                TensorKey::Output,
                cfg.vocab_size,
                h,
            )?)
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let key = |t| TensorKey::Layer(i, t);
            let (qd, kvd, ff) = (cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
            let q = take(&backend, &mut w, key(L::Q), qd, h)?;
            let k = take(&backend, &mut w, key(L::K), kvd, h)?;
            let v = take(&backend, &mut w, key(L::V), kvd, h)?;
            let o = take(&backend, &mut w, key(L::O), h, qd)?;
            let gate = take(&backend, &mut w, key(L::Gate), ff, h)?;
            let up = take(&backend, &mut w, key(L::Up), ff, h)?;
            let down = take(&backend, &mut w, key(L::Down), h, ff)?;
            let mut vector = |t, len| -> Result<B::Vector> {
                backend.upload_vector(w.take_vector(key(t), len)?)
            };
            let (q_bias, k_bias, v_bias) = if cfg.qkv_bias {
                (
                    Some(vector(L::QBias, qd)?),
                    Some(vector(L::KBias, kvd)?),
                    Some(vector(L::VBias, kvd)?),
                )
            } else {
                (None, None, None)
            };
            layers.push(Layer {
                attn_norm: vector(L::AttnNorm, h)?,
                ffn_norm: vector(L::FfnNorm, h)?,
                q,
                k,
                v,
                q_bias,
                k_bias,
                v_bias,
                o,
                gate,
                up,
                down,
            });
        }
        let norm = backend.upload_vector(w.take_vector(TensorKey::OutputNorm, h)?)?;
        let plan = rope::plan(&cfg);
        let rope_short = backend.upload_rope(plan.short.tables(max_seq))?;
        let rope_long = match plan.long {
            Some((freqs, switch)) => Some((backend.upload_rope(freqs.tables(max_seq))?, switch)),
            None => None,
        };
        let cache = backend.new_kv_cache(&cfg, max_seq)?;
        Ok(Model {
            cfg,
            backend: Arc::new(backend),
            embed,
            lm_head,
            norm,
            layers,
            rope_short,
            rope_long,
            cache,
            max_seq,
            pos: 0,
            chunk: 256,
            ahead: None,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Whether a greedy step is recorded ahead of the last read ([`Backend::runs_ahead`]).
    pub fn has_step_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// Runs the decoder once over `tokens` placeholder tokens at position 0 and returns the
    /// logits tensor of the last row without reading it, leaving the position as it was.
    ///
    /// For backends that record a graph instead of computing (WebNN): their ops ignore the
    /// token ids and positions the decoder passes and take them from graph inputs instead,
    /// so one trace serves every call with that many tokens. Other backends never need it.
    pub fn trace(&mut self, tokens: usize) -> Result<B::Tensor> {
        self.ahead = None;
        let saved = self.pos;
        self.pos = 0;
        let out = self.forward_in_scope(&vec![0; tokens]);
        self.pos = saved;
        out
    }

    /// Runs `tokens` (at most one chunk) and returns the hidden state of the last one.
    fn step(&mut self, tokens: &[u32]) -> Result<B::Tensor> {
        let x = self.backend.embed(&self.embed, tokens)?;
        self.layers(x, tokens.len())
    }

    /// Runs the layers over `x`, the embeddings of the next `rows` tokens, and returns the
    /// hidden state of the last one.
    fn layers(&mut self, mut x: B::Tensor, rows: usize) -> Result<B::Tensor> {
        let be = &self.backend;
        let cfg = &self.cfg;
        // Longrope switches frequency sets by the length the sequence reaches, as
        // transformers does.
        let rope = match &self.rope_long {
            Some((long, switch)) if self.pos + rows > *switch => long,
            _ => &self.rope_short,
        };
        for (i, l) in self.layers.iter().enumerate() {
            let [mut q, mut k, v]: [B::Tensor; 3] = be
                .norm_matmul_many(
                    &x,
                    &l.attn_norm,
                    cfg.rms_norm_eps,
                    &[
                        (&l.q, l.q_bias.as_ref()),
                        (&l.k, l.k_bias.as_ref()),
                        (&l.v, l.v_bias.as_ref()),
                    ],
                )?
                .try_into()
                .map_err(|_| {
                    Error::InvalidArgument("q/k/v projection returned the wrong count".into())
                })?;
            be.rope(&mut q, cfg.num_heads, rope, self.pos)?;
            be.rope(&mut k, cfg.num_kv_heads, rope, self.pos)?;
            let a = be.attention(&q, &k, &v, &mut self.cache, i, self.pos)?;
            be.matmul_add(&mut x, &a, &l.o)?;
            let act = be.norm_matmul_glu(&x, &l.ffn_norm, cfg.rms_norm_eps, &l.gate, &l.up)?;
            be.matmul_add(&mut x, &act, &l.down)?;
        }
        self.pos += rows;
        be.last_row(&x)
    }

    /// The logits of the hidden state `last`.
    fn head(&self, last: &B::Tensor) -> Result<B::Tensor> {
        let be = &self.backend;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        // Through `norm_matmul_many`, so a backend can normalise inside the GEMV.
        let [logits]: [B::Tensor; 1] = be
            .norm_matmul_many(last, &self.norm, self.cfg.rms_norm_eps, &[(head, None)])?
            .try_into()
            .map_err(|_| Error::InvalidArgument("lm_head returned the wrong count".into()))?;
        Ok(logits)
    }

    /// Feeds `tokens` and leaves the greedy selection `sel` pending on the device: the step
    /// recorded ahead, when it was for exactly this, or a forward pass recorded now.
    fn select_pending(&mut self, tokens: &[u32], sel: &Selection) -> Result<B::Selected> {
        if let Some(a) = self.ahead.take() {
            if a.pos == self.pos && tokens == [a.token] {
                self.pos += 1;
                return Ok(a.selected);
            }
        }
        let backend = self.backend.clone();
        let logits = self.record(tokens)?;
        backend.select_ahead(logits, sel)
    }

    /// Records the next greedy step on the device's pick of `selected`, before it is read
    /// back, when the cache has room for it; the position stays where it is. A failure to
    /// record it is not reported here: the step will be run again once its token is known,
    /// and fail then. (An error the device reports for it asynchronously, as browsers do,
    /// surfaces at the next read.)
    fn record_ahead(&mut self, selected: &B::Selected, sel: &Selection) -> Option<B::Selected> {
        if self.pos >= self.max_seq {
            return None;
        }
        let backend = self.backend.clone();
        let pos = self.pos;
        let logits = backend.embed_selected(&self.embed, selected).and_then(|x| {
            backend.scope(|| {
                let last = self.layers(x, 1)?;
                self.head(&last)
            })
        });
        self.pos = pos;
        match logits.and_then(|logits| backend.select_ahead(logits, sel)) {
            Ok(next) => Some(next),
            Err(e) => {
                tracing::debug!(error = %e, "no step recorded ahead");
                backend.discard();
                None
            }
        }
    }

    /// Keeps `next` (recorded ahead on the best token of `cands`) for the next call.
    fn keep_ahead(&mut self, next: Option<B::Selected>, cands: &Candidates) {
        self.ahead = next
            .zip(cands.top.first())
            .map(|(selected, &(token, _))| Ahead {
                selected,
                pos: self.pos,
                token,
            });
    }

    /// Whether `sel` is plain greedy on a backend that runs ahead: the only case where the
    /// next step's input is the device's best token, known before it is read back.
    fn runs_ahead(&self, sel: &Selection) -> bool {
        sel.k == 1 && sel.penalised.is_empty() && self.backend.runs_ahead()
    }
}

impl<B: Backend> LanguageModel for Model<B> {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    fn max_seq(&self) -> usize {
        self.max_seq
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let backend = self.backend.clone();
        let logits = self.record(tokens)?;
        backend.read(&logits)
    }

    fn forward_async<'a>(&'a mut self, tokens: &'a [u32]) -> LocalFuture<'a, Result<Vec<f32>>> {
        Box::pin(async move {
            let backend = self.backend.clone();
            let logits = self.record(tokens)?;
            backend.read_async(&logits).await
        })
    }

    fn forward_select(&mut self, tokens: &[u32], sel: &Selection) -> Result<Candidates> {
        let backend = self.backend.clone();
        if !self.runs_ahead(sel) {
            let logits = self.record(tokens)?;
            return backend.read_candidates(logits, sel);
        }
        let selected = self.select_pending(tokens, sel)?;
        let next = self.record_ahead(&selected, sel);
        let cands = backend.read_selected(selected)?;
        self.keep_ahead(next, &cands);
        Ok(cands)
    }

    fn forward_select_async<'a>(
        &'a mut self,
        tokens: &'a [u32],
        sel: &'a Selection,
    ) -> LocalFuture<'a, Result<Candidates>> {
        Box::pin(async move {
            let backend = self.backend.clone();
            if !self.runs_ahead(sel) {
                let logits = self.record(tokens)?;
                return backend.read_candidates_async(logits, sel).await;
            }
            let selected = self.select_pending(tokens, sel)?;
            let next = self.record_ahead(&selected, sel);
            let cands = backend.read_selected_async(selected).await?;
            self.keep_ahead(next, &cands);
            Ok(cands)
        })
    }

    fn runs_ahead(&self) -> bool {
        self.backend.runs_ahead()
    }

    fn truncate(&mut self, pos: usize) {
        self.ahead = None;
        self.pos = self.pos.min(pos);
    }
}

impl<B: Backend> Model<B> {
    /// [`Model::forward_in_scope`] inside the backend's scope; a failure discards what it
    /// recorded.
    fn record(&mut self, tokens: &[u32]) -> Result<B::Tensor> {
        // Whatever was recorded ahead is not what comes next.
        self.ahead = None;
        let backend = self.backend.clone();
        let logits = backend.scope(|| self.forward_in_scope(tokens));
        if logits.is_err() {
            backend.discard();
        }
        logits
    }

    /// Feeds `tokens` and returns the logits after the last one, still in the backend.
    fn forward_in_scope(&mut self, tokens: &[u32]) -> Result<B::Tensor> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "forward needs at least one token".into(),
            ));
        }
        if self.pos + tokens.len() > self.max_seq {
            return Err(Error::ContextOverflow {
                prompt: self.pos + tokens.len(),
                context: self.max_seq,
                reserve: 0,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.cfg.vocab_size
            )));
        }
        let mut last = None;
        for chunk in tokens.chunks(self.chunk) {
            last = Some(self.step(chunk)?);
        }
        let Some(last) = last else {
            return Err(Error::InvalidArgument(
                "forward needs at least one token".into(),
            ));
        };
        self.head(&last)
    }
}
