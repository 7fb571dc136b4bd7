//! One file per op: the Rust that builds and dispatches a kernel beside its WGSL.
//!
//! Every kernel but the GEMV goes through [`GpuContext::dispatch`]: storage buffers at
//! bindings `0..n` in the order given, then a uniform of `u32` words at binding `n`, and a
//! pipeline built on first use (layout derived from the shader) and cached in the context.

pub mod attention;
pub mod elementwise;
pub mod embed;
pub mod gemv;
pub mod rms_norm;
pub mod rope;

use crate::{GpuContext, GpuError};
use std::collections::HashMap;
use std::sync::Mutex;

/// A WGSL source file and a label for it.
pub(crate) struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// Compiled shader modules and their pipelines, keyed by (shader, entry point).
#[derive(Default)]
pub(crate) struct Pipelines {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
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

impl GpuContext {
    fn pipeline(
        &self,
        shader: &Shader,
        entry: &'static str,
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = (shader.name, entry);
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
                    let m = self
                        .device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.name),
                            source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                        });
                    self.check(shader.name)?;
                    modules.insert(shader.name, m.clone());
                    m
                }
            }
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.check(entry)?;
        self.pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// A uniform buffer holding `words`, padded to 16 bytes.
    fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
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
        buffer
    }

    /// Records one dispatch of `shader`'s `entry` with `buffers` at bindings `0..n` and
    /// `params` as a uniform at binding `n`.
    pub(crate) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shader: &Shader,
        entry: &'static str,
        buffers: &[&wgpu::Buffer],
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> Result<(), GpuError> {
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(shader, entry)?;
        let uniform = self.uniform(params);
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: uniform.as_entire_binding(),
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        self.check(entry)
    }
}
