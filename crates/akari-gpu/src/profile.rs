//! Per-kernel GPU time, for tuning: with `AKARI_GPU_PROFILE=1` (and an adapter with
//! timestamp queries inside passes, a native-only feature), every dispatch writes a GPU
//! timestamp after it, and each read logs, at info level, the time between consecutive
//! timestamps summed by kernel: what each kernel costs including its share of the barriers
//! and launch gaps. Off by default: the timestamps themselves serialise the GPU a little.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Timestamps one forward pass may hold; dispatches past it go unmeasured.
const CAPACITY: u32 = 4096;

// Timestamps are resolved by the blocking native read; the browser has none yet.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// The kernel that ran before each timestamp, and the size of its first buffer.
    labels: Mutex<Vec<(&'static str, u64)>>,
    period_ns: f32,
}

impl Profiler {
    /// The features a profiler needs, when `AKARI_GPU_PROFILE` asks for one.
    pub(crate) fn wanted() -> wgpu::Features {
        if std::env::var_os("AKARI_GPU_PROFILE").is_some_and(|v| v != "0") {
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        } else {
            wgpu::Features::empty()
        }
    }

    pub(crate) fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<Profiler> {
        let needed = Profiler::wanted();
        if needed.is_empty() || !device.features().contains(needed) {
            return None;
        }
        let bytes = u64::from(CAPACITY) * 8;
        Some(Profiler {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("akari.profile"),
                ty: wgpu::QueryType::Timestamp,
                count: CAPACITY,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("akari.profile.resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("akari.profile.readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            labels: Mutex::new(Vec::new()),
            period_ns: queue.get_timestamp_period(),
        })
    }

    /// Writes a timestamp after the dispatch of `entry` whose first buffer holds `bytes`.
    pub(crate) fn mark(&self, pass: &mut wgpu::ComputePass<'_>, entry: &'static str, bytes: u64) {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if (labels.len() as u32) < CAPACITY {
            pass.write_timestamp(&self.set, labels.len() as u32);
            labels.push((entry, bytes));
        }
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    /// Copies the timestamps written since the last report into the read-back buffer.
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) -> usize {
        let n = self.labels.lock().unwrap_or_else(|p| p.into_inner()).len();
        if n > 0 {
            encoder.resolve_query_set(&self.set, 0..n as u32, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
        }
        n
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    /// Logs the time per kernel of the `n` timestamps resolved; call once the submission
    /// that resolved them has finished.
    pub(crate) fn report(&self, device: &wgpu::Device, n: usize) {
        let labels = std::mem::take(&mut *self.labels.lock().unwrap_or_else(|p| p.into_inner()));
        if n < 2 {
            return;
        }
        let slice = self.readback.slice(..n as u64 * 8);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        if device.poll(wgpu::PollType::wait_indefinitely()).is_err() {
            return;
        }
        let ticks: Vec<u64> = {
            let Ok(view) = slice.get_mapped_range() else {
                return;
            };
            view.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        };
        self.readback.unmap();
        let mut by_kernel: BTreeMap<(&str, u64), (f64, usize)> = BTreeMap::new();
        // The first timestamp has no predecessor in this pass.
        for (i, label) in labels.iter().enumerate().take(n).skip(1) {
            let ns = ticks[i].saturating_sub(ticks[i - 1]) as f64 * f64::from(self.period_ns);
            let e = by_kernel.entry(*label).or_default();
            e.0 += ns / 1e3;
            e.1 += 1;
        }
        let total: f64 = by_kernel.values().map(|v| v.0).sum();
        let mut rows: Vec<_> = by_kernel.into_iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let table: Vec<String> = rows
            .iter()
            .map(|((k, bytes), (us, count))| {
                format!("{k}[{}K] {us:.0}us/{count}", bytes.div_ceil(1024))
            })
            .collect();
        tracing::info!("gpu time {total:.0}us: {}", table.join(", "));
    }
}
