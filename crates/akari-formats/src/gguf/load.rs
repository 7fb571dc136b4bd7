//! A parsed GGUF file → [`ModelSource`]: hyper-parameters, canonical weights, vocabulary.

use super::keys::{self, ArchKey, BlockTensor};
use super::{GgufFile, TensorInfo, Value, ValueType};
use crate::ggml::{self, GgmlType};
use crate::ModelSource;
use akari_core::config::longrope_attention_factor;
use akari_core::tokenizer::VocabSpec;
use akari_core::weights::{self, deferred_parts, LayerTensor, Matrix, ModelWeights, TensorKey};
use akari_core::{Arch, Error, ModelConfig, QuantFormat, Result, RopeScaling};
use std::collections::{hash_map::Entry, HashMap};
use std::ops::Range;
use std::sync::Arc;

/// Picks the format a matrix is stored as, given the one the reader would choose.
pub type ConvertTo = dyn Fn(QuantFormat) -> QuantFormat + Sync;

/// Builds a model from a parsed file. Tensors the backends run are used in place; from a
/// streamed file ([`GgufFile::is_streamed`]) matrices are deferred, each read when taken.
pub fn model_source(f: &GgufFile) -> Result<ModelSource> {
    model_source_with(f, &|default| default)
}

/// As [`model_source`], with each matrix stored as `target(its default backend format)`,
/// converted straight from the file's type (so f32 targets are exact for every type).
pub fn model_source_with(f: &GgufFile, target: &ConvertTo) -> Result<ModelSource> {
    let arch_name = f
        .get(keys::GENERAL_ARCHITECTURE)
        .ok_or_else(|| f.err(format!("`{}` is missing", keys::GENERAL_ARCHITECTURE)))?
        .as_str()
        .ok_or_else(|| f.err(format!("`{}` is not a string", keys::GENERAL_ARCHITECTURE)))?;
    let arch = Arch::from_name(arch_name)?;
    let meta = Meta { f, arch: arch_name };
    let mut config = meta.config(arch)?;
    // Checks head counts and sizes before tensors are split or permuted by them.
    config.validate(&f.file_name)?;

    let mut loader = Loader {
        f,
        streamed: f.is_streamed().then(|| Arc::new(f.data_only())),
        target,
        config: &config,
        weights: ModelWeights::default(),
        names: HashMap::new(),
    };
    for t in &f.tensors {
        loader.tensor(t)?;
    }
    let weights = loader.weights;

    config.tie_word_embeddings = !weights.has_matrix(TensorKey::Output);
    let bias_keys = [LayerTensor::QBias, LayerTensor::KBias, LayerTensor::VBias];
    config.qkv_bias = weights
        .vectors
        .keys()
        .any(|k| matches!(k, TensorKey::Layer(_, t) if bias_keys.contains(t)));
    config.rope_scaling = meta.rope_scaling(&config)?;
    config.validate(&f.file_name)?;

    // Everything the decoder needs is there (shapes were checked on the way in).
    let missing = |key: TensorKey, file_name: String| -> Result<()> {
        if weights.has_matrix(key) || weights.vectors.contains_key(&key) {
            Ok(())
        } else {
            Err(Error::MissingTensor(file_name))
        }
    };
    missing(TensorKey::Embed, keys::TOKEN_EMBD.into())?;
    missing(TensorKey::OutputNorm, keys::OUTPUT_NORM.into())?;
    let per_layer = LayerTensor::required(config.qkv_bias);
    for layer in 0..config.num_layers {
        for &t in &per_layer {
            missing(TensorKey::Layer(layer, t), keys::block_name(layer, t))?;
        }
    }

    let vocab = meta.vocab(config.vocab_size)?;
    let chat_template = meta
        .opt_str(keys::TOKENIZER_CHAT_TEMPLATE)?
        .map(str::to_string);
    let name = meta.opt_str(keys::GENERAL_NAME)?.map(str::to_string);
    let metadata = f
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.summary()))
        .collect();
    Ok(ModelSource {
        config,
        weights,
        vocab,
        chat_template,
        name,
        file_type: file_type(f),
        metadata,
        tokenizer_json: None,
        bos_token: None,
        eos_token: None,
        bos_id: None,
        eos_ids: Vec::new(),
        add_bos: None,
    })
}

/// `general.file_type` by name, else the type holding most matrix elements.
fn file_type(f: &GgufFile) -> String {
    let named = f
        .get(keys::GENERAL_FILE_TYPE)
        .and_then(Value::as_int)
        .and_then(|v| {
            // llama.cpp sets bit 10 when it guessed the type.
            let v = (v as u64) & !1024;
            keys::FILE_TYPES.iter().find(|(id, _)| *id == v)
        })
        .map(|(_, n)| n.to_string());
    named.unwrap_or_else(|| {
        let mut count: HashMap<GgmlType, u64> = HashMap::new();
        for t in f.tensors.iter().filter(|t| t.dims.len() >= 2) {
            *count.entry(t.ggml_type).or_default() += t.n_elements;
        }
        count
            .into_iter()
            .max_by_key(|&(ty, n)| (n, std::cmp::Reverse(ty.id())))
            .map_or_else(|| "unknown".to_string(), |(ty, _)| ty.name().to_string())
    })
}

/// The largest hyper-parameter accepted (2^24).
const MAX_SIZE: usize = 1 << 24;

struct Meta<'a> {
    f: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        self.f.err(format!(
            "`{key}` should be {want}, found {} {}",
            v.value_type(),
            v.summary()
        ))
    }

    /// A non-negative integer of any integer type; a per-layer array is accepted when all
    /// its entries are equal.
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.f.get(key) else {
            return Ok(None);
        };
        let int = |v: &Value| v.as_int().and_then(|i| usize::try_from(i).ok());
        if let Some(n) = int(v) {
            return Ok(Some(n));
        }
        if let Some(items) = v.as_array() {
            let mut vals = items.iter().map(int);
            if let Some(Some(first)) = vals.next() {
                if vals.all(|x| x == Some(first)) {
                    return Ok(Some(first));
                }
                return Err(self.f.err(format!(
                    "`{key}` differs between layers ({}); akari needs one value",
                    v.summary()
                )));
            }
        }
        Err(self.wrong(key, "a non-negative integer", v))
    }

    fn arch_usize(&self, k: ArchKey) -> Result<Option<usize>> {
        self.opt_usize(&k.key(self.arch))
    }

    fn req_usize(&self, k: ArchKey) -> Result<usize> {
        let key = k.key(self.arch);
        self.opt_usize(&key)?
            .ok_or_else(|| self.f.err(format!("required metadata `{key}` is missing")))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.f.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(self.wrong(key, "a finite number", v)),
            },
        }
    }

    fn arch_f32(&self, k: ArchKey) -> Result<Option<f32>> {
        self.opt_f32(&k.key(self.arch))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.f.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.f.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a boolean", v)),
        }
    }

    fn config(&self, arch: Arch) -> Result<ModelConfig> {
        let hidden = self.req_usize(ArchKey::EmbeddingLength)?;
        let num_heads = self.req_usize(ArchKey::HeadCount)?;
        let num_kv_heads = self.arch_usize(ArchKey::HeadCountKv)?.unwrap_or(num_heads);
        let head_dim = match self.arch_usize(ArchKey::KeyLength)? {
            Some(d) => d,
            None => hidden.checked_div(num_heads).unwrap_or(0),
        };
        if let Some(v) = self.arch_usize(ArchKey::ValueLength)? {
            if v != head_dim {
                return Err(self.f.err(format!(
                    "value head size {v} differs from key head size {head_dim}; akari needs them equal"
                )));
            }
        }
        if let Some(r) = self.arch_usize(ArchKey::RopeDimensionCount)? {
            if r != head_dim {
                return Err(self.f.err(format!(
                    "rotary dimension {r} differs from head size {head_dim}; partial rotary embeddings are not supported"
                )));
            }
        }
        let vocab_size = match self.arch_usize(ArchKey::VocabSize)? {
            Some(v) => v,
            None => {
                let t = self
                    .f
                    .tensor(keys::TOKEN_EMBD)
                    .ok_or_else(|| Error::MissingTensor(keys::TOKEN_EMBD.into()))?;
                t.matrix_shape().map_or(0, |[rows, _]| rows)
            }
        };
        let config = ModelConfig {
            arch,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: self.req_usize(ArchKey::FeedForwardLength)?,
            num_layers: self.req_usize(ArchKey::BlockCount)?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.arch_f32(ArchKey::RmsEps)?.unwrap_or(1e-5),
            rope_theta: self.arch_f32(ArchKey::RopeFreqBase)?.unwrap_or(10_000.0),
            rope_scaling: RopeScaling::None,
            max_position_embeddings: self.req_usize(ArchKey::ContextLength)?,
            tie_word_embeddings: false,
            qkv_bias: false,
        };
        // Bounds that keep every product of two sizes far from overflowing; real models are
        // orders of magnitude below them.
        let sizes = [
            ("vocabulary size", config.vocab_size),
            ("embedding length", config.hidden_size),
            ("feed-forward length", config.intermediate_size),
            ("block count", config.num_layers),
            ("head count", config.num_heads),
            ("key/value head count", config.num_kv_heads),
            ("head size", config.head_dim),
        ];
        for (what, n) in sizes {
            if n > MAX_SIZE {
                return Err(self.f.err(format!(
                    "{what} {n} is implausibly large (limit {MAX_SIZE})"
                )));
            }
        }
        Ok(config)
    }

    fn vector(&self, name: &str) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.f.tensor(name) else {
            return Ok(None);
        };
        let data = self.f.tensor_data(t)?;
        ggml::to_f32(name, t.ggml_type, t.n_elements as usize, &data).map(Some)
    }

    fn rope_scaling(&self, config: &ModelConfig) -> Result<RopeScaling> {
        if let Some(f) = self.vector(keys::ROPE_FREQS)? {
            return Ok(RopeScaling::FreqFactors(f));
        }
        let long = self.vector(keys::ROPE_FACTORS_LONG)?;
        let short = self.vector(keys::ROPE_FACTORS_SHORT)?;
        match (long, short) {
            (Some(long_factor), Some(short_factor)) => {
                let key = ArchKey::RopeScalingOrigCtx.key(self.arch);
                let original = self.opt_usize(&key)?.ok_or_else(|| {
                    self.f.err(format!(
                        "longrope factors are present but `{key}` is missing"
                    ))
                })?;
                let attention_factor = match self.arch_f32(ArchKey::RopeScalingAttnFactor)? {
                    Some(a) => a,
                    None => longrope_attention_factor(config.max_position_embeddings, original),
                };
                return Ok(RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    original_max_position_embeddings: original,
                    attention_factor,
                });
            }
            (None, None) => {}
            _ => {
                return Err(self.f.err(format!(
                    "only one of `{}` and `{}` is present",
                    keys::ROPE_FACTORS_LONG,
                    keys::ROPE_FACTORS_SHORT
                )))
            }
        }
        let type_key = ArchKey::RopeScalingType.key(self.arch);
        match self.opt_str(&type_key)? {
            None | Some("none") => Ok(RopeScaling::None),
            Some("linear") => {
                let key = ArchKey::RopeScalingFactor.key(self.arch);
                match self.opt_f32(&key)? {
                    Some(factor) if factor > 0.0 => Ok(RopeScaling::Linear { factor }),
                    _ => Err(self.f.err(format!("linear rope scaling needs a positive `{key}`"))),
                }
            }
            Some(other) => Err(self.f.err(format!(
                "rope scaling `{other}` is not supported (supported: linear, llama3 frequency factors, longrope)"
            ))),
        }
    }

    fn vocab(&self, vocab_size: usize) -> Result<Option<VocabSpec>> {
        let Some(model) = self.opt_str(keys::TOKENIZER_MODEL)? else {
            return Ok(None);
        };
        let tokens = self.strings(keys::TOKENIZER_TOKENS)?.ok_or_else(|| {
            self.f.err(format!(
                "`{}` is set but `{}` is missing",
                keys::TOKENIZER_MODEL,
                keys::TOKENIZER_TOKENS
            ))
        })?;
        if tokens.len() > vocab_size {
            return Err(self.f.err(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {vocab_size}",
                tokens.len()
            )));
        }
        let n = tokens.len();
        let scores = self.array(keys::TOKENIZER_SCORES, n, "numbers", |v| {
            v.as_f64().map(|x| x as f32)
        })?;
        let token_types = self.array(keys::TOKENIZER_TOKEN_TYPE, n, "integers", |v| {
            v.as_int().and_then(|i| i32::try_from(i).ok())
        })?;
        let merges = self.strings(keys::TOKENIZER_MERGES)?;
        let id = |key: &str| -> Result<Option<u32>> {
            let Some(v) = self.f.get(key) else {
                return Ok(None);
            };
            let id = v.as_int().ok_or_else(|| self.wrong(key, "an integer", v))?;
            match u32::try_from(id) {
                Ok(id) if (id as usize) < n => Ok(Some(id)),
                _ => {
                    tracing::warn!(
                        "{}: `{key}` = {id} is not a token id (vocabulary of {n}); ignored",
                        self.f.file_name
                    );
                    Ok(None)
                }
            }
        };
        Ok(Some(VocabSpec {
            model: model.to_string(),
            pre: self.opt_str(keys::TOKENIZER_PRE)?.map(str::to_string),
            tokens,
            scores,
            token_types,
            merges,
            bos_id: id(keys::TOKENIZER_BOS_ID)?,
            eos_id: id(keys::TOKENIZER_EOS_ID)?,
            eot_id: id(keys::TOKENIZER_EOT_ID)?,
            unk_id: id(keys::TOKENIZER_UNK_ID)?,
            pad_id: id(keys::TOKENIZER_PAD_ID)?,
            add_bos: self.opt_bool(keys::TOKENIZER_ADD_BOS)?,
            add_eos: self.opt_bool(keys::TOKENIZER_ADD_EOS)?,
        }))
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.f.get(key) {
            None => Ok(None),
            Some(Value::Array(ValueType::String, items)) => Ok(Some(
                items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect(),
            )),
            Some(v) => Err(self.wrong(key, "an array of strings", v)),
        }
    }

    /// An array of `n` elements converted by `conv`.
    fn array<T>(
        &self,
        key: &str,
        n: usize,
        what: &str,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(v) = self.f.get(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong(key, &format!("an array of {what}"), v))?;
        if items.len() != n {
            return Err(self.f.err(format!(
                "`{key}` has {} entries for {n} tokens",
                items.len()
            )));
        }
        items
            .iter()
            .map(|x| conv(x).ok_or_else(|| self.wrong(key, &format!("an array of {what}"), v)))
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }
}

struct Loader<'a> {
    f: &'a GgufFile,
    /// The file's tensor data (no metadata), for deferred reads, when it is streamed.
    streamed: Option<Arc<GgufFile>>,
    target: &'a ConvertTo,
    config: &'a ModelConfig,
    weights: ModelWeights,
    /// Which file tensor filled each canonical one, to report conflicts.
    names: HashMap<TensorKey, String>,
}

impl Loader<'_> {
    fn claim(&mut self, key: TensorKey, name: &str) -> Result<()> {
        match self.names.entry(key) {
            Entry::Occupied(e) => Err(self.f.err(format!(
                "tensors `{}` and `{name}` both provide {key}",
                e.get()
            ))),
            Entry::Vacant(e) => {
                e.insert(name.to_string());
                Ok(())
            }
        }
    }

    fn put_matrix(&mut self, key: TensorKey, name: &str, m: Matrix) -> Result<()> {
        self.claim(key, name)?;
        self.weights.matrices.insert(key, m);
        Ok(())
    }

    fn put_vector(&mut self, key: TensorKey, name: &str, v: Vec<f32>) -> Result<()> {
        self.claim(key, name)?;
        self.weights.vectors.insert(key, v);
        Ok(())
    }

    /// Puts the matrices `cuts` takes from tensor `t`, its shape checked against
    /// `[rows, cols]`: now, or deferred when the file is streamed.
    fn put_cuts(
        &mut self,
        t: &TensorInfo,
        rows: usize,
        cols: usize,
        cuts: Vec<(TensorKey, Cut)>,
    ) -> Result<()> {
        match t.matrix_shape() {
            Some([r, c]) if r == rows && c == cols => {}
            _ => {
                return Err(Error::ShapeMismatch {
                    tensor: t.name.clone(),
                    expected: vec![rows, cols],
                    got: t.shape(),
                })
            }
        }
        let Some(file) = self.streamed.clone() else {
            let data = self.f.tensor_data(t)?;
            let m = ggml::to_matrix_as(&t.name, t.ggml_type, rows, cols, data, self.target)?;
            for (key, cut) in cuts {
                let part = cut.apply(&m, &t.name, self.f)?;
                self.put_matrix(key, &t.name, part)?;
            }
            return Ok(());
        };
        // The checks `to_matrix_as` makes on the data, made now so a bad file fails at once.
        let format = (self.target)(t.ggml_type.backend_format().ok_or_else(|| {
            Error::UnsupportedWeightType {
                tensor: t.name.clone(),
                kind: format!("{} (ggml type {})", t.ggml_type, t.ggml_type.id()),
            }
        })?);
        if cols % format.block_size() != 0 {
            return Err(Error::InvalidArgument(format!(
                "tensor `{}`: rows of {cols} cannot be stored as {format} (block size {})",
                t.name,
                format.block_size()
            )));
        }
        let mut keys = Vec::with_capacity(cuts.len());
        let mut parts: Vec<(usize, weights::Cut)> = Vec::with_capacity(cuts.len());
        for (key, cut) in cuts {
            self.claim(key, &t.name)?;
            keys.push(key);
            let out_rows = cut.rows.as_ref().map_or(rows, |r| r.len());
            let (file, name) = (file.clone(), t.name.clone());
            parts.push((out_rows, Box::new(move |m| cut.apply(m, &name, &file))));
        }
        let t = t.clone();
        let read = move || {
            let data = file.tensor_data(&t)?;
            ggml::to_matrix_as(&t.name, t.ggml_type, rows, cols, data, &|_| format)
        };
        let deferred = deferred_parts(format, cols, read, parts);
        self.weights.deferred.extend(keys.into_iter().zip(deferred));
        Ok(())
    }

    /// The whole of tensor `t` as `key`.
    fn put_whole(
        &mut self,
        key: TensorKey,
        t: &TensorInfo,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.put_cuts(t, rows, cols, vec![(key, Cut::default())])
    }

    /// A vector tensor as f32, its length checked.
    fn vector(&self, t: &TensorInfo, len: usize) -> Result<Vec<f32>> {
        if t.shape() != [len] {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: vec![len],
                got: t.shape(),
            });
        }
        let data = self.f.tensor_data(t)?;
        ggml::to_f32(&t.name, t.ggml_type, len, &data)
    }

    fn tensor(&mut self, t: &TensorInfo) -> Result<()> {
        let c = self.config;
        let (hidden, q_dim, kv_dim, ff) =
            (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let name = t.name.as_str();
        match name {
            keys::TOKEN_EMBD => return self.put_whole(TensorKey::Embed, t, c.vocab_size, hidden),
            keys::OUTPUT => return self.put_whole(TensorKey::Output, t, c.vocab_size, hidden),
            keys::OUTPUT_NORM => {
                let v = self.vector(t, hidden)?;
                return self.put_vector(TensorKey::OutputNorm, name, v);
            }
            // Read with the rope scaling.
            keys::ROPE_FREQS | keys::ROPE_FACTORS_LONG | keys::ROPE_FACTORS_SHORT => return Ok(()),
            _ => {}
        }
        let Some((layer, kind)) = keys::parse_block_name(name) else {
            tracing::debug!("{}: ignoring tensor `{name}`", self.f.file_name);
            return Ok(());
        };
        if layer >= c.num_layers {
            return Err(self.f.err(format!(
                "tensor `{name}` belongs to layer {layer}, but the model has {} layers",
                c.num_layers
            )));
        }
        let kind = match kind {
            Ok(k) => k,
            Err(_) => {
                tracing::debug!("{}: ignoring tensor `{name}`", self.f.file_name);
                return Ok(());
            }
        };
        let key = |t: LayerTensor| TensorKey::Layer(layer, t);
        let llama = c.arch == Arch::Llama;
        match kind {
            BlockTensor::Plain(lt) => match lt {
                LayerTensor::AttnNorm | LayerTensor::FfnNorm => {
                    let v = self.vector(t, hidden)?;
                    self.put_vector(key(lt), name, v)?;
                }
                LayerTensor::QBias | LayerTensor::KBias | LayerTensor::VBias => {
                    let (len, heads) = match lt {
                        LayerTensor::QBias => (q_dim, c.num_heads),
                        LayerTensor::KBias => (kv_dim, c.num_kv_heads),
                        _ => (kv_dim, 0),
                    };
                    let mut v = self.vector(t, len)?;
                    if llama && heads > 0 {
                        let perm = unpermute_order(len, heads);
                        v = perm.iter().map(|&i| v[i]).collect();
                    }
                    self.put_vector(key(lt), name, v)?;
                }
                LayerTensor::Q | LayerTensor::K => {
                    let (rows, heads) = if lt == LayerTensor::Q {
                        (q_dim, c.num_heads)
                    } else {
                        (kv_dim, c.num_kv_heads)
                    };
                    let cut = Cut {
                        rows: None,
                        unpermute: llama.then_some(heads),
                    };
                    self.put_cuts(t, rows, hidden, vec![(key(lt), cut)])?;
                }
                LayerTensor::V => self.put_whole(key(lt), t, kv_dim, hidden)?,
                LayerTensor::O => self.put_whole(key(lt), t, hidden, q_dim)?,
                LayerTensor::Gate => self.put_whole(key(lt), t, ff, hidden)?,
                LayerTensor::Up => {
                    // Phi-3 stores gate_up_proj, `[gate; up]`, as ffn_up with twice the rows.
                    let fused = t
                        .matrix_shape()
                        .is_some_and(|[r, _]| Some(r) == ff.checked_mul(2));
                    if fused {
                        let cuts = vec![
                            (key(LayerTensor::Gate), Cut::rows(0..ff, None)),
                            (key(LayerTensor::Up), Cut::rows(ff..2 * ff, None)),
                        ];
                        self.put_cuts(t, 2 * ff, hidden, cuts)?;
                    } else {
                        self.put_whole(key(lt), t, ff, hidden)?;
                    }
                }
                LayerTensor::Down => self.put_whole(key(lt), t, hidden, ff)?,
            },
            BlockTensor::FusedQkv => {
                let cuts = vec![
                    (
                        key(LayerTensor::Q),
                        Cut::rows(0..q_dim, llama.then_some(c.num_heads)),
                    ),
                    (
                        key(LayerTensor::K),
                        Cut::rows(q_dim..q_dim + kv_dim, llama.then_some(c.num_kv_heads)),
                    ),
                    (
                        key(LayerTensor::V),
                        Cut::rows(q_dim + kv_dim..q_dim + 2 * kv_dim, None),
                    ),
                ];
                self.put_cuts(t, q_dim + 2 * kv_dim, hidden, cuts)?;
            }
            BlockTensor::FusedQkvBias => {
                let v = self.vector(t, q_dim + 2 * kv_dim)?;
                let (q, rest) = v.split_at(q_dim);
                let (k, v) = rest.split_at(kv_dim);
                let (mut q, mut k) = (q.to_vec(), k.to_vec());
                if llama {
                    q = unpermute_order(q_dim, c.num_heads)
                        .iter()
                        .map(|&i| q[i])
                        .collect();
                    k = unpermute_order(kv_dim, c.num_kv_heads)
                        .iter()
                        .map(|&i| k[i])
                        .collect();
                }
                self.put_vector(key(LayerTensor::QBias), name, q)?;
                self.put_vector(key(LayerTensor::KBias), name, k)?;
                self.put_vector(key(LayerTensor::VBias), name, v.to_vec())?;
            }
        }
        Ok(())
    }
}

/// How one canonical matrix is cut from a file tensor: some of its rows (fused projections),
/// with llama.cpp's rotary permutation undone.
#[derive(Clone, Default)]
struct Cut {
    /// The rows taken; all when `None`.
    rows: Option<Range<usize>>,
    /// Undo the rotary permutation over this many heads.
    unpermute: Option<usize>,
}

impl Cut {
    fn rows(rows: Range<usize>, unpermute: Option<usize>) -> Cut {
        Cut {
            rows: Some(rows),
            unpermute,
        }
    }

    fn apply(&self, m: &Matrix, name: &str, f: &GgufFile) -> Result<Matrix> {
        let part = match &self.rows {
            Some(r) => m.rows(r.clone()).ok_or_else(|| {
                f.err(format!(
                    "tensor `{name}`: cannot take rows {r:?} of {}",
                    m.rows
                ))
            })?,
            None => m.clone(),
        };
        Ok(match self.unpermute {
            Some(heads) => part.permute_rows(&unpermute_order(part.rows, heads)),
            None => part,
        })
    }
}

/// The row order that undoes llama.cpp's rotary permutation of Q/K.
///
/// llama.cpp's converter stores `w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2)`: within a
/// head of size `d`, file row `2i + j` holds Hugging Face row `j·d/2 + i`. So Hugging Face
/// row `h·d + j·d/2 + i` is file row `h·d + 2i + j`. `rows` must be `n_head · d` with `d`
/// even (the config was validated before this is called).
pub fn unpermute_order(rows: usize, n_head: usize) -> Vec<usize> {
    let d = rows / n_head.max(1);
    let half = d / 2;
    let mut perm = Vec::with_capacity(rows);
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..half {
                perm.push(h * d + 2 * i + j);
            }
        }
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's permutation, as numpy would do it: `out[k] = w[src(k)]`.
    fn permute_order(rows: usize, n_head: usize) -> Vec<usize> {
        let d = rows / n_head;
        let half = d / 2;
        // reshape(n_head, 2, half) then swapaxes(1, 2) → index (h, i, j) reads (h, j, i).
        let mut out = Vec::new();
        for h in 0..n_head {
            for i in 0..half {
                for j in 0..2 {
                    out.push(h * d + j * half + i);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        for (rows, heads) in [(8, 1), (8, 2), (24, 3), (64, 4)] {
            let p = permute_order(rows, heads);
            let u = unpermute_order(rows, heads);
            // file = hf[p]; hf' = file[u] = hf[p[u]] must be the identity.
            for (k, &ui) in u.iter().enumerate() {
                assert_eq!(p[ui], k);
            }
        }
        assert_eq!(unpermute_order(4, 1), vec![0, 2, 1, 3]);
    }
}
