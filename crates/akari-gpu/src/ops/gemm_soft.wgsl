// The tiled GEMM (gemm_common.wgsl) for software adapters, which run the GPU's work on the
// CPU (SwiftShader in browsers, lavapipe): the same tiles and dispatch as gemm.wgsl, but 64
// threads a workgroup, each loading a whole row and a whole token of the block and
// accumulating an 8 × 8 patch. There workgroup memory is ordinary memory and a barrier
// switches every thread of the workgroup out and back in, so fewer threads doing more work
// each is what pays (lavapipe, SmolLM2-135M, 128-token prompt: see BENCHMARKS.md); on a
// GPU the patch's registers cost occupancy instead.

const WG: u32 = 64u;

fn run(fmt: u32, wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    let row0 = (wid.y * nwg.x + wid.x) * TM;
    let tok0 = wid.z * TN;
    let glu = (params.flags & GLU) != 0u;
    let passes = select(1u, 2u, glu);
    // What it computes: rows cr .. cr + 8 and tokens ct .. ct + 8 of the tile; a[2i + j]
    // holds row cr + i, tokens ct + 4j .. ct + 4j + 4 (b: the up projection's, for GLU).
    let cr = (t / 8u) * 8u;
    let ct = (t % 8u) * 8u;
    var a: array<vec4<f32>, 16>;
    var b: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        // Token t of the tile's inputs, row t of its weights: a block's TK values each.
        for (var h = 0u; h < TK; h += 4u) {
            let k = k0 + h;
            var xv = vec4<f32>(0.0);
            if tok0 + t < params.tokens && k < params.k {
                let o = (tok0 + t) * params.k + k;
                xv = vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
            }
            store_x(h, t, xv);
        }
        for (var p = 0u; p < passes; p++) {
            which = p;
            for (var h = 0u; h < TK; h += 4u) {
                let k = k0 + h;
                var wv = vec4<f32>(0.0);
                if row0 + t < params.n && k < params.k {
                    wv = w4(fmt, row0 + t, k);
                }
                store_w(h, t, wv);
            }
            workgroupBarrier();
            var s: array<vec4<f32>, 16>;
            for (var kk = 0u; kk < TK; kk++) {
                let w0 = ws4(kk, cr);
                let w1 = ws4(kk, cr + 4u);
                let x0 = xs4(kk, ct);
                let x1 = xs4(kk, ct + 4u);
                for (var i = 0u; i < 4u; i++) {
                    s[2u * i] += w0[i] * x0;
                    s[2u * i + 1u] += w0[i] * x1;
                    s[2u * i + 8u] += w1[i] * x0;
                    s[2u * i + 9u] += w1[i] * x1;
                }
            }
            for (var i = 0u; i < 16u; i++) {
                if p == 0u {
                    a[i] += s[i];
                } else {
                    b[i] += s[i];
                }
            }
            workgroupBarrier();
        }
    }
    for (var i = 0u; i < 8u; i++) {
        put4(tok0 + ct, row0 + cr + i, a[2u * i], b[2u * i], glu);
        put4(tok0 + ct + 4u, row0 + cr + i, a[2u * i + 1u], b[2u * i + 1u], glu);
    }
}
