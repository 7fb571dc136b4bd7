// Rotary embedding in place, Hugging Face's rotate_half pairing: in each head, value i
// pairs with value i + half. Row r is at position pos + r.
//
// Bindings: 0 x: [rows, heads · 2 · half] (read and written), 1 table: cos then sin, each
// [len, half] (sin from `sin_off`), 2 step: [pos, ..], 3 params.
// Dispatch: x covers heads · half pairs in workgroups of 64, y is the row.

struct Params {
    heads: u32,
    half: u32,
    sin_off: u32,
    _b: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

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
    let c = table[p];
    let s = table[params.sin_off + p];
    let o = (r * params.heads + h) * 2u * half + j;
    let x0 = x[o];
    let x1 = x[o + half];
    x[o] = x0 * c - x1 * s;
    x[o + half] = x1 * c + x0 * s;
}
