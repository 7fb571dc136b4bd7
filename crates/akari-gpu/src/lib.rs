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
//! - [`GpuBackend`] (`backend.rs`): the [`akari_core::backend::Backend`] the one decoder runs
//!   on (`--device gpu`, and `webgpu` in the browser). Tensors are pooled f32 storage buffers,
//!   weights [`GpuMatrix`], the KV cache two preallocated f32 buffers per layer. Every op
//!   records into one compute pass, submitted every few dozen dispatches; the read at the end
//!   of a forward pass waits once — blocking natively, awaited in the browser
//!   ([`GpuContext::submit_and_read_async`]). The browser's threaded build has no backend:
//!   wgpu's objects are not `Send` there.
//! - [`ops`]: the kernels, each WGSL file beside the Rust that dispatches it — GEMV for every
//!   weight format with store/accumulate/GLU epilogues and a fused RMS norm, a one-token
//!   GEMV on aligned words (q/k/v in one dispatch over a fused copy; Q4_0 gate/up, down and
//!   vocabulary-sized matrices on integer dot products over 16-bit quantised inputs),
//!   embedding, RMS norm, rope (deferred into the KV store and the
//!   attention's query load), split (flash-decoding) attention with a combine pass,
//!   elementwise ops, and token selection (the best `k` logits, penalised tokens set aside,
//!   read back instead of the row). Tested against f64 references on a real Vulkan device
//!   (Mesa's lavapipe in CI) and, through the browser tests, on WebGPU (SwiftShader).
//! - Weight matrices larger than one binding (`maxStorageBufferBindingSize`, 128 MiB by
//!   default in browsers) are split by rows over several buffers ([`GpuMatrix::parts`]); the
//!   GEMV, GEMM and embedding kernels run once per part.
//! - `profile.rs`: per-kernel GPU time from timestamp queries (`AKARI_GPU_PROFILE=1`).
//!
//! # What is next
//!
//! 1. A faster 4-bit GEMV (repacked nibbles, packed integer dot products): decode is bound by
//!    it, and by the fixed cost of each of the ~250 dispatches a token.
//! 2. Tiled GEMM for prefill (today a prompt reuses the GEMV a few tokens at a time).

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
pub use context::{GpuCaps, GpuContext, KvCacheDtype, DEFAULT_TIMEOUT};
pub use error::GpuError;
pub use matrix::{GpuMatrix, MatrixPart};
