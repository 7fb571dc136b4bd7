//! GGUF metadata key and tensor names, as tables (after llama.cpp's `llama-arch.cpp`), so
//! the loader never spells a name inline.

use akari_core::weights::LayerTensor;

pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_ALIGNMENT: &str = "general.alignment";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";

/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// Keys prefixed by the architecture name (`{arch}.…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchKey {
    ContextLength,
    EmbeddingLength,
    BlockCount,
    FeedForwardLength,
    HeadCount,
    HeadCountKv,
    RmsEps,
    KeyLength,
    ValueLength,
    VocabSize,
    RopeFreqBase,
    RopeDimensionCount,
    RopeScalingType,
    RopeScalingFactor,
    RopeScalingOrigCtx,
    RopeScalingAttnFactor,
}

const ARCH_KEYS: &[(ArchKey, &str)] = &[
    (ArchKey::ContextLength, "context_length"),
    (ArchKey::EmbeddingLength, "embedding_length"),
    (ArchKey::BlockCount, "block_count"),
    (ArchKey::FeedForwardLength, "feed_forward_length"),
    (ArchKey::HeadCount, "attention.head_count"),
    (ArchKey::HeadCountKv, "attention.head_count_kv"),
    (ArchKey::RmsEps, "attention.layer_norm_rms_epsilon"),
    (ArchKey::KeyLength, "attention.key_length"),
    (ArchKey::ValueLength, "attention.value_length"),
    (ArchKey::VocabSize, "vocab_size"),
    (ArchKey::RopeFreqBase, "rope.freq_base"),
    (ArchKey::RopeDimensionCount, "rope.dimension_count"),
    (ArchKey::RopeScalingType, "rope.scaling.type"),
    (ArchKey::RopeScalingFactor, "rope.scaling.factor"),
    (
        ArchKey::RopeScalingOrigCtx,
        "rope.scaling.original_context_length",
    ),
    (ArchKey::RopeScalingAttnFactor, "rope.scaling.attn_factor"),
];

impl ArchKey {
    /// The part after `{arch}.`.
    pub fn suffix(self) -> &'static str {
        ARCH_KEYS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, s)| *s)
            .unwrap_or("")
    }

    /// The full key for architecture `arch`, e.g. `llama.context_length`.
    pub fn key(self, arch: &str) -> String {
        format!("{arch}.{}", self.suffix())
    }
}

pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
pub const ROPE_FREQS: &str = "rope_freqs.weight";
pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// Prefix of per-layer tensors: `blk.{i}.{suffix}`.
pub const BLOCK_PREFIX: &str = "blk.";

/// A per-layer tensor as the file names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockTensor {
    /// Maps one-to-one onto a canonical tensor.
    Plain(LayerTensor),
    /// Phi-3's fused `[q; k; v]` projection.
    FusedQkv,
    /// Its bias.
    FusedQkvBias,
}

/// Per-layer suffixes, after `blk.{i}.`.
pub const BLOCK_TENSORS: &[(&str, BlockTensor)] = &[
    (
        "attn_norm.weight",
        BlockTensor::Plain(LayerTensor::AttnNorm),
    ),
    ("attn_q.weight", BlockTensor::Plain(LayerTensor::Q)),
    ("attn_k.weight", BlockTensor::Plain(LayerTensor::K)),
    ("attn_v.weight", BlockTensor::Plain(LayerTensor::V)),
    ("attn_q.bias", BlockTensor::Plain(LayerTensor::QBias)),
    ("attn_k.bias", BlockTensor::Plain(LayerTensor::KBias)),
    ("attn_v.bias", BlockTensor::Plain(LayerTensor::VBias)),
    ("attn_output.weight", BlockTensor::Plain(LayerTensor::O)),
    ("ffn_norm.weight", BlockTensor::Plain(LayerTensor::FfnNorm)),
    ("ffn_gate.weight", BlockTensor::Plain(LayerTensor::Gate)),
    ("ffn_up.weight", BlockTensor::Plain(LayerTensor::Up)),
    ("ffn_down.weight", BlockTensor::Plain(LayerTensor::Down)),
    ("attn_qkv.weight", BlockTensor::FusedQkv),
    ("attn_qkv.bias", BlockTensor::FusedQkvBias),
];

/// Splits `blk.{i}.{suffix}` into the layer and the tensor; `None` for other names.
pub fn parse_block_name(name: &str) -> Option<(usize, Result<BlockTensor, &str>)> {
    let rest = name.strip_prefix(BLOCK_PREFIX)?;
    let (idx, suffix) = rest.split_once('.')?;
    if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer = idx.parse().ok()?;
    let t = BLOCK_TENSORS
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, t)| *t)
        .ok_or(suffix);
    Some((layer, t))
}

/// The file's name for canonical tensor `t` of layer `layer`.
pub fn block_name(layer: usize, t: LayerTensor) -> String {
    let suffix = BLOCK_TENSORS
        .iter()
        .find(|(_, b)| *b == BlockTensor::Plain(t))
        .map(|(s, _)| *s)
        .unwrap_or("?");
    format!("{BLOCK_PREFIX}{layer}.{suffix}")
}

/// `general.file_type` values (llama.cpp's `llama_ftype`) and their names.
pub const FILE_TYPES: &[(u64, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names() {
        assert_eq!(
            parse_block_name("blk.12.attn_q.weight"),
            Some((12, Ok(BlockTensor::Plain(LayerTensor::Q))))
        );
        assert_eq!(
            parse_block_name("blk.0.attn_qkv.weight"),
            Some((0, Ok(BlockTensor::FusedQkv)))
        );
        assert_eq!(
            parse_block_name("blk.3.foo.weight"),
            Some((3, Err("foo.weight")))
        );
        assert_eq!(parse_block_name("blk.x.attn_q.weight"), None);
        assert_eq!(parse_block_name("blk.+1.attn_q.weight"), None);
        assert_eq!(parse_block_name("token_embd.weight"), None);
        assert_eq!(block_name(4, LayerTensor::Down), "blk.4.ffn_down.weight");
        assert_eq!(
            ArchKey::RmsEps.key("qwen2"),
            "qwen2.attention.layer_norm_rms_epsilon"
        );
        for (k, _) in ARCH_KEYS {
            assert!(!k.suffix().is_empty());
        }
    }
}
