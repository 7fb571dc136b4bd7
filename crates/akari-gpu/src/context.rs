//! The device: adapter choice, limits and features, errors, submission and read-back.

use crate::ops::Recording;
use crate::GpuError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a blocking wait for the GPU may take before it fails with [`GpuError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the device can do, read once at creation. Kernels pick their variants from this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuCaps {
    /// The largest storage buffer one binding may cover (WebGPU's default is 128 MiB).
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    /// WGSL `enable f16;` is available (and enabled on the device).
    pub shader_f16: bool,
    /// WGSL subgroup built-ins are available (and enabled on the device).
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// The adapter is a CPU implementation (lavapipe, SwiftShader, a browser's fallback
    /// adapter).
    pub software: bool,
}

/// What the KV cache holds. f16 by default on every adapter: the kernels pack and unpack it
/// with WGSL's core `pack2x16float` / `unpack2x16float`, so it needs no `shader-f16`, takes
/// half the memory and half the reads of f32 (llama.cpp's default too). f32
/// (`AKARI_GPU_KV_CACHE=f32`, or [`GpuContext::set_kv_cache_dtype`]) keeps keys and values
/// exact, as the CPU backend does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCacheDtype {
    F16,
    F32,
}

impl KvCacheDtype {
    /// Bytes of one cached value.
    pub fn bytes(self) -> usize {
        match self {
            KvCacheDtype::F16 => 2,
            KvCacheDtype::F32 => 4,
        }
    }
}

/// A wgpu device and queue with akari's kernels. Pipelines are compiled once, on first use,
/// and cached here.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: GpuCaps,
    /// The first error wgpu reported outside an error scope, taken by [`GpuContext::check`].
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    timeout: Duration,
    /// One-token GEMVs use `gemv_decode.wgsl` ([`GpuContext::set_decode_kernels`]).
    decode_kernels: bool,
    /// Prompts use `gemm_soft.wgsl` ([`GpuContext::set_soft_gemm`]).
    soft_gemm: bool,
    /// Prompts use `attention_rows` ([`GpuContext::set_soft_attention`]).
    soft_attention: bool,
    /// The one-token GEMVs sum across threads with subgroups of this size
    /// ([`GpuContext::set_subgroup_sums`]).
    subgroup_sums: Option<u32>,
    /// What KV caches made from now on hold ([`GpuContext::set_kv_cache_dtype`]).
    kv_cache_dtype: KvCacheDtype,
    /// A lower size than the binding limit to split weight matrices at
    /// ([`GpuContext::set_matrix_binding_limit`]).
    matrix_limit: Option<u64>,
    /// A 4-byte storage buffer bound where a kernel's optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// Two more, for writable bindings a kernel does not use (they must not alias).
    pub(crate) spare_outputs: [wgpu::Buffer; 2],
    /// Per-kernel timing (`AKARI_GPU_PROFILE`).
    pub(crate) profiler: Option<crate::profile::Profiler>,
    /// The last read-back buffer, reused while reads keep the same size.
    staging: Mutex<Option<wgpu::Buffer>>,
    /// Every other kernel's pipelines ([`crate::ops`]).
    pub(crate) pipelines: crate::ops::Pipelines,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Opens the high-performance adapter of the native backends (Vulkan, Metal, DX12) or of
    /// the browser's WebGPU, blocking until it is ready. `WGPU_BACKEND` and the other wgpu
    /// environment variables are honoured.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<GpuContext, GpuError> {
        pollster::block_on(GpuContext::new_async())
    }

    /// The high-performance adapter of the native backends or of the browser's WebGPU
    /// (`WGPU_BACKEND` and the other wgpu environment variables honoured).
    async fn adapter() -> Result<wgpu::Adapter, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::PRIMARY;
        let desc = desc.with_env();
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|source| GpuError::NoAdapter {
                backends: format!("{backends:?}"),
                source,
            })
    }

    /// The name of the adapter [`GpuContext::new`] would open, when it is a real GPU
    /// (integrated, discrete or virtual) rather than a software rasteriser such as lavapipe:
    /// what `--device auto` goes by.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn hardware_adapter() -> Option<String> {
        let adapter = pollster::block_on(GpuContext::adapter()).ok()?;
        let info = adapter.get_info();
        match info.device_type {
            wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu => Some(info.name),
            wgpu::DeviceType::Cpu | wgpu::DeviceType::Other => None,
        }
    }

    /// [`GpuContext::new`] for callers that can await (the browser, where blocking is not
    /// allowed).
    pub async fn new_async() -> Result<GpuContext, GpuError> {
        let adapter = GpuContext::adapter().await?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mut wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | crate::profile::Profiler::wanted();
        // `AKARI_GPU_SUBGROUPS=0` runs the kernels written for adapters without them.
        if !cfg!(target_arch = "wasm32")
            && std::env::var("AKARI_GPU_SUBGROUPS").as_deref() == Ok("0")
        {
            wanted.remove(wgpu::Features::SUBGROUP);
        }
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("akari"),
                required_features: features,
                // Everything the adapter offers: large storage bindings matter for weights.
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|source| GpuError::RequestDevice {
                adapter: info.name.clone(),
                source,
            })?;

        // wgpu panics on errors nobody captures; record them instead and return them from
        // the call that caused them.
        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            tracing::error!("wgpu: {e}");
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(format!("{reason:?}: {msg}"));
        });

        let caps = GpuCaps {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            software: info.device_type == wgpu::DeviceType::Cpu
                || ["llvmpipe", "swiftshader"]
                    .iter()
                    .any(|n| info.name.to_lowercase().contains(n)),
        };
        tracing::info!(
            adapter = %info.name,
            backend = ?info.backend,
            driver = %info.driver,
            ?caps,
            "GPU device ready"
        );
        let decode_kernels = env_switch("AKARI_GPU_DECODE_KERNELS", !caps.software);
        let soft_gemm = env_switch("AKARI_GPU_SOFT_GEMM", caps.software);
        let soft_attention = env_switch("AKARI_GPU_SOFT_ATTENTION", caps.software);
        let subgroup_sums =
            fixed_subgroup_size(&caps).filter(|_| env_switch("AKARI_GPU_GEMV_SUBGROUPS", true));
        let kv_cache_dtype = match std::env::var("AKARI_GPU_KV_CACHE").as_deref() {
            Ok("f32") => KvCacheDtype::F32,
            _ => KvCacheDtype::F16,
        };
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("akari.dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let spare = || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("akari.spare_output"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let spare_outputs = [spare(), spare()];
        let profiler = crate::profile::Profiler::new(&device, &queue);
        Ok(GpuContext {
            profiler,
            device,
            queue,
            info,
            caps,
            error,
            lost,
            timeout: DEFAULT_TIMEOUT,
            decode_kernels,
            soft_gemm,
            soft_attention,
            subgroup_sums,
            kv_cache_dtype,
            matrix_limit: std::env::var("AKARI_GPU_MATRIX_BINDING_LIMIT")
                .ok()
                .and_then(|v| v.parse().ok()),
            dummy,
            spare_outputs,
            staging: Mutex::new(None),
            pipelines: Default::default(),
        })
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn caps(&self) -> &GpuCaps {
        &self.caps
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Changes how long blocking waits may take (default [`DEFAULT_TIMEOUT`]).
    /// Whether one-token GEMVs use the decode kernel (wide workgroups reading aligned words,
    /// with the RMS norm fused) rather than the general GEMV. On by default on hardware; off
    /// on CPU implementations, where its workgroup barriers cost more than the reads it saves
    /// (4.5× slower decode on SwiftShader). `AKARI_GPU_DECODE_KERNELS=0|1` overrides natively.
    pub fn set_decode_kernels(&mut self, on: bool) {
        self.decode_kernels = on;
    }

    pub fn decode_kernels(&self) -> bool {
        self.decode_kernels
    }

    /// Whether prompts take the tiled GEMM built for software adapters (`gemm_soft.wgsl`:
    /// fewer threads, larger patches, since there a barrier costs a switch of every
    /// thread) rather than the GPU one. On by default on software adapters;
    /// `AKARI_GPU_SOFT_GEMM=0|1` overrides natively, and tests run both.
    pub fn set_soft_gemm(&mut self, on: bool) {
        self.soft_gemm = on;
    }

    pub fn soft_gemm(&self) -> bool {
        self.soft_gemm
    }

    /// Whether prompts take the attention built for software adapters (`attention.wgsl`'s
    /// `attention_rows`: a thread a row, no barriers) rather than the GPU one (a workgroup a
    /// row). On by default on software adapters; `AKARI_GPU_SOFT_ATTENTION=0|1` overrides
    /// natively, and tests run both.
    pub fn set_soft_attention(&mut self, on: bool) {
        self.soft_attention = on;
    }

    pub fn soft_attention(&self) -> bool {
        self.soft_attention
    }

    /// Whether the one-token GEMVs sum a row's threads, and the norm's workgroup, with
    /// subgroup operations (`gemv_sums_subgroups.wgsl`) rather than trees through workgroup
    /// memory (`gemv_sums.wgsl`). On by default where the adapter has subgroups of one fixed
    /// size (Q4_0 decode on an H100: +3 %); turning it on elsewhere does nothing.
    /// `AKARI_GPU_GEMV_SUBGROUPS=0` turns it off natively, and tests run both.
    pub fn set_subgroup_sums(&mut self, on: bool) {
        self.subgroup_sums = fixed_subgroup_size(&self.caps).filter(|_| on);
    }

    /// The subgroup size the one-token GEMVs sum with, when they do.
    pub fn subgroup_sums(&self) -> Option<u32> {
        self.subgroup_sums
    }

    /// What KV caches made from now on hold ([`KvCacheDtype`]: f16 unless
    /// `AKARI_GPU_KV_CACHE=f32`).
    pub fn set_kv_cache_dtype(&mut self, dtype: KvCacheDtype) {
        self.kv_cache_dtype = dtype;
    }

    pub fn kv_cache_dtype(&self) -> KvCacheDtype {
        self.kv_cache_dtype
    }

    /// The most bytes one buffer of a weight matrix takes: the device's binding limit
    /// (`maxStorageBufferBindingSize`, and the largest buffer), or the lower size set with
    /// [`GpuContext::set_matrix_binding_limit`]. Larger matrices are split by rows.
    pub fn matrix_binding_limit(&self) -> u64 {
        self.caps
            .max_storage_buffer_binding_size
            .min(self.caps.max_buffer_size)
            .min(self.matrix_limit.unwrap_or(u64::MAX))
    }

    /// Splits weight matrices uploaded from now on at `bytes` rather than at the device's
    /// limit, so a device with large bindings runs the split path a browser's 128 MiB limit
    /// needs (tests, and natively `AKARI_GPU_MATRIX_BINDING_LIMIT=<bytes>`). It can only
    /// lower the limit.
    pub fn set_matrix_binding_limit(&mut self, bytes: u64) {
        self.matrix_limit = Some(bytes);
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Returns the first error wgpu reported since the last check, naming `label` as the
    /// operation that hit it.
    pub fn check(&self, label: &str) -> Result<(), GpuError> {
        if let Some(msg) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(GpuError::DeviceLost(msg));
        }
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(message) => Err(GpuError::Wgpu {
                label: label.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// A storage buffer holding `bytes`, padded with zeros to whole 4-byte words plus one
    /// spare word (kernels read 4 bytes at any even offset). Fails when it would not fit in
    /// one binding.
    /// A storage buffer of `size` bytes, refused with `TooLarge` past `limit`.
    pub(crate) fn new_storage(
        &self,
        label: &str,
        size: u64,
        limit: u64,
    ) -> Result<wgpu::Buffer, GpuError> {
        if size > limit {
            return Err(GpuError::TooLarge {
                what: label.to_string(),
                bytes: size,
                limit,
            });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    pub fn storage_buffer(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let size = (bytes.len() as u64).div_ceil(4) * 4 + 4;
        let limit = self
            .caps
            .max_storage_buffer_binding_size
            .min(self.caps.max_buffer_size);
        let buffer = self.new_storage(label, size, limit)?;
        // `write_buffer`, not a buffer mapped at creation: in the browser a mapped range is a
        // copy in the wasm heap, and the heap must not hold a second copy of a weight tensor.
        // Copies are whole words; the rest of the buffer is already zero.
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buffer, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buffer, whole as u64, &tail);
        }
        // Hands the staged bytes to the device now, so uploading a model never holds all of
        // them at once.
        self.queue.submit(std::iter::empty());
        self.check(label)?;
        Ok(buffer)
    }

    /// An f32 storage buffer of `len` values (uninitialised contents are zero in wgpu).
    pub fn f32_buffer(&self, label: &str, len: usize) -> Result<wgpu::Buffer, GpuError> {
        self.bytes_buffer(label, len.max(1) * 4)
    }

    /// A storage buffer of `bytes` (rounded up to a word; contents zero, as in
    /// [`GpuContext::f32_buffer`]).
    pub fn bytes_buffer(&self, label: &str, bytes: usize) -> Result<wgpu::Buffer, GpuError> {
        let size = bytes.max(4).next_multiple_of(4) as u64;
        let limit = self.caps.max_storage_buffer_binding_size;
        let buffer = self.new_storage(label, size, limit)?;
        self.check(label)?;
        Ok(buffer)
    }

    /// Submits what `rec` holds without waiting.
    pub fn submit(&self, op: &'static str, rec: Recording) -> Result<(), GpuError> {
        self.queue.submit([rec.finish()]);
        self.check(op)
    }

    /// Submits `rec` and reads `len` f32 values from the start of `src` back to the host,
    /// waiting at most the context's timeout.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit_and_read(
        &self,
        op: &'static str,
        rec: Recording,
        src: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<f32>, GpuError> {
        pollster::block_on(self.submit_and_read_async(op, rec, src, len))
    }

    /// [`GpuContext::submit_and_read`] without blocking. In the browser the mapping
    /// completes through the event loop, so this is the only read there.
    pub async fn submit_and_read_async(
        &self,
        op: &'static str,
        rec: Recording,
        src: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<f32>, GpuError> {
        self.read_back(op, rec, src, len, f32::from_le_bytes).await
    }

    /// [`GpuContext::submit_and_read_async`] of `u32` words (token ids, selection keys).
    pub async fn submit_and_read_words_async(
        &self,
        op: &'static str,
        rec: Recording,
        src: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<u32>, GpuError> {
        self.read_back(op, rec, src, len, u32::from_le_bytes).await
    }

    async fn read_back<T>(
        &self,
        op: &'static str,
        rec: Recording,
        src: &wgpu::Buffer,
        len: usize,
        word: fn([u8; 4]) -> T,
    ) -> Result<Vec<T>, GpuError> {
        let read = self.submit_read(op, rec, src, len)?;
        self.finish_read(read, word).await
    }

    /// Submits `rec` with a copy of the first `len` words of `src` into a read-back buffer,
    /// and asks for that buffer's mapping; [`GpuContext::finish_read`] waits for it. Work
    /// submitted in between runs first: the device is kept busy while the host waits.
    pub fn submit_read(
        &self,
        op: &'static str,
        mut rec: Recording,
        src: &wgpu::Buffer,
        len: usize,
    ) -> Result<PendingRead, GpuError> {
        let size = (len.max(1) * 4) as u64;
        // Reuse the last read-back buffer when it fits; a read still pending makes its own.
        let reused = {
            let mut slot = self.staging.lock().unwrap_or_else(|p| p.into_inner());
            slot.take().filter(|b| b.size() == size)
        };
        let staging = reused.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("akari.readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        rec.encoder()
            .copy_buffer_to_buffer(src, 0, &staging, 0, size);
        let profiled = self
            .profiler
            .as_ref()
            .map(|p| p.resolve(rec.encoder()))
            .unwrap_or(0);
        let t0 = web_time::Instant::now();
        let commands = rec.finish();
        let t1 = web_time::Instant::now();
        let index = self.queue.submit([commands]);
        tracing::trace!(
            finish_us = (t1 - t0).as_micros() as u64,
            submit_us = t1.elapsed().as_micros() as u64,
            "read submitted"
        );
        self.check(op)?;
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver is dropped only when the caller gave up waiting.
            let _ = tx.send(r);
        });
        Ok(PendingRead {
            op,
            staging,
            index,
            mapped: rx,
            len,
            profiled,
        })
    }

    /// Waits (at most the context's timeout, natively) for a read from
    /// [`GpuContext::submit_read`] and returns its words.
    pub async fn finish_read<T>(
        &self,
        read: PendingRead,
        word: fn([u8; 4]) -> T,
    ) -> Result<Vec<T>, GpuError> {
        let PendingRead {
            op,
            staging,
            index,
            mapped,
            len,
            profiled,
        } = read;
        // Natively the map callback runs inside the poll that sees the submission finish;
        // the browser runs it from its event loop.
        #[cfg(not(target_arch = "wasm32"))]
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(self.timeout),
        }) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                return Err(GpuError::Timeout {
                    op,
                    timeout: self.timeout,
                })
            }
            Err(source) => return Err(GpuError::Poll { op, source }),
        }
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        // wgpu drops the callback unrun only when the device goes away.
        let result = mapped
            .await
            .map_err(|_| GpuError::DeviceLost(format!("{op}: the read-back was abandoned")))?;
        result.map_err(|source| GpuError::Map { op, source })?;
        self.check(op)?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .expect("a buffer mapped for reading can be viewed");
            view[..len * 4]
                .chunks_exact(4)
                .map(|c| word([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        staging.unmap();
        if let Some(p) = &self.profiler {
            p.report(&self.device, profiled);
        }
        *self.staging.lock().unwrap_or_else(|p| p.into_inner()) = Some(staging);
        Ok(out)
    }

    /// Whether kernel timings are being taken (`AKARI_GPU_PROFILE`): they cover one
    /// submission at a time, so reads must not overlap.
    pub fn profiling(&self) -> bool {
        self.profiler.is_some()
    }
}

/// A read-back in flight ([`GpuContext::submit_read`]). Dropping it abandons the read.
pub struct PendingRead {
    op: &'static str,
    staging: wgpu::Buffer,
    index: wgpu::SubmissionIndex,
    mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    len: usize,
    /// Timestamps resolved with it, when profiling.
    profiled: usize,
}

/// `default`, unless the environment variable `name` is `0` or `1`.
pub(crate) fn env_switch(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => default,
    }
}

/// The adapter's subgroup size where it has subgroups of one fixed size, a power of two
/// that divides a 256-thread workgroup (what `gemv_sums_subgroups.wgsl` assumes).
fn fixed_subgroup_size(caps: &GpuCaps) -> Option<u32> {
    let size = caps.subgroup_min_size;
    (caps.subgroups
        && size == caps.subgroup_max_size
        && (4..=256).contains(&size)
        && size.is_power_of_two())
    .then_some(size)
}
