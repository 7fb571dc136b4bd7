// Token selection on the device: the best k logits of a row, so a decode step reads back
// a few candidates instead of the whole vocabulary.
//
// Values are compared as order-preserving u32 keys: exact, and free of any question of how
// a compiler treats NaN or signed zeros. A key is the float's bits with the sign bit set for
// positive values and all bits flipped for negative ones; -0.0 counts as 0.0 and NaN ranks
// below -inf (key 0), as the host's `rank` has it. Ties go to the lower token id.
//
// Bindings: 0 src, 1 dst, 2 params { n, k, raw, groups }. Each workgroup sorts a
// chunk of 1024 candidates (bitonic, in workgroup memory) and writes its best k: ids to
// dst[g·k + j], keys to dst[groups·k + g·k + j]. The input is the raw row (`raw` = 1: ids
// are positions, keys come from the values) or a previous pass's output of n candidates
// (ids at src[i], keys at src[n + i]). Workgroups numbered wid.y · nwg.x + wid.x; chunks
// past the end are padded with key 0 and id 0xffffffff, which rank last.
//
// `top_1` is the same for k = 1 (greedy), as a reduction: 8 barriers instead of the sort's 55,
// which matters on CPU implementations.

struct TopKParams {
    n: u32,
    k: u32,
    raw: u32,
    groups: u32,
}

const WG: u32 = 256u;
const CHUNK: u32 = 1024u;

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: TopKParams;

var<workgroup> keys: array<u32, CHUNK>;
var<workgroup> ids: array<u32, CHUNK>;

fn key_of(bits: u32) -> u32 {
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return 0u;
    }
    var b = bits;
    if b == 0x80000000u {
        b = 0u;
    }
    if (b & 0x80000000u) != 0u {
        return ~b;
    }
    return b | 0x80000000u;
}

// Whether (ka, ia) ranks before (kb, ib).
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(256)
fn top_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
    let g = wid.y * nwg.x + wid.x;
    if g >= params.groups {
        return;
    }
    for (var r = 0u; r < CHUNK / WG; r++) {
        let l = r * WG + t;
        let i = g * CHUNK + l;
        var key = 0u;
        var id = 0xffffffffu;
        if i < params.n {
            if params.raw == 1u {
                key = key_of(src[i]);
                id = i;
            } else {
                id = src[i];
                key = src[params.n + i];
            }
        }
        keys[l] = key;
        ids[l] = id;
    }
    workgroupBarrier();
    // Bitonic sort, best first.
    for (var size = 2u; size <= CHUNK; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var r = 0u; r < CHUNK / (2u * WG); r++) {
                let p = r * WG + t;
                let lo = 2u * stride * (p / stride) + p % stride;
                let hi = lo + stride;
                let best_first = (lo & size) == 0u;
                let ka = keys[lo];
                let ia = ids[lo];
                let kb = keys[hi];
                let ib = ids[hi];
                if before(ka, ia, kb, ib) != best_first {
                    keys[lo] = kb;
                    ids[lo] = ib;
                    keys[hi] = ka;
                    ids[hi] = ia;
                }
            }
            workgroupBarrier();
        }
    }
    for (var j = t; j < params.k; j += WG) {
        dst[g * params.k + j] = ids[j];
        dst[params.groups * params.k + g * params.k + j] = keys[j];
    }
}

// The best of each thread's four, then a tree over the workgroup.
@compute @workgroup_size(256)
fn top_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
    let g = wid.y * nwg.x + wid.x;
    if g >= params.groups {
        return;
    }
    var best_key = 0u;
    var best_id = 0xffffffffu;
    for (var r = 0u; r < CHUNK / WG; r++) {
        let i = g * CHUNK + r * WG + t;
        if i < params.n {
            var key = 0u;
            var id = i;
            if params.raw == 1u {
                key = key_of(src[i]);
            } else {
                id = src[i];
                key = src[params.n + i];
            }
            if before(key, id, best_key, best_id) {
                best_key = key;
                best_id = id;
            }
        }
    }
    keys[t] = best_key;
    ids[t] = best_id;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if t < s && before(keys[t + s], ids[t + s], keys[t], ids[t]) {
            keys[t] = keys[t + s];
            ids[t] = ids[t + s];
        }
        workgroupBarrier();
    }
    if t == 0u {
        dst[g] = ids[0];
        dst[params.groups + g] = keys[0];
    }
}
