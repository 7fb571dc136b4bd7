//! akari-webnn: the WebNN backend. It builds `MLGraph`s from the one decoder definition.
//!
//! [`WebNnBackend`] is a symbolic [`akari_core::backend::Backend`]: running
//! `Model<WebNnBackend>` once ([`akari_core::model::Model::trace`]) records a [`Graph`] of
//! WebNN ops instead of computing. Two graphs are traced per model — decode (one row) and
//! prefill (a fixed chunk of rows) — over a KV cache of a fixed context chosen at load. In
//! the browser (`wasm32`, one thread) `runtime` emits them through `MLGraphBuilder`, keeps
//! weights and cache in `MLTensor`s, and dispatches one graph per chunk or token.
//! Natively the crate is the recorder and the weight layouts, which its tests check.

pub mod backend;
pub mod graph;
pub mod inputs;
pub mod layout;
pub mod prepare;

pub use backend::WebNnBackend;
pub use graph::{DataType, Graph};
pub use layout::Support;
pub use prepare::{plan, prepare, Dispatch, Prepared, PREFILL_ROWS};

// WebNN objects are JavaScript objects, usable only on the thread that made them: the
// runtime exists in the single-thread browser build only (see `runtime::WebNnModel`).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
pub mod runtime;
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod sys;
