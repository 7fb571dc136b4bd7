//! Decoder architecture and hyper-parameters, independent of the file they came from.

use crate::{Error, Result};
use serde::Deserialize;

/// The architecture families akari runs. They share one decoder definition and differ by the
/// flags in [`ModelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 2/3.x, SmolLM, TinyLlama, Mistral-style decoders.
    Llama,
    /// Qwen2 / Qwen2.5 / DeepSeek-R1-Distill-Qwen: q/k/v projections carry a bias.
    Qwen2,
    /// Phi-3 / Phi-3.5: fused qkv and gate_up projections, longrope scaling.
    Phi3,
}

impl Arch {
    /// Accepts the spellings of GGUF's `general.architecture` and HF's `model_type`.
    pub fn from_name(name: &str) -> Result<Arch> {
        match name {
            "llama" | "mistral" | "smollm" | "smollm2" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "phi3" => Ok(Arch::Phi3),
            other => Err(Error::UnknownArchitecture(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Phi3 => "phi3",
        }
    }
}

/// How rotary position frequencies are adjusted for long contexts.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3.1+: low frequencies stretched by `factor`, high ones kept, smooth in between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// Per-dimension divisors of the base frequencies, as GGUF stores llama3 scaling
    /// (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
    /// Phi-3 `longrope` / `su`: per-dimension divisors, short ones up to
    /// `original_max_position_embeddings`, long ones beyond; cos/sin scaled by
    /// `attention_factor`.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: usize,
        attention_factor: f32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// The context length the model was trained for.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks the relations the decoder relies on, so a bad file fails here and not in a kernel.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::format(file, msg));
        if self.num_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return bad("layer count, hidden size and vocabulary size must be non-zero".into());
        }
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return bad("head counts and head size must be non-zero".into());
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!(
                "head size {} is odd; rotary embeddings need pairs",
                self.head_dim
            ));
        }
        let half = self.head_dim / 2;
        let check = |name: &str, v: &[f32]| {
            if v.len() != half {
                Err(Error::format(
                    file,
                    format!(
                        "rope {name} has {} entries, expected head_dim/2 = {half}",
                        v.len()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match &self.rope_scaling {
            RopeScaling::FreqFactors(f) => check("frequency factors", f)?,
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } => {
                check("short factors", short_factor)?;
                check("long factors", long_factor)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json`, in the spelling of transformers 4.x or 5.x.
    pub fn from_hf_json(text: &str, file: &str) -> Result<ModelConfig> {
        let invalid =
            |e: serde_json::Error| Error::format(file, format!("invalid config.json: {e}"));
        let mut obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(invalid)?;
        // Unknown architectures fail first, before any field they may lack is complained about.
        match obj.get("model_type").and_then(|v| v.as_str()) {
            Some(t) => Arch::from_name(t)?,
            None => {
                return Err(Error::format(
                    file,
                    "`model_type` is missing or not a string",
                ))
            }
        };
        normalize_rope_fields(&mut obj, file)?;
        let c: HfConfig =
            serde_json::from_value(serde_json::Value::Object(obj)).map_err(invalid)?;
        let arch = Arch::from_name(&c.model_type)?;
        let num_heads = c.num_attention_heads;
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / num_heads.max(1));
        let max_pos = c.max_position_embeddings.unwrap_or(2048);
        let rope_scaling = match c.rope_scaling {
            None => RopeScaling::None,
            Some(s) => s.into_scaling(max_pos, c.original_max_position_embeddings, file)?,
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads,
            num_kv_heads: c.num_key_value_heads.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-5),
            rope_theta: c.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: max_pos,
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: c.attention_bias.unwrap_or(arch == Arch::Qwen2),
        };
        cfg.validate(file)?;
        Ok(cfg)
    }
}

/// transformers 5 writes `rope_parameters` (with `rope_theta` inside) where 4.x wrote
/// `rope_scaling` and a top-level `rope_theta`; fold the new spelling into the old. Partial
/// rotary embeddings are refused here rather than silently computed wrong.
fn normalize_rope_fields(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    file: &str,
) -> Result<()> {
    use serde_json::Value;
    if let Some(Value::Object(params)) = obj.get("rope_parameters").cloned() {
        if obj.get("rope_theta").is_none_or(Value::is_null) {
            if let Some(theta) = params.get("rope_theta") {
                obj.insert("rope_theta".into(), theta.clone());
            }
        }
        if obj.get("rope_scaling").is_none_or(Value::is_null) {
            obj.insert("rope_scaling".into(), Value::Object(params));
        }
    }
    let top = obj.get("partial_rotary_factor").and_then(Value::as_f64);
    let nested = obj
        .get("rope_scaling")
        .and_then(|s| s.get("partial_rotary_factor"))
        .and_then(Value::as_f64);
    for (field, factor) in [
        ("partial_rotary_factor", top),
        ("rope_scaling.partial_rotary_factor", nested),
    ] {
        if let Some(f) = factor.filter(|f| *f != 1.0) {
            return Err(Error::format(
                file,
                format!("`{field}` is {f}; partial rotary embeddings are not supported"),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f32>,
    rope_theta: Option<f32>,
    rope_scaling: Option<HfRopeScaling>,
    max_position_embeddings: Option<usize>,
    original_max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
}

#[derive(Deserialize)]
struct HfRopeScaling {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
    short_factor: Option<Vec<f32>>,
    long_factor: Option<Vec<f32>>,
    attention_factor: Option<f32>,
}

impl HfRopeScaling {
    fn into_scaling(
        self,
        max_pos: usize,
        top_original: Option<usize>,
        file: &str,
    ) -> Result<RopeScaling> {
        let kind = self.rope_type.as_deref().unwrap_or("default");
        let need = |v: Option<f32>, what: &str| {
            v.ok_or_else(|| Error::format(file, format!("rope_scaling `{kind}` lacks `{what}`")))
        };
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need(self.factor, "factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need(self.factor, "factor")?,
                low_freq_factor: need(self.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: need(self.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: self
                    .original_max_position_embeddings
                    .ok_or_else(|| Error::format(file, "llama3 rope_scaling lacks original_max_position_embeddings"))?,
            },
            "longrope" | "su" => {
                let original = self
                    .original_max_position_embeddings
                    .or(top_original)
                    .ok_or_else(|| Error::format(file, "longrope needs original_max_position_embeddings"))?;
                let short_factor = self
                    .short_factor
                    .ok_or_else(|| Error::format(file, "longrope lacks short_factor"))?;
                let long_factor = self
                    .long_factor
                    .ok_or_else(|| Error::format(file, "longrope lacks long_factor"))?;
                let attention_factor = self
                    .attention_factor
                    .unwrap_or_else(|| longrope_attention_factor(max_pos, original));
                RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    original_max_position_embeddings: original,
                    attention_factor,
                }
            }
            other => {
                return Err(Error::format(
                    file,
                    format!("rope scaling `{other}` is not supported (supported: linear, llama3, longrope, su)"),
                ))
            }
        })
    }
}

/// The cos/sin multiplier Phi-3 uses when the config gives none.
pub fn longrope_attention_factor(max_pos: usize, original: usize) -> f32 {
    let factor = max_pos as f64 / original.max(1) as f64;
    if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / (original as f64).ln()).sqrt() as f32
    }
}
