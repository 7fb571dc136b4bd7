//! Attention with a KV cache: `kv_store.wgsl` appends the new keys and values to one
//! layer's cache, `attention.wgsl` attends causally, one workgroup per (head, token), with
//! an online softmax (no score buffer). Next: split long sequences over several workgroups
//! and merge their partial softmaxes (flash-decoding).

use super::{check_dim, Shader};
use crate::{GpuContext, GpuError};

const KV_STORE: Shader = Shader {
    name: "kv_store.wgsl",
    source: include_str!("kv_store.wgsl"),
};

const ATTENTION: Shader = Shader {
    name: "attention.wgsl",
    source: include_str!("attention.wgsl"),
};

/// The largest head size `attention.wgsl` handles (`MAX_HD`).
pub const MAX_HEAD_DIM: usize = 256;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_seq: usize,
    pub pos: usize,
}

/// Records the cache append of `k`, `v` (`[rows, kv_heads · head_dim]`) at `pos` and the
/// attention of `q` over positions `0..=pos + r` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    d: Dims,
) -> Result<(), GpuError> {
    if d.head_dim > MAX_HEAD_DIM {
        return Err(GpuError::Shape {
            op: "attention",
            what: "head size (at most 256 for now)",
            expected: MAX_HEAD_DIM,
            got: d.head_dim,
        });
    }
    let kv_dim = d.kv_heads * d.head_dim;
    let rows = check_dim(ctx, "attention rows", d.rows)?;
    let gx = check_dim(ctx, "kv_store values", kv_dim.div_ceil(64))?;
    ctx.dispatch(
        encoder,
        &KV_STORE,
        "kv_store",
        &[k, v, k_cache, v_cache],
        &[
            kv_dim as u32,
            d.head_dim as u32,
            d.max_seq as u32,
            d.pos as u32,
        ],
        (gx, rows, 1),
    )?;
    let heads = check_dim(ctx, "attention heads", d.heads)?;
    let scale = 1.0 / (d.head_dim as f32).sqrt();
    ctx.dispatch(
        encoder,
        &ATTENTION,
        "attention",
        &[q, k_cache, v_cache, out],
        &[
            d.heads as u32,
            d.kv_heads as u32,
            d.head_dim as u32,
            d.max_seq as u32,
            d.pos as u32,
            scale.to_bits(),
        ],
        (heads, rows, 1),
    )
}
