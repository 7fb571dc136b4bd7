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
//! - [`GpuBackend`] (`backend.rs`, native only: `read` blocks): the
//!   [`akari_core::backend::Backend`] the one decoder runs on (`--device gpu`). Tensors are
//!   f32 storage buffers, weights [`GpuMatrix`], the KV cache two preallocated f32 buffers
//!   per layer. Every op records a compute pass into one pending command encoder and
//!   `read` submits it: one submission and one wait per forward pass.
//! - [`ops::gemv`] (`ops/gemv.rs` + `ops/gemv.wgsl`): `y = W·x (+ bias)` for every weight
//!   format, one workgroup per output row with a shared-memory reduction, 2-D dispatch past
//!   `maxComputeWorkgroupsPerDimension`, one z-slice per token for prefill. Tested against
//!   a dequantised f64 reference on a real Vulkan device (Mesa's lavapipe in CI).
//! - [`ops::embed`] (rows of the embedding dequantised on the device from the GEMV's copy
//!   of the matrix), [`ops::rms_norm`], [`ops::rope`] (rotate_half, tables uploaded once),
//!   [`ops::attention`] (cache append, then one workgroup per (head, token) with an online
//!   softmax), [`ops::elementwise`] (silu·mul, residual add). Simple and unfused.
//!
//! # What is next
//!
//! 1. Per-step overheads: bind groups, uniforms and activation buffers built once at load
//!    and reused (today every op allocates its output, a uniform and a bind group).
//! 2. Fused decode kernels: rms_norm into the following GEMV, q/k/v and gate/up as one
//!    dispatch, silu·mul into the down projection; `subgroups` reductions and `shader-f16`
//!    variants where the adapter has them; several rows per workgroup.
//! 3. Tiled GEMM for prefill (many tokens per weight read; today W is read once per token).
//! 4. Flash-decoding attention: split long sequences across workgroups and merge the
//!    partial softmaxes.
//! 5. Sampling on the GPU (argmax / top-k), reading back a few bytes instead of the logits.
//! 6. Splitting tensors over several bindings where they exceed `maxStorageBufferBindingSize`
//!    (128 MiB by default on WebGPU; a 151936×1536 f16 embedding is 467 MB) — today such a
//!    matrix fails to upload with [`GpuError::TooLarge`].
//! 7. The browser: an async read-back, so the backend also builds for wasm32.

// wgpu's objects are `Send` in the browser only in a build without threads (wgpu's
// `fragile-send-sync-non-atomic-wasm`), and the decoder's backends must be.
#[cfg(any(not(target_arch = "wasm32"), not(target_feature = "atomics")))]
mod backend;
mod context;
mod error;
mod matrix;
pub mod ops;
mod profile;

#[cfg(any(not(target_arch = "wasm32"), not(target_feature = "atomics")))]
pub use backend::{GpuBackend, GpuKvCache, GpuRope, GpuTensor, GpuVector};
pub use context::{GpuCaps, GpuContext, DEFAULT_TIMEOUT};
pub use error::GpuError;
pub use matrix::GpuMatrix;
