//! One file per op: the Rust that builds and dispatches a kernel beside its WGSL.

pub mod gemv;
