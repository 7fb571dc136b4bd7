//! The GPU backend's errors.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter on any enabled backend: no GPU driver, or none wgpu can use.
    #[error(
        "no GPU adapter found (wgpu backends tried: {backends}): {source}. Install a GPU \
         driver with Vulkan, Metal or DX12 support; without a GPU, Mesa's software Vulkan \
         driver works (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`)"
    )]
    NoAdapter {
        backends: String,
        #[source]
        source: wgpu::RequestAdapterError,
    },
    #[error("requesting a device from adapter `{adapter}`: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// wgpu rejected a call (validation, out of memory, internal error).
    /// Kept as text: `wgpu::Error` is not `Send` in the browser.
    #[error("{label}: {message}")]
    Wgpu { label: String, message: String },
    #[error("{op}: {what} is {got}, expected {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A kernel variant asked for where it does not apply (a caller's mistake: the
    /// `fuses_*` / `*_quantized` checks in `ops::gemv` say where each applies).
    #[error("{op}: {what}")]
    NotApplicable {
        op: &'static str,
        what: &'static str,
    },
    /// One binding would exceed the device's `maxStorageBufferBindingSize` (or `maxBufferSize`).
    #[error(
        "{what} needs {bytes} bytes in one binding; this device allows {limit} \
         (weight matrices are split by rows; one row, an activation or a cache layer must fit)"
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{op}: the GPU did not finish within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("{op}: {source}")]
    Poll {
        op: &'static str,
        #[source]
        source: wgpu::PollError,
    },
    #[error("{op}: mapping the read-back buffer failed: {source}")]
    Map {
        op: &'static str,
        #[source]
        source: wgpu::BufferAsyncError,
    },
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
}
