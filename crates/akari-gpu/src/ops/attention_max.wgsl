// attention_decode.wgsl's tile maximum on adapters without subgroups: every live position's
// thread takes it into the slot with an atomic max in workgroup memory.

fn tile_max(slot: u32, s: f32, live: bool) {
    if live {
        atomicMax(&tile_maxes[slot], order_key(s));
    }
}
