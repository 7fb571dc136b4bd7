// attention_decode.wgsl's reductions across threads with subgroups (of at least 4 threads).

// Each position slot's scores for four heads, summed over the slot's TEAM threads' parts
// (`d4`), for all of them: by shuffles, with no barrier. A slot's threads are consecutive
// invocations, taken to be consecutive lanes of one subgroup (as drivers lay out a
// one-dimensional workgroup). Every thread calls it.
fn position_score(d4: vec4<f32>, t: u32) -> vec4<f32> {
    let s = d4 + subgroupShuffleXor(d4, 1u);
    return s + subgroupShuffleXor(s, 2u);
}

// A tile's largest score: each subgroup finds its largest, and a thread that holds it takes
// it into the slot with an atomic max in workgroup memory (naga has no subgroupElect; ties
// only repeat the same value). Every thread calls it.
fn tile_max(slot: u32, s: f32, live: bool) {
    let m = subgroupMax(select(LOWEST, s, live));
    if live && s == m {
        atomicMax(&tile_maxes[slot], order_key(m));
    }
}
