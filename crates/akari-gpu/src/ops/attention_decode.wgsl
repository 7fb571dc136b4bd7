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
// Dispatch: one workgroup per (G heads, from head G · wid.x; chunk = wid.z).
//
// Built for latency, since a decode step's cache is small. The head size is a pipeline
// constant, so every loop over it unrolls and a thread's loads are all in flight at once.
// A tile of TILE positions is scored by TEAM threads a position, the softmax runs online
// over tiles, and the values are summed by GROUPS groups of HD4 threads (one vec4 of the
// head each), each group over every GROUPS-th position of the tile, the groups merged at
// the end. Positions past the chunk are clamped to the new one and weighted 0, so no
// branch stops the loads.
//
// A workgroup may take G query heads of one key/value head (a pipeline constant; attention.rs
// says why it is 1 by default), loading each key and value once for them: a thread keeps its
// share of a position's key in registers and scores it against every head's query. Each head
// keeps its own online softmax, its max and sum held by one thread (a thread a head, rather
// than every thread looping over the tile's scores: on an H100, Q4_0 decode at 2048 positions
// went from 600–601 to 609–610 tok/s). (One thread a position looping over the head, as
// attention.wgsl does for prompts, made each tile a chain of dependent loads: 30 µs a
// layer at 128 positions on an H100.)

const TEAM: u32 = 4u;
const TILE: u32 = 64u; // WG / TEAM
const MAX_HD4: u32 = 64u; // head_dim ≤ 256
// Query heads a workgroup attends (they share a key/value head); G · HD4 ≤ 256.
override G: u32 = 1u;
const MAX_G: u32 = 8u;

// The loops below count from 0 to these, fixed numbers, so they unroll.
override PER_LANE: u32 = (HD4 + TEAM - 1u) / TEAM;
override PER_GROUP: u32 = (TILE + GROUPS - 1u) / GROUPS;
// PER_LANE's and PER_GROUP's largest values (head_dim ≤ 256, GROUPS ≥ 4).
const MAX_PER_LANE: u32 = 16u;
const MAX_PER_GROUP: u32 = 16u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<KvWord>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<KvWord>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> step: array<u32>;
@group(0) @binding(7) var<storage, read> table: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

// The G queries, head after head.
var<workgroup> qs: array<vec4<f32>, 256>;
var<workgroup> kn: array<vec4<f32>, MAX_HD4>;
var<workgroup> vn: array<vec4<f32>, MAX_HD4>;
// Per head, the tile's scores, then their exponents [G, TILE].
var<workgroup> scores: array<f32, 512>;
// Per head: the running max, the running sum of exponents, and the tile's correction.
var<workgroup> run_max: array<f32, MAX_G>;
var<workgroup> run_sum: array<f32, MAX_G>;
var<workgroup> corr: array<f32, MAX_G>;

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

override PIPELINE: bool = true;

// A tile's keys (this thread's dims of its position) and values (its vec4 of its group's
// positions) as the cache holds them. The values and keys are loaded together, before the
// scores the values wait for: one round trip to memory a tile. Positions past `pos` are
// clamped to it (its words are replaced by the new key and value where used).
struct TileWords {
    k: array<KvWord, MAX_PER_LANE>,
    v: array<KvWord, MAX_PER_GROUP>,
}

fn tile_words(base: u32, cbase: u32, slot: u32, lane: u32, g: u32, dv: u32,
              pos: u32) -> TileWords {
    var w: TileWords;
    if g < GROUPS {
        for (var r = 0u; r < PER_GROUP; r++) {
            let i = g + r * GROUPS;
            if i < TILE {
                w.v[r] = v_cache[cbase + min(base + i, pos) * HD4 + dv];
            }
        }
    }
    let ko = cbase + min(base + slot, pos) * HD4;
    for (var i = 0u; i < PER_LANE; i++) {
        let d = lane + i * TEAM;
        if d < HD4 {
            w.k[i] = k_cache[ko + d];
        }
    }
    return w;
}

@compute @workgroup_size(WG)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    let h0 = wid.x * G;
    let c = wid.z;
    let hd = 4u * HD4;
    let group = params.heads / params.kv_heads;
    let kvh = h0 / group;
    let pos = step[0];
    let cbase = kvh * params.max_seq * HD4;

    if t < HD4 {
        let kv = head4(false, kvh * hd, t, pos);
        let o = kvh * hd + 4u * t;
        let vv = vec4<f32>(v[o], v[o + 1u], v[o + 2u], v[o + 3u]);
        kn[t] = kv;
        vn[t] = vv;
        if h0 % group == 0u && c == 0u {
            k_cache[cbase + pos * HD4 + t] = kv_put(kv);
            v_cache[cbase + pos * HD4 + t] = kv_put(vv);
        }
    }
    if t < G * HD4 {
        qs[t] = head4(true, (h0 + t / HD4) * hd, t % HD4, pos);
    }
    if t < G {
        run_max[t] = -1e30;
        run_sum[t] = 0.0;
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
    var acc: array<vec4<f32>, MAX_G>;
    for (var h = 0u; h < G; h++) {
        acc[h] = vec4<f32>(0.0);
    }
    // With PIPELINE the next tile's words are loaded before this tile is scored, so a chunk of
    // several tiles waits on memory once rather than once a tile.
    var words = tile_words(start, cbase, slot, lane, g, dv, pos);
    for (var base = start; base < end; base += TILE) {
        let count = min(TILE, end - base);
        // The new position reads the cache too (being written there, its value unused).
        let j = min(base + slot, pos);
        if !PIPELINE && base != start {
            words = tile_words(base, cbase, slot, lane, g, dv, pos);
        }
        let here = words;
        if PIPELINE && base + TILE < end {
            words = tile_words(base + TILE, cbase, slot, lane, g, dv, pos);
        }
        var vals: array<vec4<f32>, MAX_PER_GROUP>;
        if g < GROUPS {
            for (var r = 0u; r < PER_GROUP; r++) {
                let i = g + r * GROUPS;
                if i < TILE {
                    let jj = min(base + i, pos);
                    vals[r] = select(kv_get(here.v[r]), vn[dv], jj == pos);
                }
            }
        }
        var keys: array<vec4<f32>, MAX_PER_LANE>;
        for (var i = 0u; i < PER_LANE; i++) {
            let d = lane + i * TEAM;
            if d < HD4 {
                keys[i] = select(kv_get(here.k[i]), kn[d], j == pos);
            }
        }
        // Scores, four heads a round: each thread's part for its position through `sums`.
        for (var r = 0u; r < G; r += 4u) {
            var d4 = vec4<f32>(0.0);
            for (var e = 0u; e < 4u; e++) {
                if r + e < G {
                    var s = 0.0;
                    for (var i = 0u; i < PER_LANE; i++) {
                        let d = lane + i * TEAM;
                        if d < HD4 {
                            s += dot(qs[(r + e) * HD4 + d], keys[i]);
                        }
                    }
                    d4[e] = s;
                }
            }
            sums[t] = d4;
            workgroupBarrier();
            if t < TILE {
                let i = TEAM * t;
                let s4 = (sums[i] + sums[i + 1u] + sums[i + 2u] + sums[i + 3u]) * params.scale;
                for (var e = 0u; e < 4u; e++) {
                    if r + e < G {
                        scores[(r + e) * TILE + t] = select(-1e30, s4[e], t < count);
                    }
                }
            }
            workgroupBarrier();
        }
        if t < G {
            var tile_max = -1e30;
            for (var i = 0u; i < TILE; i++) {
                tile_max = max(tile_max, scores[t * TILE + i]);
            }
            let m = run_max[t];
            let new_m = max(m, tile_max);
            corr[t] = exp(m - new_m);
            run_max[t] = new_m;
        }
        workgroupBarrier();
        for (var e = t; e < G * TILE; e += WG) {
            scores[e] = select(0.0, exp(scores[e] - run_max[e / TILE]), e % TILE < count);
        }
        workgroupBarrier();
        if t < G {
            var tile_sum = 0.0;
            for (var i = 0u; i < TILE; i++) {
                tile_sum += scores[t * TILE + i];
            }
            run_sum[t] = run_sum[t] * corr[t] + tile_sum;
        }
        if g < GROUPS {
            for (var h = 0u; h < G; h++) {
                var a = vec4<f32>(0.0);
                for (var r = 0u; r < PER_GROUP; r++) {
                    let i = g + r * GROUPS;
                    if i < TILE {
                        a += scores[h * TILE + i] * vals[r];
                    }
                }
                acc[h] = acc[h] * corr[h] + a;
            }
        }
        // `sums`, `scores` and `corr` are the next tile's.
        workgroupBarrier();
    }

    for (var h = 0u; h < G; h++) {
        let total = group_total(acc[h], t);
        let head = h0 + h;
        if t < HD4 {
            if nwg.z == 1u {
                out[head * HD4 + t] = total / run_sum[h];
            } else {
                let chunks = nwg.z;
                out[(head * chunks + c) * HD4 + t] = total;
                if t == 0u {
                    out[params.heads * chunks * HD4 + head * chunks + c] =
                        vec4<f32>(run_max[h], run_sum[h], 0.0, 0.0);
                }
            }
        }
        // `sums` holds the next head's groups.
        workgroupBarrier();
    }
}
