//! [`akari_core::backend::Backend`] on the GPU: the one decoder ([`akari_core::model::Model`])
//! runs here unchanged.
//!
//! - Tensors are f32 storage buffers `[rows, cols]`; weights are [`GpuMatrix`] in their file
//!   layout (the embedding is dequantised on the device by `ops/embed.wgsl`, from the same
//!   buffer the lm_head GEMV reads when tied); norms and biases are f32 buffers; rope tables
//!   are uploaded once; the KV cache is two preallocated f32 buffers per layer,
//!   `[kv_heads][max_seq][head_dim]`.
//! - Every op records a compute pass into one pending command encoder; [`Backend::read`]
//!   submits it, so a forward pass is one submission and one wait. Work left pending when a
//!   forward pass fails is dropped at the end of [`Backend::scope`].
//! - Activations are f32 for every weight format (there is no int8/int16 activation path).
//!
//! Next: bind groups and buffers built once at load and reused per step (today each op
//! allocates its output and a uniform), fused decode kernels, a tiled GEMM for prefill.

use crate::ops::{attention, elementwise, embed, gemv, rms_norm, rope};
use crate::{GpuContext, GpuError, GpuMatrix};
use akari_core::backend::{Backend, RopeTables};
use akari_core::weights::Matrix;
use akari_core::{Error, ModelConfig, QuantFormat, Result};
use std::sync::Mutex;

const NAME: &str = "gpu";

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Error {
        Error::Backend {
            backend: NAME,
            msg: e.to_string(),
        }
    }
}

/// Activations on the device, row-major f32.
#[derive(Debug)]
pub struct GpuTensor {
    buffer: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl GpuTensor {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// A norm weight or bias.
#[derive(Debug)]
pub struct GpuVector {
    buffer: wgpu::Buffer,
    len: usize,
}

/// Rope cos/sin tables, `[len, half]` each.
#[derive(Debug)]
pub struct GpuRope {
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    half: usize,
    len: usize,
}

/// Keys and values of every layer, `[kv_heads][max_seq][head_dim]` per layer.
#[derive(Debug)]
pub struct GpuKvCache {
    layers: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    max_seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

pub struct GpuBackend {
    ctx: GpuContext,
    pending: Mutex<Option<wgpu::CommandEncoder>>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn shape(tensor: &str, expected: Vec<usize>, got: Vec<usize>) -> Error {
    Error::ShapeMismatch {
        tensor: tensor.to_string(),
        expected,
        got,
    }
}

impl GpuBackend {
    /// Opens the default adapter ([`GpuContext::new`]).
    pub fn new() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::with_context(GpuContext::new()?))
    }

    pub fn with_context(ctx: GpuContext) -> GpuBackend {
        GpuBackend {
            ctx,
            pending: Mutex::new(None),
        }
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The adapter and its API, e.g. `gpu (llvmpipe (LLVM 19.1.7, 256 bits), Vulkan)`.
    pub fn description(&self) -> String {
        let info = self.ctx.adapter_info();
        format!("{NAME} ({}, {:?})", info.name, info.backend)
    }

    /// Runs `f` on the pending command encoder, starting one if none is pending.
    fn record(
        &self,
        f: impl FnOnce(&GpuContext, &mut wgpu::CommandEncoder) -> Result<(), GpuError>,
    ) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let encoder = pending.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("akari.forward"),
                })
        });
        f(&self.ctx, encoder)?;
        Ok(())
    }

    fn tensor(&self, label: &str, rows: usize, cols: usize) -> Result<GpuTensor> {
        let len = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::InvalidArgument(format!("{label}: {rows}x{cols} overflows")))?;
        Ok(GpuTensor {
            buffer: self.ctx.f32_buffer(label, len)?,
            rows,
            cols,
        })
    }

    fn check_cols(x: &GpuTensor, cols: usize, what: &str) -> Result<()> {
        if x.cols != cols {
            return Err(shape(what, vec![x.rows, cols], vec![x.rows, x.cols]));
        }
        Ok(())
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Matrix = GpuMatrix;
    type Vector = GpuVector;
    type Rope = GpuRope;
    type KvCache = GpuKvCache;

    fn name(&self) -> &'static str {
        NAME
    }

    fn supports(&self, _format: QuantFormat) -> bool {
        true
    }

    fn upload_matrix(&self, m: Matrix) -> Result<GpuMatrix> {
        Ok(self.ctx.upload_matrix(&m)?)
    }

    fn upload_vector(&self, v: Vec<f32>) -> Result<GpuVector> {
        Ok(GpuVector {
            buffer: self.ctx.storage_buffer("akari.vector", &f32_bytes(&v))?,
            len: v.len(),
        })
    }

    fn upload_rope(&self, tables: RopeTables) -> Result<GpuRope> {
        Ok(GpuRope {
            cos: self
                .ctx
                .storage_buffer("the rope cos table", &f32_bytes(&tables.cos))?,
            sin: self
                .ctx
                .storage_buffer("the rope sin table", &f32_bytes(&tables.sin))?,
            half: tables.half,
            len: tables.len,
        })
    }

    fn new_kv_cache(&self, cfg: &ModelConfig, max_seq: usize) -> Result<GpuKvCache> {
        let per_layer = cfg.kv_dim().checked_mul(max_seq).ok_or_else(|| {
            Error::InvalidArgument(format!("a cache of {max_seq} tokens is too large"))
        })?;
        let layers = (0..cfg.num_layers)
            .map(|_| {
                Ok((
                    self.ctx
                        .f32_buffer("one layer of the KV cache (keys)", per_layer)?,
                    self.ctx
                        .f32_buffer("one layer of the KV cache (values)", per_layer)?,
                ))
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(GpuKvCache {
            layers,
            max_seq,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        })
    }

    fn embed(&self, table: &GpuMatrix, tokens: &[u32]) -> Result<GpuTensor> {
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= table.rows()) {
            return Err(Error::InvalidArgument(format!(
                "token id {t} is outside the embedding of {} rows",
                table.rows()
            )));
        }
        let ids: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        let ids = self.ctx.storage_buffer("akari.token_ids", &ids)?;
        let out = self.tensor("akari.embed", tokens.len(), table.cols())?;
        self.record(|ctx, enc| embed::encode(ctx, enc, table, &ids, tokens.len(), &out.buffer))?;
        Ok(out)
    }

    fn rms_norm(&self, x: &GpuTensor, w: &GpuVector, eps: f32) -> Result<GpuTensor> {
        Self::check_cols(x, w.len, "rms_norm input")?;
        let out = self.tensor("akari.rms_norm", x.rows, x.cols)?;
        self.record(|ctx, enc| {
            rms_norm::encode(
                ctx,
                enc,
                &x.buffer,
                &w.buffer,
                &out.buffer,
                x.rows,
                x.cols,
                eps,
            )
        })?;
        Ok(out)
    }

    fn matmul(&self, x: &GpuTensor, w: &GpuMatrix, bias: Option<&GpuVector>) -> Result<GpuTensor> {
        Self::check_cols(x, w.cols(), "matmul input")?;
        if let Some(b) = bias {
            if b.len != w.rows() {
                return Err(shape("bias", vec![w.rows()], vec![b.len]));
            }
        }
        let out = self.tensor("akari.matmul", x.rows, w.rows())?;
        self.record(|ctx, enc| {
            gemv::encode_tokens(
                ctx,
                enc,
                w,
                &x.buffer,
                bias.map(|b| &b.buffer),
                &out.buffer,
                x.rows,
            )
        })?;
        Ok(out)
    }

    fn rope(&self, x: &mut GpuTensor, heads: usize, rope: &GpuRope, pos: usize) -> Result<()> {
        let hd = 2 * rope.half;
        if heads * hd != x.cols {
            return Err(shape(
                "rope input",
                vec![x.rows, heads * hd],
                vec![x.rows, x.cols],
            ));
        }
        if pos + x.rows > rope.len {
            return Err(Error::ContextOverflow {
                prompt: pos + x.rows,
                context: rope.len,
                reserve: 0,
            });
        }
        self.record(|ctx, enc| {
            rope::encode(
                ctx, enc, &x.buffer, &rope.cos, &rope.sin, x.rows, heads, rope.half, pos,
            )
        })
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        cache: &mut GpuKvCache,
        layer: usize,
        pos: usize,
    ) -> Result<GpuTensor> {
        let (hd, kvh, heads) = (cache.head_dim, cache.kv_heads, cache.heads);
        if pos + q.rows > cache.max_seq {
            return Err(Error::ContextOverflow {
                prompt: pos + q.rows,
                context: cache.max_seq,
                reserve: 0,
            });
        }
        Self::check_cols(q, heads * hd, "attention query")?;
        Self::check_cols(k, kvh * hd, "attention key")?;
        Self::check_cols(v, kvh * hd, "attention value")?;
        if k.rows != q.rows || v.rows != q.rows {
            return Err(shape(
                "attention key/value rows",
                vec![q.rows],
                vec![k.rows],
            ));
        }
        let (kc, vc) = cache.layers.get(layer).ok_or_else(|| {
            Error::InvalidArgument(format!("layer {layer} is not in the KV cache"))
        })?;
        let out = self.tensor("akari.attention", q.rows, heads * hd)?;
        let dims = attention::Dims {
            rows: q.rows,
            heads,
            kv_heads: kvh,
            head_dim: hd,
            max_seq: cache.max_seq,
            pos,
        };
        self.record(|ctx, enc| {
            attention::encode(
                ctx,
                enc,
                &q.buffer,
                &k.buffer,
                &v.buffer,
                kc,
                vc,
                &out.buffer,
                dims,
            )
        })?;
        Ok(out)
    }

    fn silu_mul(&self, gate: &GpuTensor, up: &GpuTensor) -> Result<GpuTensor> {
        Self::check_cols(up, gate.cols, "silu_mul")?;
        if up.rows != gate.rows {
            return Err(shape("silu_mul rows", vec![gate.rows], vec![up.rows]));
        }
        let out = self.tensor("akari.silu_mul", gate.rows, gate.cols)?;
        self.record(|ctx, enc| {
            elementwise::silu_mul(
                ctx,
                enc,
                &gate.buffer,
                &up.buffer,
                &out.buffer,
                gate.rows * gate.cols,
            )
        })?;
        Ok(out)
    }

    fn add_assign(&self, x: &mut GpuTensor, y: &GpuTensor) -> Result<()> {
        Self::check_cols(y, x.cols, "residual")?;
        if y.rows != x.rows {
            return Err(shape("residual rows", vec![x.rows], vec![y.rows]));
        }
        self.record(|ctx, enc| {
            elementwise::add_assign(ctx, enc, &x.buffer, &y.buffer, x.rows * x.cols)
        })
    }

    fn last_row(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let r = x
            .rows
            .checked_sub(1)
            .ok_or_else(|| Error::InvalidArgument("empty tensor".into()))?;
        let out = self.tensor("akari.last_row", 1, x.cols)?;
        let bytes = (x.cols * 4) as u64;
        self.record(|_, enc| {
            enc.copy_buffer_to_buffer(&x.buffer, r as u64 * bytes, &out.buffer, 0, bytes);
            Ok(())
        })?;
        Ok(out)
    }

    /// Submits everything recorded since the last read and waits for `x`.
    fn read(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        let encoder = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| {
                self.ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("akari.read"),
                    })
            });
        Ok(self
            .ctx
            .submit_and_read("read", encoder, &x.buffer, x.rows * x.cols)?)
    }

    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let r = f();
        // A pass that failed before its read leaves work recorded; it must not run later.
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        r
    }
}
