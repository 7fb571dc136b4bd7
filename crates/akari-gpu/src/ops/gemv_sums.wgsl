// gemv_decode.wgsl's sums across threads, through workgroup memory (adapters without
// subgroups, or whose subgroup size varies). gemv_sums_subgroups.wgsl is the same with
// subgroup operations; each kernel module is built with one of the two.

var<workgroup> partial: array<vec2<f32>, WG>;

// Σ of `v` over the workgroup, for every thread. Every thread calls it (it holds barriers).
fn workgroup_sum(v: f32, t: u32) -> f32 {
    partial[t] = vec2<f32>(v, 0.0);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if t < s {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    let total = partial[0].x;
    // `partial` holds the rows' sums next.
    workgroupBarrier();
    return total;
}

// Σ of `v` over the row's LANES threads, for its lane 0. Every thread calls it.
fn lanes_sum(v: vec2<f32>, t: u32) -> vec2<f32> {
    partial[t] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if my_lane < s {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    return partial[t];
}
