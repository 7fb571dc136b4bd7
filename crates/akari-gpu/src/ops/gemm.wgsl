// The tiled GEMM (gemm_common.wgsl) for GPUs: 256 threads a workgroup, each dequantising
// eight weights and loading eight inputs a block and accumulating a 4 × 4 patch (larger
// patches measured slower on an H100: BENCHMARKS.md).

const WG: u32 = 256u;

fn run(fmt: u32, wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    let row0 = (wid.y * nwg.x + wid.x) * TM;
    let tok0 = wid.z * TN;
    let glu = (params.flags & GLU) != 0u;
    let passes = select(1u, 2u, glu);
    // What this thread loads: row `lr` of the W tile and token `lr` of the X tile, values
    // `lk .. lk + 8` of the block.
    let lr = t / 4u;
    let lk = (t % 4u) * 8u;
    // What it computes: rows cr .. cr + 4 and tokens ct .. ct + 4 of the tile.
    let cr = (t / 16u) * 4u;
    let ct = (t % 16u) * 4u;
    // a_i.j: row cr + i, token ct + j (b_i: the up projection's, for GLU).
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        for (var h = 0u; h < 8u; h += 4u) {
            let k = k0 + lk + h;
            var xv = vec4<f32>(0.0);
            if tok0 + lr < params.tokens && k < params.k {
                let o = (tok0 + lr) * params.k + k;
                xv = vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
            }
            store_x(lk + h, lr, xv);
        }
        for (var p = 0u; p < passes; p++) {
            which = p;
            for (var h = 0u; h < 8u; h += 4u) {
                let k = k0 + lk + h;
                var wv = vec4<f32>(0.0);
                if row0 + lr < params.n && k < params.k {
                    wv = w4(fmt, row0 + lr, k);
                }
                store_w(lk + h, lr, wv);
            }
            workgroupBarrier();
            var s0 = vec4<f32>(0.0);
            var s1 = vec4<f32>(0.0);
            var s2 = vec4<f32>(0.0);
            var s3 = vec4<f32>(0.0);
            for (var kk = 0u; kk < TK; kk++) {
                let wr = ws4(kk, cr);
                let xc = xs4(kk, ct);
                s0 += wr.x * xc;
                s1 += wr.y * xc;
                s2 += wr.z * xc;
                s3 += wr.w * xc;
            }
            if p == 0u {
                a0 += s0;
                a1 += s1;
                a2 += s2;
                a3 += s3;
            } else {
                b0 += s0;
                b1 += s1;
                b2 += s2;
                b3 += s3;
            }
            workgroupBarrier();
        }
    }
    put4(tok0 + ct, row0 + cr, a0, b0, glu);
    put4(tok0 + ct, row0 + cr + 1u, a1, b1, glu);
    put4(tok0 + ct, row0 + cr + 2u, a2, b2, glu);
    put4(tok0 + ct, row0 + cr + 3u, a3, b3, glu);
}
