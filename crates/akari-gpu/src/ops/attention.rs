//! Attention with a KV cache. A prompt: `kv_store.wgsl` appends the new keys and values to
//! one layer's cache, `attention.wgsl` attends causally, one workgroup per (head, token),
//! with an online softmax (no score buffer). A decode step: `attention_decode.wgsl` attends
//! the one row, taking the new key and value as inputs and appending them itself (one
//! dispatch fewer); past one tile (64 positions) it splits the cache into chunks that run
//! in parallel (flash-decoding), and their partial softmaxes are merged by
//! `attention_combine.wgsl` or, deferred, by the GEMV that reads the result. The kernels
//! share `attention_common.wgsl` (parameters), `attention_rope.wgsl` (the rotation of q and
//! k) and, decode and combine, `attention_split.wgsl` (head size, merge of thread groups).

use std::sync::OnceLock;

use super::{check_dim, Recording, Shader};
use crate::{GpuContext, GpuError, KvCacheDtype};

/// The kernels that read or write the cache, built for one [`KvCacheDtype`]: each source
/// starts with the file that defines the cache's element type (`kv_f16.wgsl`, `kv_f32.wgsl`).
/// The decode kernel comes twice: summing a position's score and finding a tile's largest
/// by subgroups, for adapters whose subgroups hold at least a position's 4 threads, and
/// through workgroup memory.
pub(super) struct CacheKernels {
    pub(super) kv_store: Shader,
    pub(super) attention: Shader,
    pub(super) decode: Shader,
    pub(super) decode_subgroups: Shader,
}

macro_rules! cache_kernels {
    ($kv:literal) => {
        CacheKernels {
            kv_store: Shader {
                name: concat!($kv, "+kv_store.wgsl"),
                source: concat!(include_str!($kv), include_str!("kv_store.wgsl")),
            },
            attention: Shader {
                name: concat!($kv, "+attention.wgsl"),
                source: concat!(
                    include_str!($kv),
                    include_str!("attention_common.wgsl"),
                    include_str!("attention_rope.wgsl"),
                    include_str!("attention.wgsl")
                ),
            },
            decode: Shader {
                name: concat!($kv, "+attention_decode.wgsl"),
                source: concat!(
                    include_str!($kv),
                    include_str!("attention_common.wgsl"),
                    include_str!("attention_rope.wgsl"),
                    include_str!("attention_split.wgsl"),
                    include_str!("attention_reduce.wgsl"),
                    include_str!("attention_decode.wgsl")
                ),
            },
            decode_subgroups: Shader {
                name: concat!($kv, "+attention_decode.wgsl+subgroups"),
                source: concat!(
                    enable_subgroups!(),
                    include_str!($kv),
                    include_str!("attention_common.wgsl"),
                    include_str!("attention_rope.wgsl"),
                    include_str!("attention_split.wgsl"),
                    include_str!("attention_reduce_subgroups.wgsl"),
                    include_str!("attention_decode.wgsl")
                ),
            },
        }
    };
}

pub(super) const F16_CACHE: CacheKernels = cache_kernels!("kv_f16.wgsl");
pub(super) const F32_CACHE: CacheKernels = cache_kernels!("kv_f32.wgsl");

/// The cache kernels for `dtype`.
pub(super) fn cache_kernels(dtype: KvCacheDtype) -> &'static CacheKernels {
    match dtype {
        KvCacheDtype::F16 => &F16_CACHE,
        KvCacheDtype::F32 => &F32_CACHE,
    }
}

pub(super) const COMBINE: Shader = Shader {
    name: "attention_combine.wgsl",
    source: concat!(
        include_str!("attention_common.wgsl"),
        include_str!("attention_split.wgsl"),
        include_str!("attention_combine.wgsl")
    ),
};

/// The largest head size `attention.wgsl` handles (`MAX_HD`).
pub const MAX_HEAD_DIM: usize = 256;

/// The most chunks one decode row's attention is split into (flash-decoding);
/// `MAX_CHUNKS` in `attention_combine.wgsl` must match.
pub const MAX_CHUNKS: usize = 32;

/// Positions per chunk: a multiple of the decode kernel's 64-position tile.
const MIN_CHUNK: usize = 64;

/// Threads a workgroup of `attention_decode.wgsl` and `attention_combine.wgsl` (`WG` in
/// `attention_split.wgsl`).
const DECODE_WG: u32 = 256;

/// f32 values of the scratch buffer [`encode`] needs for `heads` heads of `head_dim`.
pub fn scratch_len(heads: usize, head_dim: usize) -> usize {
    heads * MAX_CHUNKS * (head_dim + 4)
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_seq: usize,
    /// Position of the first row; the kernels read it from the `step` buffer, this sizes the
    /// dispatch.
    pub pos: usize,
}

/// The buffers of one attention call.
pub struct Buffers<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    /// What the caches hold.
    pub kv_dtype: KvCacheDtype,
    pub out: &'a wgpu::Buffer,
    /// [`scratch_len`] f32 values.
    pub scratch: &'a wgpu::Buffer,
    /// `[pos, ..]` u32: the position of the first row.
    pub step: &'a wgpu::Buffer,
    /// Rotate `q` and `k` (not yet rotated) with these tables on the way in.
    pub rope: Option<&'a super::rope::Table>,
    /// Leave a split decode row's partial results in `scratch` for the caller to merge
    /// (see [`encode`]).
    pub defer_combine: bool,
}

/// Records the cache append of `k`, `v` (`[rows, kv_heads · head_dim]`) at `pos` and the
/// attention of `q` over positions `0..=pos + r` into `out`. With `defer_combine`, a decode
/// row split into chunks leaves its partial results in `scratch` instead and returns the
/// number of chunks: the caller merges them, by [`encode_combine`] or in the GEMV that
/// reads the result (`gemv::Epilogue::AccumulateCombined`).
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    b: &Buffers<'_>,
    d: Dims,
) -> Result<Option<usize>, GpuError> {
    if d.head_dim > MAX_HEAD_DIM || !d.head_dim.is_multiple_of(4) {
        return Err(GpuError::Shape {
            op: "attention",
            what: "head size (a multiple of 4, at most 256)",
            expected: MAX_HEAD_DIM,
            got: d.head_dim,
        });
    }
    let kv_dim = d.kv_heads * d.head_dim;
    let rows = check_dim(ctx, "attention rows", d.rows)?;
    // Four values a thread.
    let gx = check_dim(ctx, "kv_store values", (kv_dim / 4).div_ceil(64))?;
    let (rope_half, sin_off, table) = match b.rope {
        Some(t) => (t.half as u32, t.sin_off(), &t.buffer),
        None => (0, 0, &ctx.dummy),
    };
    if d.rows == 1 {
        return encode_decode(ctx, rec, b, d, (rope_half, sin_off, table));
    }
    let kernels = cache_kernels(b.kv_dtype);
    ctx.dispatch(
        rec,
        &kernels.kv_store,
        "kv_store",
        &[b.k, b.v, b.k_cache, b.v_cache, b.step, table],
        &[
            kv_dim as u32,
            d.head_dim as u32,
            d.max_seq as u32,
            rope_half,
            sin_off,
        ],
        (gx, rows, 1),
    )?;
    // Prompt rows: one chunk each, the rows give the parallelism.
    let heads = check_dim(ctx, "attention heads", d.heads)?;
    let buffers = [b.q, b.k_cache, b.v_cache, b.out, b.step, table];
    let params = params(&d, d.max_seq, rope_half, sin_off);
    if ctx.soft_attention() {
        ctx.dispatch(
            rec,
            &kernels.attention,
            "attention_rows",
            &buffers,
            &params,
            (d.rows.div_ceil(64) as u32, heads, 1),
        )?;
    } else {
        ctx.dispatch(
            rec,
            &kernels.attention,
            "attention",
            &buffers,
            &params,
            (heads, rows, 1),
        )?;
    }
    Ok(None)
}

/// The kernels' parameters, with `chunk_len` (positions per chunk, or for `combine` the
/// number of chunks).
fn params(d: &Dims, chunk_len: usize, rope_half: u32, sin_off: u32) -> [u32; 9] {
    [
        d.heads as u32,
        d.kv_heads as u32,
        d.head_dim as u32,
        d.max_seq as u32,
        chunk_len as u32,
        (1.0 / (d.head_dim as f32).sqrt()).to_bits(),
        rope_half,
        sin_off,
        d.rows as u32,
    ]
}

/// Positions up to which one workgroup a head attends to the whole cache, writing the result
/// itself. One tile: past it, one workgroup's walk over the tiles costs more than parallel
/// chunks and their merge (on an H100, 128 or 256 measured no better, and 512 much worse,
/// at 128–400 positions). `AKARI_GPU_ATTENTION_ONE_CHUNK` overrides it, for tuning.
fn one_chunk_positions() -> usize {
    static POSITIONS: OnceLock<usize> = OnceLock::new();
    *POSITIONS.get_or_init(|| {
        std::env::var("AKARI_GPU_ATTENTION_ONE_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    })
}

/// The most chunks a decode row is split into by default. Every workgroup of the GEMV that
/// merges the partial results reads all of them, so fewer, longer chunks can pay: on an H100
/// (DeepSeek-R1-Distill-Qwen-1.5B Q4_0, 2048 positions) 16 chunks of 128 positions ran at
/// 722 tok/s, 32 of 64 at 674–710, 8 of 256 at 688.
const DEFAULT_CHUNKS: usize = 16;

/// The most chunks a decode row is split into: [`DEFAULT_CHUNKS`], or up to [`MAX_CHUNKS`]
/// with `AKARI_GPU_ATTENTION_CHUNKS`, for tuning.
fn most_chunks() -> usize {
    static MOST: OnceLock<usize> = OnceLock::new();
    *MOST.get_or_init(|| {
        std::env::var("AKARI_GPU_ATTENTION_CHUNKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=MAX_CHUNKS).contains(n))
            .unwrap_or(DEFAULT_CHUNKS)
    })
}

/// The decode attention's load-ordering switches, both on unless set to 0, for comparison:
/// `PIPELINE` loads a chunk's next tile while it scores the current one
/// (`AKARI_GPU_ATTENTION_PIPELINE`), `EARLY` its first tile before the query
/// (`AKARI_GPU_ATTENTION_EARLY`).
fn load_switches() -> [(&'static str, u32); 2] {
    static ON: OnceLock<[(&'static str, u32); 2]> = OnceLock::new();
    let on = |name: &str| u32::from(std::env::var(name).as_deref() != Ok("0"));
    *ON.get_or_init(|| {
        [
            ("PIPELINE", on("AKARI_GPU_ATTENTION_PIPELINE")),
            ("EARLY", on("AKARI_GPU_ATTENTION_EARLY")),
        ]
    })
}

/// Query heads one workgroup of `attention_decode.wgsl` attends (`G`, a divisor of the
/// key/value group): one by default. Taking a whole group, so its keys and values are read
/// once, measured slower on an H100 (DeepSeek-R1-Distill-Qwen-1.5B Q4_0, six heads a group:
/// 686–688 tok/s with one head a workgroup, 613–615 with 2, 605–608 with 3, 575–578 with 6
/// at 128 positions; 612–614 against 479–512 at 2048): a step's cache is read from L2 by the
/// group's workgroups at once, and fewer, longer workgroups leave the card idle.
/// `AKARI_GPU_ATTENTION_G` sets the most, for tuning on other cards.
fn heads_per_workgroup(d: &Dims) -> usize {
    static MOST: OnceLock<usize> = OnceLock::new();
    let most = *MOST.get_or_init(|| {
        std::env::var("AKARI_GPU_ATTENTION_G")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    });
    let group = d.heads / d.kv_heads.max(1);
    if !d.heads.is_multiple_of(d.kv_heads.max(1)) {
        return 1;
    }
    // The largest divisor of the group within the limits.
    (1..=group.min(most).min(8))
        .rev()
        .find(|g| group.is_multiple_of(*g) && g * d.head_dim / 4 <= 256)
        .unwrap_or(1)
}

/// The head size, fixed for the decode pipelines so their loops over it unroll.
fn decode_constants(d: &Dims) -> [(&'static str, u32); 2] {
    let hd4 = (d.head_dim / 4) as u32;
    [("HD4", hd4), ("GROUPS", DECODE_WG / hd4)]
}

/// A decode step's attention: `attention_decode.wgsl` over the cache's chunks, storing the
/// new key and value itself, then, with more than one chunk, `combine` (unless deferred).
fn encode_decode(
    ctx: &GpuContext,
    rec: &mut Recording,
    b: &Buffers<'_>,
    d: Dims,
    (rope_half, sin_off, table): (u32, u32, &wgpu::Buffer),
) -> Result<Option<usize>, GpuError> {
    let g = heads_per_workgroup(&d);
    let heads = check_dim(ctx, "attention heads", d.heads / g)?;
    let [hd4, groups] = decode_constants(&d);
    let [pipeline, early] = load_switches();
    let constants = [hd4, groups, ("G", g as u32), pipeline, early];
    let n = d.pos + 1;
    // One chunk writes the result itself; past that the cache is split so every SM gets
    // work, and the chunks write partial results.
    let len = if n <= one_chunk_positions() {
        n
    } else {
        n.div_ceil(most_chunks())
            .next_multiple_of(MIN_CHUNK)
            .max(MIN_CHUNK)
    };
    let chunks = n.div_ceil(len);
    let out = if chunks == 1 { b.out } else { b.scratch };
    let kernels = cache_kernels(b.kv_dtype);
    let shader = if ctx.caps().subgroups && ctx.caps().subgroup_min_size >= 4 {
        &kernels.decode_subgroups
    } else {
        &kernels.decode
    };
    ctx.dispatch_with(
        rec,
        shader,
        "attention_decode",
        &constants,
        &[b.q, b.k, b.v, b.k_cache, b.v_cache, out, b.step, table],
        &params(&d, len, rope_half, sin_off),
        (heads, 1, chunks as u32),
    )?;
    if chunks == 1 {
        return Ok(None);
    }
    if b.defer_combine {
        return Ok(Some(chunks));
    }
    encode_combine(ctx, rec, b.scratch, b.out, d, chunks)?;
    Ok(None)
}

/// Merges a decode row's partial results, `chunks` chunks in `scratch` (left there by
/// [`encode`] with `defer_combine`), into `out`.
pub fn encode_combine(
    ctx: &GpuContext,
    rec: &mut Recording,
    scratch: &wgpu::Buffer,
    out: &wgpu::Buffer,
    d: Dims,
    chunks: usize,
) -> Result<(), GpuError> {
    let heads = check_dim(ctx, "attention heads", d.heads)?;
    ctx.dispatch_with(
        rec,
        &COMBINE,
        "combine",
        &decode_constants(&d),
        &[scratch, out],
        &params(&d, chunks, 0, 0),
        (heads, 1, 1),
    )
}
