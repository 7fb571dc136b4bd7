// The KV cache's element type when it holds f32 (`AKARI_GPU_KV_CACHE=f32`): one vec4 of a
// head per element. Prepended to the kernels that read or write the cache (kv_f16.wgsl is
// the other choice); they declare the cache as `array<KvWord>` and go through these.
alias KvWord = vec4<f32>;

fn kv_get(w: KvWord) -> vec4<f32> {
    return w;
}

fn kv_put(v: vec4<f32>) -> KvWord {
    return v;
}
