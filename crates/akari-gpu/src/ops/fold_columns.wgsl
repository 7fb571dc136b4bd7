// W[r, c] ← W[r, c] · v[c] over an f16 matrix in place, rounded to f16 (clamped to its
// finite range): an RMS norm's weight folded into the matrix that reads the normalised input,
// so the one-token GEMVs read x and no norm weight per weight word (backend.rs's
// `folds_norm` says when).
//
// Bindings: 0 W (rows of `cols` f16 values, two a word), 1 v [cols], 2 params.
// Dispatch: 256 words per workgroup, workgroups numbered wid.y · nwg.x + wid.x.

struct Params {
    words: u32,
    cols: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<storage, read_write> w: array<u32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn fold_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) t: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + t;
    if i >= params.words {
        return;
    }
    // Rows hold an even number of values, so a word never straddles two rows.
    let c = (2u * i) % params.cols;
    let f = unpack2x16float(w[i]) * vec2<f32>(v[c], v[c + 1u]);
    w[i] = pack2x16float(clamp(f, vec2<f32>(-65504.0), vec2<f32>(65504.0)));
}
