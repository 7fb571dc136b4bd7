// Decode attention (one row) with the cache append folded in: the step's new key (rotated)
// and value come in as inputs; every workgroup keeps them in workgroup memory and attends
// to them there at the new position, and one workgroup per key/value head writes them to
// the cache for the steps after (nothing in this dispatch reads that position from the
// cache). That saves kv_store.wgsl's dispatch, which cost as much as a small GEMV.
//
// Bindings: 0 q, 1 k, 2 v: this step's [heads or kv_heads · head_dim], 3 k_cache,
// 4 v_cache (the new position written), 5 out, 6 step, 7 table, 8 params
// (attention_common.wgsl's; attention_split.wgsl gives the workgroup and the head size).
// With one chunk (`chunk_len` covers the cache) `out` is the
// result [heads · head_dim]; with several it is the scratch that attention_combine.wgsl,
// or the GEMV that reads the result (gemv_decode.wgsl's `combine_input`), merges: each
// (head, chunk)'s sum of values [heads, chunks, head_dim], then its (max, sum of exponents,
// 0, 0) [heads, chunks, 4].
// Dispatch: one workgroup per (head = wid.x, chunk = wid.z).
//
// Built for latency, since a decode step's cache is small. The head size is a pipeline
// constant, so every loop over it unrolls and a thread's loads are all in flight at once.
// A tile of TILE positions is scored by TEAM threads a position, the softmax runs online
// over tiles, and the values are summed by GROUPS groups of HD4 threads (one vec4 of the
// head each), each group over every GROUPS-th position of the tile, the groups merged at
// the end. Positions past the chunk are clamped to the new one and weighted 0, so no
// branch stops the loads. (One thread a position looping over the head, as
// attention.wgsl does for prompts, made each tile a chain of dependent loads: 30 µs a
// layer at 128 positions on an H100.)

const TEAM: u32 = 4u;
const TILE: u32 = 64u; // WG / TEAM
const MAX_HD4: u32 = 64u; // head_dim ≤ 256

// The loops below count from 0 to these, fixed numbers, so they unroll.
override PER_LANE: u32 = (HD4 + TEAM - 1u) / TEAM;
override PER_GROUP: u32 = (TILE + GROUPS - 1u) / GROUPS;
// PER_GROUP's largest value (GROUPS ≥ 4, head_dim ≤ 256).
const MAX_PER_GROUP: u32 = 16u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> step: array<u32>;
@group(0) @binding(7) var<storage, read> table: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, MAX_HD4>;
var<workgroup> kn: array<vec4<f32>, MAX_HD4>;
var<workgroup> vn: array<vec4<f32>, MAX_HD4>;
// Each thread's part of its position's score, then the tile's scores and their exponents.
var<workgroup> part: array<f32, WG>;
var<workgroup> scores: array<f32, TILE>;
var<workgroup> ex: array<f32, TILE>;

// Value `i` of the query (`of_q`) or the new key: WGSL passes no storage pointers to
// functions.
fn qk(of_q: bool, i: u32) -> f32 {
    if of_q {
        return q[i];
    }
    return k[i];
}

// Dims 4·i .. 4·i + 3 of the query's or new key's head at offset `o`, rotated at `pos` when
// asked.
fn head4(of_q: bool, o: u32, i: u32, pos: u32) -> vec4<f32> {
    var r: vec4<f32>;
    let half = params.rope_half;
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * i + e;
        if half > 0u {
            let j = d % half;
            r[e] = rotated(pos, d, qk(of_q, o + j), qk(of_q, o + j + half));
        } else {
            r[e] = qk(of_q, o + d);
        }
    }
    return r;
}

@compute @workgroup_size(WG)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let c = wid.z;
    let hd = 4u * HD4;
    let group = params.heads / params.kv_heads;
    let kvh = h / group;
    let pos = step[0];
    let cbase = kvh * params.max_seq * HD4;

    if t < HD4 {
        let kv = head4(false, kvh * hd, t, pos);
        let o = kvh * hd + 4u * t;
        let vv = vec4<f32>(v[o], v[o + 1u], v[o + 2u], v[o + 3u]);
        kn[t] = kv;
        vn[t] = vv;
        qs[t] = head4(true, h * hd, t, pos);
        if h % group == 0u && c == 0u {
            k_cache[cbase + pos * HD4 + t] = kv;
            v_cache[cbase + pos * HD4 + t] = vv;
        }
    }
    workgroupBarrier();

    let start = c * params.chunk_len;
    let end = min(pos + 1u, start + params.chunk_len);
    // Scoring: thread t takes dims lane, lane + TEAM, … of the tile's position `slot`.
    let lane = t % TEAM;
    let slot = t / TEAM;
    // Summing values: thread t takes vec4 `dv` of every GROUPS-th position from `g`.
    let g = t / HD4;
    let dv = t % HD4;
    var m = -1e30;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var base = start; base < end; base += TILE) {
        let count = min(TILE, end - base);
        // The new position reads the cache too (being written there, its value unused).
        let j = min(base + slot, pos);
        let ko = cbase + j * HD4;
        // The values are loaded with the keys, before the scores they wait for: one round
        // trip to memory a tile instead of two.
        var vals: array<vec4<f32>, MAX_PER_GROUP>;
        if g < GROUPS {
            for (var r = 0u; r < PER_GROUP; r++) {
                let i = g + r * GROUPS;
                if i < TILE {
                    let jj = min(base + i, pos);
                    vals[r] = select(v_cache[cbase + jj * HD4 + dv], vn[dv], jj == pos);
                }
            }
        }
        var d0 = vec4<f32>(0.0);
        for (var i = 0u; i < PER_LANE; i++) {
            let d = lane + i * TEAM;
            if d < HD4 {
                d0 += qs[d] * select(k_cache[ko + d], kn[d], j == pos);
            }
        }
        part[t] = d0.x + d0.y + d0.z + d0.w;
        workgroupBarrier();
        if t < TILE {
            let i = TEAM * t;
            let s = (part[i] + part[i + 1u] + part[i + 2u] + part[i + 3u]) * params.scale;
            scores[t] = select(-1e30, s, t < count);
        }
        workgroupBarrier();
        var tile_max = -1e30;
        for (var i = 0u; i < TILE; i++) {
            tile_max = max(tile_max, scores[i]);
        }
        let new_m = max(m, tile_max);
        let corr = exp(m - new_m);
        if t < TILE {
            ex[t] = select(0.0, exp(scores[t] - new_m), t < count);
        }
        workgroupBarrier();
        var tile_sum = 0.0;
        for (var i = 0u; i < TILE; i++) {
            tile_sum += ex[i];
        }
        l = l * corr + tile_sum;
        if g < GROUPS {
            var a = vec4<f32>(0.0);
            for (var r = 0u; r < PER_GROUP; r++) {
                let i = g + r * GROUPS;
                if i < TILE {
                    a += ex[i] * vals[r];
                }
            }
            acc = acc * corr + a;
        }
        m = new_m;
        // `part`, `scores` and `ex` are the next tile's.
        workgroupBarrier();
    }

    let total = group_total(acc, t);
    if t < HD4 {
        if nwg.z == 1u {
            out[h * HD4 + t] = total / l;
        } else {
            let chunks = nwg.z;
            out[(h * chunks + c) * HD4 + t] = total;
            if t == 0u {
                out[params.heads * chunks * HD4 + h * chunks + c] = vec4<f32>(m, l, 0.0, 0.0);
            }
        }
    }
}
