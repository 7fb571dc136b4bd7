// y = silu(gate) · up, elementwise: silu(g) = g / (1 + exp(−g)).
//
// Bindings: 0 gate, 1 up, 2 y (written), 3 params. Dispatch: 256 values per workgroup,
// workgroups numbered wid.y · nwg.x + wid.x.

struct Params {
    n: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + t;
    if i >= params.n {
        return;
    }
    let g = gate[i];
    y[i] = g / (1.0 + exp(-g)) * up[i];
}
