//! Rotary position embedding (`rope.wgsl`), in place, from tables uploaded once.

use super::{check_dim, Recording, Shader};
use crate::{GpuContext, GpuError};

const SHADER: Shader = Shader {
    name: "rope.wgsl",
    source: include_str!("rope.wgsl"),
};

/// Records the rotation of `rows` rows of `heads` heads of `2·half` values; row `r` is at
/// position `step[0] + r` of the `cos`/`sin` tables (`[positions, half]`).
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    x: &wgpu::Buffer,
    cos: &wgpu::Buffer,
    sin: &wgpu::Buffer,
    step: &wgpu::Buffer,
    rows: usize,
    heads: usize,
    half: usize,
) -> Result<(), GpuError> {
    let gx = check_dim(ctx, "rope pairs", (heads * half).div_ceil(64))?;
    let gy = check_dim(ctx, "rope rows", rows)?;
    let params = [heads as u32, half as u32];
    ctx.dispatch(
        rec,
        &SHADER,
        "rope",
        &[x, cos, sin, step],
        &params,
        (gx, gy, 1),
    )
}
