//! Elementwise ops: `silu(gate) · up` (`silu_mul.wgsl`), `x += y` (`add.wgsl`), and a
//! vector folded into an f16 matrix's columns (`fold_columns.wgsl`).

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

pub(super) const FOLD_COLUMNS: Shader = Shader {
    name: "fold_columns.wgsl",
    source: include_str!("fold_columns.wgsl"),
};

/// Records `W[r, c] ← W[r, c] · v[c]` over an f16 matrix's part of `rows` rows of `cols`
/// values (even) in `w`, in place.
pub fn fold_columns(
    ctx: &GpuContext,
    rec: &mut Recording,
    w: &wgpu::Buffer,
    v: &wgpu::Buffer,
    rows: usize,
    cols: usize,
) -> Result<(), GpuError> {
    let words = rows * cols / 2;
    let (gx, gy) = grid(ctx, "fold_columns", words.div_ceil(WG))?;
    let params = [words as u32, cols as u32];
    ctx.dispatch(
        rec,
        &FOLD_COLUMNS,
        "fold_columns",
        &[w, v],
        &params,
        (gx, gy, 1),
    )
}
