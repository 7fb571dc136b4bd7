// The one-token GEMV of f16 rows, prepended with gemv_decode.wgsl. A module of its own so
// that its weights can be declared as 16-byte words: with K a multiple of 8 every row starts
// on 16 bytes, so 8 weights are one vector load (on an H100 F16 decode went from 371 to
// 389–403 tok/s, with gate and up loaded together).

@group(0) @binding(0) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> wv2: array<vec4<u32>>;

// Σ of 8 f16 weights (one 16-byte word) times x[2g], x[2g + 1].
fn dot8(q: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    return dot(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), x0)
        + dot(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), x1);
}

// Input vec4 i: staged only to merge attention partials (see stage_input), which the Rust
// side does only for rows of at most 4 · STAGE values.
fn xf(i: u32) -> vec4<f32> {
    if has(COMBINE) {
        return xs[xs_at(i)];
    }
    return xg(i);
}

// f16 rows: the row's dot products with W and, for GLU, W2, both words loaded before
// either is used.
fn row_f16(row: u32, lane: u32, glu: bool) -> vec2<f32> {
    let groups = params.k >> 3u;
    let base = row * (params.row_bytes >> 4u);
    var acc = vec2<f32>(0.0);
    for (var i = 0u; i < lane_units(groups, lane); i++) {
        let g = lane_unit(groups, lane, i);
        let w = unit_weight(groups, lane, i);
        let a = wv[base + g];
        var b = vec4<u32>(0u);
        if glu {
            b = wv2[base + g];
        }
        let x0 = xf(2u * g);
        let x1 = xf(2u * g + 1u);
        acc.x += w * dot8(a, x0, x1);
        if glu {
            acc.y += w * dot8(b, x0, x1);
        }
    }
    return acc;
}

@compute @workgroup_size(WG)
fn decode_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) t: u32) {
    begin(wid, nwg, t);
    // Staged only to merge attention partials (see stage_input).
    if has(COMBINE) {
        stage_input(t);
    }
    var v = vec2<f32>(0.0);
    if live {
        v = row_f16(my_row, my_lane, has(GLU));
    }
    finish(v, t);
}
