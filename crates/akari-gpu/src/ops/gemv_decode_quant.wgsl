// The one-token GEMVs of quantised rows (gemv_decode.wgsl says how they work), prepended
// with gemv_decode.wgsl. The weights are read as words.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> w2: array<u32>;

// Which matrix the dot products read: 0 for W, 1 for W2 (uniform across the workgroup).
var<private> which: u32;

fn wl(i: u32) -> u32 {
    if which == 0u {
        return w[i];
    }
    return w2[i];
}

// The 4 low and 4 high nibbles of a word, as values 0..15.
fn lo4(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u)) & vec4<u32>(0xfu));
}

fn hi4(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v >> 4u, v >> 12u, v >> 20u, v >> 28u)) & vec4<u32>(0xfu));
}

// The 4 bytes of a word as signed values.
fn i8x4(v: u32) -> vec4<f32> {
    let s = vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u),
        bitcast<i32>(v));
    return vec4<f32>(s >> vec4<u32>(24u));
}

// Σ q·x of a 4-bit block's 16 bytes (as 4 words) against x[xq..xq + 8) (32 values); the
// nibbles are offset by `off` (8 for Q4_0, 0 for Q4_1).
fn nibbles(q0: u32, q1: u32, q2: u32, q3: u32, xq: u32, off: f32) -> f32 {
    let o = vec4<f32>(off);
    var s = dot(lo4(q0) - o, xv(xq)) + dot(hi4(q0) - o, xv(xq + 4u));
    s += dot(lo4(q1) - o, xv(xq + 1u)) + dot(hi4(q1) - o, xv(xq + 5u));
    s += dot(lo4(q2) - o, xv(xq + 2u)) + dot(hi4(q2) - o, xv(xq + 6u));
    s += dot(lo4(q3) - o, xv(xq + 3u)) + dot(hi4(q3) - o, xv(xq + 7u));
    return s;
}

fn sum4(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

// Q4_0 pairs: 36 bytes = 9 words; d0 in the low half of word 0, block 0's nibbles in bytes
// 2..18, d1 in the high half of word 4, block 1's nibbles in words 5..8.
fn pair_words(row: u32, p: u32) -> array<u32, 9> {
    let o = row * (params.row_bytes >> 2u) + p * 9u;
    var a: array<u32, 9>;
    for (var i = 0u; i < 9u; i++) {
        a[i] = wl(o + i);
    }
    return a;
}

// Σ w·x over pair p, given its words.
fn pair_q4_0(a: array<u32, 9>, p: u32) -> f32 {
    let xq = p * 16u;
    let d0 = unpack2x16float(a[0]).x;
    let d1 = unpack2x16float(a[4]).y;
    return d0 * nibbles((a[0] >> 16u) | (a[1] << 16u), (a[1] >> 16u) | (a[2] << 16u),
            (a[2] >> 16u) | (a[3] << 16u), (a[3] >> 16u) | (a[4] << 16u), xq, 8.0)
        + d1 * nibbles(a[5], a[6], a[7], a[8], xq + 8u, 8.0);
}

fn row_q4_0(row: u32, lane: u32) -> f32 {
    let pairs = params.k >> 6u;
    var acc = 0.0;
    for (var i = 0u; i < lane_units(pairs, lane); i++) {
        let p = lane_unit(pairs, lane, i);
        acc += unit_weight(pairs, lane, i) * pair_q4_0(pair_words(row, p), p);
    }
    return acc;
}

// Q4_1 blocks: 20 bytes = 5 words; d and m in word 0, nibbles in words 1..4.
fn row_q4_1(row: u32, lane: u32) -> f32 {
    let blocks = params.k >> 5u;
    let base = row * (params.row_bytes >> 2u);
    var acc = 0.0;
    for (var b = lane; b < blocks; b += LANES) {
        let o = base + b * 5u;
        let dm = unpack2x16float(wl(o));
        let xq = b * 8u;
        var sx = vec4<f32>(0.0);
        for (var i = 0u; i < 8u; i++) {
            sx += xv(xq + i);
        }
        acc += dm.x * nibbles(wl(o + 1u), wl(o + 2u), wl(o + 3u), wl(o + 4u), xq, 0.0)
            + dm.y * sum4(sx);
    }
    return acc;
}

// Σ q·x of 32 signed bytes given as 8 words, against x[xq..xq + 8).
fn bytes8(q: array<u32, 8>, xq: u32) -> f32 {
    var s = 0.0;
    for (var i = 0u; i < 8u; i++) {
        s += dot(i8x4(q[i]), xv(xq + i));
    }
    return s;
}

// Q8_0 pairs: 68 bytes = 17 words; d0 in the low half of word 0, block 0's bytes in bytes
// 2..34, d1 in the high half of word 8, block 1's bytes in words 9..16.
fn row_q8_0(row: u32, lane: u32) -> f32 {
    let pairs = params.k >> 6u;
    let base = row * (params.row_bytes >> 2u);
    var acc = 0.0;
    for (var p = lane; p < pairs; p += LANES) {
        let o = base + p * 17u;
        var a: array<u32, 9>;
        for (var i = 0u; i < 9u; i++) {
            a[i] = wl(o + i);
        }
        var q0: array<u32, 8>;
        var q1: array<u32, 8>;
        for (var i = 0u; i < 8u; i++) {
            q0[i] = (a[i] >> 16u) | (a[i + 1u] << 16u);
            q1[i] = wl(o + 9u + i);
        }
        let xq = p * 16u;
        acc += unpack2x16float(a[0]).x * bytes8(q0, xq);
        acc += unpack2x16float(a[8]).y * bytes8(q1, xq + 8u);
    }
    return acc;
}

// Row `row`'s dot product for thread `lane` in format `fmt` (0 Q8_0, 1 Q4_0, 2 Q4_1). WGSL
// has no generics: each entry point passes a constant, which the compilers fold.
fn row_dot(fmt: u32, row: u32, lane: u32) -> f32 {
    switch fmt {
        case 0u: {
            return row_q8_0(row, lane);
        }
        case 1u: {
            return row_q4_0(row, lane);
        }
        default: {
            return row_q4_1(row, lane);
        }
    }
}

// What each entry point runs: its row's dot product with W, then with W2 for GLU (`which`).
// A Q4_0 row whose lanes take one pair each (the q/k/v and o projections) loads that pair
// before the norm and the staging of the input, whose barriers and loads it would otherwise
// wait behind: these small GEMVs are bound by their chain of round trips, not by bandwidth.
fn run_rows(fmt: u32, wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    set_row(wid.y * nwg.x + wid.x, t);
    let early = (PREFETCH & 2u) != 0u && fmt == 1u && UNITS == 1u && !has(GLU);
    let pairs = params.k >> 6u;
    let p0 = lane_unit(pairs, my_lane, 0u);
    var first: array<u32, 9>;
    which = 0u;
    if early && live {
        first = pair_words(my_row, p0);
    }
    norm_scale(t);
    stage_input(t);
    var v = vec2<f32>(0.0);
    if live {
        if early {
            v.x = unit_weight(pairs, my_lane, 0u) * pair_q4_0(first, p0);
        } else {
            v.x = row_dot(fmt, my_row, my_lane);
        }
    }
    which = 1u;
    if live && has(GLU) {
        v.y = row_dot(fmt, my_row, my_lane);
    }
    finish(v, t);
}

@compute @workgroup_size(WG)
fn decode_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    run_rows(0u, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn decode_q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    run_rows(1u, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn decode_q4_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    run_rows(2u, wid, nwg, t);
}

// Q4_0 on integer dot products, for the matrices where unpacking nibbles to floats (~5
// instructions a weight) bounds the GEMV rather than memory: gate/up (GLU) and
// vocabulary-sized ones, K ≤ 4096. Each workgroup quantises the (normalised) input once to
// 16-bit integers per 32-value block, x ≈ dx·(256·hi + lo), keeping the low bytes and the
// (signed) high bytes as packed words in workgroup memory; a row's block is then 16
// `dot4U8Packed` / `dot4I8Packed` of its masked nibble words against them. 16-bit inputs keep
// the result within ~1e-5 of f32 inputs (8-bit ones, as llama.cpp's CUDA kernels use, do
// not). Workgroups loop over row groups (the Rust side dispatches at most a thousand or
// so), so the input is quantised once for many rows. The small matrices keep `decode_q4_0`:
// they are bound by latency, which the quantisation would lengthen.

const DOT_BLOCKS: u32 = 128u;
// Per block: its low bytes (inputs 0..15, 16..31) and high bytes, as 4 vec4s.
var<workgroup> xq: array<vec4<u32>, 512>;
// Where block j's word kind c (0, 1 low bytes; 2, 3 high bytes) is in `xq` (SWIZZLE bit 2).
fn xq_at(j: u32, c: u32) -> u32 {
    if (SWIZZLE & 2u) != 0u {
        return c * DOT_BLOCKS + j;
    }
    return j * 4u + c;
}

// Where word `word` of block `block` of `blocks` quantised blocks is (SWIZZLE bit 4).
fn quantized_at(block: u32, word: u32, blocks: u32) -> u32 {
    if (SWIZZLE & 4u) != 0u {
        return word * blocks + block;
    }
    return block * 18u + word;
}

// Per block: dx, and 8 · Σ (256·hi + lo) (the −8 offset of every nibble, applied once).
var<workgroup> xd: array<vec2<f32>, DOT_BLOCKS>;
// Per 8 inputs: their max |x|, then the sum of their 16-bit values.
var<workgroup> qmax: array<f32, 512>;
var<workgroup> qsum: array<i32, 512>;

// Low bytes and high bytes of four 16-bit values, as two packed words.
fn split16(q: vec4<i32>) -> vec2<u32> {
    let u = bitcast<vec4<u32>>(q);
    let m = vec4<u32>(0xffu);
    return vec2<u32>(pack4xU8(u & m), pack4xU8((u >> vec4<u32>(8u)) & m));
}

// The max of 4 consecutive `qmax` entries: block j's.
fn block_max(j: u32) -> f32 {
    return max(max(qmax[4u * j], qmax[4u * j + 1u]), max(qmax[4u * j + 2u], qmax[4u * j + 3u]));
}

// Quantises the (normalised) input into `xq` and `xd`: every thread takes 8 inputs at a time
// (a quarter block), so the whole workgroup shares the work.
fn quantize_input(t: u32) {
    let units = params.k >> 3u;
    for (var u = t; u < units; u += WG) {
        let m = max(abs(xu(u, 0u, t)), abs(xu(u, 1u, t)));
        qmax[u] = max(max(m.x, m.y), max(m.z, m.w));
    }
    workgroupBarrier();
    for (var u = t; u < units; u += WG) {
        let j = u >> 2u;
        let amax = block_max(j);
        let id = select(0.0, 32767.0 / amax, amax > 0.0);
        let q0 = vec4<i32>(round(xu(u, 0u, t) * id));
        let q1 = vec4<i32>(round(xu(u, 1u, t) * id));
        let s = q0 + q1;
        qsum[u] = s.x + s.y + s.z + s.w;
        let p0 = split16(q0);
        let p1 = split16(q1);
        // Quarter r holds inputs 8r..8r + 8: low words 2r, 2r + 1 of the block's eight.
        let r = u & 3u;
        let lo = xq_at(j, r >> 1u);
        let hi = xq_at(j, 2u + (r >> 1u));
        let c = (2u * r) & 3u;
        xq[lo][c] = p0.x;
        xq[lo][c + 1u] = p1.x;
        xq[hi][c] = p0.y;
        xq[hi][c + 1u] = p1.y;
    }
    workgroupBarrier();
    for (var j = t; j < (params.k >> 5u); j += WG) {
        let sum = qsum[4u * j] + qsum[4u * j + 1u] + qsum[4u * j + 2u] + qsum[4u * j + 3u];
        xd[j] = vec2<f32>(block_max(j) / 32767.0, 8.0 * f32(sum));
    }
    workgroupBarrier();
}

struct Q4Block {
    q: vec4<u32>,
    d: f32,
}

// Block b of the Q4_0 row at word `base` (rows hold an even number of 18-byte blocks, so
// they start on a word). An odd block's scale is the high half of word ⌊18b / 4⌋ and its
// nibbles the next four words; an even block's scale is that word's low half and its nibbles
// start two bytes in.
fn q4_0_block(base: u32, b: u32) -> Q4Block {
    let o = base + (b * 9u) / 2u;
    let a0 = wl(o);
    let a1 = wl(o + 1u);
    let a2 = wl(o + 2u);
    let a3 = wl(o + 3u);
    let a4 = wl(o + 4u);
    let odd = (b & 1u) != 0u;
    let d = unpack2x16float(a0);
    let shifted = vec4<u32>((a0 >> 16u) | (a1 << 16u), (a1 >> 16u) | (a2 << 16u),
        (a2 >> 16u) | (a3 << 16u), (a3 >> 16u) | (a4 << 16u));
    return Q4Block(select(shifted, vec4<u32>(a1, a2, a3, a4), odd), select(d.x, d.y, odd));
}

// d · dx · Σ (q − 8)·(256·hi + lo) for block j of the input in `xq`, `xd`.
fn block_dot(p: Q4Block, j: u32) -> f32 {
    return block_dot_with(p, xq[xq_at(j, 0u)], xq[xq_at(j, 1u)], xq[xq_at(j, 2u)],
        xq[xq_at(j, 3u)], xd[j]);
}

// The same against one block of quantised input given as its words: low bytes of inputs
// 0..16 and 16..32 (l0, l1), high bytes (h0, h1), and (dx, 8 · Σ (256·hi + lo)). Nibbles `q`:
// byte i holds inputs i and i + 16.
fn block_dot_with(p: Q4Block, l0: vec4<u32>, l1: vec4<u32>, h0: vec4<u32>, h1: vec4<u32>,
                  x: vec2<f32>) -> f32 {
    let m = vec4<u32>(0x0f0f0f0fu);
    let ql = p.q & m;
    let qh = (p.q >> vec4<u32>(4u)) & m;
    let lo = dot4U8Packed(ql.x, l0.x) + dot4U8Packed(ql.y, l0.y) + dot4U8Packed(ql.z, l0.z)
        + dot4U8Packed(ql.w, l0.w) + dot4U8Packed(qh.x, l1.x) + dot4U8Packed(qh.y, l1.y)
        + dot4U8Packed(qh.z, l1.z) + dot4U8Packed(qh.w, l1.w);
    let hi = dot4I8Packed(ql.x, h0.x) + dot4I8Packed(ql.y, h0.y) + dot4I8Packed(ql.z, h0.z)
        + dot4I8Packed(ql.w, h0.w) + dot4I8Packed(qh.x, h1.x) + dot4I8Packed(qh.y, h1.y)
        + dot4I8Packed(qh.z, h1.z) + dot4I8Packed(qh.w, h1.w);
    let s = f32(bitcast<i32>(lo) + 256 * hi);
    return p.d * x.x * (s - x.y);
}

// The row's dot products with W (and W2 for GLU), both blocks loaded before either is used.
fn row_q4_0_dot(row: u32, lane: u32, glu: bool) -> vec2<f32> {
    let base = row * (params.row_bytes >> 2u);
    var v = vec2<f32>(0.0);
    let blocks = params.k >> 5u;
    for (var i = 0u; i < lane_units(blocks, lane); i++) {
        let b = lane_unit(blocks, lane, i);
        let w = unit_weight(blocks, lane, i);
        which = 0u;
        let p = q4_0_block(base, b);
        var p2 = p;
        if glu {
            which = 1u;
            p2 = q4_0_block(base, b);
        }
        v.x += w * block_dot(p, b);
        if glu {
            v.y += w * block_dot(p2, b);
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn decode_q4_0_dot(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    let first = wid.y * nwg.x + wid.x;
    let stride = nwg.x * nwg.y;
    let groups = (params.n + ROWS - 1u) / ROWS;
    let glu = has(GLU);
    let quantize_out = has(QUANTIZE_OUT);
    norm_scale(t);
    quantize_input(t);
    for (var g = first; g < groups; g += stride) {
        set_row(g, t);
        var v = vec2<f32>(0.0);
        if live {
            v = row_q4_0_dot(my_row, my_lane, glu);
        }
        if quantize_out {
            finish_quantized(v, t, g);
        } else {
            finish(v, t);
        }
    }
}

// GLU's output quantised for the next GEMV (down), as `quantize_input` would: with ROWS = 32
// (the Rust side sets LANES = 8), row group g is the next input's block g, so the workgroup
// that computed it writes it to y2 as 18 words (placed by `quantized_at`): low bytes of its
// 32 values (8 words), high bytes (8 words), dx and 8 · Σ (256·hi + lo). The down GEMV then
// reads it as is (`decode_q4_0_dotq`), with no quantisation of its own.
var<workgroup> out_vals: array<f32, 32>;
var<workgroup> out_q: array<i32, 32>;

fn finish_quantized(v: vec2<f32>, t: u32, g: u32) {
    // The output's blocks: one a row group (the matrix is never split here).
    let blocks = params.n / 32u;
    let r = lanes_sum(v, t);
    if my_lane == 0u {
        var o = 0.0;
        if live {
            o = r.x / (1.0 + exp(-r.x)) * r.y;
            y[params.row0 + my_row] = o;
        }
        out_vals[t / LANES] = o;
    }
    workgroupBarrier();
    if t < 32u {
        var amax = 0.0;
        for (var i = 0u; i < 32u; i++) {
            amax = max(amax, abs(out_vals[i]));
        }
        let id = select(0.0, 32767.0 / amax, amax > 0.0);
        out_q[t] = i32(round(out_vals[t] * id));
        if t == 0u {
            // dx goes out now; the sum once every value is quantised.
            y2[quantized_at(g, 16u, blocks)] = bitcast<u32>(amax / 32767.0);
        }
    }
    workgroupBarrier();
    if t < 8u {
        let q = vec4<i32>(out_q[4u * t], out_q[4u * t + 1u], out_q[4u * t + 2u], out_q[4u * t + 3u]);
        let p = split16(q);
        y2[quantized_at(g, t, blocks)] = p.x;
        y2[quantized_at(g, 8u + t, blocks)] = p.y;
    } else if t == 8u {
        var sum = 0;
        for (var i = 0u; i < 32u; i++) {
            sum += out_q[i];
        }
        y2[quantized_at(g, 17u, blocks)] = bitcast<u32>(8.0 * f32(sum));
    }
    // `out_vals` (and `partial`) are written again by the next row group.
    workgroupBarrier();
}

// A one-token Q4_0 GEMV whose input comes already quantised (by `finish_quantized`) in w2's
// binding, 18 words a block: the down projection after GLU. No norm, no quantisation, no
// workgroup memory but the final sums: every row reads the input blocks it needs directly.
@compute @workgroup_size(WG)
fn decode_q4_0_dotq(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    // Binds what the other entry points bind (the layout is derived per entry point), though
    // a quantised input has no norm to apply.
    _ = &norm;
    begin(wid, nwg, t);
    var v = vec2<f32>(0.0);
    which = 0u;
    if live {
        let base = my_row * (params.row_bytes >> 2u);
        let blocks = params.k >> 5u;
        for (var i = 0u; i < lane_units(blocks, my_lane); i++) {
            let b = lane_unit(blocks, my_lane, i);
            let p = q4_0_block(base, b);
            var q: array<u32, 18>;
            for (var k = 0u; k < 18u; k++) {
                q[k] = w2[quantized_at(b, k, blocks)];
            }
            let l0 = vec4<u32>(q[0], q[1], q[2], q[3]);
            let l1 = vec4<u32>(q[4], q[5], q[6], q[7]);
            let h0 = vec4<u32>(q[8], q[9], q[10], q[11]);
            let h1 = vec4<u32>(q[12], q[13], q[14], q[15]);
            let x = vec2<f32>(bitcast<f32>(q[16]), bitcast<f32>(q[17]));
            v.x += unit_weight(blocks, my_lane, i) * block_dot_with(p, l0, l1, h0, h1, x);
        }
    }
    finish(v, t);
}
