//! Embedding lookup (`embed.wgsl`): the rows of a weight matrix for each token id,
//! dequantised on the device from the matrix as uploaded for the GEMV (no second copy).

use super::{check_dim, Recording, Shader};
use crate::{GpuContext, GpuError, GpuMatrix};
use akari_core::QuantFormat;

pub(super) const SHADER: Shader = Shader {
    name: "embed.wgsl",
    source: include_str!("embed.wgsl"),
};

/// Records `y[t] = table[ids[t]]` for `tokens` ids; `y` holds `tokens × table.cols()` f32.
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    table: &GpuMatrix,
    ids: &wgpu::Buffer,
    tokens: usize,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    let format = match table.format() {
        QuantFormat::F32 => 0,
        QuantFormat::F16 => 1,
        QuantFormat::Q8_0 => 2,
        QuantFormat::Q4_0 => 3,
        QuantFormat::Q4_1 => 4,
    };
    let gx = check_dim(ctx, "embed columns", table.cols().div_ceil(64))?;
    let gy = check_dim(ctx, "embed tokens", tokens)?;
    // One dispatch per part of a split table; each writes the tokens whose rows it holds.
    for part in table.parts() {
        let params = [
            table.cols() as u32,
            table.format().row_bytes(table.cols()) as u32,
            format,
            part.first as u32,
            part.rows as u32,
        ];
        ctx.dispatch(
            rec,
            &SHADER,
            "embed",
            &[&part.buffer, ids, y],
            &params,
            (gx, gy, 1),
        )?;
    }
    Ok(())
}
