// Rotary embedding in place, Hugging Face's rotate_half pairing: in each head, value i
// pairs with value i + half. Row r is at position pos + r.
//
// Bindings: 0 x: [rows, heads · 2 · half] (read and written), 1 cos, 2 sin: [len, half],
// 3 step: [pos, ..], 4 params.
// Dispatch: x covers heads · half pairs in workgroups of 64, y is the row.

struct Params {
    heads: u32,
    half: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = params.half;
    let i = gid.x;
    if i >= params.heads * half {
        return;
    }
    let r = gid.y;
    let h = i / half;
    let j = i % half;
    let p = (step[0] + r) * half + j;
    let c = cos_t[p];
    let s = sin_t[p];
    let o = (r * params.heads + h) * 2u * half + j;
    let x0 = x[o];
    let x1 = x[o + half];
    x[o] = x0 * c - x1 * s;
    x[o + half] = x1 * c + x0 * s;
}
