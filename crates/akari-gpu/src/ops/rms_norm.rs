//! RMS norm (`rms_norm.wgsl`), one workgroup per row.

use super::{grid, Recording, Shader};
use crate::{GpuContext, GpuError};

pub(super) const SHADER: Shader = Shader {
    name: "rms_norm.wgsl",
    source: include_str!("rms_norm.wgsl"),
};

/// Records `y = rms_norm(x) · w` over `rows` rows of `cols`.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    y: &wgpu::Buffer,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(), GpuError> {
    let (gx, gy) = grid(ctx, "rms_norm", rows)?;
    let params = [rows as u32, cols as u32, eps.to_bits()];
    ctx.dispatch(rec, &SHADER, "rms_norm", &[x, w, y], &params, (gx, gy, 1))
}
