// Embedding lookup: y[t, c] = W[ids[t], c], dequantised from W's file layout.
//
// Bindings: 0 w: array<u32> (the matrix bytes, as in gemv.wgsl), 1 ids: array<u32> [T],
// 2 y: array<f32> [T, cols] (written), 3 params.
// Formats (params.format): 0 F32, 1 F16, 2 Q8_0, 3 Q4_0, 4 Q4_1 (layouts in gemv.wgsl).
// Dispatch: x covers the columns in workgroups of 64, y is the token.
// W may be one part of a matrix split by rows (rows first..first + rows): tokens outside it
// are left to the other parts' dispatches.

struct Params {
    cols: u32,
    row_bytes: u32,
    format: u32,
    first: u32,
    rows: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn byte_at(o: u32) -> u32 {
    return (w[o >> 2u] >> (8u * (o & 3u))) & 0xffu;
}

// The f16 at byte offset `o` (even), widened.
fn load_f16(o: u32) -> f32 {
    let pair = unpack2x16float(w[o >> 2u]);
    return select(pair.x, pair.y, (o & 2u) != 0u);
}

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let tok = gid.y;
    let id = ids[tok];
    if c >= params.cols || id < params.first || id - params.first >= params.rows {
        return;
    }
    let base = (id - params.first) * params.row_bytes;
    let j = c & 31u;
    var v = 0.0;
    switch params.format {
        case 0u: {
            v = bitcast<f32>(w[(base >> 2u) + c]);
        }
        case 1u: {
            v = load_f16(base + 2u * c);
        }
        case 2u: {
            let o = base + (c >> 5u) * 34u;
            let q = bitcast<i32>(byte_at(o + 2u + j) << 24u) >> 24u;
            v = load_f16(o) * f32(q);
        }
        case 3u: {
            let o = base + (c >> 5u) * 18u;
            let b = byte_at(o + 2u + (j & 15u));
            let q = select(b & 0xfu, b >> 4u, j >= 16u);
            v = load_f16(o) * (f32(q) - 8.0);
        }
        default: {
            let o = base + (c >> 5u) * 20u;
            let b = byte_at(o + 4u + (j & 15u));
            let q = select(b & 0xfu, b >> 4u, j >= 16u);
            v = load_f16(o) * f32(q) + load_f16(o + 2u);
        }
    }
    y[tok * params.cols + c] = v;
}
