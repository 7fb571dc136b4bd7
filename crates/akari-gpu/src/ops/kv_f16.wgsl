// The KV cache's element type when it holds f16 (the default): four values of a head packed
// in two words. `pack2x16float` and `unpack2x16float` are core WGSL, so this needs no
// `shader-f16` and every adapter gets a cache of half the size, read in half the bytes.
// Prepended to the kernels that read or write the cache (kv_f32.wgsl is the other choice).
alias KvWord = vec2<u32>;

fn kv_get(w: KvWord) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

fn kv_put(v: vec4<f32>) -> KvWord {
    return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}
