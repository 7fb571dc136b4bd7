//! One file per op: the Rust that builds and dispatches a kernel beside its WGSL.
//!
//! Every kernel goes through [`GpuContext::dispatch`]: storage buffers at bindings `0..n` in
//! the order given, then a uniform of `u32` words at binding `n`. Pipelines (layout derived
//! from the shader), uniforms (by content) and bind groups (by buffers) are built on first
//! use and cached in the context, so a decode step that repeats the previous one's shapes
//! creates no GPU objects at all.

/// What a module using subgroup built-ins starts with: browsers require WGSL's `enable
/// subgroups;`, which naga (natively) does not parse yet and does not need. A module built
/// with it is named with a `+subgroups` suffix.
#[cfg(target_arch = "wasm32")]
macro_rules! enable_subgroups {
    () => {
        "enable subgroups;\n"
    };
}
#[cfg(not(target_arch = "wasm32"))]
macro_rules! enable_subgroups {
    () => {
        ""
    };
}

pub mod attention;
pub mod elementwise;
pub mod embed;
pub mod gemv;
pub mod rms_norm;
pub mod rope;
pub mod select;

use crate::{GpuContext, GpuError};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A WGSL source file and a label for it.
pub(crate) struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// Every kernel module as its pipelines compile it: (name, whole source). For checks that
/// need no device, such as translating the kernels for the backends this machine cannot run.
pub fn sources() -> Vec<(&'static str, &'static str)> {
    [
        &embed::SHADER,
        &select::SET_ASIDE,
        &select::TOP_K,
        &attention::F16_CACHE.kv_store,
        &attention::F16_CACHE.attention,
        &attention::F16_CACHE.decode,
        &attention::F16_CACHE.decode_subgroups,
        &attention::F32_CACHE.kv_store,
        &attention::F32_CACHE.attention,
        &attention::F32_CACHE.decode,
        &attention::F32_CACHE.decode_subgroups,
        &attention::COMBINE,
        &rms_norm::SHADER,
        &elementwise::SILU_MUL,
        &elementwise::ADD,
        &elementwise::FOLD_COLUMNS,
        &rope::SHADER,
        &gemv::SHADER,
        &gemv::GEMM,
        &gemv::GEMM_SOFT,
        &gemv::DECODE.shared,
        &gemv::DECODE.subgroups,
        &gemv::DECODE_F16.shared,
        &gemv::DECODE_F16.subgroups,
    ]
    .iter()
    .map(|s| (s.name, s.source))
    .collect()
}

/// Compiled shader modules and their pipelines, keyed by (shader, entry point), and the
/// uniforms and bind groups built for them.
#[derive(Default)]
pub(crate) struct Pipelines {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    uniforms: Mutex<HashMap<Vec<u32>, wgpu::Buffer>>,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
}

type BindKey = (&'static str, &'static str, Vec<wgpu::Buffer>);

/// A pipeline: shader, entry point and the values of its `override` constants.
type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u32)>);

/// Past this many cached uniforms or bind groups the caches start over: entries for shapes
/// that no longer occur (old prompt lengths) must not pin their buffers forever.
const CACHE_LIMIT: usize = 8192;

/// Commands being recorded for one submission: a command encoder with one open compute
/// pass, into which every op's dispatches go (one pass, not one per dispatch, keeps the
/// per-dispatch cost down).
pub struct Recording {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: usize,
}

impl Recording {
    pub fn new(ctx: &GpuContext) -> Recording {
        Recording {
            encoder: Some(
                ctx.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("akari.forward"),
                    }),
            ),
            pass: None,
            dispatches: 0,
        }
    }

    /// The open compute pass, begun on first use.
    pub fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let encoder = self
                .encoder
                .as_mut()
                .expect("a recording has an encoder until finished");
            let pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("akari.ops"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("begun above")
    }

    /// The encoder, for copies: ends the open pass first.
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder
            .as_mut()
            .expect("a recording has an encoder until finished")
    }

    /// Dispatches recorded so far.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    pub fn finish(mut self) -> wgpu::CommandBuffer {
        self.pass = None;
        self.encoder
            .take()
            .expect("a recording has an encoder until finished")
            .finish()
    }
}

/// Workgroup counts `(x, y)` covering `groups` workgroups within the per-dimension limit
/// (kernels number them `wid.y · nwg.x + wid.x`).
pub(crate) fn grid(ctx: &GpuContext, what: &str, groups: usize) -> Result<(u32, u32), GpuError> {
    let max = ctx.caps().max_compute_workgroups_per_dimension;
    u32::try_from(groups)
        .ok()
        .and_then(|g| gemv::dispatch_size(g, max))
        .ok_or_else(|| GpuError::TooLarge {
            what: format!("{what}: {groups} workgroups"),
            bytes: groups as u64,
            limit: u64::from(max).pow(2),
        })
}

/// Fails when a dispatch dimension exceeds the device's limit.
pub(crate) fn check_dim(ctx: &GpuContext, what: &str, n: usize) -> Result<u32, GpuError> {
    let max = ctx.caps().max_compute_workgroups_per_dimension;
    u32::try_from(n)
        .ok()
        .filter(|&v| v <= max)
        .ok_or_else(|| GpuError::TooLarge {
            what: format!("{what}: {n} workgroups in one dimension"),
            bytes: n as u64,
            limit: u64::from(max),
        })
}

/// How much of wgpu's run-time checking the kernels are compiled with, natively
/// (`AKARI_GPU_SHADER_CHECKS=all|bounds|none`, default `bounds`); a browser always checks
/// everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShaderChecks {
    /// wgpu's default: indices clamped, a counter in every loop, division guarded.
    All,
    /// Indices still clamped (and buffers by the driver's robust access), but no loop
    /// counters or division guards: every loop in these kernels ends by construction and no
    /// divisor is zero. The counters kept the driver from unrolling loops: decode on an H100
    /// ran 405 -> 470 tok/s at 128 positions, 341 -> 450 at 2048, without them.
    Bounds,
    /// Nothing checked by wgpu, for measuring what the checks cost (no faster than
    /// `Bounds` on an H100).
    None,
}

fn shader_checks() -> ShaderChecks {
    static CHECKS: OnceLock<ShaderChecks> = OnceLock::new();
    *CHECKS.get_or_init(
        || match std::env::var("AKARI_GPU_SHADER_CHECKS").as_deref() {
            Ok("all") => ShaderChecks::All,
            Ok("none") => ShaderChecks::None,
            _ => ShaderChecks::Bounds,
        },
    )
}

/// A kernel's WGSL from `$AKARI_GPU_KERNELS_FROM/<name>` when that file exists (natively),
/// for trying a kernel's variants without rebuilding. The file holds the whole source the
/// pipeline compiles (with the files attention.rs and gemv.rs prepend, such as
/// attention_common.wgsl, included).
fn kernel_override(name: &str) -> Option<String> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    let dir = std::env::var_os("AKARI_GPU_KERNELS_FROM")?;
    let path = std::path::Path::new(&dir).join(name);
    let text = std::fs::read_to_string(&path).ok()?;
    tracing::info!("kernel {name} from {}", path.display());
    Some(text)
}

impl GpuContext {
    fn create_module(&self, desc: wgpu::ShaderModuleDescriptor<'_>) -> wgpu::ShaderModule {
        let checks = match shader_checks() {
            _ if cfg!(target_arch = "wasm32") => return self.device.create_shader_module(desc),
            ShaderChecks::All => return self.device.create_shader_module(desc),
            ShaderChecks::Bounds => {
                let mut c = wgpu::ShaderRuntimeChecks::checked();
                c.force_loop_bounding = false;
                c.int_div_checks = false;
                c
            }
            ShaderChecks::None => wgpu::ShaderRuntimeChecks::unchecked(),
        };
        // SAFETY: the kernels are this crate's own; with `Bounds` every loop ends and no
        // divisor is zero by construction (see ShaderChecks), and `None` is for measurement.
        unsafe { self.device.create_shader_module_trusted(desc, checks) }
    }

    fn pipeline(
        &self,
        shader: &Shader,
        entry: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = (shader.name, entry, constants.to_vec());
        if let Some(p) = self
            .pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self
                .pipelines
                .modules
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match modules.get(shader.name) {
                Some(m) => m.clone(),
                None => {
                    let source = match kernel_override(shader.name) {
                        Some(text) => text.into(),
                        None => shader.source.into(),
                    };
                    let m = self.create_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(source),
                    });
                    self.check(shader.name)?;
                    modules.insert(shader.name, m.clone());
                    m
                }
            }
        };
        let values: Vec<(&str, f64)> = constants
            .iter()
            .map(|&(name, v)| (name, f64::from(v)))
            .collect();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &values,
                    // Every kernel writes its workgroup memory before reading it; zeroing it
                    // first is wasted time (browsers zero it regardless).
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        self.check(entry)?;
        // Two threads may have built it at once: all must use one, since bind groups made
        // from one pipeline's layout do not fit another's.
        Ok(self
            .pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(pipeline)
            .clone())
    }

    /// A uniform buffer holding `words` (padded to 16 bytes), shared by every dispatch
    /// with the same words.
    fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        let mut cache = self
            .pipelines
            .uniforms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(b) = cache.get(words) {
            return b.clone();
        }
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let len = words.len().max(1).next_multiple_of(4);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("akari.params"),
            size: (len * 4) as u64,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .get_mapped_range_mut(..)
                .expect("a buffer mapped at creation can be viewed");
            for (i, w) in words.iter().enumerate() {
                view.slice(i * 4..i * 4 + 4)
                    .copy_from_slice(&w.to_le_bytes());
            }
        }
        buffer.unmap();
        cache.insert(words.to_vec(), buffer.clone());
        buffer
    }

    /// Records one dispatch of `shader`'s `entry` with `buffers` at bindings `0..n` and
    /// `params` as a uniform at binding `n`.
    pub(crate) fn dispatch(
        &self,
        rec: &mut Recording,
        shader: &Shader,
        entry: &'static str,
        buffers: &[&wgpu::Buffer],
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> Result<(), GpuError> {
        self.dispatch_with(rec, shader, entry, &[], buffers, params, groups)
    }

    /// [`GpuContext::dispatch`] of the pipeline with `constants` for the shader's `override`s.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_with(
        &self,
        rec: &mut Recording,
        shader: &Shader,
        entry: &'static str,
        constants: &[(&'static str, u32)],
        buffers: &[&wgpu::Buffer],
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> Result<(), GpuError> {
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(shader, entry, constants)?;
        let uniform = self.uniform(params);
        let mut key_buffers: Vec<wgpu::Buffer> = buffers.iter().map(|b| (*b).clone()).collect();
        key_buffers.push(uniform);
        let key = (shader.name, entry, key_buffers);
        let bind = {
            let mut cache = self
                .pipelines
                .bind_groups
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some(b) => b.clone(),
                None => {
                    let entries: Vec<wgpu::BindGroupEntry> = key
                        .2
                        .iter()
                        .enumerate()
                        .map(|(i, b)| wgpu::BindGroupEntry {
                            binding: i as u32,
                            resource: b.as_entire_binding(),
                        })
                        .collect();
                    let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(entry),
                        layout: &pipeline.get_bind_group_layout(0),
                        entries: &entries,
                    });
                    self.check(entry)?;
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(key, bind.clone());
                    bind
                }
            }
        };
        let pass = rec.pass();
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        if let Some(p) = &self.profiler {
            // Kernels by entry point and the size of their first buffer (for a matmul, its
            // weights), so that each matrix shape gets its own line.
            p.mark(pass, entry, buffers.first().map_or(0, |b| b.size()));
        }
        rec.dispatches += 1;
        Ok(())
    }
}
