//! akari-cpu: the CPU backend.
//!
//! Weights stay in the bytes the reader produced (usually a slice of the memory-mapped file):
//! nothing is copied at load. Matmuls split output rows over rayon threads; quantised weights
//! meet int8-quantised activations ([`kernels`]). The KV cache is preallocated f32,
//! `[layer][kv_head][position][head_dim]`, so each head's keys are contiguous.

pub mod kernels;

use akari_core::backend::{Backend, RopeTables};
use akari_core::quant::QK;
use akari_core::weights::Matrix;
use akari_core::{Error, ModelConfig, QuantFormat, Result};
use kernels::{Isa, Q16Act, Q8Act};
use rayon::prelude::*;

/// Row-major f32 activations.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

pub struct KvCache {
    /// All layers in one allocation each for keys and values: large enough that the
    /// allocator maps fresh zero pages, so memory is only committed as positions fill.
    k: Vec<f32>,
    v: Vec<f32>,
    max_seq: usize,
    kv_heads: usize,
    head_dim: usize,
    heads: usize,
}

/// How activations meet quantised weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    /// i8 blocks, as llama.cpp does: fastest, but rounding can flip near-tied tokens.
    Int8,
    /// i16 blocks: the result of f32 activations to about 1e-5, at a small cost.
    #[default]
    Int16,
}

impl Activations {
    pub fn name(self) -> &'static str {
        match self {
            Activations::Int8 => "int8",
            Activations::Int16 => "int16",
        }
    }
}

impl std::str::FromStr for Activations {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "int8" => Ok(Activations::Int8),
            "int16" => Ok(Activations::Int16),
            _ => Err(Error::InvalidArgument(format!(
                "unknown activation precision `{s}` (expected int8 or int16)"
            ))),
        }
    }
}

pub struct CpuBackend {
    isa: Isa,
    activations: Activations,
    /// `None` in the browser, where only rayon's global pool can reach Web Workers (see
    /// [`CpuBackend::new`]).
    pool: Option<rayon::ThreadPool>,
}

impl CpuBackend {
    /// `threads`: worker count, or `None` for one per core.
    pub fn new(threads: Option<usize>, activations: Activations) -> Result<CpuBackend> {
        // wasm32 cannot spawn threads itself: the page starts Web Workers for rayon's global
        // pool (wasm-bindgen-rayon), or, without them, rayon runs on the calling thread.
        if cfg!(target_arch = "wasm32") {
            return Ok(CpuBackend {
                isa: Isa::detect(),
                activations,
                pool: None,
            });
        }
        // A pool of our own, entered once per forward pass: calling into rayon's global pool
        // from outside would hand every op to another thread and back.
        let mut builder = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("akari-cpu-{i}"));
        if let Some(n) = threads {
            builder = builder.num_threads(n.max(1));
        }
        let pool = builder
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start CPU threads: {e}")))?;
        Ok(CpuBackend {
            isa: Isa::detect(),
            activations,
            pool: Some(pool),
        })
    }

    pub fn activations(&self) -> Activations {
        self.activations
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    fn check_cols(x: &Tensor, cols: usize, what: &str) -> Result<()> {
        if x.cols != cols {
            return Err(Error::ShapeMismatch {
                tensor: what.to_string(),
                expected: vec![x.rows, cols],
                got: vec![x.rows, x.cols],
            });
        }
        Ok(())
    }
}

/// Output rows handled by one task: about eight tasks per thread, so threads stay balanced,
/// but never so few rows that scheduling costs more than the work.
fn rows_per_task(n: usize, threads: usize) -> usize {
    let per = n.div_ceil(threads.max(1) * 8);
    per.clamp(16, 1024).next_multiple_of(4)
}

impl Backend for CpuBackend {
    type Tensor = Tensor;
    type Matrix = Matrix;
    type Vector = Vec<f32>;
    type Rope = RopeTables;
    type KvCache = KvCache;
    /// Never made: this backend does not run ahead.
    type Selected = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, _format: QuantFormat) -> bool {
        true
    }

    fn upload_matrix(&self, m: Matrix) -> Result<Matrix> {
        Ok(m)
    }

    fn upload_vector(&self, v: Vec<f32>) -> Result<Vec<f32>> {
        Ok(v)
    }

    fn upload_rope(&self, tables: RopeTables) -> Result<RopeTables> {
        Ok(tables)
    }

    fn new_kv_cache(&self, cfg: &ModelConfig, max_seq: usize) -> Result<KvCache> {
        let len = cfg
            .kv_dim()
            .checked_mul(max_seq)
            .and_then(|n| n.checked_mul(cfg.num_layers))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("a cache of {max_seq} tokens is too large"))
            })?;
        Ok(KvCache {
            k: vec![0f32; len],
            v: vec![0f32; len],
            max_seq,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            heads: cfg.num_heads,
        })
    }

    fn embed(&self, table: &Matrix, tokens: &[u32]) -> Result<Tensor> {
        let cols = table.cols;
        let mut data = vec![0f32; tokens.len() * cols];
        for (out, &t) in data.chunks_exact_mut(cols).zip(tokens) {
            if t as usize >= table.rows {
                return Err(Error::InvalidArgument(format!(
                    "token id {t} is outside the embedding of {} rows",
                    table.rows
                )));
            }
            table.row_f32(t as usize, out);
        }
        Ok(Tensor {
            rows: tokens.len(),
            cols,
            data,
        })
    }

    fn rms_norm(&self, x: &Tensor, w: &Vec<f32>, eps: f32) -> Result<Tensor> {
        Self::check_cols(x, w.len(), "rms_norm input")?;
        let mut out = x.clone();
        for row in out.data.chunks_exact_mut(x.cols) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / x.cols as f32;
            let scale = 1.0 / (ms + eps).sqrt();
            for (v, g) in row.iter_mut().zip(w) {
                *v = *v * scale * g;
            }
        }
        Ok(out)
    }

    fn matmul(&self, x: &Tensor, w: &Matrix, bias: Option<&Vec<f32>>) -> Result<Tensor> {
        let mut out = self.matmul_many(x, &[(w, bias)])?;
        out.pop()
            .ok_or_else(|| Error::InvalidArgument("matmul produced no output".into()))
    }

    fn matmul_many(&self, x: &Tensor, ws: &[(&Matrix, Option<&Vec<f32>>)]) -> Result<Vec<Tensor>> {
        let (t, k) = (x.rows, x.cols);
        for (w, bias) in ws {
            Self::check_cols(x, w.cols, "matmul input")?;
            if let Some(b) = bias {
                if b.len() != w.rows {
                    return Err(Error::ShapeMismatch {
                        tensor: "bias".into(),
                        expected: vec![w.rows],
                        got: vec![b.len()],
                    });
                }
            }
        }
        let isa = self.isa;
        let any_quantized = ws.iter().any(|(w, _)| w.format.is_quantized());
        let mut outs: Vec<Vec<f32>> = ws.iter().map(|(w, _)| vec![0f32; t * w.rows]).collect();
        self.run(|| {
            // Quantise activations once; every weight row of every matrix reuses them.
            let (x8, x16): (Vec<Vec<Q8Act>>, Vec<Vec<Q16Act>>) =
                match (any_quantized, self.activations) {
                    (false, _) => (Vec::new(), Vec::new()),
                    (true, Activations::Int8) => (
                        x.data
                            .par_chunks_exact(k)
                            .map(|row| {
                                let mut q = vec![Q8Act::default(); k / QK];
                                isa.quantize_row(row, &mut q);
                                q
                            })
                            .collect(),
                        Vec::new(),
                    ),
                    (true, Activations::Int16) => (
                        Vec::new(),
                        x.data
                            .par_chunks_exact(k)
                            .map(|row| {
                                let mut q = vec![Q16Act::default(); k / QK];
                                isa.quantize_row(row, &mut q);
                                q
                            })
                            .collect(),
                    ),
                };
            // One parallel region over the row blocks of all matrices: each task computes a
            // block of output rows for every token into its own buffer, laid out
            // [row][token], then the blocks are scattered into place.
            let total_rows: usize = ws.iter().map(|(w, _)| w.rows).sum();
            let per_task = rows_per_task(total_rows, self.threads());
            let tasks: Vec<(usize, usize, usize)> = ws
                .iter()
                .enumerate()
                .flat_map(|(m, (w, _))| {
                    (0..w.rows.div_ceil(per_task))
                        .map(move |b| (m, b * per_task, ((b + 1) * per_task).min(w.rows)))
                })
                .collect();
            let blocks: Vec<(usize, usize, Vec<f32>)> = tasks
                .into_par_iter()
                .map(|(m, r0, r1)| {
                    let w = ws[m].0;
                    let (fmt, rb) = (w.format, w.row_bytes());
                    let mut acc = vec![0f32; (r1 - r0) * t];
                    let w_rows = &w.bytes[r0 * rb..r1 * rb];
                    if !fmt.is_quantized() {
                        for (wr, dst) in w_rows.chunks_exact(rb).zip(acc.chunks_exact_mut(t)) {
                            for (o, xr) in dst.iter_mut().zip(x.data.chunks_exact(k)) {
                                *o = isa.dot_f(fmt, wr, xr);
                            }
                        }
                    } else if self.activations == Activations::Int8 {
                        let xrefs: Vec<&[Q8Act]> = x8.iter().map(Vec::as_slice).collect();
                        isa.gemm_q(fmt, w_rows, rb, &xrefs, &mut acc);
                    } else {
                        let xrefs: Vec<&[Q16Act]> = x16.iter().map(Vec::as_slice).collect();
                        isa.gemm_q(fmt, w_rows, rb, &xrefs, &mut acc);
                    }
                    (m, r0, acc)
                })
                .collect();
            for (m, r0, acc) in blocks {
                let (out, n) = (&mut outs[m], ws[m].0.rows);
                if t == 1 {
                    out[r0..r0 + acc.len()].copy_from_slice(&acc);
                    continue;
                }
                for (dr, row) in acc.chunks_exact(t).enumerate() {
                    for (ti, v) in row.iter().enumerate() {
                        out[ti * n + r0 + dr] = *v;
                    }
                }
            }
        });
        Ok(outs
            .into_iter()
            .zip(ws)
            .map(|(mut data, (w, bias))| {
                if let Some(b) = bias {
                    for row in data.chunks_exact_mut(w.rows) {
                        for (o, bv) in row.iter_mut().zip(b.iter()) {
                            *o += bv;
                        }
                    }
                }
                Tensor {
                    rows: t,
                    cols: w.rows,
                    data,
                }
            })
            .collect())
    }

    fn rope(&self, x: &mut Tensor, heads: usize, rope: &RopeTables, pos: usize) -> Result<()> {
        let hd = 2 * rope.half;
        if heads * hd != x.cols {
            return Err(Error::ShapeMismatch {
                tensor: "rope input".into(),
                expected: vec![x.rows, heads * hd],
                got: vec![x.rows, x.cols],
            });
        }
        if pos + x.rows > rope.len {
            return Err(Error::ContextOverflow {
                prompt: pos + x.rows,
                context: rope.len,
                reserve: 0,
            });
        }
        for (i, row) in x.data.chunks_exact_mut(x.cols).enumerate() {
            let p = pos + i;
            let cos = &rope.cos[p * rope.half..(p + 1) * rope.half];
            let sin = &rope.sin[p * rope.half..(p + 1) * rope.half];
            for head in row.chunks_exact_mut(hd) {
                akari_core::rope::rotate_head(head, cos, sin);
            }
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
    ) -> Result<Tensor> {
        let (hd, kvh, heads, max_seq) =
            (cache.head_dim, cache.kv_heads, cache.heads, cache.max_seq);
        let t = q.rows;
        if pos + t > max_seq {
            return Err(Error::ContextOverflow {
                prompt: pos + t,
                context: max_seq,
                reserve: 0,
            });
        }
        Self::check_cols(q, heads * hd, "attention query")?;
        Self::check_cols(k, kvh * hd, "attention key")?;
        Self::check_cols(v, kvh * hd, "attention value")?;
        let per_layer = kvh * max_seq * hd;
        let layer_range = layer * per_layer..(layer + 1) * per_layer;
        let (kc, vc) = (&mut cache.k[layer_range.clone()], &mut cache.v[layer_range]);
        for i in 0..t {
            for h in 0..kvh {
                let dst = (h * max_seq + pos + i) * hd;
                kc[dst..dst + hd].copy_from_slice(&k.row(i)[h * hd..(h + 1) * hd]);
                vc[dst..dst + hd].copy_from_slice(&v.row(i)[h * hd..(h + 1) * hd]);
            }
        }
        let (kc, vc) = (&*kc, &*vc);
        let group = heads / kvh;
        let scale = 1.0 / (hd as f32).sqrt();
        let isa = self.isa;
        let mut out = vec![0f32; t * heads * hd];
        self.run(|| {
            out.par_chunks_exact_mut(hd)
                .enumerate()
                .for_each_init(Vec::new, |scores, (idx, o)| {
                    let (i, h) = (idx / heads, idx % heads);
                    let qh = &q.row(i)[h * hd..(h + 1) * hd];
                    // Causal: row i sees positions 0..=pos + i of its key/value head.
                    let base = (h / group) * max_seq * hd;
                    let rows = base..base + (pos + i + 1) * hd;
                    isa.attend(qh, &kc[rows.clone()], &vc[rows], scale, scores, o);
                });
        });
        Ok(Tensor {
            rows: t,
            cols: heads * hd,
            data: out,
        })
    }

    fn silu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        Self::check_cols(up, gate.cols, "silu_mul")?;
        let data = gate
            .data
            .iter()
            .zip(&up.data)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        Ok(Tensor {
            rows: gate.rows,
            cols: gate.cols,
            data,
        })
    }

    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        Self::check_cols(y, x.cols, "residual")?;
        for (a, b) in x.data.iter_mut().zip(&y.data) {
            *a += b;
        }
        Ok(())
    }

    fn last_row(&self, x: &Tensor) -> Result<Tensor> {
        let r = x
            .rows
            .checked_sub(1)
            .ok_or_else(|| Error::InvalidArgument("empty tensor".into()))?;
        Ok(Tensor {
            rows: 1,
            cols: x.cols,
            data: x.row(r).to_vec(),
        })
    }

    fn read(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.run(f)
    }
}
