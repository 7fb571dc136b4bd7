// x += y, elementwise.
//
// Bindings: 0 x (read and written), 1 y, 2 params. Dispatch: 256 values per workgroup,
// workgroups numbered wid.y · nwg.x + wid.x.

struct Params {
    n: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn add_assign(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) t: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + t;
    if i >= params.n {
        return;
    }
    x[i] += y[i];
}
