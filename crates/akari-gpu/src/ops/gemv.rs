//! Quantised matrix × vector, decode's matmul: `y[N] = W[N, K] · x[K] (+ bias[N])`.
//!
//! `W` stays in its file layout (F32, F16, ggml's Q8_0 / Q4_0 / Q4_1 blocks); the kernel
//! (`gemv.wgsl`) dequantises as it reads. One workgroup of [`WORKGROUP`] threads per
//! [`ROWS_PER_WORKGROUP`] rows, [`TOKENS_PER_WORKGROUP`] tokens per workgroup.

use crate::{GpuContext, GpuError, GpuMatrix};
use akari_core::QuantFormat;
use std::collections::HashMap;
use std::sync::Mutex;

/// Threads per workgroup; must match `WG` in `gemv.wgsl`.
pub const WORKGROUP: u32 = 64;
/// Output rows per workgroup; must match `ROWS` in `gemv.wgsl`.
pub const ROWS_PER_WORKGROUP: u32 = 8;
/// Tokens per workgroup; must match `TB` in `gemv.wgsl`.
pub const TOKENS_PER_WORKGROUP: u32 = 4;

const SHADER: &str = include_str!("gemv.wgsl");

fn entry_point(format: QuantFormat) -> &'static str {
    match format {
        QuantFormat::F32 => "gemv_f32",
        QuantFormat::F16 => "gemv_f16",
        QuantFormat::Q8_0 => "gemv_q8_0",
        QuantFormat::Q4_0 => "gemv_q4_0",
        QuantFormat::Q4_1 => "gemv_q4_1",
    }
}

/// `Params` in `gemv.wgsl`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Params {
    n: u32,
    k: u32,
    row_bytes: u32,
    flags: u32,
    tokens: u32,
}

const HAS_BIAS: u32 = 1;

impl Params {
    fn bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (c, v) in
            out.chunks_exact_mut(4)
                .zip([self.n, self.k, self.row_bytes, self.flags, self.tokens])
        {
            c.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

struct Built {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    pipelines: HashMap<QuantFormat, wgpu::ComputePipeline>,
}

/// The GEMV shader module and its pipelines, one per weight format, compiled on first use.
#[derive(Default)]
pub(crate) struct GemvKernels {
    built: Mutex<Option<Built>>,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GemvKernels {
    /// The bind group layout and the pipeline for `format`, building them once.
    fn get(
        &self,
        ctx: &GpuContext,
        format: QuantFormat,
    ) -> Result<(wgpu::BindGroupLayout, wgpu::ComputePipeline), GpuError> {
        let mut guard = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let device = &ctx.device;
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("akari.gemv"),
                source: wgpu::ShaderSource::Wgsl(SHADER.into()),
            });
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("akari.gemv"),
                entries: &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, true),
                    storage(3, false),
                    wgpu::BindGroupLayoutEntry {
                        binding: 4,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    },
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("akari.gemv"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            ctx.check("compiling gemv.wgsl")?;
            *guard = Some(Built {
                layout,
                pipeline_layout,
                module,
                pipelines: HashMap::new(),
            });
        }
        let built = guard.as_mut().expect("built above");
        if !built.pipelines.contains_key(&format) {
            let name = entry_point(format);
            let pipeline = ctx
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: Some(&built.pipeline_layout),
                    module: &built.module,
                    entry_point: Some(name),
                    compilation_options: Default::default(),
                    cache: None,
                });
            ctx.check(name)?;
            built.pipelines.insert(format, pipeline);
        }
        Ok((built.layout.clone(), built.pipelines[&format].clone()))
    }
}

/// Workgroup counts covering `rows` workgroups, within the per-dimension limit.
pub fn dispatch_size(rows: u32, max_per_dim: u32) -> Option<(u32, u32)> {
    if rows == 0 {
        return Some((0, 0));
    }
    let x = rows.min(max_per_dim);
    let y = rows.div_ceil(x);
    (y <= max_per_dim).then_some((x, y))
}

/// Records `y = w · x (+ bias)` into `encoder`. `x` holds `w.cols()` f32 values, `y` (and
/// `bias`) `w.rows()`.
pub fn encode(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    w: &GpuMatrix,
    x: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    encode_tokens(ctx, encoder, w, x, bias, y, 1)
}

/// [`encode`] for `tokens` rows at once: `x` is `[tokens, w.cols()]`, `y` `[tokens, w.rows()]`.
/// Each z-slice of the dispatch takes [`TOKENS_PER_WORKGROUP`] tokens, so W is read once per
/// that many tokens.
pub fn encode_tokens(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    w: &GpuMatrix,
    x: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    tokens: usize,
) -> Result<(), GpuError> {
    const OP: &str = "gemv";
    let need = |what: &'static str, buf: &wgpu::Buffer, len: usize| {
        if buf.size() < (len * 4) as u64 {
            Err(GpuError::Shape {
                op: OP,
                what,
                expected: len,
                got: buf.size() as usize / 4,
            })
        } else {
            Ok(())
        }
    };
    need("x buffer length", x, tokens * w.cols())?;
    need("y buffer length", y, tokens * w.rows())?;
    if let Some(b) = bias {
        need("bias buffer length", b, w.rows())?;
    }
    let caps = ctx.caps();
    let groups = (w.rows() as u32).div_ceil(ROWS_PER_WORKGROUP);
    let (gx, gy) =
        dispatch_size(groups, caps.max_compute_workgroups_per_dimension).ok_or_else(|| {
            GpuError::TooLarge {
                what: format!(
                    "gemv over {} rows ({ROWS_PER_WORKGROUP} per workgroup)",
                    w.rows()
                ),
                bytes: w.rows() as u64,
                limit: u64::from(caps.max_compute_workgroups_per_dimension).pow(2),
            }
        })?;
    let gz = tokens.div_ceil(TOKENS_PER_WORKGROUP as usize);
    if gz as u64 > u64::from(caps.max_compute_workgroups_per_dimension) {
        return Err(GpuError::TooLarge {
            what: format!("gemv over {tokens} tokens ({TOKENS_PER_WORKGROUP} per workgroup)"),
            bytes: gz as u64,
            limit: u64::from(caps.max_compute_workgroups_per_dimension),
        });
    }
    if gx == 0 || tokens == 0 {
        return Ok(());
    }
    let (layout, pipeline) = ctx.gemv.get(ctx, w.format())?;
    let params = Params {
        n: w.rows() as u32,
        k: w.cols() as u32,
        row_bytes: w.format().row_bytes(w.cols()) as u32,
        flags: if bias.is_some() { HAS_BIAS } else { 0 },
        tokens: tokens as u32,
    };
    let uniform = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("akari.gemv.params"),
        size: 32,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue.write_buffer(&uniform, 0, &params.bytes());
    let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("akari.gemv"),
        layout: &layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: w.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: x.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: bias.unwrap_or(&ctx.dummy).as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: y.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 4,
                resource: uniform.as_entire_binding(),
            },
        ],
    });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("akari.gemv"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, gz as u32);
    }
    ctx.check(OP)
}

impl GpuContext {
    /// `w · x (+ bias)`, blocking: uploads `x` (and `bias`), runs [`encode`] and reads the
    /// `w.rows()` results back. For tests and tools; a forward pass records many ops into
    /// one submission instead.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gemv(
        &self,
        w: &GpuMatrix,
        x: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>, GpuError> {
        const OP: &str = "gemv";
        if x.len() != w.cols() {
            return Err(GpuError::Shape {
                op: OP,
                what: "x length",
                expected: w.cols(),
                got: x.len(),
            });
        }
        if let Some(b) = bias {
            if b.len() != w.rows() {
                return Err(GpuError::Shape {
                    op: OP,
                    what: "bias length",
                    expected: w.rows(),
                    got: b.len(),
                });
            }
        }
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        let xb = self.storage_buffer("akari.gemv.x", &f32_bytes(x))?;
        let bb = bias
            .map(|b| self.storage_buffer("akari.gemv.bias", &f32_bytes(b)))
            .transpose()?;
        let y = self.f32_buffer("akari.gemv.y", w.rows())?;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("akari.gemv"),
            });
        encode(self, &mut encoder, w, &xb, bb.as_ref(), &y)?;
        self.submit_and_read(OP, encoder, &y, w.rows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_covers_every_row_within_the_limit() {
        assert_eq!(dispatch_size(0, 65535), Some((0, 0)));
        assert_eq!(dispatch_size(7, 65535), Some((7, 1)));
        assert_eq!(dispatch_size(151_936, 65535), Some((65535, 3)));
        let (x, y) = dispatch_size(250, 16).unwrap();
        assert!(x <= 16 && y <= 16 && x * y >= 250);
        assert_eq!(dispatch_size(16 * 16 + 1, 16), None);
    }

    #[test]
    fn params_are_little_endian_words() {
        let p = Params {
            n: 1,
            k: 0x0203,
            row_bytes: 4,
            flags: HAS_BIAS,
            tokens: 5,
        };
        let b = p.bytes();
        assert_eq!(&b[..8], &[1, 0, 0, 0, 3, 2, 0, 0]);
        assert_eq!(&b[12..20], &[1, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(&b[20..], &[0; 12]);
    }
}
