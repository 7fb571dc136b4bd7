//! Rotary position embedding (`rope.wgsl`), in place, from tables uploaded once.

use super::{check_dim, Recording, Shader};
use crate::{GpuContext, GpuError};

pub(super) const SHADER: Shader = Shader {
    name: "rope.wgsl",
    source: include_str!("rope.wgsl"),
};

/// Rotary tables on the device: cos then sin, each `[len, half]`, in one buffer.
#[derive(Clone, Debug)]
pub struct Table {
    pub buffer: wgpu::Buffer,
    pub half: usize,
    pub len: usize,
}

impl Table {
    /// Where the sin table starts, in f32 values.
    pub fn sin_off(&self) -> u32 {
        (self.len * self.half) as u32
    }
}

/// Records the rotation of `rows` rows of `heads` heads of `2·half` values; row `r` is at
/// position `step[0] + r` of the tables.
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    x: &wgpu::Buffer,
    table: &Table,
    step: &wgpu::Buffer,
    rows: usize,
    heads: usize,
) -> Result<(), GpuError> {
    let half = table.half;
    let gx = check_dim(ctx, "rope pairs", (heads * half).div_ceil(64))?;
    let gy = check_dim(ctx, "rope rows", rows)?;
    let params = [heads as u32, half as u32, table.sin_off()];
    ctx.dispatch(
        rec,
        &SHADER,
        "rope",
        &[x, &table.buffer, step],
        &params,
        (gx, gy, 1),
    )
}
