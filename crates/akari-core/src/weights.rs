//! Canonical weights: what a format reader hands to a backend.
//!
//! Tensors are named by [`TensorKey`], not strings, and are laid out the Hugging Face way:
//! a matrix is `[rows = out_features, cols = in_features]`, rows contiguous, each row a whole
//! number of quantisation blocks. Readers undo file-specific layouts (llama.cpp's permuted
//! Q/K rows, Phi-3's fused projections) so the decoder sees one layout.

use crate::quant::QuantFormat;
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A shared, immutable byte range: a slice of a memory map, a downloaded buffer or an owned
/// vector. Cloning is cheap; slicing never copies.
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl Bytes {
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Bytes {
        let len = (*owner).as_ref().len();
        Bytes {
            owner,
            range: 0..len,
        }
    }

    pub fn from_vec(v: Vec<u8>) -> Bytes {
        Bytes::new(Arc::new(v))
    }

    /// A sub-range, relative to this one. `None` when it does not fit.
    pub fn slice(&self, range: Range<usize>) -> Option<Bytes> {
        if range.start > range.end || range.end > self.len() {
            return None;
        }
        Some(Bytes {
            owner: self.owner.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        })
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// A weight matrix in one of the backend formats.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub format: QuantFormat,
    /// Output features.
    pub rows: usize,
    /// Input features (the dimension blocks run along).
    pub cols: usize,
    pub bytes: Bytes,
}

impl Matrix {
    pub fn new(
        name: &str,
        format: QuantFormat,
        rows: usize,
        cols: usize,
        bytes: Bytes,
    ) -> Result<Matrix> {
        if cols % format.block_size() != 0 {
            return Err(Error::InvalidArgument(format!(
                "tensor `{name}`: row length {cols} is not a multiple of the {format} block size {}",
                format.block_size()
            )));
        }
        let want = rows * format.row_bytes(cols);
        if bytes.len() != want {
            return Err(Error::InvalidArgument(format!(
                "tensor `{name}`: {} bytes for {rows}x{cols} {format}, expected {want}",
                bytes.len()
            )));
        }
        Ok(Matrix {
            format,
            rows,
            cols,
            bytes,
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    /// Rows `range` as a matrix of their own, without copying.
    pub fn rows(&self, range: Range<usize>) -> Option<Matrix> {
        let rb = self.row_bytes();
        let bytes = self.bytes.slice(range.start * rb..range.end * rb)?;
        Some(Matrix {
            format: self.format,
            rows: range.len(),
            cols: self.cols,
            bytes,
        })
    }

    /// One row as f32.
    pub fn row_f32(&self, row: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        self.format
            .dequantize_row(&self.bytes[row * rb..(row + 1) * rb], out);
    }

    /// A new matrix with rows taken in the order `perm` gives (`out[i] = self[perm[i]]`).
    pub fn permute_rows(&self, perm: &[usize]) -> Matrix {
        let rb = self.row_bytes();
        let mut out = Vec::with_capacity(perm.len() * rb);
        for &r in perm {
            out.extend_from_slice(&self.bytes[r * rb..(r + 1) * rb]);
        }
        Matrix {
            format: self.format,
            rows: perm.len(),
            cols: self.cols,
            bytes: Bytes::from_vec(out),
        }
    }

    /// Converts to `format`, through f32 a row at a time. Returns `self` unchanged when the
    /// format already matches.
    pub fn convert(&self, format: QuantFormat) -> Result<Matrix> {
        if format == self.format {
            return Ok(self.clone());
        }
        if self.cols % format.block_size() != 0 {
            return Err(Error::InvalidArgument(format!(
                "cannot convert a matrix with rows of {} to {format} (block size {})",
                self.cols,
                format.block_size()
            )));
        }
        let out_rb = format.row_bytes(self.cols);
        let mut out = vec![0u8; self.rows * out_rb];
        let mut row = vec![0f32; self.cols];
        for r in 0..self.rows {
            self.row_f32(r, &mut row);
            format.quantize_row(&row, &mut out[r * out_rb..(r + 1) * out_rb]);
        }
        Ok(Matrix {
            format,
            rows: self.rows,
            cols: self.cols,
            bytes: Bytes::from_vec(out),
        })
    }
}

/// The tensors of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerTensor {
    /// The tensors every decoder layer must have (q/k/v biases only when `qkv_bias`).
    pub fn required(qkv_bias: bool) -> Vec<LayerTensor> {
        use LayerTensor::*;
        let mut t = vec![AttnNorm, Q, K, V, O, FfnNorm, Gate, Up, Down];
        if qkv_bias {
            t.extend([QBias, KBias, VBias]);
        }
        t
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKey {
    Embed,
    OutputNorm,
    /// The lm_head; absent when tied to the embedding.
    Output,
    Layer(usize, LayerTensor),
}

impl fmt::Display for TensorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorKey::Embed => f.write_str("model.embed_tokens.weight"),
            TensorKey::OutputNorm => f.write_str("model.norm.weight"),
            TensorKey::Output => f.write_str("lm_head.weight"),
            TensorKey::Layer(i, t) => {
                let name = match t {
                    LayerTensor::AttnNorm => "input_layernorm.weight",
                    LayerTensor::Q => "self_attn.q_proj.weight",
                    LayerTensor::K => "self_attn.k_proj.weight",
                    LayerTensor::V => "self_attn.v_proj.weight",
                    LayerTensor::QBias => "self_attn.q_proj.bias",
                    LayerTensor::KBias => "self_attn.k_proj.bias",
                    LayerTensor::VBias => "self_attn.v_proj.bias",
                    LayerTensor::O => "self_attn.o_proj.weight",
                    LayerTensor::FfnNorm => "post_attention_layernorm.weight",
                    LayerTensor::Gate => "mlp.gate_proj.weight",
                    LayerTensor::Up => "mlp.up_proj.weight",
                    LayerTensor::Down => "mlp.down_proj.weight",
                };
                write!(f, "model.layers.{i}.{name}")
            }
        }
    }
}

/// A matrix not read yet: its file is read a tensor at a time (a browser's `Blob`), so the
/// bytes are fetched only when a backend takes the matrix, and dropped once it has uploaded
/// them. Cloning shares the reader.
#[derive(Clone)]
pub struct DeferredMatrix {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    read: Arc<dyn Fn() -> Result<Matrix> + Send + Sync>,
}

impl DeferredMatrix {
    pub fn new(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        read: impl Fn() -> Result<Matrix> + Send + Sync + 'static,
    ) -> DeferredMatrix {
        DeferredMatrix {
            format,
            rows,
            cols,
            read: Arc::new(read),
        }
    }

    /// Bytes the matrix will take.
    pub fn byte_len(&self) -> usize {
        self.rows * self.format.row_bytes(self.cols)
    }

    /// Reads the matrix, checking it is what was promised.
    pub fn read(&self, key: TensorKey) -> Result<Matrix> {
        let m = (self.read)()?;
        if (m.format, m.rows, m.cols) != (self.format, self.rows, self.cols) {
            return Err(Error::InvalidArgument(format!(
                "tensor `{key}`: read as {}x{} {}, announced as {}x{} {}",
                m.rows, m.cols, m.format, self.rows, self.cols, self.format
            )));
        }
        Ok(m)
    }
}

/// How a part is cut from a whole matrix.
pub type Cut = Box<dyn Fn(&Matrix) -> Result<Matrix> + Send + Sync>;

/// Parts cut from one matrix read later (a fused projection split into q/k/v, gate/up): the
/// matrix is read once, when the first part is taken, and kept until every part has been.
/// Each part is `(its rows, how it is cut from the whole)`.
pub fn deferred_parts(
    format: QuantFormat,
    cols: usize,
    read: impl Fn() -> Result<Matrix> + Send + Sync + 'static,
    parts: Vec<(usize, Cut)>,
) -> Vec<DeferredMatrix> {
    // The whole matrix and how many parts have yet to take it.
    let shared = Arc::new((read, std::sync::Mutex::new((None::<Matrix>, parts.len()))));
    parts
        .into_iter()
        .map(|(rows, cut)| {
            let shared = shared.clone();
            DeferredMatrix::new(format, rows, cols, move || {
                let (read, held) = &*shared;
                // A poisoned lock only means another read panicked; re-read if need be.
                let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                let whole = match held.0.take() {
                    Some(m) => m,
                    None => read()?,
                };
                let part = cut(&whole);
                held.1 = held.1.saturating_sub(1);
                if held.1 > 0 {
                    held.0 = Some(whole);
                }
                part
            })
        })
        .collect()
}

impl fmt::Debug for DeferredMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeferredMatrix({}x{} {})",
            self.rows, self.cols, self.format
        )
    }
}

/// Every tensor of a model, in canonical form: matrices in a backend format (in memory, or
/// deferred until taken), vectors (norms, biases) in f32.
#[derive(Clone, Default, Debug)]
pub struct ModelWeights {
    pub matrices: HashMap<TensorKey, Matrix>,
    pub deferred: HashMap<TensorKey, DeferredMatrix>,
    pub vectors: HashMap<TensorKey, Vec<f32>>,
}

impl ModelWeights {
    /// The matrix `key`, read now if it was deferred.
    pub fn take_matrix(&mut self, key: TensorKey) -> Result<Matrix> {
        if let Some(m) = self.matrices.remove(&key) {
            return Ok(m);
        }
        match self.deferred.remove(&key) {
            Some(d) => d.read(key),
            None => Err(Error::MissingTensor(key.to_string())),
        }
    }

    pub fn has_matrix(&self, key: TensorKey) -> bool {
        self.matrices.contains_key(&key) || self.deferred.contains_key(&key)
    }

    /// `(format, rows, cols, bytes)` of every matrix, read or not.
    pub fn matrix_shapes(&self) -> impl Iterator<Item = (QuantFormat, usize, usize, usize)> + '_ {
        let read = self
            .matrices
            .values()
            .map(|m| (m.format, m.rows, m.cols, m.bytes.len()));
        let deferred = self
            .deferred
            .values()
            .map(|d| (d.format, d.rows, d.cols, d.byte_len()));
        read.chain(deferred)
    }

    pub fn take_vector(&mut self, key: TensorKey, len: usize) -> Result<Vec<f32>> {
        let v = self
            .vectors
            .remove(&key)
            .ok_or_else(|| Error::MissingTensor(key.to_string()))?;
        if v.len() != len {
            return Err(Error::ShapeMismatch {
                tensor: key.to_string(),
                expected: vec![len],
                got: vec![v.len()],
            });
        }
        Ok(v)
    }
}
