//! akari-core: everything about a chat model that does not depend on where it runs.
//!
//! - [`config`]: the architecture and hyper-parameters of a decoder ([`ModelConfig`]).
//! - [`quant`]: the weight formats backends execute ([`QuantFormat`]) and their block layouts.
//! - [`weights`]: canonical tensor names and zero-copy byte storage that format readers fill.
//! - [`backend`]: the op interface every backend implements.
//! - [`model`]: one decoder definition (llama, qwen2, phi3), generic over the backend.
//! - [`sampler`], [`generate`]: token selection and the streaming generation loop.
//! - [`tokenizer`], [`template`]: text in and out.
//!
//! Format readers live in `akari-formats`, backends in `akari-cpu` / `akari-gpu`.

pub mod backend;
pub mod config;
pub mod error;
pub mod generate;
pub mod model;
pub mod quant;
pub mod rope;
pub mod sampler;
pub mod template;
pub mod tokenizer;
pub mod weights;

pub use config::{Arch, ModelConfig, RopeScaling};
pub use error::{Error, Result};
pub use quant::QuantFormat;

/// What the user asks weights to be stored as; `Auto` keeps what the file has, where the
/// backend can run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Dtype {
    #[default]
    Auto,
    Fp32,
    Fp16,
    Q8,
    Q4,
    Q4f16,
    /// 8-bit integer weights with per-channel scales (transformers.js `model_int8.onnx`);
    /// stored as Q8_0 when converting other files, like `Q8`.
    Int8,
    /// 8-bit unsigned weights with zero points (transformers.js `model_uint8.onnx`);
    /// stored as Q8_0 when converting other files, like `Q8`.
    Uint8,
    /// bitsandbytes 4-bit weights, FP4 or NF4 (transformers.js `model_bnb4.onnx`, read as
    /// Q8_0); a 4-bit request when converting other files, like `Q4`.
    Bnb4,
}

impl Dtype {
    pub const ALL: [Dtype; 9] = [
        Dtype::Auto,
        Dtype::Fp32,
        Dtype::Fp16,
        Dtype::Q8,
        Dtype::Q4,
        Dtype::Q4f16,
        Dtype::Int8,
        Dtype::Uint8,
        Dtype::Bnb4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Auto => "auto",
            Dtype::Fp32 => "fp32",
            Dtype::Fp16 => "fp16",
            Dtype::Q8 => "q8",
            Dtype::Q4 => "q4",
            Dtype::Q4f16 => "q4f16",
            Dtype::Int8 => "int8",
            Dtype::Uint8 => "uint8",
            Dtype::Bnb4 => "bnb4",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown dtype `{s}` (expected one of auto, fp32, fp16, q8, q4, q4f16, int8, uint8, bnb4)"
                ))
            })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The GPU when a hardware adapter is there and takes the model, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            _ => Err(Error::InvalidArgument(format!(
                "unknown device `{s}` (expected auto, cpu or gpu)"
            ))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
