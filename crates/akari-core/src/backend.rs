//! The op interface the decoder is written against.
//!
//! A backend owns its tensors: the CPU backend computes eagerly, a GPU backend may record
//! work and only synchronise in [`Backend::read`]. Shapes are row-major `[tokens, features]`.

use crate::config::ModelConfig;
use crate::quant::QuantFormat;
use crate::sampler::{Candidates, Selection};
use crate::weights::Matrix;
use crate::Result;
use std::future::Future;

/// Precomputed rotary tables for positions `0..len`: `cos[pos * half + i]`, `sin[...]`, with
/// the half-split pairing of Hugging Face's `rotate_half`.
pub struct RopeTables {
    pub half: usize,
    pub len: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

pub trait Backend: Send + Sync {
    /// Activations, `[rows, cols]` f32.
    type Tensor: Send;
    /// A weight matrix in the backend's storage.
    type Matrix: Send + Sync;
    /// A norm weight or bias.
    type Vector: Send + Sync;
    type Rope: Send + Sync;
    type KvCache: Send;
    /// A selection recorded and submitted but not yet read back ([`Backend::select_ahead`]).
    type Selected: Send;

    fn name(&self) -> &'static str;

    /// Whether matrices of `format` run natively (others must be converted before upload).
    fn supports(&self, format: QuantFormat) -> bool;

    fn upload_matrix(&self, m: Matrix) -> Result<Self::Matrix>;
    fn upload_vector(&self, v: Vec<f32>) -> Result<Self::Vector>;
    fn upload_rope(&self, tables: RopeTables) -> Result<Self::Rope>;
    fn new_kv_cache(&self, cfg: &ModelConfig, max_seq: usize) -> Result<Self::KvCache>;

    /// Rows of `table` for each token.
    fn embed(&self, table: &Self::Matrix, tokens: &[u32]) -> Result<Self::Tensor>;
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Vector, eps: f32) -> Result<Self::Tensor>;
    /// `x · wᵀ (+ bias)`: `[t, cols] → [t, rows]`.
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Matrix,
        bias: Option<&Self::Vector>,
    ) -> Result<Self::Tensor>;
    /// Several matmuls of the same input (q/k/v, gate/up), so a backend can share the
    /// input's preparation and run them as one batch of work.
    #[allow(clippy::type_complexity)]
    fn matmul_many(
        &self,
        x: &Self::Tensor,
        ws: &[(&Self::Matrix, Option<&Self::Vector>)],
    ) -> Result<Vec<Self::Tensor>> {
        ws.iter().map(|(w, b)| self.matmul(x, w, *b)).collect()
    }
    /// [`Backend::matmul_many`] of `rms_norm(x) · norm`, so a backend can normalise inside the
    /// matmuls instead of in a pass of its own.
    #[allow(clippy::type_complexity)]
    fn norm_matmul_many(
        &self,
        x: &Self::Tensor,
        norm: &Self::Vector,
        eps: f32,
        ws: &[(&Self::Matrix, Option<&Self::Vector>)],
    ) -> Result<Vec<Self::Tensor>> {
        let h = self.rms_norm(x, norm, eps)?;
        self.matmul_many(&h, ws)
    }
    /// [`Backend::matmul_glu`] of `rms_norm(x) · norm`.
    fn norm_matmul_glu(
        &self,
        x: &Self::Tensor,
        norm: &Self::Vector,
        eps: f32,
        gate: &Self::Matrix,
        up: &Self::Matrix,
    ) -> Result<Self::Tensor> {
        let h = self.rms_norm(x, norm, eps)?;
        self.matmul_glu(&h, gate, up)
    }
    /// `x += a · wᵀ`: a matmul whose result goes straight into the residual stream, so a
    /// backend can fuse the add into the matmul.
    fn matmul_add(&self, x: &mut Self::Tensor, a: &Self::Tensor, w: &Self::Matrix) -> Result<()> {
        let y = self.matmul(a, w, None)?;
        self.add_assign(x, &y)
    }
    /// `silu(x · gateᵀ) · (x · upᵀ)`, the gated MLP's first half, so a backend can compute
    /// both projections and the activation in one pass.
    fn matmul_glu(
        &self,
        x: &Self::Tensor,
        gate: &Self::Matrix,
        up: &Self::Matrix,
    ) -> Result<Self::Tensor> {
        let [g, u]: [Self::Tensor; 2] = self
            .matmul_many(x, &[(gate, None), (up, None)])?
            .try_into()
            .map_err(|_| {
                crate::Error::InvalidArgument("gate/up projection returned the wrong count".into())
            })?;
        self.silu_mul(&g, &u)
    }
    /// Rotates each of the `heads` heads of every row; row `i` is at position `pos + i`.
    fn rope(&self, x: &mut Self::Tensor, heads: usize, rope: &Self::Rope, pos: usize)
        -> Result<()>;
    /// Appends `k`, `v` at `pos..` in `layer`'s cache and attends causally over `0..pos + t`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        cache: &mut Self::KvCache,
        layer: usize,
        pos: usize,
    ) -> Result<Self::Tensor>;
    /// `silu(gate) * up`.
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x += y`.
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// The last row as a `[1, cols]` tensor.
    fn last_row(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// Copies a tensor to host memory.
    fn read(&self, x: &Self::Tensor) -> Result<Vec<f32>>;
    /// [`Backend::read`] without blocking, for the browser, where a GPU's results arrive
    /// through the event loop.
    fn read_async(&self, x: &Self::Tensor) -> impl Future<Output = Result<Vec<f32>>> {
        std::future::ready(self.read(x))
    }

    /// The candidates `sel` asks for from the `[1, vocab]` logits `x`, which it consumes
    /// (a backend may overwrite them). The default reads the whole row and selects on the
    /// host; a GPU selects on the device and reads back only the candidates.
    fn read_candidates(&self, x: Self::Tensor, sel: &Selection) -> Result<Candidates> {
        Ok(sel.select(&self.read(&x)?))
    }
    /// [`Backend::read_candidates`] without blocking (see [`Backend::read_async`]).
    fn read_candidates_async(
        &self,
        x: Self::Tensor,
        sel: &Selection,
    ) -> impl Future<Output = Result<Candidates>> {
        async move { Ok(sel.select(&self.read_async(&x).await?)) }
    }

    /// Whether this backend can leave a selection on the device and feed its best token to
    /// the next step before reading it back ([`Backend::select_ahead`],
    /// [`Backend::embed_selected`]): a greedy decode then records step N + 1 while the
    /// device still runs step N, so the host's recording and the read-back's round trip
    /// stop adding to every token.
    fn runs_ahead(&self) -> bool {
        false
    }
    /// Records and submits the selection `sel` asks for from the `[1, vocab]` logits `x`
    /// (consumed), to be read with [`Backend::read_selected`]. Only where
    /// [`Backend::runs_ahead`].
    fn select_ahead(&self, _x: Self::Tensor, _sel: &Selection) -> Result<Self::Selected> {
        Err(no_run_ahead(self.name()))
    }
    /// The embedding row of a pending selection's best token, without reading it back.
    fn embed_selected(&self, _table: &Self::Matrix, _s: &Self::Selected) -> Result<Self::Tensor> {
        Err(no_run_ahead(self.name()))
    }
    /// Waits for a pending selection and returns its candidates.
    fn read_selected(&self, _s: Self::Selected) -> Result<Candidates> {
        Err(no_run_ahead(self.name()))
    }
    /// [`Backend::read_selected`] without blocking (see [`Backend::read_async`]).
    fn read_selected_async(&self, s: Self::Selected) -> impl Future<Output = Result<Candidates>> {
        std::future::ready(self.read_selected(s))
    }
    /// Drops work recorded but not yet run: a forward pass failed before its read, and
    /// what it left must not run later.
    fn discard(&self) {}

    /// Runs one forward pass. A backend with worker threads enters its pool here once, rather
    /// than once per op.
    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }
}

/// What the run-ahead methods of a backend without [`Backend::runs_ahead`] return.
fn no_run_ahead(backend: &'static str) -> crate::Error {
    crate::Error::Unsupported {
        backend,
        what: "a selection left on the device for the next step".into(),
    }
}
