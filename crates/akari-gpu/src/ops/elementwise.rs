//! Elementwise ops: `silu(gate) · up` (`silu_mul.wgsl`) and `x += y` (`add.wgsl`).

use super::{grid, Recording, Shader};
use crate::{GpuContext, GpuError};

pub(super) const SILU_MUL: Shader = Shader {
    name: "silu_mul.wgsl",
    source: include_str!("silu_mul.wgsl"),
};

pub(super) const ADD: Shader = Shader {
    name: "add.wgsl",
    source: include_str!("add.wgsl"),
};

/// Values per workgroup in both shaders.
const WG: usize = 256;

/// Records `y = silu(gate) · up` over `n` values.
pub fn silu_mul(
    ctx: &GpuContext,
    rec: &mut Recording,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
) -> Result<(), GpuError> {
    let (gx, gy) = grid(ctx, "silu_mul", n.div_ceil(WG))?;
    ctx.dispatch(
        rec,
        &SILU_MUL,
        "silu_mul",
        &[gate, up, y],
        &[n as u32],
        (gx, gy, 1),
    )
}

/// Records `x += y` over `n` values.
pub fn add_assign(
    ctx: &GpuContext,
    rec: &mut Recording,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
) -> Result<(), GpuError> {
    let (gx, gy) = grid(ctx, "add_assign", n.div_ceil(WG))?;
    ctx.dispatch(rec, &ADD, "add_assign", &[x, y], &[n as u32], (gx, gy, 1))
}
