// attention_decode.wgsl's reductions across threads on adapters without subgroups (or with
// subgroups under 4 threads): through workgroup memory.

// Each position slot's scores for four heads, summed over the slot's TEAM threads' parts
// (`d4`), for all of them. Every thread calls it (it holds a barrier).
fn position_score(d4: vec4<f32>, t: u32) -> vec4<f32> {
    sums[t] = d4;
    workgroupBarrier();
    let i = t - t % TEAM;
    return sums[i] + sums[i + 1u] + sums[i + 2u] + sums[i + 3u];
}

// A tile's largest score: every live position's thread takes it into the slot with an
// atomic max in workgroup memory.
fn tile_max(slot: u32, s: f32, live: bool) {
    if live {
        atomicMax(&tile_maxes[slot], order_key(s));
    }
}
