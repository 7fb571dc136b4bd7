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
// The online softmax takes no serial step: a position's TEAM threads sum its score
// (`position_score`) and the tile's largest score is found by an atomic max in workgroup
// memory (`tile_max`); both come from attention_reduce_subgroups.wgsl where the adapter has
// subgroups (shuffles; one atomic a subgroup) or attention_reduce.wgsl (through workgroup
// memory; one atomic a position). Every thread keeps the running max itself, and each
// position's first thread keeps that position's running sum of exponents, summed over the
// tile's positions once at the end. The tile's scratch (maxima, exponents) alternates
// between two halves, so a tile needs two barriers with subgroups, three without.
//
// A workgroup may take G query heads of one key/value head (a pipeline constant; attention.rs
// says why it is 1 by default), loading each key and value once for them: a thread keeps its
// share of a position's key in registers and scores it against every head's query. Each head
// keeps its own online softmax. (The tile's max and sum walked by one thread a head, between
// barriers, measured 748–749 tok/s against 775 for the above: Q4_0 decode at 2048 positions
// on an H100. One thread a position looping over the head, as attention.wgsl does for
// prompts, made each tile a chain of dependent loads: 30 µs a layer at 128 positions.)

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
// Per head, the exponents of a tile's scores [2 halves, G, TILE] (tiles alternate halves).
var<workgroup> probs: array<f32, 1024>;
// Per head, a tile's largest score as `order_key` (halves as for `probs`).
var<workgroup> tile_maxes: array<atomic<u32>, 16>; // 2 · MAX_G
// Per head, each position slot's sum of exponents, at the end [G, TILE].
var<workgroup> slot_sums: array<f32, 512>;

// A u32 that orders as the f32 `f` does, for atomicMax (WGSL has no float atomics).
fn order_key(f: f32) -> u32 {
    let b = bitcast<u32>(f);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn from_order_key(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// Below every score (masked positions score this too; none reaches a tile's max).
const LOWEST: f32 = -1e30;

// Whether a chunk's first tile is loaded before the query and the new key, whose loads then
// wait on the same round trip to memory (`AKARI_GPU_ATTENTION_EARLY=0` turns it off).
override EARLY: bool = true;

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

// Whether a tile's successor is loaded before the tile is scored, so that a chunk of several
// tiles waits on memory once rather than once a tile (`AKARI_GPU_ATTENTION_PIPELINE=0`
// turns it off). Two tiles ahead measured no better on an H100.
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
    let start = c * params.chunk_len;
    let end = min(pos + 1u, start + params.chunk_len);
    // Scoring: thread t takes dims lane, lane + TEAM, … of the tile's position `slot`.
    let lane = t % TEAM;
    let slot = t / TEAM;
    // Summing values: thread t takes vec4 `dv` of every GROUPS-th position from `g`.
    let g = t / HD4;
    let dv = t % HD4;

    // The first tile's words do not depend on the query, so they need not wait for it (the
    // new position's words, being written below, are replaced where used).
    var words: TileWords;
    if EARLY {
        words = tile_words(start, cbase, slot, lane, g, dv, pos);
    }
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
    if t < 2u * MAX_G {
        atomicStore(&tile_maxes[t], order_key(LOWEST));
    }
    workgroupBarrier();
    if !EARLY {
        words = tile_words(start, cbase, slot, lane, g, dv, pos);
    }

    // Per head: the running max (the same in every thread), this thread's position slot's
    // running sum of exponents, and the sum of values (its group's share).
    var run_max: array<f32, MAX_G>;
    var slot_sum: array<f32, MAX_G>;
    var acc: array<vec4<f32>, MAX_G>;
    for (var h = 0u; h < G; h++) {
        run_max[h] = LOWEST;
        slot_sum[h] = 0.0;
        acc[h] = vec4<f32>(0.0);
    }
    var half = 0u;
    for (var base = start; base < end; base += TILE) {
        let count = min(TILE, end - base);
        let live = slot < count;
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
        // Scores, four heads a round: each thread's part for its position, summed over the
        // position's threads (`position_score`), so each holds its position's scores.
        var score: array<f32, MAX_G>;
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
            let s4 = position_score(d4, t) * params.scale;
            for (var e = 0u; e < 4u; e++) {
                if r + e < G {
                    score[r + e] = select(LOWEST, s4[e], live);
                }
            }
            // `sums` (without subgroups) holds the next round's parts.
            if r + 4u < G {
                workgroupBarrier();
            }
        }
        for (var h = 0u; h < G; h++) {
            tile_max(half * MAX_G + h, score[h], live && lane == 0u);
        }
        workgroupBarrier();
        var corr: array<f32, MAX_G>;
        for (var h = 0u; h < G; h++) {
            let m = max(run_max[h], from_order_key(atomicLoad(&tile_maxes[half * MAX_G + h])));
            corr[h] = exp(run_max[h] - m);
            run_max[h] = m;
            if lane == 0u {
                let p = select(0.0, exp(score[h] - m), live);
                slot_sum[h] = slot_sum[h] * corr[h] + p;
                probs[(half * G + h) * TILE + slot] = p;
            }
        }
        // The other half's maxima were last read before this tile's first barrier; the next
        // tile takes them.
        if t < G {
            atomicStore(&tile_maxes[(1u - half) * MAX_G + t], order_key(LOWEST));
        }
        workgroupBarrier();
        if g < GROUPS {
            for (var h = 0u; h < G; h++) {
                var a = vec4<f32>(0.0);
                for (var r = 0u; r < PER_GROUP; r++) {
                    let i = g + r * GROUPS;
                    if i < TILE {
                        a += probs[(half * G + h) * TILE + i] * vals[r];
                    }
                }
                acc[h] = acc[h] * corr[h] + a;
            }
        }
        half = 1u - half;
    }

    if lane == 0u {
        for (var h = 0u; h < G; h++) {
            slot_sums[h * TILE + slot] = slot_sum[h];
        }
    }
    for (var h = 0u; h < G; h++) {
        // Its barrier also makes `slot_sums` visible.
        let total = group_total(acc[h], t);
        let head = h0 + h;
        if t < HD4 {
            var sum = 0.0;
            for (var i = 0u; i < TILE; i++) {
                sum += slot_sums[h * TILE + i];
            }
            if nwg.z == 1u {
                out[head * HD4 + t] = total / sum;
            } else {
                let chunks = nwg.z;
                out[(head * chunks + c) * HD4 + t] = total;
                if t == 0u {
                    out[params.heads * chunks * HD4 + head * chunks + c] =
                        vec4<f32>(run_max[h], sum, 0.0, 0.0);
                }
            }
        }
        // `sums` holds the next head's groups.
        workgroupBarrier();
    }
}
