// gemv_decode.wgsl's sums across threads with subgroup operations, for adapters whose
// subgroups all have SG threads (a pipeline constant the Rust side sets from the adapter).
// Subgroups are taken to be runs of SG consecutive invocation indices, as drivers lay out a
// one-dimensional workgroup. A row's LANES threads then sum by shuffles, with no barrier
// where they fit in one subgroup (the tree through workgroup memory took log2(LANES)
// barriers, on the critical path of every GEMV), and the norm's sum takes one barrier
// instead of log2(WG) + 2.

override SG: u32 = 32u;

// Per subgroup: its part of the norm's sum, and of a row's sums when a row spans subgroups.
// Two arrays, so that no barrier is needed between the norm and the rows.
var<workgroup> norm_parts: array<f32, 64>;
var<workgroup> row_parts: array<vec2<f32>, 64>;

// Σ of `v` over the workgroup, for every thread. Every thread calls it (it holds a barrier).
fn workgroup_sum(v: f32, t: u32) -> f32 {
    let s = subgroupAdd(v);
    if t % SG == 0u {
        norm_parts[t / SG] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WG / SG; i++) {
        total += norm_parts[i];
    }
    return total;
}

// Σ of `v` over the row's LANES threads, for its lane 0 (for every lane when a row fits in a
// subgroup). Every thread calls it.
fn lanes_sum(v: vec2<f32>, t: u32) -> vec2<f32> {
    var r = v;
    for (var s = min(LANES, SG) / 2u; s > 0u; s >>= 1u) {
        r += subgroupShuffleXor(r, s);
    }
    if LANES <= SG {
        return r;
    }
    if t % SG == 0u {
        row_parts[t / SG] = r;
    }
    workgroupBarrier();
    var total = vec2<f32>(0.0);
    if my_lane == 0u {
        for (var i = 0u; i < LANES / SG; i++) {
            total += row_parts[t / SG + i];
        }
    }
    // `row_parts` holds the next row group's.
    workgroupBarrier();
    return total;
}
