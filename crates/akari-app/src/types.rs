//! The values that cross the JavaScript API, as Rust types (field names as in `akari.d.ts`).
use serde::Deserialize;

/// One load progress report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadProgress {
    pub stage: Stage,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub loaded: Option<f64>,
    #[serde(default)]
    pub total: Option<f64>,
    #[serde(default)]
    pub bytes_per_second: Option<f64>,
}

/// Where a load stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Download,
    Cache,
    Load,
    Compile,
    Ready,
}

/// Whether this browser can use one feature, and why not.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Capability {
    pub available: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Threads {
    pub available: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebGpu {
    pub available: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub shader_f16: bool,
}

/// What `capabilities()` reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Capabilities {
    pub wasm: Capability,
    pub threads: Threads,
    pub webgpu: WebGpu,
    pub webnn: Capability,
}

/// Numbers of one finished reply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Stats {
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub thinking_ms: f64,
    pub stop_reason: String,
}

/// One piece of a streamed reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Chunk {
    Think { text: String },
    Answer { text: String },
    Done { stats: Stats },
}

/// What the loaded model is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub dtype: String,
    pub device: String,
    pub parameters: f64,
    pub context_length: u64,
    /// What runs the model; on WebNN with a note when weights were dequantised at load.
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CachedFile {
    pub name: String,
    pub bytes: f64,
}

/// One model in the browser's cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CachedModel {
    pub model: String,
    #[serde(default)]
    pub files: Vec<CachedFile>,
    pub bytes: f64,
}
