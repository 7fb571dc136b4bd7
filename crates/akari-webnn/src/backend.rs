//! The symbolic backend: the decoder's ops become graph nodes.
//!
//! Running `Model<WebNnBackend>` once with T tokens ([`akari_core::model::Model::trace`])
//! records the whole forward pass. The numbers the op API passes — token ids in `embed`,
//! `pos` in `rope` and `attention` — are ignored: the graph reads them from inputs it
//! declares instead, so one graph serves every step with T rows:
//!
//! - `ids` `[T]` int32, the tokens (padding rows repeat a valid id);
//! - `cos`, `sin` `[T, half]`, the rotary rows of each position, computed on the host;
//! - `mask` `[T, ctx]` additive (0 where a row may attend, a large negative elsewhere);
//! - `write` `[T, ctx]` one-hot rows placing the new keys and values in the cache, and
//!   `keep` `[ctx, 1]`, 0 where a row is written: `cache' = cache·keep + writeᵀ·k`;
//! - `past.k{i}`, `past.v{i}` `[ctx, kv_dim]`, the cache, with outputs `present.k{i}` …;
//! - `last` `[1]` int32, the row whose logits are wanted (a padded chunk's last real row).
//!
//! Weights are inputs too (`w{n}`…), bound to `MLTensor`s shared by both graphs: a builder
//! builds one graph and its constants belong to it, so constants would be held twice.

use crate::graph::{DataType, Graph, Unary};
use crate::layout::{self, HostTensor, Parts, Support};
use akari_core::backend::{Backend, RopeTables};
use akari_core::config::ModelConfig;
use akari_core::quant::{QuantFormat, QK};
use akari_core::weights::Matrix;
use akari_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// An operand of the graph being traced: an activation `[rows, cols]`.
#[derive(Clone, Debug)]
pub struct Sym {
    node: usize,
    rows: usize,
    cols: usize,
}

impl Sym {
    pub fn node(&self) -> usize {
        self.node
    }
}

/// A weight matrix: indices of its stored parts.
pub struct WeightMatrix {
    rows: usize,
    cols: usize,
    kind: Stored,
}

enum Stored {
    Float(usize),
    Quantized {
        q: usize,
        scale: usize,
        zero_point: usize,
        min: Option<usize>,
    },
}

/// A norm weight or bias: index of its stored tensor.
pub struct WeightVector {
    id: usize,
}

/// Index of the uploaded rope tables (the host computes the rows, see [`crate::inputs`]).
pub struct RopeId {
    half: usize,
}

pub struct KvCache {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
}

/// The graph of one trace and the inputs it has declared so far.
struct Trace {
    g: Graph,
    rows: usize,
    stored: HashMap<usize, usize>,
    per_call: HashMap<&'static str, usize>,
}

#[derive(Default)]
struct State {
    stored: Vec<HostTensor>,
    ropes: Vec<RopeTables>,
    trace: Option<Trace>,
    dequantized: usize,
}

pub struct WebNnBackend {
    support: Support,
    state: Mutex<State>,
}

fn not_tracing() -> Error {
    Error::Backend {
        backend: "webnn",
        msg: "ops are recorded only inside a trace".into(),
    }
}

/// Additive mask value for positions a row may not see: large enough that `exp` gives 0,
/// small enough to stay finite, so a padding row's softmax has no NaN.
pub const MASKED: f32 = -1.0e9;

impl WebNnBackend {
    pub fn new(support: Support) -> WebNnBackend {
        WebNnBackend {
            support,
            state: Mutex::new(State::default()),
        }
    }

    pub fn support(&self) -> Support {
        self.support
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording a graph of `rows` tokens per call.
    pub fn begin_trace(&self, rows: usize) {
        self.state().trace = Some(Trace {
            g: Graph::default(),
            rows,
            stored: HashMap::new(),
            per_call: HashMap::new(),
        });
    }

    /// Ends the recording with `logits` and the cache outputs as the graph's outputs.
    pub fn end_trace(&self, logits: &Sym) -> Result<Graph> {
        self.end_trace_with(&[("logits", logits)])
    }

    /// Ends the recording with these named outputs (besides the cache outputs).
    pub fn end_trace_with(&self, outputs: &[(&str, &Sym)]) -> Result<Graph> {
        let mut t = self.state().trace.take().ok_or_else(not_tracing)?;
        for (name, x) in outputs {
            t.g.output(name, x.node);
        }
        Ok(t.g)
    }

    /// An activation `[rows, cols]` float32 input named `name`, for graphs of single ops
    /// (the op-by-op tests); the decoder's own inputs come from its ops.
    pub fn trace_input(&self, name: &str, rows: usize, cols: usize) -> Result<Sym> {
        self.with_trace(|t, _| {
            let node = t.g.input(name, DataType::Float32, &[rows, cols]);
            Ok(Sym { node, rows, cols })
        })
    }

    /// The stored tensors (weights, norms, biases), in input-name order; their bytes move
    /// out, so the host copy can be freed once they are on the device.
    pub fn take_stored(&self) -> Vec<HostTensor> {
        std::mem::take(&mut self.state().stored)
    }

    /// The rope tables the model uploaded: the short set, then the long one if any.
    pub fn take_ropes(&self) -> Vec<RopeTables> {
        std::mem::take(&mut self.state().ropes)
    }

    /// How many quantised matrices were dequantised at load because the context's
    /// `dequantizeLinear` does not take their data type.
    pub fn dequantized_at_load(&self) -> usize {
        self.state().dequantized
    }

    fn with_trace<R>(&self, f: impl FnOnce(&mut Trace, &[HostTensor]) -> Result<R>) -> Result<R> {
        let mut st = self.state();
        let State { stored, trace, .. } = &mut *st;
        let t = trace.as_mut().ok_or_else(not_tracing)?;
        f(t, stored)
    }

    fn store(&self, t: HostTensor) -> usize {
        let mut st = self.state();
        st.stored.push(t);
        st.stored.len() - 1
    }
}

impl Trace {
    /// The input node of stored tensor `id`, declared on first use.
    fn stored(&mut self, id: usize, all: &[HostTensor]) -> usize {
        if let Some(&n) = self.stored.get(&id) {
            return n;
        }
        let t = &all[id];
        let n = self.g.input(&t.name, t.data_type, &t.shape);
        self.stored.insert(id, n);
        n
    }

    /// A per-call input, declared on first use.
    fn per_call(&mut self, name: &'static str, dt: DataType, shape: &[usize]) -> usize {
        if let Some(&n) = self.per_call.get(name) {
            return n;
        }
        let n = self.g.input(name, dt, shape);
        self.per_call.insert(name, n);
        n
    }

    fn as_float32(&mut self, x: usize) -> usize {
        self.g.cast(x, DataType::Float32)
    }

    /// `(q − z)·s (+ min per block)` for parts gathered or whole; `rows_axis` is the axis of
    /// the blocks (0 for a whole matrix `[in, out]`).
    fn dequantize(&mut self, q: usize, s: usize, z: usize, min: Option<usize>) -> Result<usize> {
        let d = self.g.dequantize_linear(q, s, z)?;
        let Some(min) = min else { return Ok(d) };
        let (ds, ms) = (self.g.shape(d).to_vec(), self.g.shape(min).to_vec());
        let blocks = ms[0];
        let d3 = self.g.reshape(d, &[blocks, QK, ds[1]])?;
        let m3 = self.g.reshape(min, &[blocks, 1, ms[1]])?;
        let sum = self.g.add(d3, m3)?;
        self.g.reshape(sum, &ds)
    }

    /// The whole matrix `[in, out]` as float32.
    fn matrix(&mut self, w: &WeightMatrix, all: &[HostTensor]) -> Result<usize> {
        match w.kind {
            Stored::Float(id) => {
                let n = self.stored(id, all);
                Ok(self.as_float32(n))
            }
            Stored::Quantized {
                q,
                scale,
                zero_point,
                min,
            } => {
                let q = self.stored(q, all);
                let s = self.stored(scale, all);
                let z = self.stored(zero_point, all);
                let m = min.map(|m| self.stored(m, all));
                self.dequantize(q, s, z, m)
            }
        }
    }

    fn ids(&mut self) -> usize {
        let rows = self.rows;
        self.per_call("ids", DataType::Int32, &[rows])
    }
}

impl Backend for WebNnBackend {
    type Tensor = Sym;
    type Matrix = WeightMatrix;
    type Vector = WeightVector;
    type Rope = RopeId;
    type KvCache = KvCache;
    /// Never made: this backend does not run ahead.
    type Selected = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "webnn"
    }

    fn supports(&self, _format: QuantFormat) -> bool {
        // Every format: kept quantised through dequantizeLinear where the context allows,
        // else dequantised at upload.
        true
    }

    fn upload_matrix(&self, m: Matrix) -> Result<WeightMatrix> {
        let n = self.state().stored.len();
        let (parts, dequantized) = layout::convert(&m, &format!("w{n}"), self.support)?;
        if dequantized {
            self.state().dequantized += 1;
        }
        let kind = match parts {
            Parts::Float(t) => Stored::Float(self.store(t)),
            Parts::Quantized(qz) => Stored::Quantized {
                q: self.store(qz.q),
                scale: self.store(qz.scale),
                zero_point: self.store(qz.zero_point),
                min: qz.min.map(|m| self.store(m)),
            },
        };
        Ok(WeightMatrix {
            rows: m.rows,
            cols: m.cols,
            kind,
        })
    }

    fn upload_vector(&self, v: Vec<f32>) -> Result<WeightVector> {
        let n = self.state().stored.len();
        let len = v.len();
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let id = self.store(HostTensor {
            name: format!("w{n}"),
            data_type: DataType::Float32,
            shape: vec![len],
            bytes,
        });
        Ok(WeightVector { id })
    }

    fn upload_rope(&self, tables: RopeTables) -> Result<RopeId> {
        let half = tables.half;
        self.state().ropes.push(tables);
        Ok(RopeId { half })
    }

    fn new_kv_cache(&self, cfg: &ModelConfig, max_seq: usize) -> Result<KvCache> {
        Ok(KvCache {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            context: max_seq,
        })
    }

    fn embed(&self, table: &WeightMatrix, tokens: &[u32]) -> Result<Sym> {
        self.with_trace(|t, all| {
            if tokens.len() != t.rows {
                return Err(Error::InvalidArgument(format!(
                    "a trace of {} rows embedded {} tokens",
                    t.rows,
                    tokens.len()
                )));
            }
            let ids = t.ids();
            // The table is `[hidden, vocab]`: gather columns, then transpose to rows.
            let cols = match table.kind {
                Stored::Float(id) => {
                    let w = t.stored(id, all);
                    let g = t.g.gather(w, ids, 1)?;
                    t.as_float32(g)
                }
                Stored::Quantized {
                    q,
                    scale,
                    zero_point,
                    min,
                } => {
                    let mut gather = |id: usize| -> Result<usize> {
                        let n = t.stored(id, all);
                        t.g.gather(n, ids, 1)
                    };
                    let (q, s, z) = (gather(q)?, gather(scale)?, gather(zero_point)?);
                    let m = min.map(&mut gather).transpose()?;
                    t.dequantize(q, s, z, m)?
                }
            };
            let node = t.g.transpose(cols, &[1, 0])?;
            Ok(Sym {
                node,
                rows: t.rows,
                cols: table.cols,
            })
        })
    }

    fn rms_norm(&self, x: &Sym, w: &WeightVector, eps: f32) -> Result<Sym> {
        self.with_trace(|t, all| {
            let sq = t.g.mul(x.node, x.node)?;
            let mean = t.g.reduce_mean(sq, &[1]);
            let e = t.g.scalar(eps);
            let var = t.g.add(mean, e)?;
            let rms = t.g.unary(Unary::Sqrt, var);
            let y = t.g.div(x.node, rms)?;
            let w = t.stored(w.id, all);
            let node = t.g.mul(y, w)?;
            Ok(Sym { node, ..*x })
        })
    }

    fn matmul(&self, x: &Sym, w: &WeightMatrix, bias: Option<&WeightVector>) -> Result<Sym> {
        self.with_trace(|t, all| {
            if x.cols != w.cols {
                return Err(Error::ShapeMismatch {
                    tensor: "matmul input".into(),
                    expected: vec![x.rows, w.cols],
                    got: vec![x.rows, x.cols],
                });
            }
            let m = t.matrix(w, all)?;
            let mut node = t.g.matmul(x.node, m)?;
            if let Some(b) = bias {
                let b = t.stored(b.id, all);
                node = t.g.add(node, b)?;
            }
            Ok(Sym {
                node,
                rows: x.rows,
                cols: w.rows,
            })
        })
    }

    fn rope(&self, x: &mut Sym, heads: usize, rope: &RopeId, _pos: usize) -> Result<()> {
        let out = self.with_trace(|t, _| {
            let (rows, half) = (t.rows, rope.half);
            let hd = 2 * half;
            if heads * hd != x.cols {
                return Err(Error::ShapeMismatch {
                    tensor: "rope input".into(),
                    expected: vec![x.rows, heads * hd],
                    got: vec![x.rows, x.cols],
                });
            }
            let cos = t.per_call("cos", DataType::Float32, &[rows, half]);
            let sin = t.per_call("sin", DataType::Float32, &[rows, half]);
            let g = &mut t.g;
            let cos = g.reshape(cos, &[rows, 1, half])?;
            let sin = g.reshape(sin, &[rows, 1, half])?;
            let r = g.reshape(x.node, &[rows, heads, hd])?;
            let a = g.slice(r, &[0, 0, 0], &[rows, heads, half])?;
            let b = g.slice(r, &[0, 0, half], &[rows, heads, half])?;
            // rotate_half: (a, b) → (a·cos − b·sin, b·cos + a·sin)
            let (ac, bs) = (g.mul(a, cos)?, g.mul(b, sin)?);
            let a2 = g.sub(ac, bs)?;
            let (bc, as_) = (g.mul(b, cos)?, g.mul(a, sin)?);
            let b2 = g.add(bc, as_)?;
            let joined = g.concat(&[a2, b2], 2)?;
            g.reshape(joined, &[rows, heads * hd])
        })?;
        x.node = out;
        Ok(())
    }

    fn attention(
        &self,
        q: &Sym,
        k: &Sym,
        v: &Sym,
        cache: &mut KvCache,
        layer: usize,
        _pos: usize,
    ) -> Result<Sym> {
        self.with_trace(|t, _| {
            let (nh, nkv, hd, ctx) = (cache.heads, cache.kv_heads, cache.head_dim, cache.context);
            let (rows, kvd) = (t.rows, nkv * hd);
            if q.cols != nh * hd || k.cols != kvd || v.cols != kvd {
                return Err(Error::ShapeMismatch {
                    tensor: "attention input".into(),
                    expected: vec![rows, nh * hd, kvd],
                    got: vec![rows, q.cols, k.cols],
                });
            }
            let group = nh / nkv;
            let write = t.per_call("write", DataType::Float32, &[rows, ctx]);
            let keep = t.per_call("keep", DataType::Float32, &[ctx, 1]);
            let mask = t.per_call("mask", DataType::Float32, &[rows, ctx]);
            let g = &mut t.g;
            let write_t = g.transpose(write, &[1, 0])?;
            let mut updated = [0; 2];
            for (i, (which, new)) in [("k", k), ("v", v)].into_iter().enumerate() {
                let past = g.input(
                    &format!("past.{which}{layer}"),
                    DataType::Float32,
                    &[ctx, kvd],
                );
                let kept = g.mul(past, keep)?;
                let placed = g.matmul(write_t, new.node)?;
                let present = g.add(kept, placed)?;
                g.output(&format!("present.{which}{layer}"), present);
                updated[i] = present;
            }
            let [kc, vc] = updated;
            // Heads grouped by their key/value head: query head h reads kv head h / group.
            let qh = g.reshape(q.node, &[rows, nh, hd])?;
            let qh = g.transpose(qh, &[1, 0, 2])?;
            let qh = g.reshape(qh, &[nkv, group * rows, hd])?;
            let kh = g.reshape(kc, &[ctx, nkv, hd])?;
            let kh = g.transpose(kh, &[1, 2, 0])?;
            let scores = g.matmul(qh, kh)?;
            let scale = g.scalar(1.0 / (hd as f32).sqrt());
            let scores = g.mul(scores, scale)?;
            let scores = g.reshape(scores, &[nkv, group, rows, ctx])?;
            let scores = g.add(scores, mask)?;
            let p = g.softmax(scores, 3);
            let p = g.reshape(p, &[nkv, group * rows, ctx])?;
            let vh = g.reshape(vc, &[ctx, nkv, hd])?;
            let vh = g.transpose(vh, &[1, 0, 2])?;
            let o = g.matmul(p, vh)?;
            let o = g.reshape(o, &[nh, rows, hd])?;
            let o = g.transpose(o, &[1, 0, 2])?;
            let node = g.reshape(o, &[rows, nh * hd])?;
            Ok(Sym {
                node,
                rows,
                cols: nh * hd,
            })
        })
    }

    fn silu_mul(&self, gate: &Sym, up: &Sym) -> Result<Sym> {
        self.with_trace(|t, _| {
            let s = t.g.unary(Unary::Sigmoid, gate.node);
            let silu = t.g.mul(gate.node, s)?;
            let node = t.g.mul(silu, up.node)?;
            Ok(Sym { node, ..*gate })
        })
    }

    fn add_assign(&self, x: &mut Sym, y: &Sym) -> Result<()> {
        x.node = self.with_trace(|t, _| t.g.add(x.node, y.node))?;
        Ok(())
    }

    fn last_row(&self, x: &Sym) -> Result<Sym> {
        self.with_trace(|t, _| {
            let last = t.per_call("last", DataType::Int32, &[1]);
            let node = t.g.gather(x.node, last, 0)?;
            Ok(Sym {
                node,
                rows: 1,
                cols: x.cols,
            })
        })
    }

    fn read(&self, _x: &Sym) -> Result<Vec<f32>> {
        Err(Error::Unsupported {
            backend: "webnn",
            what: "reads while tracing (results come from a dispatched graph)".into(),
        })
    }
}
