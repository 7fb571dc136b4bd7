// What attention_decode.wgsl and attention_combine.wgsl share: the workgroup, the head size
// as pipeline constants (attention.rs sets them, so loops over the head unroll), and the
// merge of the GROUPS groups' partial sums. Prepended after attention_common.wgsl.

const WG: u32 = 256u;

// head_dim / 4, and WG / HD4.
override HD4: u32 = 32u;
override GROUPS: u32 = 8u;

var<workgroup> sums: array<vec4<f32>, WG>;

// Σ over the groups of `acc` (thread t of group t / HD4 holding vec4 t % HD4 of the head),
// for the threads t < HD4. Every thread calls it (it holds a barrier).
fn group_total(acc: vec4<f32>, t: u32) -> vec4<f32> {
    if t / HD4 < GROUPS {
        sums[t] = acc;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    if t < HD4 {
        for (var i = 0u; i < GROUPS; i++) {
            total += sums[i * HD4 + t];
        }
    }
    return total;
}
