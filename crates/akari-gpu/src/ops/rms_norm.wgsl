// RMS norm per row: y[r, c] = x[r, c] / sqrt(mean(x[r]²) + eps) · w[c].
//
// Bindings: 0 x: [rows, cols], 1 w: [cols], 2 y: [rows, cols] (written), 3 params.
// Dispatch: one workgroup of WG threads per row (row = wid.y · nwg.x + wid.x).

const WG: u32 = 256u;

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let row = wid.y * nwg.x + wid.x;
    if row >= params.rows {
        return;
    }
    let base = row * params.cols;
    var acc = 0.0;
    for (var c = t; c < params.cols; c += WG) {
        let v = x[base + c];
        acc += v * v;
    }
    red[t] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if t < s {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(red[0] / f32(params.cols) + params.eps);
    for (var c = t; c < params.cols; c += WG) {
        y[base + c] = x[base + c] * scale * w[c];
    }
}
