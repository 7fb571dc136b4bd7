//! Quantised matrix × vector, decode's matmul: `y[N] = W[N, K] · x[K] (+ bias[N])`.
//!
//! `W` stays in its file layout (F32, F16, ggml's Q8_0 / Q4_0 / Q4_1 blocks); the kernel
//! (`gemv.wgsl`) dequantises as it reads. One workgroup of [`WORKGROUP`] threads per
//! [`ROWS_PER_WORKGROUP`] rows, [`TOKENS_PER_WORKGROUP`] tokens per workgroup.

use super::{Recording, Shader};
use crate::{GpuContext, GpuError, GpuMatrix};
use akari_core::QuantFormat;
use std::sync::OnceLock;

/// Threads per workgroup; must match `WG` in `gemv.wgsl`.
pub const WORKGROUP: u32 = 64;
/// Output rows per workgroup; must match `ROWS` in `gemv.wgsl`.
pub const ROWS_PER_WORKGROUP: u32 = 8;
/// Tokens per workgroup; must match `TB` in `gemv.wgsl`.
pub const TOKENS_PER_WORKGROUP: u32 = 4;

pub(super) const SHADER: Shader = Shader {
    name: "gemv.wgsl",
    source: concat!(
        include_str!("matmul_common.wgsl"),
        include_str!("gemv.wgsl")
    ),
};

/// Prompts of at least this many tokens use the tiled GEMM (`gemm.wgsl`, or
/// `gemm_soft.wgsl` on software adapters).
pub const GEMM_MIN_TOKENS: usize = 8;
/// W rows and tokens per GEMM workgroup; must match `TM` and `TN` in `gemm_common.wgsl`.
const GEMM_TILE: u32 = 64;

pub(super) const GEMM: Shader = Shader {
    name: "gemm.wgsl",
    source: concat!(
        include_str!("matmul_common.wgsl"),
        include_str!("gemm_common.wgsl"),
        include_str!("gemm.wgsl")
    ),
};

pub(super) const GEMM_SOFT: Shader = Shader {
    name: "gemm_soft.wgsl",
    source: concat!(
        include_str!("matmul_common.wgsl"),
        include_str!("gemm_common.wgsl"),
        include_str!("gemm_soft.wgsl")
    ),
};

/// A one-token kernel built twice: summing across threads through workgroup memory
/// (`gemv_sums.wgsl`), and by subgroup operations (`gemv_sums_subgroups.wgsl`) for adapters
/// whose subgroups have one fixed size.
pub(super) struct DecodeShaders {
    pub(super) shared: Shader,
    pub(super) subgroups: Shader,
}

macro_rules! decode_shaders {
    ($rows:literal) => {
        DecodeShaders {
            shared: Shader {
                name: $rows,
                source: concat!(
                    include_str!("gemv_decode.wgsl"),
                    include_str!("gemv_sums.wgsl"),
                    include_str!($rows)
                ),
            },
            subgroups: Shader {
                name: concat!($rows, "+subgroups"),
                source: concat!(
                    enable_subgroups!(),
                    include_str!("gemv_decode.wgsl"),
                    include_str!("gemv_sums_subgroups.wgsl"),
                    include_str!($rows)
                ),
            },
        }
    };
}

pub(super) const DECODE: DecodeShaders = decode_shaders!("gemv_decode_quant.wgsl");
pub(super) const DECODE_F16: DecodeShaders = decode_shaders!("gemv_decode_f16.wgsl");

/// The integer-dot Q4_0 kernel takes inputs of at most this many values (one quantised
/// chunk in workgroup memory)…
const DOT_MAX_COLS: usize = 4096;
/// …for GLU and for matrices of at least this many rows (vocabulary-sized).
const DOT_MIN_ROWS: usize = 16384;

/// The integer-dot kernel's settings: threads per row, workgroups at most (each loops over
/// row groups, so it quantises its input once for many rows). The defaults measured best on
/// an H100 (DeepSeek-R1-Distill-Qwen-1.5B, Q4_0: 8 lanes 340 tok/s, 16 lanes 329, 32 lanes
/// 324; 2048 workgroups 334, 512 324, no limit 305). Once a lane's loop unrolled
/// ([`lane_units`]), 4 lanes a row (12 blocks each, the lm_head; GLU keeps 8) went ahead:
/// 640–645 → 649–653 tok/s at 128 positions, 573 → 580 at 2048 (2: 653–654; 16: 637).
/// `AKARI_GPU_Q4_DOT=0` turns it off, `AKARI_GPU_Q4_DOT_LANES` and
/// `AKARI_GPU_Q4_DOT_WORKGROUPS` override the rest, for tuning.
struct DotTuning {
    on: bool,
    lanes: u32,
    workgroups: u32,
    /// Threads per row of the GEMV of a quantised input (`AKARI_GPU_Q4_DOTQ_LANES`): the
    /// down projection, 280 blocks a row. 64 once decode ran ahead of its reads (H100,
    /// 128 positions: 16 lanes 588 tok/s, 32 602–607, 64 615–622, 128 620).
    quantized_lanes: u32,
}

fn dot_tuning() -> &'static DotTuning {
    static TUNING: OnceLock<DotTuning> = OnceLock::new();
    TUNING.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
        DotTuning {
            on: var("AKARI_GPU_Q4_DOT") != Some(0),
            lanes: env_lanes("AKARI_GPU_Q4_DOT_LANES").unwrap_or(4),
            workgroups: var("AKARI_GPU_Q4_DOT_WORKGROUPS")
                .filter(|&n| n > 0)
                .unwrap_or(2048),
            quantized_lanes: env_lanes("AKARI_GPU_Q4_DOTQ_LANES").unwrap_or(64),
        }
    })
}

/// Threads per row in `gemv_decode.wgsl` (`LANES`): enough that each has a unit or two of
/// the row (pairs of blocks, 8 f16 values), and more rows per workgroup on short rows.
fn decode_lanes(w: &GpuMatrix) -> u32 {
    static FIXED: OnceLock<Option<u32>> = OnceLock::new();
    // `AKARI_GPU_DECODE_LANES`, for tuning: one count for every matrix.
    let fixed = FIXED.get_or_init(|| env_lanes("AKARI_GPU_DECODE_LANES").filter(|&n| n >= 8));
    if let Some(n) = fixed {
        return *n;
    }
    let units = match w.format() {
        QuantFormat::Q4_1 => w.cols() / 32,
        QuantFormat::F16 => w.cols() / 8,
        _ => w.cols() / 64,
    };
    (units.next_power_of_two() as u32).clamp(16, 64)
}

/// `UNITS` of `gemv_decode.wgsl` for `entry` over rows of `cols` values, `lanes` threads a
/// row: the units (pairs of blocks, blocks, 8-value groups) each lane takes, when at most
/// [`MAX_UNROLL`], so its loop unrolls; 0 (a loop to the row's end) past that, where the
/// unrolled loads would take more registers than latency they save, and for the kernels
/// whose loops do not take it. `AKARI_GPU_UNROLL` overrides the limit, for tuning.
fn lane_units(entry: &str, cols: usize, lanes: u32) -> u32 {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        std::env::var("AKARI_GPU_UNROLL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MAX_UNROLL)
    });
    let units = match entry {
        "decode_f16" => cols / 8,
        "decode_q4_0" => cols / 64,
        "decode_q4_0_dot" | "decode_q4_0_dotq" => cols / 32,
        _ => return 0,
    };
    let per_lane = units.div_ceil(lanes as usize);
    if per_lane <= limit {
        per_lane as u32
    } else {
        0
    }
}

/// The most units a lane's loop unrolls ([`lane_units`]). On an H100 (DeepSeek-R1-Distill-
/// Qwen-1.5B, 128 positions) F16 decode went from 401–407 to 455–460 tok/s with it (the
/// 1536-wide rows, three 16-byte words a lane); 32, which unrolls the down projection's 18
/// as well, measured the same. 16 covers the Q4_0 lm_head's 12 blocks a lane.
const MAX_UNROLL: usize = 16;

/// The entry point of `gemv_decode.wgsl` for a one-token GEMV of `w`, when its rows suit it
/// (whole word-aligned pairs of blocks, or 8-value groups of f16).
fn decode_entry(ctx: &GpuContext, w: &GpuMatrix) -> Option<&'static str> {
    if !ctx.decode_kernels() {
        return None;
    }
    let blocks = w.cols() / 32;
    match w.format() {
        QuantFormat::Q4_0 if blocks.is_multiple_of(2) => Some("decode_q4_0"),
        QuantFormat::Q8_0 if blocks.is_multiple_of(2) => Some("decode_q8_0"),
        QuantFormat::Q4_1 => Some("decode_q4_1"),
        QuantFormat::F16 if w.cols().is_multiple_of(8) => Some("decode_f16"),
        _ => None,
    }
}

fn entry_point(format: QuantFormat) -> &'static str {
    match format {
        QuantFormat::F32 => "gemv_f32",
        QuantFormat::F16 => "gemv_f16",
        QuantFormat::Q8_0 => "gemv_q8_0",
        QuantFormat::Q4_0 => "gemv_q4_0",
        QuantFormat::Q4_1 => "gemv_q4_1",
    }
}

/// Flags in `Params.flags` of `gemv.wgsl`.
const HAS_BIAS: u32 = 1;
const ACCUMULATE: u32 = 2;
const GLU: u32 = 4;
const NORM: u32 = 8;
const NORM_FOLDED: u32 = 128;
const SPLIT: u32 = 16;
const QUANTIZE_OUT: u32 = 32;
const COMBINE: u32 = 64;

/// `gemv_decode.wgsl`'s `FLAGS` holds the flags when this bit is set, so that each
/// combination gets a pipeline with its tests folded away.
const FLAGS_SET: u32 = 0x8000_0000;

/// Whether the decode kernels take their flags as a pipeline constant (`FLAGS`); on by
/// default, `AKARI_GPU_FLAG_CONSTANTS=0` reads them from the uniform instead, for comparison.
fn flag_constants() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("AKARI_GPU_FLAG_CONSTANTS").as_deref() != Ok("0"))
}

/// Threads a row from the environment variable `name`, for tuning: a power of two that fits
/// a workgroup, or none.
fn env_lanes(name: &str) -> Option<u32> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| n.is_power_of_two() && (1..=256).contains(n))
}

/// A bit mask of switches from the environment variable `name`, all of `all` when unset.
fn env_bits(name: &str, all: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(all, |b| b & all)
}

/// `SWIZZLE` of `gemv_decode.wgsl`: the workgroup-memory and quantised-output layouts that
/// keep a warp's reads apart (all on by default; `AKARI_GPU_SWIZZLE`, a bit mask, for
/// comparison).
fn swizzle() -> u32 {
    static BITS: OnceLock<u32> = OnceLock::new();
    *BITS.get_or_init(|| env_bits("AKARI_GPU_SWIZZLE", 7))
}

/// `PREFETCH` of `gemv_decode.wgsl`: loads moved ahead of the steps they would wait behind
/// (both on by default; `AKARI_GPU_PREFETCH`, a bit mask, for comparison).
fn prefetch() -> u32 {
    static BITS: OnceLock<u32> = OnceLock::new();
    *BITS.get_or_init(|| env_bits("AKARI_GPU_PREFETCH", 3))
}

/// Inputs `gemv_decode.wgsl` stages in workgroup memory (`4 · STAGE`).
const STAGE_MAX_COLS: usize = 2048;
/// (head, chunk) pairs of attention partials it merges at most (`MAX_PARTIALS`).
const MAX_PARTIALS: usize = 512;

/// RMS-normalise the input first (one-token GEMVs only, see [`fuses_norm`]).
#[derive(Clone, Copy, Debug)]
pub struct Norm<'a> {
    pub weight: &'a wgpu::Buffer,
    pub eps: f32,
    /// The weight is already folded into the matrix's columns
    /// ([`crate::ops::elementwise::fold_columns`]): the kernel scales x by 1 / rms(x) only.
    pub folded: bool,
}

/// Whether a one-token GEMV of `w` can normalise its input itself.
pub fn fuses_norm(ctx: &GpuContext, w: &GpuMatrix) -> bool {
    decode_entry(ctx, w).is_some()
}

/// Words of one 32-value block of a quantised GLU output.
pub const QUANTIZED_BLOCK_WORDS: usize = 18;

/// Whether a one-token GLU of `gate` can write its output quantised as well.
pub fn quantizes_glu(ctx: &GpuContext, gate: &GpuMatrix) -> bool {
    dot_tuning().on
        && decode_entry(ctx, gate) == Some("decode_q4_0")
        && gate.cols() <= DOT_MAX_COLS
        && gate.rows().is_multiple_of(32)
        && gate.parts().len() == 1
}

/// Whether a one-token GEMV of `w` can read its input quantised by a GLU.
pub fn reads_quantized(ctx: &GpuContext, w: &GpuMatrix) -> bool {
    dot_tuning().on && decode_entry(ctx, w) == Some("decode_q4_0")
}

/// Whether a one-token GEMV of `w` can take [`Epilogue::AccumulateCombined`] for partial
/// results of `heads` heads in `chunks` chunks.
pub fn folds_combine(ctx: &GpuContext, w: &GpuMatrix, heads: usize, chunks: usize) -> bool {
    combine_tuning().fold
        && decode_entry(ctx, w).is_some()
        && !takes_dot(w, false)
        && w.cols() <= STAGE_MAX_COLS
        && heads * chunks <= MAX_PARTIALS
}

/// How the attention's partial results are merged into a GEMV's input (tuning switches):
/// `AKARI_GPU_FOLD_COMBINE=0` merges them in a pass of their own instead, and
/// `AKARI_GPU_COMBINE_LANES` sets the threads a row of the GEMV that merges them (fewer
/// workgroups, each merging every partial).
struct CombineTuning {
    fold: bool,
    lanes: Option<u32>,
    /// `MERGE_CHUNKS` set, so the merge's loops unroll (`AKARI_GPU_MERGE_UNROLL=0` off).
    unroll: bool,
    /// What `MERGE_CHUNKS` rounds the chunk count up to a multiple of, so that a growing
    /// cache builds a handful of pipelines: 4 (`AKARI_GPU_MERGE_ROUND`; 0 for the next power
    /// of two, which at 2048 positions made 11 chunks' loops run to 16).
    round: u32,
}

fn combine_tuning() -> &'static CombineTuning {
    static TUNING: OnceLock<CombineTuning> = OnceLock::new();
    TUNING.get_or_init(|| CombineTuning {
        fold: std::env::var("AKARI_GPU_FOLD_COMBINE").as_deref() != Ok("0"),
        unroll: std::env::var("AKARI_GPU_MERGE_UNROLL").as_deref() != Ok("0"),
        round: std::env::var("AKARI_GPU_MERGE_ROUND")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
        lanes: env_lanes("AKARI_GPU_COMBINE_LANES"),
    })
}

/// Whether a one-token Q4_0 GEMV of `w` runs on integer dot products (`decode_q4_0_dot`).
fn takes_dot(w: &GpuMatrix, glu: bool) -> bool {
    w.format() == QuantFormat::Q4_0
        && dot_tuning().on
        && w.cols() <= DOT_MAX_COLS
        && (glu || w.rows() >= DOT_MIN_ROWS)
}

/// Whether a one-token GEMV of `w` can take [`Epilogue::Split`].
pub fn fuses_split(ctx: &GpuContext, w: &GpuMatrix) -> bool {
    decode_entry(ctx, w).is_some() && w.parts().len() == 1
}

/// What a GEMV does with its result.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `y = W·x (+ bias)`.
    Store { bias: Option<&'a wgpu::Buffer> },
    /// `y += W·x`: the residual add fused into the matmul.
    Accumulate,
    /// `y = silu(W·x) · (up·x)`: gate and up projections and the activation in one pass;
    /// with `quantized` (one token, see [`quantizes_glu`]) y is also written there
    /// quantised, [`QUANTIZED_BLOCK_WORDS`] words per 32 values, for
    /// [`Epilogue::AccumulateQuantized`].
    Glu {
        up: &'a GpuMatrix,
        quantized: Option<&'a wgpu::Buffer>,
    },
    /// `y += W·x` with x given quantised by a GLU (`input`; the f32 `x` still sizes the
    /// call). One token, see [`reads_quantized`].
    AccumulateQuantized { input: &'a wgpu::Buffer },
    /// `y += W·x` with x the split decode attention's partial results in `chunks` chunks
    /// of heads of `head_dim` (attention_decode.wgsl's scratch, given as `x`), merged as
    /// the kernel stages its input. One token, see [`folds_combine`].
    AccumulateCombined { chunks: usize, head_dim: usize },
    /// `W·x (+ bias)` with W several matrices' rows one after another: rows `0..rows[0]` to
    /// y, `rows[0]..rows[1]` to `outputs[0]`, the rest to `outputs[1]`. One token, one-token
    /// kernel and an unsplit W only (see [`fuses_split`]).
    Split {
        bias: Option<&'a wgpu::Buffer>,
        rows: [usize; 2],
        outputs: [&'a wgpu::Buffer; 2],
    },
}

/// What a GEMV binds as its second buffer: GLU's up matrix, or an input given quantised.
#[derive(Clone, Copy)]
enum Second<'a> {
    Matrix(&'a GpuMatrix),
    Input(&'a wgpu::Buffer),
}

/// Workgroup counts covering `rows` workgroups, within the per-dimension limit.
pub fn dispatch_size(rows: u32, max_per_dim: u32) -> Option<(u32, u32)> {
    if rows == 0 {
        return Some((0, 0));
    }
    let x = rows.min(max_per_dim);
    let y = rows.div_ceil(x);
    (y <= max_per_dim).then_some((x, y))
}

/// Records `y = w · x (+ bias)` into `rec`. `x` holds `w.cols()` f32 values, `y` (and
/// `bias`) `w.rows()`.
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    w: &GpuMatrix,
    x: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    encode_tokens(ctx, rec, w, x, None, Epilogue::Store { bias }, y, 1)
}

/// [`encode`] for `tokens` rows at once: `x` is `[tokens, w.cols()]`, `y` `[tokens, w.rows()]`.
/// Each z-slice of the dispatch takes [`TOKENS_PER_WORKGROUP`] tokens, so W is read once per
/// that many tokens.
#[allow(clippy::too_many_arguments)]
pub fn encode_tokens(
    ctx: &GpuContext,
    rec: &mut Recording,
    w: &GpuMatrix,
    x: &wgpu::Buffer,
    norm: Option<Norm<'_>>,
    epilogue: Epilogue<'_>,
    y: &wgpu::Buffer,
    tokens: usize,
) -> Result<(), GpuError> {
    const OP: &str = "gemv";
    let need = |what: &'static str, buf: &wgpu::Buffer, len: usize| {
        if buf.size() < (len * 4) as u64 {
            Err(GpuError::Shape {
                op: OP,
                what,
                expected: len,
                got: buf.size() as usize / 4,
            })
        } else {
            Ok(())
        }
    };
    need("x buffer length", x, tokens * w.cols())?;
    let y_rows = match epilogue {
        Epilogue::Split { rows, .. } => rows[0],
        _ => w.rows(),
    };
    need("y buffer length", y, tokens * y_rows)?;
    let mut split = None;
    let mut quantized_out = None;
    let mut combined = None;
    let (flags, bias, w2) = match epilogue {
        Epilogue::Store { bias } => {
            if let Some(b) = bias {
                need("bias buffer length", b, w.rows())?;
            }
            (if bias.is_some() { HAS_BIAS } else { 0 }, bias, None)
        }
        Epilogue::Split {
            bias,
            rows,
            outputs,
        } => {
            if tokens != 1 || !fuses_split(ctx, w) || rows[0] > rows[1] || rows[1] > w.rows() {
                return Err(GpuError::NotApplicable {
                    op: OP,
                    what: "a split GEMV takes one token, an unsplit matrix with a one-token \
                           kernel, and output rows in order",
                });
            }
            if let Some(b) = bias {
                need("bias buffer length", b, w.rows())?;
            }
            need("second output length", outputs[0], rows[1] - rows[0])?;
            need("third output length", outputs[1], w.rows() - rows[1])?;
            split = Some((rows, outputs));
            let flags = SPLIT | if bias.is_some() { HAS_BIAS } else { 0 };
            (flags, bias, None)
        }
        Epilogue::Accumulate => (ACCUMULATE, None, None),
        Epilogue::AccumulateCombined { chunks, head_dim } => {
            let heads = w.cols() / head_dim.max(1);
            if tokens != 1
                || chunks == 0
                || head_dim % 4 != 0
                || heads * head_dim != w.cols()
                || !folds_combine(ctx, w, heads, chunks)
            {
                return Err(GpuError::NotApplicable {
                    op: OP,
                    what: "merging attention partials takes one token, a matrix with a \
                           one-token kernel (not the integer-dot one) of at most 2048 \
                           columns, whole heads and at most 512 (head, chunk) pairs",
                });
            }
            need(
                "attention partials length",
                x,
                heads * chunks * (head_dim + 4),
            )?;
            combined = Some([chunks as u32, (head_dim / 4) as u32]);
            (ACCUMULATE | COMBINE, None, None)
        }
        Epilogue::AccumulateQuantized { input } => {
            if tokens != 1 || !reads_quantized(ctx, w) {
                return Err(GpuError::NotApplicable {
                    op: OP,
                    what: "a quantised input takes one token and a Q4_0 matrix with a \
                           one-token kernel",
                });
            }
            need(
                "quantised input length",
                input,
                w.cols() / 32 * QUANTIZED_BLOCK_WORDS,
            )?;
            (ACCUMULATE, None, Some(Second::Input(input)))
        }
        Epilogue::Glu { up, quantized } => {
            if let Some(q) = quantized {
                if tokens != 1 || !quantizes_glu(ctx, w) {
                    return Err(GpuError::NotApplicable {
                        op: OP,
                        what: "a quantised GLU output takes one token and unsplit Q4_0 \
                               matrices of at most 4096 columns and a multiple of 32 rows",
                    });
                }
                need(
                    "quantised output length",
                    q,
                    w.rows() / 32 * QUANTIZED_BLOCK_WORDS,
                )?;
                quantized_out = Some(q);
            }
            if up.rows() != w.rows() || up.cols() != w.cols() || up.format() != w.format() {
                return Err(GpuError::Shape {
                    op: OP,
                    what: "up projection rows (same shape and format as gate)",
                    expected: w.rows(),
                    got: up.rows(),
                });
            }
            let same_split = up.parts().len() == w.parts().len()
                && up
                    .parts()
                    .iter()
                    .zip(w.parts())
                    .all(|(a, b)| a.first == b.first && a.rows == b.rows);
            if !same_split {
                return Err(GpuError::Shape {
                    op: OP,
                    what: "up projection parts (split as gate is)",
                    expected: w.parts().len(),
                    got: up.parts().len(),
                });
            }
            let flags = GLU
                | if quantized_out.is_some() {
                    QUANTIZE_OUT
                } else {
                    0
                };
            (flags, None, Some(Second::Matrix(up)))
        }
    };
    let decode = if tokens == 1 {
        decode_entry(ctx, w)
    } else {
        None
    };
    // Q4_0 GEMVs that unpacking bounds take the integer-dot kernel (gemv_decode.wgsl).
    let glu = matches!(epilogue, Epilogue::Glu { .. });
    let quantized_in = matches!(epilogue, Epilogue::AccumulateQuantized { .. });
    let dot = !quantized_in && combined.is_none() && decode.is_some() && takes_dot(w, glu);
    let decode = if quantized_in {
        Some("decode_q4_0_dotq")
    } else if dot {
        Some("decode_q4_0_dot")
    } else {
        decode
    };
    if norm.is_some() && decode.is_none() {
        return Err(GpuError::Shape {
            op: OP,
            what: "tokens of a GEMV with a fused norm (one, with aligned rows)",
            expected: 1,
            got: tokens,
        });
    }
    if let Some(n) = norm {
        need("norm weight length", n.weight, w.cols())?;
    }
    let gemm = decode.is_none() && tokens >= GEMM_MIN_TOKENS && w.cols().is_multiple_of(4);
    // One dispatch per part of a split matrix, each writing its rows at their offset.
    for (i, part) in w.parts().iter().enumerate() {
        let w2 = w2.map(|second| match second {
            Second::Matrix(up) => &up.parts()[i].buffer,
            Second::Input(b) => b,
        });
        let rows = Rows {
            buffer: &part.buffer,
            first: part.first,
            count: part.rows,
            total: w.rows(),
        };
        if gemm {
            encode_gemm(ctx, rec, w, &rows, x, (flags, bias, w2), y, tokens)?;
            continue;
        }
        let lanes = if quantized_out.is_some() {
            // One row group per block of the quantised output.
            8
        } else if quantized_in {
            dot_tuning().quantized_lanes
        } else if dot {
            dot_tuning().lanes
        } else if combined.is_some() {
            combine_tuning().lanes.unwrap_or_else(|| decode_lanes(w))
        } else {
            decode_lanes(w)
        };
        let per_wg = if decode.is_some() {
            256 / lanes
        } else {
            ROWS_PER_WORKGROUP
        };
        let (gx, gy, gz) = grid(
            ctx,
            "gemv",
            rows.count,
            per_wg,
            tokens,
            TOKENS_PER_WORKGROUP,
        )?;
        if gx == 0 || tokens == 0 {
            continue;
        }
        let (gx, gy) = if dot {
            // Its workgroups loop over the row groups.
            ((gx * gy).min(dot_tuning().workgroups), 1)
        } else {
            (gx, gy)
        };
        let flags = flags
            | match norm {
                Some(n) if n.folded => NORM | NORM_FOLDED,
                Some(_) => NORM,
                None => 0,
            };
        let [split1, split2] = split.map_or([0, 0], |(r, _)| r.map(|v| v as u32));
        let [chunks, hd4] = combined.unwrap_or([0, 0]);
        // gemv.wgsl takes the first eight; the decode kernels also the split rows and the
        // attention partials' shape.
        let params = [
            rows.count as u32,
            w.cols() as u32,
            w.format().row_bytes(w.cols()) as u32,
            flags,
            tokens as u32,
            norm.map_or(0, |n| n.eps.to_bits()),
            rows.first as u32,
            rows.total as u32,
            split1,
            split2,
            chunks,
            hd4,
        ];
        let units = decode.map_or(0, |entry| lane_units(entry, w.cols(), lanes));
        let fixed = if flag_constants() {
            flags | FLAGS_SET
        } else {
            0
        };
        let mut constants = vec![("LANES", lanes), ("UNITS", units), ("FLAGS", fixed)];
        if combined.is_some() && combine_tuning().unroll {
            let loops = match combine_tuning().round {
                0 => chunks.next_power_of_two(),
                n => chunks.next_multiple_of(n),
            };
            constants.push(("MERGE_CHUNKS", loops));
        }
        constants.push(("PREFETCH", prefetch()));
        let sums =
            |shaders: &'static DecodeShaders, constants: &mut Vec<_>| match ctx.subgroup_sums() {
                Some(size) => {
                    constants.push(("SG", size));
                    &shaders.subgroups
                }
                None => &shaders.shared,
            };
        let (shader, entry, constants) = match decode {
            Some("decode_f16") => {
                // Its lanes read neighbouring vec4s already: the 16-apart layout would put
                // them on one bank.
                constants.push(("SWIZZLE", swizzle() & !1));
                (sums(&DECODE_F16, &mut constants), "decode_f16", constants)
            }
            Some(entry) => {
                constants.push(("SWIZZLE", swizzle()));
                (sums(&DECODE, &mut constants), entry, constants)
            }
            None => (&SHADER, entry_point(w.format()), vec![]),
        };
        // Unused outputs get buffers of their own: writable bindings must not alias.
        let [y2, y3] = split.map_or([&ctx.spare_outputs[0], &ctx.spare_outputs[1]], |(_, o)| o);
        let y2 = quantized_out.unwrap_or(y2);
        ctx.dispatch_with(
            rec,
            shader,
            entry,
            &constants,
            &[
                rows.buffer,
                x,
                bias.unwrap_or(&ctx.dummy),
                y,
                w2.unwrap_or(&ctx.dummy),
                norm.map_or(&ctx.dummy, |n| n.weight),
                y2,
                y3,
            ][..if decode.is_some() { 8 } else { 5 }],
            &params[..if decode.is_some() { 12 } else { 8 }],
            (gx, gy, gz),
        )?;
    }
    Ok(())
}

/// The rows one dispatch covers: a part of `w` (all of it when it is not split).
struct Rows<'a> {
    buffer: &'a wgpu::Buffer,
    first: usize,
    count: usize,
    /// Rows of the whole matrix: the length of y's rows.
    total: usize,
}

/// The tiled GEMM for `tokens` rows of `x` (see `gemm.wgsl`); `epilogue` is the flags,
/// bias and second matrix [`encode_tokens`] worked out.
#[allow(clippy::too_many_arguments)]
fn encode_gemm(
    ctx: &GpuContext,
    rec: &mut Recording,
    w: &GpuMatrix,
    rows: &Rows<'_>,
    x: &wgpu::Buffer,
    epilogue: (u32, Option<&wgpu::Buffer>, Option<&wgpu::Buffer>),
    y: &wgpu::Buffer,
    tokens: usize,
) -> Result<(), GpuError> {
    let (flags, bias, w2) = epilogue;
    let (gx, gy, gz) = grid(ctx, "gemm", rows.count, GEMM_TILE, tokens, GEMM_TILE)?;
    let entry = match w.format() {
        QuantFormat::F32 => "gemm_f32",
        QuantFormat::F16 => "gemm_f16",
        QuantFormat::Q8_0 => "gemm_q8_0",
        QuantFormat::Q4_0 => "gemm_q4_0",
        QuantFormat::Q4_1 => "gemm_q4_1",
    };
    let params = [
        rows.count as u32,
        w.cols() as u32,
        w.format().row_bytes(w.cols()) as u32,
        flags,
        tokens as u32,
        0,
        rows.first as u32,
        rows.total as u32,
    ];
    let shader = if ctx.soft_gemm() { &GEMM_SOFT } else { &GEMM };
    ctx.dispatch(
        rec,
        shader,
        entry,
        &[
            rows.buffer,
            x,
            bias.unwrap_or(&ctx.dummy),
            y,
            w2.unwrap_or(&ctx.dummy),
        ],
        &params,
        (gx, gy, gz),
    )
}

/// Workgroup counts for `rows` output rows, `per_row` a workgroup (flattened over x and y
/// past the per-dimension limit), by `tokens` tokens, `per_token` a workgroup (z).
fn grid(
    ctx: &GpuContext,
    op: &str,
    rows: usize,
    per_row: u32,
    tokens: usize,
    per_token: u32,
) -> Result<(u32, u32, u32), GpuError> {
    let limit = ctx.caps().max_compute_workgroups_per_dimension;
    let groups = (rows as u32).div_ceil(per_row);
    let (gx, gy) = dispatch_size(groups, limit).ok_or_else(|| GpuError::TooLarge {
        what: format!("{op} over {rows} rows ({per_row} per workgroup)"),
        bytes: rows as u64,
        limit: u64::from(limit).pow(2),
    })?;
    let gz = tokens.div_ceil(per_token as usize);
    if gz as u64 > u64::from(limit) {
        return Err(GpuError::TooLarge {
            what: format!("{op} over {tokens} tokens ({per_token} per workgroup)"),
            bytes: gz as u64,
            limit: u64::from(limit),
        });
    }
    Ok((gx, gy, gz as u32))
}

impl GpuContext {
    /// `w · x (+ bias)`, blocking: uploads `x` (and `bias`), runs [`encode`] and reads the
    /// `w.rows()` results back. For tests and tools; a forward pass records many ops into
    /// one submission instead.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gemv(
        &self,
        w: &GpuMatrix,
        x: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>, GpuError> {
        const OP: &str = "gemv";
        if x.len() != w.cols() {
            return Err(GpuError::Shape {
                op: OP,
                what: "x length",
                expected: w.cols(),
                got: x.len(),
            });
        }
        if let Some(b) = bias {
            if b.len() != w.rows() {
                return Err(GpuError::Shape {
                    op: OP,
                    what: "bias length",
                    expected: w.rows(),
                    got: b.len(),
                });
            }
        }
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        let xb = self.storage_buffer("akari.gemv.x", &f32_bytes(x))?;
        let bb = bias
            .map(|b| self.storage_buffer("akari.gemv.bias", &f32_bytes(b)))
            .transpose()?;
        let y = self.f32_buffer("akari.gemv.y", w.rows())?;
        let mut rec = Recording::new(self);
        encode(self, &mut rec, w, &xb, bb.as_ref(), &y)?;
        self.submit_and_read(OP, rec, &y, w.rows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_covers_every_row_within_the_limit() {
        assert_eq!(dispatch_size(0, 65535), Some((0, 0)));
        assert_eq!(dispatch_size(7, 65535), Some((7, 1)));
        assert_eq!(dispatch_size(151_936, 65535), Some((65535, 3)));
        let (x, y) = dispatch_size(250, 16).unwrap();
        assert!(x <= 16 && y <= 16 && x * y >= 250);
        assert_eq!(dispatch_size(16 * 16 + 1, 16), None);
    }
}
