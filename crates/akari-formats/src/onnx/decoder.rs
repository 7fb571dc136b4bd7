//! Recognises a decoder LLM in an ONNX graph and pulls its weights into canonical
//! [`ModelWeights`].
//!
//! Two export styles are recognised, both by the module paths their node names carry:
//!
//! - optimum (`text-generation-with-past`, what transformers.js repositories hold): a
//!   projection is the `MatMul` named `/model/layers.{i}/self_attn/q_proj/MatMul` (after
//!   onnxruntime's quantisers `…/MatMul_Q4` as `com.microsoft.MatMulNBits`, or
//!   `…/MatMul_quant` as `MatMulInteger`); config from `config.json`;
//! - onnxruntime-genai's builder: `/model/layers.{i}/attn/qkv_proj/MatMul(_Q4)` (packed
//!   q/k/v, split by rows), `GroupQueryAttention` with rotary caches, norms in
//!   `(Skip)SimplifiedLayerNormalization`, the embedding possibly a `GatherBlockQuantized`
//!   sharing the lm_head's 4-bit blocks; config from `genai_config.json` completed from the
//!   graph (`genai_config`).
//!
//! A projection's weight is its second input, followed back through `Transpose`, `Cast`,
//! `Identity` and `DequantizeLinear` to an initializer:
//!
//! - a plain initializer is `[K, N]` = `[in, out]` (optimum stores `weight.T`); it is
//!   transposed into our `[rows = out, cols = in]` layout, element by element in its own
//!   type when the target format is that type (f32 → F32, f16 → F16), else through f32;
//! - a `Transpose` of an initializer is already `[out, in]` (the tied lm_head reads the
//!   transposed embedding), used in place when its type is the target's;
//! - `com.microsoft.MatMulNBits` (B uint8 `[N, k_blocks, blob]`, scales `[N·k_blocks]`,
//!   optional packed uint8 zero points; value `(q − zp)·scale`, zp = 2^(bits−1) when absent,
//!   low nibble first): 4 bits with blocks of 32·m become Q4_0 (no zero points: `d = scale`)
//!   or Q4_1 (`d = scale`, `m = −scale·zp`), m Q4 blocks sharing each scale; anything else
//!   goes through f32 to Q8_0 (or the target); a K that is not a multiple of 32 (the last
//!   block of each row zero-padded in the file) becomes f32 rows of the true K;
//! - `com.microsoft.MatMulBnb4` (FP4 or NF4 codes, one f32 `absmax` per block of the
//!   flattened `[N, K]` weight): `level·absmax` through the 16-level table, stored as Q8_0
//!   (no 4-bit format of ours has non-uniform levels; see `bnb4_to_matrix`);
//! - 8-bit quantisation (`quantize_dynamic`: `MatMulInteger` whose weight scale sits in the
//!   `Mul` after it, `DequantizeLinear` before the lm_head or after the embedding `Gather`),
//!   int8 or uint8, per tensor or per output channel (`per_channel=True`: `[N]` scales and
//!   zero points): `(q − zp)·scale`, as Q8_0 blocks of the same integers (the row's scale
//!   in each block) when symmetric, else exactly through f32.
//!
//! Norm weights are the 1-D initializer input of the `Mul` (optimum) or
//! `(Skip)SimplifiedLayerNormalization` (genai) in `/model/layers.{i}/input_layernorm/`,
//! `post_attention_layernorm`, `/model/norm/` or genai's `final_norm_layernorm`, else the
//! Hugging Face initializer names. Q/K/V biases (qwen2) are the initializer input of the
//! `Add` consuming the projection. Phi-3's fused `qkv_proj` and `gate_up_proj` are split by
//! rows. The lm_head is tied when it reads the embedding's own initializer.

use super::proto::{dtype, Model, Node, Tensor};
use super::DataSource;
use crate::files::RepoFiles;
use crate::ggml::{self, GgmlType};
use crate::gguf::load::ConvertTo;
use crate::{hf, ModelSource};
use akari_core::quant::QK;
use akari_core::weights::{
    self, deferred_parts, Bytes, LayerTensor, Matrix, ModelWeights, TensorKey,
};
use akari_core::{Error, ModelConfig, QuantFormat, Result};
use half::f16;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// What a projection's module path names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Proj {
    Plain(LayerTensor),
    FusedQkv,
    FusedGateUp,
    Output,
}

/// `/model/layers.3/self_attn/q_proj/MatMul` → `(Some(3), Proj)`; `None` for other nodes.
fn projection(node_name: &str) -> Option<(Option<usize>, Proj)> {
    let parts: Vec<&str> = node_name.split('/').filter(|s| !s.is_empty()).collect();
    let module = parts.get(..parts.len().checked_sub(1)?)?;
    match module {
        ["lm_head"] => Some((None, Proj::Output)),
        ["model", layer, block, proj] => {
            let layer: usize = layer.strip_prefix("layers.")?.parse().ok()?;
            let p = match (*block, *proj) {
                ("self_attn" | "attn", "q_proj") => Proj::Plain(LayerTensor::Q),
                ("self_attn" | "attn", "k_proj") => Proj::Plain(LayerTensor::K),
                ("self_attn" | "attn", "v_proj") => Proj::Plain(LayerTensor::V),
                ("self_attn" | "attn", "o_proj") => Proj::Plain(LayerTensor::O),
                ("self_attn" | "attn", "qkv_proj") => Proj::FusedQkv,
                ("mlp", "gate_proj") => Proj::Plain(LayerTensor::Gate),
                ("mlp", "up_proj") => Proj::Plain(LayerTensor::Up),
                ("mlp", "down_proj") => Proj::Plain(LayerTensor::Down),
                ("mlp", "gate_up_proj") => Proj::FusedGateUp,
                _ => return None,
            };
            Some((Some(layer), p))
        }
        _ => None,
    }
}

/// `/model/layers.3/input_layernorm/Mul_1` → the norm it belongs to.
fn norm_of(node_name: &str) -> Option<TensorKey> {
    let parts: Vec<&str> = node_name.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["model", "norm", _] => Some(TensorKey::OutputNorm),
        // onnxruntime-genai names the final norm after a layer past the last one.
        ["model", _, "final_norm_layernorm", _] => Some(TensorKey::OutputNorm),
        ["model", layer, norm, _] => {
            let layer: usize = layer.strip_prefix("layers.")?.parse().ok()?;
            match *norm {
                "input_layernorm" => Some(TensorKey::Layer(layer, LayerTensor::AttnNorm)),
                "post_attention_layernorm" => Some(TensorKey::Layer(layer, LayerTensor::FfnNorm)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Where a weight comes from, once `Transpose`/`Cast`/`Identity` are followed.
enum Source<'a> {
    /// An initializer; `transposed` when it is stored `[in, out]`; `dq` when it holds 8-bit
    /// integers to be dequantised (`DequantizeLinear`, `MatMulInteger`).
    Dense {
        t: &'a Tensor,
        transposed: bool,
        dq: Option<Dequant>,
    },
    NBits(NBits<'a>),
    Bnb4(Bnb4<'a>),
}

/// Linear dequantisation `(q − zero_point)·scale`: `scale` and `zero_point` hold one value
/// (per tensor) or one per output channel, i.e. per row of our `[out, in]` matrix
/// (`quantize_dynamic(per_channel=True)`: a `[K, N]` weight with `[N]` scales and zero points).
#[derive(Clone, Debug)]
struct Dequant {
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    /// Whether a vector of values runs along the output rows. Per-column (per input
    /// feature) quantisation is not supported; such a vector is an error.
    along_rows: bool,
}

struct NBits<'a> {
    /// The node's name, for messages.
    node: &'a str,
    b: &'a Tensor,
    scales: &'a Tensor,
    zero_points: Option<&'a Tensor>,
    k: usize,
    n: usize,
    bits: usize,
    block_size: usize,
}

/// A `com.microsoft.MatMulBnb4` weight: the `[N, K]` transpose of the `[K, N]` weight,
/// flattened, in blocks of `block_size` values (blocks run on across rows), two 4-bit codes a
/// byte (high nibble first); value `table[code]·absmax[block]`.
struct Bnb4<'a> {
    /// The node's name, for messages.
    node: &'a str,
    b: &'a Tensor,
    absmax: &'a Tensor,
    k: usize,
    n: usize,
    block_size: usize,
    /// 0: FP4, 1: NF4 (onnxruntime's `Bnb_DataType_t`).
    quant_type: i64,
}

/// The graph, indexed.
struct Graph<'a> {
    data: &'a DataSource,
    inits: HashMap<&'a str, &'a Tensor>,
    producers: HashMap<&'a str, &'a Node>,
    consumers: HashMap<&'a str, Vec<&'a Node>>,
}

impl<'a> Graph<'a> {
    fn err(&self, msg: String) -> Error {
        Error::format(&self.data.file_name, msg)
    }

    /// Follows `name` back to an initializer through layout-only nodes. `transposed` is the
    /// layout the consumer sees: true when the tensor it reads is `[in, out]`.
    fn dense(&self, name: &str, consumer: &Node, mut transposed: bool) -> Result<Source<'a>> {
        let mut name = name.to_string();
        let mut dq = None;
        for _ in 0..8 {
            if let Some(t) = self.inits.get(name.as_str()) {
                return Ok(Source::Dense { t, transposed, dq });
            }
            let Some(p) = self.producers.get(name.as_str()) else {
                return Err(self.err(format!(
                    "node `{}`: weight `{name}` is neither an initializer nor computed by a node",
                    consumer.name
                )));
            };
            match p.op_type.as_str() {
                "Transpose" => {
                    let perm = p.attr("perm").map(|a| a.ints.as_slice()).unwrap_or(&[]);
                    if !(perm.is_empty() || perm == [1, 0]) {
                        return Err(self.err(format!(
                            "node `{}` transposes a weight with perm {perm:?}; only 2-D \
                             transposes are recognised",
                            p.name
                        )));
                    }
                    transposed = !transposed;
                }
                "Cast" | "Identity" => {}
                "DequantizeLinear" if dq.is_none() => {
                    // `axis` (default 1) indexes the tensor DequantizeLinear reads, which is
                    // `[in, out]` when `transposed` here: then axis 1 runs along our rows.
                    let axis = match p.attr_i("axis").unwrap_or(1) {
                        a if a < 0 => a + 2,
                        a => a,
                    };
                    let along_rows = if transposed { axis == 1 } else { axis == 0 };
                    dq = Some(self.dequant(p, 1, 2, along_rows)?)
                }
                other => {
                    return Err(self.err(format!(
                        "node `{}`: its weight comes from a `{other}` node (`{}`), which akari \
                         does not recognise on a weight path (supported: initializer, \
                         Transpose, Cast, MatMulNBits)",
                        consumer.name, p.name
                    )))
                }
            }
            name = p.input(0).unwrap_or_default().to_string();
        }
        Err(self.err(format!(
            "node `{}`: weight path too long to follow",
            consumer.name
        )))
    }

    /// The scale(s) and zero point(s) at inputs `scale` and `zp` of `node` (one value, or a
    /// vector running along our rows when `along_rows`).
    fn dequant(&self, node: &Node, scale: usize, zp: usize, along_rows: bool) -> Result<Dequant> {
        let scale = self.values(node, scale, "scale")?;
        let zero_point = match node.input(zp) {
            Some(_) => self.values(node, zp, "zero point")?,
            None => vec![0.0],
        };
        Ok(Dequant {
            scale: scale.into_iter().map(|x| x as f32).collect(),
            zero_point: zero_point.into_iter().map(|x| x as i32).collect(),
            along_rows,
        })
    }

    /// The values of a 0-D or 1-D initializer input of `node` (scales, zero points), as f64.
    fn values(&self, node: &Node, i: usize, what: &str) -> Result<Vec<f64>> {
        let t = self.init(node, i, what)?;
        if t.dims.len() > 1 || t.n_elements().is_none_or(|n| n == 0) {
            return Err(self.err(format!(
                "node `{}`: {what} `{}` has shape {:?}; expected one value or a vector",
                node.name, t.name, t.dims
            )));
        }
        let b = self.data.bytes(t)?;
        Ok(match t.data_type {
            dtype::FLOAT => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            dtype::FLOAT16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            dtype::INT8 => b.iter().map(|&x| x as i8 as f64).collect(),
            dtype::UINT8 => b.iter().map(|&x| x as f64).collect(),
            dtype::INT32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            _ => return Err(unsupported(t)),
        })
    }

    /// The scale `MatMulInteger`'s integer product is multiplied by, as onnxruntime's
    /// `quantize_dynamic` writes it: `Cast` → `Mul(·, Mul(activation scale, weight scale))`.
    /// Returns the weight scale (one value, or `[N]` with `per_channel`) and the output of
    /// that last `Mul`.
    fn integer_scale(&self, node: &Node) -> Result<(Vec<f64>, &'a str)> {
        let not_found = || {
            self.err(format!(
                "node `{}`: cannot find the weight scale of this MatMulInteger (expected Cast → \
                 Mul by Mul(activation scale, weight scale))",
                node.name
            ))
        };
        let out = node.outputs.first().ok_or_else(not_found)?;
        for cast in self.consumers_of(out, "Cast") {
            let Some(cast_out) = cast.outputs.first() else {
                continue;
            };
            for mul in self.consumers_of(cast_out, "Mul") {
                for other in mul.inputs.iter().filter(|i| *i != cast_out) {
                    let Some(p) = self.producers.get(other.as_str()) else {
                        continue;
                    };
                    if p.op_type != "Mul" {
                        continue;
                    }
                    for i in 0..p.inputs.len() {
                        let is_init = p.input(i).is_some_and(|n| self.inits.contains_key(n));
                        if is_init {
                            let out = mul.outputs.first().ok_or_else(not_found)?;
                            return Ok((self.values(p, i, "weight scale")?, out.as_str()));
                        }
                    }
                }
            }
        }
        Err(not_found())
    }

    fn consumers_of(&self, name: &str, op: &str) -> Vec<&'a Node> {
        self.consumers
            .get(name)
            .map(|v| v.iter().copied().filter(|n| n.op_type == op).collect())
            .unwrap_or_default()
    }

    /// The tensor a projection's result is in, after any rescaling (MatMulInteger).
    fn result_of(&self, node: &'a Node) -> Option<&'a str> {
        if node.op_type == "MatMulInteger" {
            return self.integer_scale(node).ok().map(|(_, out)| out);
        }
        node.outputs.first().map(String::as_str)
    }

    /// An integer attribute that must be present and positive (sizes, bit widths).
    fn positive_attr(&self, node: &Node, name: &str) -> Result<usize> {
        node.attr_i(name)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                self.err(format!(
                    "node `{}`: attribute `{name}` missing or invalid",
                    node.name
                ))
            })
    }

    fn init(&self, node: &Node, i: usize, what: &str) -> Result<&'a Tensor> {
        let name = node
            .input(i)
            .ok_or_else(|| self.err(format!("node `{}` has no {what} input", node.name)))?;
        match self.dense(name, node, false)? {
            Source::Dense { t, .. } => Ok(t),
            Source::NBits(_) | Source::Bnb4(_) => {
                Err(self.err(format!("node `{}`: bad {what}", node.name)))
            }
        }
    }

    /// The weight a projection node multiplies by.
    fn weight(&self, node: &'a Node) -> Result<Source<'a>> {
        match (node.domain.as_str(), node.op_type.as_str()) {
            ("", "MatMul") => {
                let w = node
                    .input(1)
                    .ok_or_else(|| self.err(format!("node `{}` has no weight input", node.name)))?;
                self.dense(w, node, true)
            }
            ("", "MatMulInteger") => {
                let w = node
                    .input(1)
                    .ok_or_else(|| self.err(format!("node `{}` has no weight input", node.name)))?;
                let t = match self.dense(w, node, true)? {
                    Source::Dense {
                        t,
                        transposed: true,
                        dq: None,
                    } => t,
                    _ => {
                        return Err(self.err(format!(
                            "node `{}`: weight `{w}` is not a plain [K, N] initializer",
                            node.name
                        )))
                    }
                };
                // Zero point and scale: one value, or `[N]` (per output channel).
                let zero_point = match node.input(3) {
                    Some(_) => self.values(node, 3, "weight zero point")?,
                    None => vec![0.0],
                };
                let (scale, _) = self.integer_scale(node)?;
                Ok(Source::Dense {
                    t,
                    transposed: true,
                    dq: Some(Dequant {
                        scale: scale.into_iter().map(|x| x as f32).collect(),
                        zero_point: zero_point.into_iter().map(|x| x as i32).collect(),
                        along_rows: true,
                    }),
                })
            }
            ("com.microsoft", "MatMulNBits") => {
                let attr = |name: &str| self.positive_attr(node, name);
                Ok(Source::NBits(NBits {
                    node: &node.name,
                    b: self.init(node, 1, "B")?,
                    scales: self.init(node, 2, "scales")?,
                    zero_points: match node.input(3) {
                        Some(_) => Some(self.init(node, 3, "zero_points")?),
                        None => None,
                    },
                    k: attr("K")?,
                    n: attr("N")?,
                    bits: attr("bits")?,
                    block_size: attr("block_size")?,
                }))
            }
            ("com.microsoft", "MatMulBnb4") => {
                let attr = |name: &str| self.positive_attr(node, name);
                Ok(Source::Bnb4(Bnb4 {
                    node: &node.name,
                    b: self.init(node, 1, "B")?,
                    absmax: self.init(node, 2, "absmax")?,
                    k: attr("K")?,
                    n: attr("N")?,
                    block_size: attr("block_size")?,
                    quant_type: node.attr_i("quant_type").unwrap_or(-1),
                }))
            }
            (domain, op) => Err(self.err(format!(
                "node `{}` is a `{}{op}` projection, which akari does not read yet \
                 (supported: MatMul, MatMulInteger, com.microsoft.MatMulNBits, \
                 com.microsoft.MatMulBnb4)",
                node.name,
                if domain.is_empty() {
                    String::new()
                } else {
                    format!("{domain}.")
                }
            ))),
        }
    }

    /// A 1-D initializer input of `node` (through Cast), if it has one.
    fn vector_input(&self, node: &Node) -> Option<&'a Tensor> {
        node.inputs.iter().find_map(|i| {
            let mut name = i.as_str();
            for _ in 0..4 {
                if let Some(t) = self.inits.get(name) {
                    return (t.dims.len() == 1).then_some(*t);
                }
                let p = self.producers.get(name)?;
                if p.op_type != "Cast" && p.op_type != "Identity" {
                    return None;
                }
                name = p.input(0)?;
            }
            None
        })
    }
}

/// The element type of a float initializer, as the ggml type with the same bytes.
fn float_type(t: &Tensor) -> Option<GgmlType> {
    match t.data_type {
        dtype::FLOAT => Some(GgmlType::F32),
        dtype::FLOAT16 => Some(GgmlType::F16),
        dtype::BFLOAT16 => Some(GgmlType::BF16),
        _ => None,
    }
}

fn unsupported(t: &Tensor) -> Error {
    Error::UnsupportedWeightType {
        tensor: t.name.clone(),
        kind: format!("{} (ONNX)", dtype::name(t.data_type)),
    }
}

struct Loader<'a, 'g> {
    g: &'g Graph<'a>,
    /// The data source, for deferred reads, when its weights are streamed.
    streamed: Option<Arc<DataSource>>,
    target: &'g ConvertTo,
    weights: ModelWeights,
    /// Which node filled each key, to report duplicates.
    seen: HashMap<TensorKey, String>,
    /// Counts of the weight kinds met, for the file type.
    kinds: HashMap<String, usize>,
}

impl Loader<'_, '_> {
    fn claim(&mut self, key: TensorKey, by: &str) -> Result<()> {
        if let Some(prev) = self.seen.insert(key, by.to_string()) {
            return Err(self
                .g
                .err(format!("`{prev}` and `{by}` both provide {key}")));
        }
        Ok(())
    }

    /// Checks that `src` holds a `[rows, cols]` matrix and counts its kind.
    fn check(&mut self, src: &Source<'_>, rows: usize, cols: usize, what: &str) -> Result<()> {
        let (kind, expected, got, tensor) = match src {
            Source::Dense { t, transposed, dq } => (
                match dq {
                    Some(_) => format!("{} (8-bit linear quantisation)", dtype::name(t.data_type)),
                    None => float_type(t)
                        .ok_or_else(|| unsupported(t))?
                        .name()
                        .to_string(),
                },
                if *transposed {
                    vec![cols, rows]
                } else {
                    vec![rows, cols]
                },
                t.shape().unwrap_or_default(),
                format!("{} (weight of {what})", t.name),
            ),
            Source::NBits(nb) => (
                format!("MatMulNBits {}-bit", nb.bits),
                vec![rows, cols],
                vec![nb.n, nb.k],
                format!("{} (N, K of {what})", nb.node),
            ),
            Source::Bnb4(bq) => (
                format!("MatMulBnb4 {}", bnb4_name(bq.quant_type)),
                vec![rows, cols],
                vec![bq.n, bq.k],
                format!("{} (N, K of {what})", bq.node),
            ),
        };
        *self.kinds.entry(kind).or_default() += rows * cols;
        if got != expected {
            return Err(Error::ShapeMismatch {
                tensor,
                expected,
                got,
            });
        }
        Ok(())
    }

    /// The matrix `[rows, cols]` a source holds, in the target format.
    fn matrix(&mut self, src: &Source<'_>, rows: usize, cols: usize, what: &str) -> Result<Matrix> {
        self.check(src, rows, cols, what)?;
        convert(src, self.g.data, rows, cols, self.target)
    }

    /// Puts the rows `cuts` takes from the `[rows, cols]` matrix of `src` (all when `None`):
    /// now, or deferred until taken when the weights are streamed.
    fn put_cuts(
        &mut self,
        src: &Source<'_>,
        rows: usize,
        cols: usize,
        what: &str,
        cuts: Vec<(TensorKey, Option<Range<usize>>)>,
    ) -> Result<()> {
        let Some(data) = self.streamed.clone() else {
            let m = self.matrix(src, rows, cols, what)?;
            for (key, r) in cuts {
                let part = match r {
                    Some(r) => m
                        .rows(r)
                        .ok_or_else(|| self.g.err(format!("{what}: cannot split")))?,
                    None => m.clone(),
                };
                self.put_matrix(key, what, part)?;
            }
            return Ok(());
        };
        self.check(src, rows, cols, what)?;
        // What a read could find wrong without reading: data past the end of its file.
        let tensors = match src {
            Source::Dense { t, .. } => vec![*t],
            Source::NBits(nb) => [Some(nb.b), Some(nb.scales), nb.zero_points]
                .into_iter()
                .flatten()
                .collect(),
            Source::Bnb4(bq) => vec![bq.b, bq.absmax],
        };
        for t in tensors {
            data.check(t)?;
        }
        let format = (self.target)(default_format(src, cols)?);
        let mut keys = Vec::with_capacity(cuts.len());
        let mut parts: Vec<(usize, weights::Cut)> = Vec::with_capacity(cuts.len());
        for (key, r) in cuts {
            self.claim(key, what)?;
            keys.push(key);
            let out_rows = r.as_ref().map_or(rows, |r| r.len());
            let (data, what) = (data.clone(), what.to_string());
            parts.push((
                out_rows,
                Box::new(move |m| match &r {
                    Some(r) => m
                        .rows(r.clone())
                        .ok_or_else(|| data.err(format!("{what}: cannot split"))),
                    None => Ok(m.clone()),
                }),
            ));
        }
        let owned = OwnedSource::new(src);
        let read = move || convert(&owned.source(), &data, rows, cols, &move |_| format);
        let deferred = deferred_parts(format, cols, read, parts);
        self.weights.deferred.extend(keys.into_iter().zip(deferred));
        Ok(())
    }

    fn vector(&self, t: &Tensor, len: usize) -> Result<Vec<f32>> {
        let ty = float_type(t).ok_or_else(|| unsupported(t))?;
        if t.shape().as_deref() != Some(&[len][..]) {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: vec![len],
                got: t.shape().unwrap_or_default(),
            });
        }
        ggml::to_f32(&t.name, ty, len, &self.g.data.bytes(t)?)
    }

    fn put_matrix(&mut self, key: TensorKey, by: &str, m: Matrix) -> Result<()> {
        self.claim(key, by)?;
        self.weights.matrices.insert(key, m);
        Ok(())
    }

    fn put_vector(&mut self, key: TensorKey, by: &str, v: Vec<f32>) -> Result<()> {
        self.claim(key, by)?;
        self.weights.vectors.insert(key, v);
        Ok(())
    }
}

/// The `[rows, cols]` matrix `src` holds (its shape checked), stored as `target(default)`.
fn convert(
    src: &Source<'_>,
    data: &DataSource,
    rows: usize,
    cols: usize,
    target: &ConvertTo,
) -> Result<Matrix> {
    match src {
        Source::Dense { t, transposed, dq } => {
            let bytes = data.bytes(t)?;
            let Some(dq) = dq else {
                let ty = float_type(t).ok_or_else(|| unsupported(t))?;
                return if *transposed {
                    transpose_to_matrix(&t.name, ty, cols, rows, &bytes, target)
                } else {
                    ggml::to_matrix_as(&t.name, ty, rows, cols, bytes, target)
                };
            };
            int8_to_matrix(t, *transposed, rows, cols, &bytes, dq, target)
        }
        Source::NBits(nb) => nbits_to_matrix(nb, data, target),
        Source::Bnb4(bq) => bnb4_to_matrix(bq, data, target),
    }
}

/// The format [`convert`] stores `src` as before `target`, known without reading its data.
fn default_format(src: &Source<'_>, cols: usize) -> Result<QuantFormat> {
    Ok(match src {
        Source::Dense { t, dq: None, .. } => {
            let ty = float_type(t).ok_or_else(|| unsupported(t))?;
            ty.backend_format()
                .ok_or_else(|| Error::UnsupportedWeightType {
                    tensor: t.name.clone(),
                    kind: ty.name().to_string(),
                })?
        }
        Source::Dense { dq: Some(_), .. } => blocks_or_f32(cols),
        Source::NBits(nb) => nbits_format(nb),
        Source::Bnb4(bq) => blocks_or_f32(bq.k),
    })
}

/// A [`Source`] that owns what it reads, for a matrix read later.
enum OwnedSource {
    Dense {
        t: Tensor,
        transposed: bool,
        dq: Option<Dequant>,
    },
    NBits {
        node: String,
        b: Tensor,
        scales: Tensor,
        zero_points: Option<Tensor>,
        k: usize,
        n: usize,
        bits: usize,
        block_size: usize,
    },
    Bnb4 {
        node: String,
        b: Tensor,
        absmax: Tensor,
        k: usize,
        n: usize,
        block_size: usize,
        quant_type: i64,
    },
}

impl OwnedSource {
    /// Tensors are cloned: external ones are a location and a range, inline ones share
    /// their bytes.
    fn new(src: &Source<'_>) -> OwnedSource {
        match src {
            Source::Dense { t, transposed, dq } => OwnedSource::Dense {
                t: (*t).clone(),
                transposed: *transposed,
                dq: dq.clone(),
            },
            Source::NBits(nb) => OwnedSource::NBits {
                node: nb.node.to_string(),
                b: nb.b.clone(),
                scales: nb.scales.clone(),
                zero_points: nb.zero_points.cloned(),
                k: nb.k,
                n: nb.n,
                bits: nb.bits,
                block_size: nb.block_size,
            },
            Source::Bnb4(bq) => OwnedSource::Bnb4 {
                node: bq.node.to_string(),
                b: bq.b.clone(),
                absmax: bq.absmax.clone(),
                k: bq.k,
                n: bq.n,
                block_size: bq.block_size,
                quant_type: bq.quant_type,
            },
        }
    }

    fn source(&self) -> Source<'_> {
        match self {
            OwnedSource::Dense { t, transposed, dq } => Source::Dense {
                t,
                transposed: *transposed,
                dq: dq.clone(),
            },
            OwnedSource::NBits {
                node,
                b,
                scales,
                zero_points,
                k,
                n,
                bits,
                block_size,
            } => Source::NBits(NBits {
                node,
                b,
                scales,
                zero_points: zero_points.as_ref(),
                k: *k,
                n: *n,
                bits: *bits,
                block_size: *block_size,
            }),
            OwnedSource::Bnb4 {
                node,
                b,
                absmax,
                k,
                n,
                block_size,
                quant_type,
            } => Source::Bnb4(Bnb4 {
                node,
                b,
                absmax,
                k: *k,
                n: *n,
                block_size: *block_size,
                quant_type: *quant_type,
            }),
        }
    }
}

/// Reads the decoder of `model` (its repository `repo`) into a [`ModelSource`].
pub fn read(
    model: &Model,
    data: &Arc<DataSource>,
    repo: &RepoFiles,
    target: &ConvertTo,
) -> Result<ModelSource> {
    let file = &data.file_name;
    let graph = &model.graph;
    let mut g = Graph {
        data,
        inits: HashMap::new(),
        producers: HashMap::new(),
        consumers: HashMap::new(),
    };
    for t in &graph.initializers {
        g.inits.insert(t.name.as_str(), t);
    }
    for n in &graph.nodes {
        for o in &n.outputs {
            g.producers.insert(o.as_str(), n);
        }
        for i in &n.inputs {
            g.consumers.entry(i.as_str()).or_default().push(n);
        }
    }
    let has_decoder_io = graph.inputs.iter().any(|i| i == "input_ids")
        && graph.outputs.iter().any(|o| o == "logits");
    if !has_decoder_io {
        return Err(Error::format(
            file,
            format!(
                "not a decoder LLM export: expected inputs `input_ids` and an output `logits` \
                 (inputs: {}; outputs: {})",
                graph.inputs.join(", "),
                graph.outputs.join(", ")
            ),
        ));
    }

    // config.json (transformers.js repositories), else genai_config.json (onnxruntime-genai
    // builder output) completed from the graph.
    let (config_rel, genai) = if repo.is_file(hf::CONFIG) {
        (hf::CONFIG, false)
    } else {
        (super::GENAI_CONFIG, true)
    };
    let config_file = repo.display(config_rel);
    let config_json = repo.read_json(config_rel)?;
    let Some(obj) = config_json.as_object() else {
        return Err(Error::format(config_file, "not a JSON object"));
    };
    let (mut config, token_ids_obj) = if genai {
        let (config, model_obj) = genai_config(&g, obj, &config_file)?;
        (config, model_obj)
    } else {
        (hf::read_config(obj, &config_file)?, obj.clone())
    };

    let c = config.clone();
    let (hidden, q_dim, kv_dim, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let mut ld = Loader {
        g: &g,
        streamed: data.is_streamed().then(|| data.clone()),
        target,
        weights: ModelWeights::default(),
        seen: HashMap::new(),
        kinds: HashMap::new(),
    };
    let embed = embedding(&g, graph)?;
    let embed_name = Some(source_name(&embed).to_string());
    ld.put_cuts(
        &embed,
        c.vocab_size,
        hidden,
        source_name(&embed),
        vec![(TensorKey::Embed, None)],
    )?;

    let mut layers_seen = 0usize;
    for node in &graph.nodes {
        let is_matmul = matches!(
            node.op_type.as_str(),
            "MatMul" | "MatMulNBits" | "MatMulBnb4" | "MatMulInteger" | "QLinearMatMul" | "Gemm"
        );
        if is_matmul {
            let Some((layer, proj)) = projection(&node.name) else {
                continue;
            };
            if let Some(l) = layer {
                if l >= c.num_layers {
                    return Err(g.err(format!(
                        "node `{}` belongs to layer {l}, but config.json says {} layers",
                        node.name, c.num_layers
                    )));
                }
                layers_seen = layers_seen.max(l + 1);
            }
            let src = g.weight(node)?;
            let key = |t| TensorKey::Layer(layer.unwrap_or(0), t);
            match proj {
                Proj::Output => {
                    let tied = embed_name.as_deref() == Some(source_name(&src));
                    if tied {
                        config.tie_word_embeddings = true;
                        continue;
                    }
                    let cuts = vec![(TensorKey::Output, None)];
                    ld.put_cuts(&src, c.vocab_size, hidden, &node.name, cuts)?;
                    config.tie_word_embeddings = false;
                }
                Proj::Plain(lt) => {
                    let (rows, cols) = match lt {
                        LayerTensor::Q => (q_dim, hidden),
                        LayerTensor::K | LayerTensor::V => (kv_dim, hidden),
                        LayerTensor::O => (hidden, q_dim),
                        LayerTensor::Gate | LayerTensor::Up => (ff, hidden),
                        _ => (hidden, ff),
                    };
                    ld.put_cuts(&src, rows, cols, &node.name, vec![(key(lt), None)])?;
                    let bias = match lt {
                        LayerTensor::Q => Some((LayerTensor::QBias, q_dim)),
                        LayerTensor::K => Some((LayerTensor::KBias, kv_dim)),
                        LayerTensor::V => Some((LayerTensor::VBias, kv_dim)),
                        _ => None,
                    };
                    if let Some(b) = find_bias(&g, node) {
                        match bias {
                            Some((bt, len)) if c.qkv_bias => {
                                let v = ld.vector(b, len)?;
                                ld.put_vector(key(bt), &b.name, v)?;
                            }
                            _ => {
                                return Err(g.err(format!(
                                    "node `{}` adds a bias `{}`, which akari's decoder does not \
                                     have here (config.json: attention_bias/qkv bias is {})",
                                    node.name, b.name, c.qkv_bias
                                )))
                            }
                        }
                    }
                }
                Proj::FusedQkv => {
                    let cuts = vec![
                        (key(LayerTensor::Q), Some(0..q_dim)),
                        (key(LayerTensor::K), Some(q_dim..q_dim + kv_dim)),
                        (
                            key(LayerTensor::V),
                            Some(q_dim + kv_dim..q_dim + 2 * kv_dim),
                        ),
                    ];
                    ld.put_cuts(&src, q_dim + 2 * kv_dim, hidden, &node.name, cuts)?;
                    if let Some(b) = find_bias(&g, node) {
                        if !c.qkv_bias {
                            return Err(g.err(format!(
                                "node `{}` adds a bias `{}`, but config.json says the attention \
                                 has none",
                                node.name, b.name
                            )));
                        }
                        let v = ld.vector(b, q_dim + 2 * kv_dim)?;
                        let parts = [
                            (LayerTensor::QBias, 0..q_dim),
                            (LayerTensor::KBias, q_dim..q_dim + kv_dim),
                            (LayerTensor::VBias, q_dim + kv_dim..q_dim + 2 * kv_dim),
                        ];
                        for (lt, r) in parts {
                            ld.put_vector(key(lt), &b.name, v[r].to_vec())?;
                        }
                    }
                }
                Proj::FusedGateUp => {
                    let cuts = vec![
                        (key(LayerTensor::Gate), Some(0..ff)),
                        (key(LayerTensor::Up), Some(ff..2 * ff)),
                    ];
                    ld.put_cuts(&src, 2 * ff, hidden, &node.name, cuts)?;
                }
            }
        } else if matches!(
            node.op_type.as_str(),
            "Mul" | "SimplifiedLayerNormalization" | "SkipSimplifiedLayerNormalization"
        ) {
            if let Some(key) = norm_of(&node.name) {
                if let Some(t) = g.vector_input(node) {
                    let v = ld.vector(t, hidden)?;
                    ld.put_vector(key, &node.name, v)?;
                }
            }
        }
    }
    if layers_seen != c.num_layers {
        return Err(g.err(format!(
            "config.json says {} layers but the graph has projections for {layers_seen}: not \
             an optimum-style decoder export akari recognises",
            c.num_layers
        )));
    }
    // Norms the graph did not show as a named Mul: by their Hugging Face names.
    let mut norm_keys = vec![TensorKey::OutputNorm];
    for l in 0..c.num_layers {
        norm_keys.push(TensorKey::Layer(l, LayerTensor::AttnNorm));
        norm_keys.push(TensorKey::Layer(l, LayerTensor::FfnNorm));
    }
    for key in norm_keys {
        if !ld.weights.vectors.contains_key(&key) {
            if let Some(t) = g.inits.get(key.to_string().as_str()) {
                let v = ld.vector(t, hidden)?;
                ld.put_vector(key, &t.name, v)?;
            }
        }
    }
    if !ld.weights.has_matrix(TensorKey::Output) {
        if !graph
            .nodes
            .iter()
            .any(|n| projection(&n.name).is_some_and(|(_, p)| p == Proj::Output))
        {
            return Err(
                g.err("no /lm_head/MatMul node: not an optimum-style decoder export".into())
            );
        }
        config.tie_word_embeddings = true;
    }
    let kinds = std::mem::take(&mut ld.kinds);
    let weights = std::mem::take(&mut ld.weights);
    hf::check_complete(&weights, &config)?;
    config.validate(&config_file)?;

    let tok = hf::read_tokenizer_files(repo, &token_ids_obj, config.vocab_size)?;
    let name = repo.name();
    let rel = data.rel.clone();
    let dominant = kinds
        .iter()
        .max_by_key(|(k, n)| (**n, std::cmp::Reverse((*k).clone())))
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| "unknown".into());
    let mut metadata = vec![
        ("onnx.file".to_string(), rel.clone()),
        ("onnx.ir_version".to_string(), model.ir_version.to_string()),
        (
            "onnx.opsets".to_string(),
            model
                .opsets
                .iter()
                .map(|(d, v)| format!("{}:{v}", if d.is_empty() { "ai.onnx" } else { d }))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("onnx.nodes".to_string(), graph.nodes.len().to_string()),
    ];
    metadata.extend(obj.iter().map(|(k, v)| {
        (
            format!("{}.{k}", if genai { "genai" } else { "config" }),
            hf::summary(v),
        )
    }));
    Ok(ModelSource {
        config,
        weights,
        vocab: None,
        chat_template: tok.chat_template,
        name,
        file_type: format!("ONNX {dominant} ({rel})"),
        metadata,
        tokenizer_json: tok.tokenizer_json,
        bos_token: tok.bos_token,
        eos_token: tok.eos_token,
        bos_id: tok.bos_id,
        eos_ids: tok.eos_ids,
        add_bos: tok.add_bos,
    })
}

/// The bias initializer of an `Add` right after a projection, if there is one.
fn find_bias<'a>(g: &Graph<'a>, node: &'a Node) -> Option<&'a Tensor> {
    let out = g.result_of(node)?;
    g.consumers
        .get(out)?
        .iter()
        .filter(|n| n.op_type == "Add")
        .find_map(|n| g.vector_input(n))
}

/// `src` holds a `[k, n]` matrix of `ty`; returns its transpose `[n, k]` as
/// `target(default)`. Same-type targets transpose the element bytes; others go through f32.
fn transpose_to_matrix(
    name: &str,
    ty: GgmlType,
    k: usize,
    n: usize,
    src: &[u8],
    target: &ConvertTo,
) -> Result<Matrix> {
    let default = ty
        .backend_format()
        .ok_or_else(|| Error::UnsupportedWeightType {
            tensor: name.to_string(),
            kind: ty.name().to_string(),
        })?;
    let fmt = target(default);
    if k % fmt.block_size() != 0 {
        return Err(Error::InvalidArgument(format!(
            "tensor `{name}`: rows of {k} values cannot be stored as {fmt}"
        )));
    }
    let es = ty.block_bytes();
    if Some(src.len()) != k.checked_mul(n).and_then(|x| x.checked_mul(es)) {
        return Err(Error::InvalidArgument(format!(
            "tensor `{name}`: {} bytes for {k}x{n} {ty}",
            src.len()
        )));
    }
    let rb = fmt.row_bytes(k);
    let mut out = vec![0u8; n * rb];
    if n > 0 && rb > 0 {
        if ty.native_format() == Some(fmt) {
            out.par_chunks_mut(rb).enumerate().for_each(|(r, dst)| {
                for (c, d) in dst.chunks_exact_mut(es).enumerate() {
                    let at = (c * n + r) * es;
                    d.copy_from_slice(&src[at..at + es]);
                }
            });
        } else {
            out.par_chunks_mut(rb).enumerate().for_each_init(
                || (vec![0f32; k], vec![0f32; 1]),
                |(row, one), (r, dst)| {
                    for (c, x) in row.iter_mut().enumerate() {
                        let at = (c * n + r) * es;
                        // A single value of a plain float type always decodes.
                        let _ = ty.dequantize_row(&src[at..at + es], one);
                        *x = one[0];
                    }
                    fmt.quantize_row(row, dst);
                },
            );
        }
    }
    Matrix::new(name, fmt, n, k, Bytes::from_vec(out))
}

/// An 8-bit integer matrix (`[rows, cols]`, or `[cols, rows]` when `transposed`) with
/// per-tensor or per-row `dq`, as `target(Q8_0)`: symmetric ones (int8 with zero point 0,
/// uint8 with 128, in every row) become Q8_0 blocks of the same integers, each block taking
/// its row's scale (as f16); others (asymmetric zero points: `q − zp` spans up to 511
/// levels) are dequantised exactly to f32, `(q − zp)·scale`, then stored as the target.
fn int8_to_matrix(
    t: &Tensor,
    transposed: bool,
    rows: usize,
    cols: usize,
    bytes: &[u8],
    dq: &Dequant,
    target: &ConvertTo,
) -> Result<Matrix> {
    let signed = match t.data_type {
        dtype::INT8 => true,
        dtype::UINT8 => false,
        _ => return Err(unsupported(t)),
    };
    if Some(bytes.len()) != rows.checked_mul(cols) {
        return Err(Error::InvalidArgument(format!(
            "tensor `{}`: {} bytes for {rows}x{cols} 8-bit values",
            t.name,
            bytes.len()
        )));
    }
    for (what, len) in [
        ("scales", dq.scale.len()),
        ("zero points", dq.zero_point.len()),
    ] {
        if len != 1 && !(dq.along_rows && len == rows) {
            return Err(Error::InvalidArgument(format!(
                "tensor `{}`: {len} {what} for a {rows}x{cols} matrix; only per-tensor and \
                 per-output-channel quantisation are supported",
                t.name
            )));
        }
    }
    let at = |v: &[f32], r: usize| v[if v.len() == 1 { 0 } else { r }];
    let zp = |r: usize| dq.zero_point[if dq.zero_point.len() == 1 { 0 } else { r }];
    let fmt = target(blocks_or_f32(cols));
    if cols % fmt.block_size() != 0 {
        return Err(Error::InvalidArgument(format!(
            "tensor `{}`: rows of {cols} values cannot be stored as {fmt}",
            t.name
        )));
    }
    let val = |r: usize, c: usize| -> i32 {
        let b = bytes[if transposed {
            c * rows + r
        } else {
            r * cols + c
        }];
        (if signed { b as i8 as i32 } else { b as i32 }) - zp(r)
    };
    let symmetric =
        (0..dq.zero_point.len()).all(|r| (signed && zp(r) == 0) || (!signed && zp(r) == 128));
    let direct = fmt == QuantFormat::Q8_0 && symmetric;
    let rb = fmt.row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    if rows > 0 && rb > 0 {
        if direct {
            out.par_chunks_mut(rb).enumerate().for_each(|(r, dst)| {
                let d = f16::from_f32(at(&dq.scale, r)).to_le_bytes();
                for (j, blk) in dst.chunks_exact_mut(fmt.block_bytes()).enumerate() {
                    blk[..2].copy_from_slice(&d);
                    for i in 0..QK {
                        blk[2 + i] = val(r, j * QK + i) as i8 as u8;
                    }
                }
            });
        } else {
            out.par_chunks_mut(rb).enumerate().for_each_init(
                || vec![0f32; cols],
                |row, (r, dst)| {
                    let scale = at(&dq.scale, r);
                    for (c, x) in row.iter_mut().enumerate() {
                        *x = val(r, c) as f32 * scale;
                    }
                    fmt.quantize_row(row, dst);
                },
            );
        }
    }
    Matrix::new(&t.name, fmt, rows, cols, Bytes::from_vec(out))
}

/// Rows of Q8_0 blocks for values dequantised from integers; rows that are not whole blocks
/// become f32.
fn blocks_or_f32(cols: usize) -> QuantFormat {
    if cols % QK == 0 {
        QuantFormat::Q8_0
    } else {
        QuantFormat::F32
    }
}

/// The format a `MatMulNBits` weight is stored as before `target`: its own 4-bit blocks when
/// they line up with ours. Our block formats need rows of whole 32-value blocks; a K that is
/// not a multiple of 32 (hidden sizes like 80) is dequantised exactly to f32 rows of the true
/// K instead of padding our matrices: the padding would have to be carried by every
/// activation too.
fn nbits_format(nb: &NBits<'_>) -> QuantFormat {
    if nb.k % QK != 0 {
        QuantFormat::F32
    } else if nb.bits == 4 && nb.block_size % QK == 0 {
        if nb.zero_points.is_some() {
            QuantFormat::Q4_1
        } else {
            QuantFormat::Q4_0
        }
    } else {
        QuantFormat::Q8_0
    }
}

/// A `MatMulNBits` weight as a `[N, K]` matrix: Q4_0/Q4_1 block for block when the layout
/// allows, else through f32.
fn nbits_to_matrix(nb: &NBits<'_>, data: &DataSource, target: &ConvertTo) -> Result<Matrix> {
    let name = nb.node;
    let err = |msg: String| Error::format(&data.file_name, format!("node `{name}`: {msg}"));
    let (k, n, bits, bs) = (nb.k, nb.n, nb.bits, nb.block_size);
    if !(2..=8).contains(&bits) || !(16..=1 << 16).contains(&bs) || !bs.is_power_of_two() {
        return Err(err(format!(
            "bits = {bits}, block_size = {bs} are not supported"
        )));
    }
    // When K is not a multiple of block_size, the last block of every row is padded (with
    // zeros by onnxruntime's quantiser) and `scales` has ceil(K / block_size) entries per row.
    // The padding is dropped: only the first K values of a row are read.
    let k_blocks = k.div_ceil(bs);
    let blob = bs * bits / 8;
    if nb.b.data_type != dtype::UINT8 {
        return Err(unsupported(nb.b));
    }
    let b = data.bytes(nb.b)?;
    let want = n.checked_mul(k_blocks).and_then(|x| x.checked_mul(blob));
    if Some(b.len()) != want {
        return Err(err(format!(
            "B `{}` has {} bytes, expected N·k_blocks·blob = {n}·{k_blocks}·{blob}",
            nb.b.name,
            b.len(),
        )));
    }
    let scale_ty = float_type(nb.scales).ok_or_else(|| unsupported(nb.scales))?;
    let scales = ggml::to_f32(
        &nb.scales.name,
        scale_ty,
        n * k_blocks,
        &data.bytes(nb.scales)?,
    )?;
    let zp_per_row = (k_blocks * bits).div_ceil(8);
    let zps: Option<Bytes> = match nb.zero_points {
        None => None,
        Some(z) if z.data_type == dtype::UINT8 => {
            let zb = data.bytes(z)?;
            if zb.len() != n * zp_per_row {
                return Err(err(format!(
                    "zero points `{}` have {} bytes, expected {}",
                    z.name,
                    zb.len(),
                    n * zp_per_row
                )));
            }
            Some(zb)
        }
        Some(z) => return Err(unsupported(z)),
    };
    let default_zp = 1u32 << (bits - 1);
    let zp = |row: usize, blk: usize| -> u32 {
        match &zps {
            None => default_zp,
            Some(z) => {
                let bit = blk * bits;
                let byte = z[row * zp_per_row + bit / 8] as u32;
                (byte >> (bit % 8)) & ((1 << bits) - 1)
            }
        }
    };
    let q = |row: usize, i: usize| -> u32 {
        let base = row * k_blocks * blob;
        let bit = i * bits;
        let byte = b[base + bit / 8] as u32;
        (byte >> (bit % 8)) & ((1 << bits) - 1)
    };
    let fmt = target(nbits_format(nb));
    if k % fmt.block_size() != 0 {
        return Err(err(format!(
            "rows of K = {k} values cannot be stored as {fmt} (K is not a multiple of {})",
            fmt.block_size()
        )));
    }
    let rb = fmt.row_bytes(k);
    let mut out = vec![0u8; n * rb];
    let direct = bits == 4
        && bs % QK == 0
        && (fmt == QuantFormat::Q4_0 && zps.is_none() || fmt == QuantFormat::Q4_1);
    if direct {
        let bb = fmt.block_bytes();
        out.par_chunks_mut(rb).enumerate().for_each(|(r, dst)| {
            for (j, blk) in dst.chunks_exact_mut(bb).enumerate() {
                let ob = j * QK / bs; // the ONNX block
                let d = scales[r * k_blocks + ob];
                let off = if fmt == QuantFormat::Q4_1 { 4 } else { 2 };
                blk[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                if fmt == QuantFormat::Q4_1 {
                    let m = -d * zp(r, ob) as f32;
                    blk[2..4].copy_from_slice(&f16::from_f32(m).to_le_bytes());
                }
                for i in 0..QK / 2 {
                    let lo = q(r, j * QK + i);
                    let hi = q(r, j * QK + i + QK / 2);
                    blk[off + i] = (lo | (hi << 4)) as u8;
                }
            }
        });
    } else {
        out.par_chunks_mut(rb).enumerate().for_each_init(
            || vec![0f32; k],
            |row, (r, dst)| {
                for (i, x) in row.iter_mut().enumerate() {
                    let ob = i / bs;
                    *x = (q(r, i) as f32 - zp(r, ob) as f32) * scales[r * k_blocks + ob];
                }
                fmt.quantize_row(row, dst);
            },
        );
    }
    Matrix::new(name, fmt, n, k, Bytes::from_vec(out))
}

/// bitsandbytes' FP4 levels as onnxruntime decodes them (`fp4_qaunt_map`; code 8 is +0).
const FP4_LEVELS: [f32; 16] = [
    0.0,
    0.005_208_333_5,
    0.666_666_7,
    1.0,
    0.333_333_34,
    0.5,
    0.166_666_67,
    0.25,
    0.0,
    -0.005_208_333_5,
    -0.666_666_7,
    -1.0,
    -0.333_333_34,
    -0.5,
    -0.166_666_67,
    -0.25,
];

/// bitsandbytes' NF4 levels (quantiles of a normal distribution), as onnxruntime decodes them.
const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

fn bnb4_name(quant_type: i64) -> &'static str {
    match quant_type {
        0 => "FP4",
        1 => "NF4",
        _ => "unknown",
    }
}

/// A `MatMulBnb4` weight as a `[N, K]` matrix: dequantised through its 16-level table to f32
/// (`level·absmax`), then stored as `target(Q8_0)` (f32 when K is not a multiple of 32).
/// Q8_0 because none of our 4-bit block formats holds these levels exactly: Q4_0/Q4_1 levels
/// are uniform, NF4's and FP4's are not, so a 4-bit copy would be a second, lossy
/// quantisation; Q8_0 rounds each value by at most 1/254 of its block's maximum.
fn bnb4_to_matrix(bq: &Bnb4<'_>, data: &DataSource, target: &ConvertTo) -> Result<Matrix> {
    let name = bq.node;
    let err = |msg: String| Error::format(&data.file_name, format!("node `{name}`: {msg}"));
    let (k, n, bs) = (bq.k, bq.n, bq.block_size);
    let levels = match bq.quant_type {
        0 => &FP4_LEVELS,
        1 => &NF4_LEVELS,
        q => return Err(err(format!("quant_type {q} is not FP4 (0) or NF4 (1)"))),
    };
    let numel = n
        .checked_mul(k)
        .ok_or_else(|| err("N·K overflows".into()))?;
    if bq.b.data_type != dtype::UINT8 {
        return Err(unsupported(bq.b));
    }
    let b = data.bytes(bq.b)?;
    if b.len() != numel.div_ceil(2) {
        return Err(err(format!(
            "B `{}` has {} bytes, expected ceil(N·K / 2) = {}",
            bq.b.name,
            b.len(),
            numel.div_ceil(2)
        )));
    }
    let ty = float_type(bq.absmax).ok_or_else(|| unsupported(bq.absmax))?;
    let absmax = ggml::to_f32(
        &bq.absmax.name,
        ty,
        numel.div_ceil(bs),
        &data.bytes(bq.absmax)?,
    )?;
    let fmt = target(blocks_or_f32(k));
    if k % fmt.block_size() != 0 {
        return Err(err(format!(
            "rows of K = {k} values cannot be stored as {fmt}"
        )));
    }
    let rb = fmt.row_bytes(k);
    let mut out = vec![0u8; n * rb];
    if rb > 0 {
        out.par_chunks_mut(rb).enumerate().for_each_init(
            || vec![0f32; k],
            |row, (r, dst)| {
                for (c, x) in row.iter_mut().enumerate() {
                    let i = r * k + c;
                    let code = if i % 2 == 0 {
                        b[i / 2] >> 4
                    } else {
                        b[i / 2] & 0x0f
                    };
                    *x = levels[code as usize] * absmax[i / bs];
                }
                fmt.quantize_row(row, dst);
            },
        );
    }
    Matrix::new(name, fmt, n, k, Bytes::from_vec(out))
}

/// The name of the tensor a weight is read from (to recognise a tied lm_head).
fn source_name<'a>(src: &Source<'a>) -> &'a str {
    match src {
        Source::Dense { t, .. } => &t.name,
        Source::NBits(nb) => &nb.b.name,
        Source::Bnb4(bq) => &bq.b.name,
    }
}

/// The embedding: the data of the `Gather` (optimum; onnxruntime-genai fp32, there through a
/// `Transpose` of the lm_head) or `com.microsoft.GatherBlockQuantized` (onnxruntime-genai
/// int4, sharing the lm_head's 4-bit blocks) in `/model/embed_tokens/`; else the
/// `model.embed_tokens.weight` initializer.
fn embedding<'a>(g: &Graph<'a>, graph: &'a super::proto::Graph) -> Result<Source<'a>> {
    let node = graph.nodes.iter().find(|n| {
        matches!(n.op_type.as_str(), "Gather" | "GatherBlockQuantized")
            && n.name.starts_with("/model/embed_tokens/")
    });
    let Some(node) = node else {
        let t = g
            .inits
            .get("model.embed_tokens.weight")
            .copied()
            .ok_or_else(|| {
                g.err(
                    "no embedding: no /model/embed_tokens/Gather node and no \
                 `model.embed_tokens.weight` initializer"
                        .into(),
                )
            })?;
        return Ok(Source::Dense {
            t,
            transposed: false,
            dq: None,
        });
    };
    let data = node
        .input(0)
        .ok_or_else(|| g.err(format!("node `{}` has no data input", node.name)))?;
    if node.op_type == "GatherBlockQuantized" {
        if node.attr_i("gather_axis").unwrap_or(0) != 0
            || node.attr_i("quantize_axis").unwrap_or(1) != 1
        {
            return Err(g.err(format!(
                "node `{}`: only gather_axis 0 / quantize_axis 1 are supported",
                node.name
            )));
        }
        // The blocks may be reshaped from the lm_head's [N, k_blocks, blob] layout; the bytes
        // are the same.
        let mut name = data;
        if let Some(p) = g.producers.get(name) {
            if p.op_type == "Reshape" {
                name = p.input(0).unwrap_or_default();
            }
        }
        let b = g.inits.get(name).copied().ok_or_else(|| {
            g.err(format!(
                "node `{}`: quantised data `{name}` is not an initializer",
                node.name
            ))
        })?;
        let attr = |n: &str, default: i64| node.attr_i(n).unwrap_or(default);
        let shape = b.shape().unwrap_or_default();
        let vocab = shape.first().copied().unwrap_or(0);
        let bits = attr("bits", 4).max(0) as usize;
        let block_size = attr("block_size", 128).max(0) as usize;
        let n_bytes = shape
            .iter()
            .skip(1)
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(0);
        return Ok(Source::NBits(NBits {
            node: &node.name,
            b,
            scales: g.init(node, 2, "scales")?,
            zero_points: match node.input(3) {
                Some(_) => Some(g.init(node, 3, "zero_points")?),
                None => None,
            },
            k: n_bytes.saturating_mul(8).checked_div(bits).unwrap_or(0),
            n: vocab,
            bits,
            block_size,
        }));
    }
    match g.dense(data, node, false)? {
        Source::Dense {
            t,
            transposed,
            dq: None,
        } => {
            let mut dq = None;
            if float_type(t).is_none() {
                // 8-bit embeddings (quantize_dynamic): the Gather's rows are dequantised by
                // a DequantizeLinear after it.
                let out = node.outputs.first().map(String::as_str).unwrap_or_default();
                let dql = g.consumers_of(out, "DequantizeLinear");
                let Some(dql) = dql.first() else {
                    return Err(unsupported(t));
                };
                // Per tensor only: a vector here would run along the gathered rows' features.
                dq = Some(g.dequant(dql, 1, 2, false)?);
            }
            Ok(Source::Dense { t, transposed, dq })
        }
        _ => Err(g.err(format!(
            "the embedding `{data}` is not a plain [vocab, hidden] initializer"
        ))),
    }
}

/// An onnxruntime-genai `genai_config.json` → [`ModelConfig`], completed from the graph:
/// the MLP width from the gate projection, the norm epsilon from the first
/// (Skip)SimplifiedLayerNormalization, rotary frequencies from GroupQueryAttention's cos/sin
/// caches, q/k/v bias from an `Add` after the qkv projection. Also returns the `model`
/// object (its `bos_token_id` / `eos_token_id` back up the tokenizer files).
fn genai_config(
    g: &Graph<'_>,
    obj: &serde_json::Map<String, serde_json::Value>,
    file: &str,
) -> Result<(ModelConfig, serde_json::Map<String, serde_json::Value>)> {
    use serde_json::{json, Value};
    let err = |msg: String| Error::format(file, msg);
    let model = obj
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| err("`model` is missing or not an object".into()))?;
    let decoder = model
        .get("decoder")
        .and_then(Value::as_object)
        .ok_or_else(|| err("`model.decoder` is missing or not an object".into()))?;
    let num = |o: &serde_json::Map<String, Value>, key: &str| -> Result<u64> {
        o.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| err(format!("`{key}` is missing or not a non-negative integer")))
    };
    let arch = model
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| err("`model.type` is missing".into()))?;
    let nodes: Vec<&Node> = g.producers.values().copied().collect();
    let named = |layer_path: &str| {
        let mut found: Vec<&Node> = nodes
            .iter()
            .copied()
            .filter(|n| n.name.starts_with(layer_path))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.name == b.name);
        found
    };
    // MLP width: N of layer 0's gate (or fused gate_up) projection.
    let mut ff = None;
    for n in named("/model/layers.0/mlp/") {
        let Some((_, proj)) = projection(&n.name) else {
            continue;
        };
        let fused = proj == Proj::FusedGateUp;
        if proj != Proj::Plain(LayerTensor::Gate) && !fused {
            continue;
        }
        let width = match g.weight(n)? {
            Source::Dense { t, transposed, .. } => {
                let shape = t.shape().unwrap_or_default();
                let i = usize::from(transposed);
                shape.get(i).copied().unwrap_or(0)
            }
            Source::NBits(nb) => nb.n,
            Source::Bnb4(bq) => bq.n,
        };
        ff = Some(if fused { width / 2 } else { width });
    }
    let ff = ff.ok_or_else(|| {
        g.err(
            "no /model/layers.0/mlp/gate_proj (or gate_up_proj) projection to size the MLP".into(),
        )
    })?;
    let eps = nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op_type.as_str(),
                "SimplifiedLayerNormalization" | "SkipSimplifiedLayerNormalization"
            )
        })
        .find_map(|n| n.attr("epsilon").map(|a| a.f))
        .unwrap_or(1e-5);
    let gqa = named("/model/layers.0/attn/")
        .into_iter()
        .find(|n| n.op_type == "GroupQueryAttention")
        .ok_or_else(|| {
            g.err(
                "no /model/layers.0/attn/GroupQueryAttention node: not an onnxruntime-genai \
                   decoder akari recognises"
                    .into(),
            )
        })?;
    if gqa.attr_i("do_rotary") != Some(1) || gqa.attr_i("rotary_interleaved").unwrap_or(0) != 0 {
        return Err(g.err(format!(
            "node `{}`: only GroupQueryAttention with do_rotary = 1 and rotary_interleaved = 0 \
             (rotate-half rotary embeddings inside the op) is supported",
            gqa.name
        )));
    }
    let head_dim = num(decoder, "head_size")? as usize;
    let (theta, factors) = rope_from_caches(g, gqa, head_dim)?;
    let bias = named("/model/layers.0/attn/").into_iter().any(|n| {
        projection(&n.name)
            .is_some_and(|(_, p)| matches!(p, Proj::FusedQkv | Proj::Plain(LayerTensor::Q)))
            && find_bias(g, n).is_some()
    });
    let hf = json!({
        "model_type": arch,
        "vocab_size": num(model, "vocab_size")?,
        "hidden_size": num(decoder, "hidden_size")?,
        "intermediate_size": ff,
        "num_hidden_layers": num(decoder, "num_hidden_layers")?,
        "num_attention_heads": num(decoder, "num_attention_heads")?,
        "num_key_value_heads": num(decoder, "num_key_value_heads")?,
        "head_dim": head_dim,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "max_position_embeddings": num(model, "context_length")?,
        "tie_word_embeddings": false,
        "attention_bias": bias,
    });
    let mut config = ModelConfig::from_hf_json(&hf.to_string(), file)?;
    if let Some(scaling) = factors {
        config.rope_scaling = scaling;
        config.validate(file)?;
    }
    Ok((config, model.clone()))
}

/// A rotary cache tensor's row count and row 1.
fn cache_row1(g: &Graph<'_>, t: &Tensor, half: usize) -> Result<(usize, Vec<f64>)> {
    let shape = t.shape().unwrap_or_default();
    if shape.len() != 2 || shape[1] != half || shape[0] < 2 {
        return Err(Error::ShapeMismatch {
            tensor: t.name.clone(),
            expected: vec![shape.first().copied().unwrap_or(0), half],
            got: shape,
        });
    }
    let ty = float_type(t).ok_or_else(|| unsupported(t))?;
    let bytes = g.data.bytes(t)?;
    let row1 = bytes
        .get(half * ty.block_bytes()..2 * half * ty.block_bytes())
        .ok_or_else(|| g.err(format!("tensor `{}`: too short", t.name)))?;
    let vals = ggml::to_f32(&t.name, ty, half, row1)?;
    Ok((shape[0], vals.into_iter().map(f64::from).collect()))
}

/// Row 1 of a cos and a sin cache → per-dimension angular frequencies and their common
/// magnitude (the attention factor longrope folds into the caches).
fn frequencies(
    g: &Graph<'_>,
    cos: &Tensor,
    sin: &Tensor,
    half: usize,
) -> Result<(usize, Vec<f64>, f64)> {
    let (rows, c) = cache_row1(g, cos, half)?;
    let (_, s) = cache_row1(g, sin, half)?;
    let mags: Vec<f64> = c
        .iter()
        .zip(&s)
        .map(|(c, s)| (c * c + s * s).sqrt())
        .collect();
    let mag = mags.iter().sum::<f64>() / half.max(1) as f64;
    if mags.iter().any(|m| (m - mag).abs() > 1e-4 * mag.max(1.0)) {
        return Err(g.err(format!(
            "rotary caches `{}` / `{}`: cos² + sin² differs between dimensions",
            cos.name, sin.name
        )));
    }
    let inv = c.iter().zip(&s).map(|(c, s)| s.atan2(*c)).collect();
    Ok((rows, inv, mag))
}

/// Where GroupQueryAttention's cos (input 7) or sin (input 8) cache comes from: an
/// initializer, or an `If` choosing between two `Constant`s by sequence length (longrope):
/// `(the one cache or the short one, the long one)`.
fn cache_sources<'a>(
    g: &Graph<'a>,
    gqa: &Node,
    i: usize,
) -> Result<(&'a Tensor, Option<&'a Tensor>)> {
    let name = gqa
        .input(i)
        .ok_or_else(|| g.err(format!("node `{}` has no rotary cache input {i}", gqa.name)))?;
    if let Some(t) = g.inits.get(name) {
        return Ok((t, None));
    }
    let p = g.producers.get(name).ok_or_else(|| {
        g.err(format!(
            "node `{}`: rotary cache `{name}` has no source",
            gqa.name
        ))
    })?;
    if p.op_type != "If" {
        return Err(g.err(format!(
            "node `{}`: rotary cache `{name}` comes from a `{}` node (`{}`), which akari does not \
             recognise (supported: an initializer, or an If between two constants)",
            gqa.name, p.op_type, p.name
        )));
    }
    let j = p.outputs.iter().position(|o| o == name).unwrap_or(0);
    let branch = |attr: &str| -> Result<&'a Tensor> {
        let sub = p
            .attr(attr)
            .and_then(|a| a.g.as_deref())
            .ok_or_else(|| g.err(format!("node `{}` has no {attr}", p.name)))?;
        let out = sub
            .outputs
            .get(j)
            .ok_or_else(|| g.err(format!("node `{}`: {attr} has too few outputs", p.name)))?;
        if let Some(t) = sub.initializers.iter().find(|t| &t.name == out) {
            return Ok(t);
        }
        sub.nodes
            .iter()
            .find(|n| n.op_type == "Constant" && n.outputs.first() == Some(out))
            .and_then(|n| n.attr("value"))
            .and_then(|a| a.t.as_deref())
            .ok_or_else(|| {
                g.err(format!(
                    "node `{}`: {attr} output `{out}` is not a constant tensor",
                    p.name
                ))
            })
    };
    let (a, b) = (branch("then_branch")?, branch("else_branch")?);
    let rows = |t: &Tensor| t.dims.first().copied().unwrap_or(0);
    Ok(if rows(a) <= rows(b) {
        (a, Some(b))
    } else {
        (b, Some(a))
    })
}

/// The rotary configuration that reproduces GroupQueryAttention's `cos_cache` / `sin_cache`
/// (`[positions, head_dim/2]`, row p = cos/sin of p·inv_freq, times longrope's attention
/// factor): `(rope_theta, scaling)`.
fn rope_from_caches(
    g: &Graph<'_>,
    gqa: &Node,
    head_dim: usize,
) -> Result<(f64, Option<akari_core::RopeScaling>)> {
    use akari_core::RopeScaling;
    let half = head_dim / 2;
    let (cos, cos_long) = cache_sources(g, gqa, 7)?;
    let (sin, sin_long) = cache_sources(g, gqa, 8)?;
    let (rows, inv, mag) = frequencies(g, cos, sin, half)?;
    let base = |theta: f64, i: usize| theta.powf(-2.0 * i as f64 / head_dim as f64);
    if let (Some(cl), Some(sl)) = (cos_long, sin_long) {
        // longrope: only base/factor is fixed by the caches; take theta = 10000 and express
        // both caches as divisors of its frequencies.
        let (_, inv_long, mag_long) = frequencies(g, cl, sl, half)?;
        if (mag - mag_long).abs() > 1e-4 {
            return Err(g.err(format!(
                "node `{}`: short and long rotary caches have different attention factors \
                 ({mag} vs {mag_long})",
                gqa.name
            )));
        }
        let theta = 10_000.0;
        let factors = |inv: &[f64]| -> Vec<f32> {
            (0..half)
                .map(|i| (base(theta, i) / inv[i]) as f32)
                .collect()
        };
        return Ok((
            theta,
            Some(RopeScaling::LongRope {
                short_factor: factors(&inv),
                long_factor: factors(&inv_long),
                original_max_position_embeddings: rows,
                attention_factor: mag as f32,
            }),
        ));
    }
    if (mag - 1.0).abs() > 1e-4 {
        return Err(g.err(format!(
            "node `{}`: the rotary caches are scaled by {mag} without a long/short switch: not \
             supported yet",
            gqa.name
        )));
    }
    if half < 2 || inv[1] <= 0.0 {
        return Ok((10_000.0, None));
    }
    let theta = (-(head_dim as f64 / 2.0) * inv[1].ln()).exp();
    let theta = if (theta - theta.round()).abs() / theta < 1e-3 {
        theta.round()
    } else {
        theta
    };
    let factors: Vec<f32> = (0..half)
        .map(|i| (base(theta, i) / inv[i]) as f32)
        .collect();
    if factors.iter().all(|f| (f - 1.0).abs() < 1e-3) {
        Ok((theta, None))
    } else {
        Ok((theta, Some(RopeScaling::FreqFactors(factors))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{Attribute, TensorData};
    use std::path::Path;

    fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> Tensor {
        Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            data: TensorData::Raw(Bytes::from_vec(raw)),
        }
    }

    fn rows_f32(m: &Matrix) -> Vec<Vec<f32>> {
        (0..m.rows)
            .map(|r| {
                let mut row = vec![0f32; m.cols];
                m.row_f32(r, &mut row);
                row
            })
            .collect()
    }

    /// MatMulNBits weights of every layout decode to `(q − zp)·scale`, whatever the target.
    #[test]
    fn matmul_nbits_dequantises_exactly() {
        let data = DataSource::new(Path::new("t.onnx"), Bytes::from_vec(vec![0]));
        let n = 3usize;
        let mut seed = 1u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for (k, bits, bs, with_zp, want) in [
            (128usize, 4, 32, false, QuantFormat::Q4_0),
            (128, 4, 64, false, QuantFormat::Q4_0),
            (128, 4, 32, true, QuantFormat::Q4_1),
            (128, 4, 128, true, QuantFormat::Q4_1),
            (128, 4, 16, false, QuantFormat::Q8_0),
            (128, 8, 32, true, QuantFormat::Q8_0),
            // Padded last blocks (K not a multiple of block_size): the padding is dropped;
            // rows that are not whole 32-value blocks become f32.
            (80, 4, 32, false, QuantFormat::F32),
            (144, 4, 32, true, QuantFormat::F32),
            (80, 8, 16, true, QuantFormat::F32),
            (96, 8, 64, true, QuantFormat::Q8_0),
            (96, 4, 64, false, QuantFormat::Q4_0),
        ] {
            let k_blocks = k.div_ceil(bs);
            let blob = bs * bits / 8;
            let b: Vec<u8> = (0..n * k_blocks * blob).map(|_| rnd() as u8).collect();
            // Scales exact in f16, so Q4_0/Q4_1 blocks hold them without rounding.
            let scales: Vec<f32> = (0..n * k_blocks).map(|i| (i as f32 + 1.0) / 64.0).collect();
            let zp_row = (k_blocks * bits).div_ceil(8);
            let zps: Vec<u8> = (0..n * zp_row).map(|_| rnd() as u8).collect();
            let bt = tensor(
                "b",
                &[n as i64, k_blocks as i64, blob as i64],
                dtype::UINT8,
                b.clone(),
            );
            let st = tensor(
                "s",
                &[(n * k_blocks) as i64],
                dtype::FLOAT,
                scales.iter().flat_map(|x| x.to_le_bytes()).collect(),
            );
            let zt = tensor("z", &[zps.len() as i64], dtype::UINT8, zps.clone());
            let node = Node {
                name: "/lm_head/MatMul_Q4".into(),
                attributes: vec![Attribute::default()],
                ..Node::default()
            };
            let nb = NBits {
                node: &node.name,
                b: &bt,
                scales: &st,
                zero_points: with_zp.then_some(&zt),
                k,
                n,
                bits,
                block_size: bs,
            };
            let get = |bytes: &[u8], idx: usize| -> f32 {
                let bit = idx * bits;
                ((bytes[bit / 8] as u32 >> (bit % 8)) & ((1 << bits) - 1)) as f32
            };
            let expect: Vec<Vec<f32>> = (0..n)
                .map(|r| {
                    (0..k)
                        .map(|i| {
                            let blk = i / bs;
                            let q = get(&b[r * k_blocks * blob..], i);
                            let zp = if with_zp {
                                get(&zps[r * zp_row..], blk)
                            } else {
                                (1 << (bits - 1)) as f32
                            };
                            (q - zp) * scales[r * k_blocks + blk]
                        })
                        .collect()
                })
                .collect();
            let m = nbits_to_matrix(&nb, &data, &|d| d).unwrap();
            assert_eq!(m.format, want, "bits {bits} block {bs} zp {with_zp}");
            let f = nbits_to_matrix(&nb, &data, &|_| QuantFormat::F32).unwrap();
            assert_eq!(rows_f32(&f), expect, "f32, bits {bits} block {bs}");
            if want == QuantFormat::F32 {
                assert_eq!(rows_f32(&m), expect, "bits {bits} block {bs} K {k}");
                // Such rows cannot be 32-value blocks: a clear error, not a panic.
                assert!(nbits_to_matrix(&nb, &data, &|_| QuantFormat::Q8_0).is_err());
            }
            if want != QuantFormat::Q8_0 {
                // 4-bit blocks are the same values, not a requantisation.
                let got = rows_f32(&m);
                for (g, e) in got.iter().flatten().zip(expect.iter().flatten()) {
                    assert!((g - e).abs() <= 1e-3 * e.abs().max(1.0), "{g} vs {e}");
                }
            }
        }
    }

    /// 8-bit weights stored `[K, N]` with per-tensor or per-output-channel scales and zero
    /// points decode to `(q − zp)·scale` per row.
    #[test]
    fn int8_per_channel_dequantises_exactly() {
        let (rows, cols) = (3usize, 64usize);
        let q: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 251) as u8).collect();
        let scales = vec![0.5f32, 0.25, 0.125];
        for (signed, zps, fmt) in [
            (true, vec![0], QuantFormat::Q8_0),
            (true, vec![0, 0, 0], QuantFormat::Q8_0),
            (false, vec![128, 128, 128], QuantFormat::Q8_0),
            (false, vec![3, 200, 128], QuantFormat::Q8_0),
            (false, vec![17], QuantFormat::Q8_0),
        ] {
            let ty = if signed { dtype::INT8 } else { dtype::UINT8 };
            let t = tensor("w", &[cols as i64, rows as i64], ty, q.clone());
            let dq = Dequant {
                scale: scales.clone(),
                zero_point: zps.clone(),
                along_rows: true,
            };
            let expect: Vec<Vec<f32>> = (0..rows)
                .map(|r| {
                    (0..cols)
                        .map(|c| {
                            let b = q[c * rows + r];
                            let v = if signed { b as i8 as i32 } else { b as i32 };
                            let zp = zps[if zps.len() == 1 { 0 } else { r }];
                            (v - zp) as f32 * scales[r]
                        })
                        .collect()
                })
                .collect();
            let f = int8_to_matrix(&t, true, rows, cols, &q, &dq, &|_| QuantFormat::F32).unwrap();
            assert_eq!(rows_f32(&f), expect, "signed {signed} zp {zps:?}");
            let m = int8_to_matrix(&t, true, rows, cols, &q, &dq, &|d| d).unwrap();
            assert_eq!(m.format, fmt);
            for (g, e) in rows_f32(&m).iter().flatten().zip(expect.iter().flatten()) {
                // Symmetric: the same integers (scales exact in f16); else requantised.
                assert!((g - e).abs() <= 1.0, "{g} vs {e}");
            }
            if zps.iter().all(|&z| z == if signed { 0 } else { 128 }) {
                assert_eq!(rows_f32(&m), expect, "symmetric: same integers");
            }
        }
        // A vector along the input features is not per-row: an error, not a wrong matrix.
        let t = tensor("w", &[cols as i64, rows as i64], dtype::INT8, q.clone());
        let dq = Dequant {
            scale: vec![1.0; cols],
            zero_point: vec![0],
            along_rows: false,
        };
        assert!(int8_to_matrix(&t, true, rows, cols, &q, &dq, &|d| d).is_err());
    }

    /// The level tables are onnxruntime's, bit for bit (read back from a `MatMulBnb4` run on
    /// an identity matrix, codes 0..15).
    #[test]
    fn bnb4_levels_are_onnxruntimes() {
        let fp4: [u32; 16] = [
            0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab,
            0x3e800000, 0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000,
            0xbe2aaaab, 0xbe800000,
        ];
        let nf4: [u32; 16] = [
            0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871,
            0x00000000, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab,
            0x3f3913b3, 0x3f800000,
        ];
        assert_eq!(FP4_LEVELS.map(f32::to_bits), fp4);
        assert_eq!(NF4_LEVELS.map(f32::to_bits), nf4);
    }

    /// MatMulBnb4 weights decode to `level·absmax`, blocks running on across rows.
    #[test]
    fn bnb4_dequantises_exactly() {
        let data = DataSource::new(Path::new("t.onnx"), Bytes::from_vec(vec![0]));
        for (k, n, bs, qt, want) in [
            (64usize, 3usize, 64usize, 1i64, QuantFormat::Q8_0),
            (80, 3, 64, 1, QuantFormat::F32),
            (80, 3, 32, 0, QuantFormat::F32),
            (32, 5, 16, 0, QuantFormat::Q8_0),
        ] {
            let numel = n * k;
            let b: Vec<u8> = (0..numel.div_ceil(2))
                .map(|i| (i * 73 % 256) as u8)
                .collect();
            let absmax: Vec<f32> = (0..numel.div_ceil(bs)).map(|i| 0.5 + i as f32).collect();
            let bt = tensor("b", &[b.len() as i64], dtype::UINT8, b.clone());
            let at = tensor(
                "a",
                &[absmax.len() as i64],
                dtype::FLOAT,
                absmax.iter().flat_map(|x| x.to_le_bytes()).collect(),
            );
            let node = Node {
                name: "/lm_head/MatMul_Bnb4".into(),
                ..Node::default()
            };
            let bq = Bnb4 {
                node: &node.name,
                b: &bt,
                absmax: &at,
                k,
                n,
                block_size: bs,
                quant_type: qt,
            };
            let levels = if qt == 0 { FP4_LEVELS } else { NF4_LEVELS };
            let expect: Vec<Vec<f32>> = (0..n)
                .map(|r| {
                    (0..k)
                        .map(|c| {
                            let i = r * k + c;
                            let byte = b[i / 2];
                            let code = if i % 2 == 0 { byte >> 4 } else { byte & 15 };
                            levels[code as usize] * absmax[i / bs]
                        })
                        .collect()
                })
                .collect();
            let f = bnb4_to_matrix(&bq, &data, &|_| QuantFormat::F32).unwrap();
            assert_eq!(rows_f32(&f), expect, "K {k} block {bs} type {qt}");
            let m = bnb4_to_matrix(&bq, &data, &|d| d).unwrap();
            assert_eq!(m.format, want);
            for (r, (g, e)) in rows_f32(&m).iter().zip(&expect).enumerate() {
                let max = e.iter().fold(0f32, |a, x| a.max(x.abs()));
                for (g, e) in g.iter().zip(e) {
                    assert!((g - e).abs() <= max / 100.0, "row {r}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn transposed_initializers_become_rows() {
        // [K=2, N=3] stored; rows are its columns.
        let vals = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f32s: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
        let m = transpose_to_matrix("w", GgmlType::F32, 2, 3, &f32s, &|d| d).unwrap();
        assert_eq!(m.format, QuantFormat::F32);
        assert_eq!(rows_f32(&m), [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]);
        let f16s: Vec<u8> = vals
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let m = transpose_to_matrix("w", GgmlType::F16, 2, 3, &f16s, &|d| d).unwrap();
        assert_eq!(m.format, QuantFormat::F16);
        assert_eq!(rows_f32(&m), [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]);
        let m =
            transpose_to_matrix("w", GgmlType::F16, 2, 3, &f16s, &|_| QuantFormat::F32).unwrap();
        assert_eq!(rows_f32(&m), [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]);
        // Rows of 2 cannot be Q8_0 blocks; a clear error, not a panic.
        assert!(
            transpose_to_matrix("w", GgmlType::F32, 2, 3, &f32s, &|_| QuantFormat::Q8_0).is_err()
        );
        assert!(transpose_to_matrix("w", GgmlType::F32, 2, 3, &f32s[..20], &|d| d).is_err());
    }
}
