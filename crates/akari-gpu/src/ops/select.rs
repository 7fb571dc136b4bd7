//! Token selection on the device: the best `k` logits of a row (`top_k.wgsl`), after
//! setting the penalised tokens aside (`set_aside.wgsl`), so a decode step reads back
//! `2k` words plus one per penalised token instead of the whole vocabulary. The result is
//! [`akari_core::sampler::Selection::select`]'s, exactly: keys compare the float bits, and
//! ties go to the lower id.
//!
//! Each `top_k` pass keeps the best `k` of every chunk of [`CHUNK`] candidates, so a
//! 151936-token row takes two passes for greedy (149 chunks, then one) and five for
//! `k = 256`.

use super::{grid, Recording, Shader};
use crate::{GpuContext, GpuError};
use akari_core::sampler::Candidates;

pub(super) const SET_ASIDE: Shader = Shader {
    name: "set_aside.wgsl",
    source: include_str!("set_aside.wgsl"),
};

pub(super) const TOP_K: Shader = Shader {
    name: "top_k.wgsl",
    source: include_str!("top_k.wgsl"),
};

/// Candidates one workgroup sorts.
pub const CHUNK: usize = 1024;

/// The largest `k`: every pass must shrink its input.
pub const MAX_K: usize = CHUNK / 2;

/// Words of each of the two scratch buffers selecting `k` of `n` needs (at least one).
pub fn scratch_len(n: usize, k: usize) -> usize {
    if n <= CHUNK {
        1
    } else {
        2 * n.div_ceil(CHUNK) * k
    }
}

/// Words of the output: `k` ids, `k` keys, one raw logit per set-aside token.
pub fn out_len(k: usize, set_aside: usize) -> usize {
    2 * k + set_aside
}

/// The buffers of one selection.
pub struct Buffers<'a> {
    /// The row, `n` f32 values; set-aside tokens are overwritten.
    pub logits: &'a wgpu::Buffer,
    /// Distinct token ids to set aside, and how many.
    pub set_aside: Option<(&'a wgpu::Buffer, usize)>,
    /// Two buffers of [`scratch_len`] words.
    pub scratch: [&'a wgpu::Buffer; 2],
    /// [`out_len`] words.
    pub out: &'a wgpu::Buffer,
}

/// Records the selection of the best `k` (1..=[`MAX_K`]) of the `n` logits.
pub fn encode(
    ctx: &GpuContext,
    rec: &mut Recording,
    b: &Buffers<'_>,
    n: usize,
    k: usize,
) -> Result<(), GpuError> {
    if k == 0 || k > MAX_K {
        return Err(GpuError::Shape {
            op: "top_k",
            what: "candidates (1 to 512)",
            expected: k.clamp(1, MAX_K),
            got: k,
        });
    }
    let n32 = u32::try_from(n).map_err(|_| GpuError::TooLarge {
        what: "a row of logits".into(),
        bytes: n as u64 * 4,
        limit: u64::from(u32::MAX),
    })?;
    if let Some((ids, count)) = b.set_aside {
        let groups = super::check_dim(ctx, "set_aside", count.div_ceil(64))?;
        ctx.dispatch(
            rec,
            &SET_ASIDE,
            "set_aside",
            &[b.logits, ids, b.out],
            &[n32, count as u32, (2 * k) as u32],
            (groups, 1, 1),
        )?;
    }
    let mut src = b.logits;
    let mut len = n;
    let mut raw = 1;
    let mut pass = 0;
    loop {
        let groups = len.div_ceil(CHUNK).max(1);
        let last = groups == 1;
        let dst = if last { b.out } else { b.scratch[pass % 2] };
        let (gx, gy) = grid(ctx, "top_k", groups)?;
        ctx.dispatch(
            rec,
            &TOP_K,
            if k == 1 { "top_1" } else { "top_k" },
            &[src, dst],
            &[len as u32, k as u32, raw, groups as u32],
            (gx, gy, 1),
        )?;
        if last {
            return Ok(());
        }
        src = dst;
        len = groups * k;
        raw = 0;
        pass += 1;
    }
}

/// The float a selection key stands for (see `top_k.wgsl`).
fn key_value(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 {
        key & 0x7fff_ffff
    } else {
        !key
    })
}

/// The candidates in an output of [`encode`] for a row of `n`, `k` and the set-aside ids.
pub fn decode(words: &[u32], n: usize, k: usize, set_aside: &[u32]) -> Candidates {
    let (ids, rest) = words.split_at(k.min(words.len()));
    let (keys, raw) = rest.split_at(k.min(rest.len()));
    let top = ids
        .iter()
        .zip(keys)
        .filter(|(&id, _)| (id as usize) < n && set_aside.binary_search(&id).is_err())
        .map(|(&id, &key)| (id, key_value(key)))
        .collect();
    let penalised = set_aside
        .iter()
        .zip(raw)
        .filter(|(&id, _)| (id as usize) < n)
        .map(|(&id, &bits)| (id, f32::from_bits(bits)))
        .collect();
    Candidates { top, penalised }
}
