// attention_decode.wgsl's tile maximum with subgroups: each subgroup finds its largest score,
// and a thread that holds it takes it into the slot with an atomic max in workgroup memory
// (naga has no subgroupElect; ties only repeat the same value). Every thread calls it.

fn tile_max(slot: u32, s: f32, live: bool) {
    let m = subgroupMax(select(LOWEST, s, live));
    if live && s == m {
        atomicMax(&tile_maxes[slot], order_key(m));
    }
}
