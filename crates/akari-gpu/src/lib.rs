//! akari-gpu: the GPU backend on wgpu — native Vulkan, Metal and DX12, and the browser's
//! WebGPU — with kernels written in WGSL.
//!
//! # Contract
//!
//! - [`GpuContext::new`] (native, blocking) / [`GpuContext::new_async`] (anywhere) open the
//!   high-performance adapter and a device with every limit the adapter offers, plus
//!   `shader-f16` and `subgroups` when present ([`GpuCaps`] says which). No adapter is
//!   [`GpuError::NoAdapter`], whose message says what to install.
//! - Nothing here panics on a GPU failure: wgpu's uncaptured errors and device loss are
//!   recorded and returned as [`GpuError`] from the call that caused them, and every blocking
//!   wait has a timeout ([`GpuContext::set_timeout`]).
//! - Weights stay in their file layout ([`akari_core::quant`]: F32, F16, ggml's Q8_0, Q4_0,
//!   Q4_1 blocks). Blocks of 34, 18 and 20 bytes are not 4-byte aligned, so a matrix is
//!   uploaded as raw bytes into a `u32` storage buffer, zero-padded, and kernels extract
//!   bytes and f16 scales with shifts and `unpack2x16float` ([`GpuMatrix`]). F16 is read the
//!   same way, so no kernel needs `shader-f16`.
//! - Activations are f32.
//! - Pipelines are compiled once per kernel variant and cached in the context.
//!
//! # What is here
//!
//! - [`ops::gemv`] (`ops/gemv.rs` + `ops/gemv.wgsl`): `y = W·x (+ bias)` for every weight
//!   format, one workgroup per output row with a shared-memory reduction, 2-D dispatch past
//!   `maxComputeWorkgroupsPerDimension`. Tested against a dequantised f64 reference on a
//!   real Vulkan device (Mesa's lavapipe in CI).
//!
//! # What is next
//!
//! 1. The [`akari_core::backend::Backend`] implementation: tensors as buffers, one command
//!    encoder per forward pass and one submission per decode step, bind groups and pooled
//!    buffers built at load, a read-back only in `read`.
//! 2. Fused decode kernels: rms_norm into the following GEMV, q/k/v and gate/up as one
//!    dispatch, silu·mul into the down projection; `subgroups` reductions and `shader-f16`
//!    variants where the adapter has them.
//! 3. Tiled GEMM for prefill (many tokens per weight read).
//! 4. Attention over a preallocated KV cache (flash-decoding: split the sequence across
//!    workgroups, merge the partial softmaxes), rope on the device.
//! 5. Sampling on the GPU (argmax / top-k), reading back a few bytes instead of the logits.
//! 6. Splitting tensors over several bindings where they exceed `maxStorageBufferBindingSize`
//!    (128 MiB by default on WebGPU; a 151936×1536 f16 embedding is 467 MB) — today such a
//!    matrix fails to upload with [`GpuError::TooLarge`].

mod context;
mod error;
mod matrix;
pub mod ops;

pub use context::{GpuCaps, GpuContext, DEFAULT_TIMEOUT};
pub use error::GpuError;
pub use matrix::GpuMatrix;
