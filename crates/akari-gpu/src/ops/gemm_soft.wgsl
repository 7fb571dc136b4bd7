// The tiled GEMM (gemm_common.wgsl) for software adapters, which run the GPU's work on the
// CPU (SwiftShader in browsers, lavapipe): the same tiles and dispatch as gemm.wgsl, but 64
// threads a workgroup, each loading a whole row and a whole token of the block and
// accumulating an 8 × 8 patch. There workgroup memory is ordinary memory and a barrier
// switches every thread of the workgroup out and back in, so fewer threads doing more work
// each is what pays (SmolLM2-135M, 128-token prompt: SwiftShader 3.1 -> 4.9 tok/s, lavapipe
// 14 -> 22; BENCHMARKS.md); on a GPU the patch's registers cost occupancy instead.

const WG: u32 = 64u;

fn run(fmt: u32, wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    let row0 = (wid.y * nwg.x + wid.x) * TM;
    let tok0 = wid.z * TN;
    let glu = (params.flags & GLU) != 0u;
    let passes = select(1u, 2u, glu);
    // What it computes: rows cr .. cr + 8 and tokens ct .. ct + 8 of the tile; a(2i + j)
    // holds row cr + i, tokens ct + 4j .. ct + 4j + 4 (b: the up projection's, for GLU).
    // Named variables, not arrays: a browser compiles with loop counters, so array loops
    // stay rolled and the arrays go to memory.
    let cr = (t / 8u) * 8u;
    let ct = (t % 8u) * 8u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0);
    var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    var b8 = vec4<f32>(0.0);
    var b9 = vec4<f32>(0.0);
    var b10 = vec4<f32>(0.0);
    var b11 = vec4<f32>(0.0);
    var b12 = vec4<f32>(0.0);
    var b13 = vec4<f32>(0.0);
    var b14 = vec4<f32>(0.0);
    var b15 = vec4<f32>(0.0);
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
            var s0 = vec4<f32>(0.0);
            var s1 = vec4<f32>(0.0);
            var s2 = vec4<f32>(0.0);
            var s3 = vec4<f32>(0.0);
            var s4 = vec4<f32>(0.0);
            var s5 = vec4<f32>(0.0);
            var s6 = vec4<f32>(0.0);
            var s7 = vec4<f32>(0.0);
            var s8 = vec4<f32>(0.0);
            var s9 = vec4<f32>(0.0);
            var s10 = vec4<f32>(0.0);
            var s11 = vec4<f32>(0.0);
            var s12 = vec4<f32>(0.0);
            var s13 = vec4<f32>(0.0);
            var s14 = vec4<f32>(0.0);
            var s15 = vec4<f32>(0.0);
            for (var kk = 0u; kk < TK; kk++) {
                let w0 = ws4(kk, cr);
                let w1 = ws4(kk, cr + 4u);
                let x0 = xs4(kk, ct);
                let x1 = xs4(kk, ct + 4u);
                s0 += w0.x * x0;
                s1 += w0.x * x1;
                s2 += w0.y * x0;
                s3 += w0.y * x1;
                s4 += w0.z * x0;
                s5 += w0.z * x1;
                s6 += w0.w * x0;
                s7 += w0.w * x1;
                s8 += w1.x * x0;
                s9 += w1.x * x1;
                s10 += w1.y * x0;
                s11 += w1.y * x1;
                s12 += w1.z * x0;
                s13 += w1.z * x1;
                s14 += w1.w * x0;
                s15 += w1.w * x1;
            }
            if p == 0u {
                a0 += s0;
                a1 += s1;
                a2 += s2;
                a3 += s3;
                a4 += s4;
                a5 += s5;
                a6 += s6;
                a7 += s7;
                a8 += s8;
                a9 += s9;
                a10 += s10;
                a11 += s11;
                a12 += s12;
                a13 += s13;
                a14 += s14;
                a15 += s15;
            } else {
                b0 += s0;
                b1 += s1;
                b2 += s2;
                b3 += s3;
                b4 += s4;
                b5 += s5;
                b6 += s6;
                b7 += s7;
                b8 += s8;
                b9 += s9;
                b10 += s10;
                b11 += s11;
                b12 += s12;
                b13 += s13;
                b14 += s14;
                b15 += s15;
            }
            workgroupBarrier();
        }
    }
    put4(tok0 + ct, row0 + cr + 0u, a0, b0, glu);
    put4(tok0 + ct + 4u, row0 + cr + 0u, a1, b1, glu);
    put4(tok0 + ct, row0 + cr + 1u, a2, b2, glu);
    put4(tok0 + ct + 4u, row0 + cr + 1u, a3, b3, glu);
    put4(tok0 + ct, row0 + cr + 2u, a4, b4, glu);
    put4(tok0 + ct + 4u, row0 + cr + 2u, a5, b5, glu);
    put4(tok0 + ct, row0 + cr + 3u, a6, b6, glu);
    put4(tok0 + ct + 4u, row0 + cr + 3u, a7, b7, glu);
    put4(tok0 + ct, row0 + cr + 4u, a8, b8, glu);
    put4(tok0 + ct + 4u, row0 + cr + 4u, a9, b9, glu);
    put4(tok0 + ct, row0 + cr + 5u, a10, b10, glu);
    put4(tok0 + ct + 4u, row0 + cr + 5u, a11, b11, glu);
    put4(tok0 + ct, row0 + cr + 6u, a12, b12, glu);
    put4(tok0 + ct + 4u, row0 + cr + 6u, a13, b13, glu);
    put4(tok0 + ct, row0 + cr + 7u, a14, b14, glu);
    put4(tok0 + ct + 4u, row0 + cr + 7u, a15, b15, glu);
}
