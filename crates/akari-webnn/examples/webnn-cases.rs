//! Writes the op-by-op cases the browser tests run on the WebNN stand-in: for each backend op
//! (matmul in every weight format, embed, rms_norm, rope, attention, silu·mul) the graph this
//! crate records for it, its inputs on random non-zero values, and what the CPU backend's
//! kernels compute on the same values. Plus a softmax with an f64 reference.
//!
//! `cargo run --release -p akari-webnn --example webnn-cases -- target/webnn-cases.json`

use akari_core::backend::Backend;
use akari_core::config::{Arch, ModelConfig, RopeScaling};
use akari_core::quant::QuantFormat;
use akari_core::rope::RopeFreqs;
use akari_core::weights::{Bytes, Matrix};
use akari_cpu::{Activations, CpuBackend, Tensor};
use akari_webnn::graph::{DataType, Graph};
use akari_webnn::layout::HostTensor;
use akari_webnn::{inputs, Support, WebNnBackend};
use serde_json::{json, Value};

/// Deterministic values in ±[0.05, 1], never zero.
fn sample(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mag = 0.05 + 0.95 * ((s >> 40) as f32 / (1u64 << 24) as f32);
            if s & 1 == 0 {
                mag
            } else {
                -mag
            }
        })
        .collect()
}

fn matrix(format: QuantFormat, rows: usize, cols: usize, seed: u64) -> Matrix {
    let src = sample(rows * cols, seed);
    let rb = format.row_bytes(cols);
    let mut bytes = vec![0u8; rows * rb];
    for r in 0..rows {
        format.quantize_row(
            &src[r * cols..(r + 1) * cols],
            &mut bytes[r * rb..(r + 1) * rb],
        );
    }
    Matrix::new("w", format, rows, cols, Bytes::from_vec(bytes)).expect("matrix")
}

fn host(name: &str, dt: DataType, shape: &[usize], bytes: Vec<u8>) -> HostTensor {
    HostTensor {
        name: name.into(),
        data_type: dt,
        shape: shape.to_vec(),
        bytes,
    }
}

fn f32_host(name: &str, shape: &[usize], v: &[f32]) -> HostTensor {
    host(
        name,
        DataType::Float32,
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn i32_host(name: &str, shape: &[usize], v: &[i32]) -> HostTensor {
    host(
        name,
        DataType::Int32,
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn tensor_json(t: &HostTensor) -> Value {
    json!({ "name": t.name, "dataType": t.data_type.name(), "shape": t.shape, "bytes": t.bytes })
}

/// A case: the graph, every input it declares, expected outputs and the tolerance (a
/// fraction of each expected output's range).
fn case(
    name: &str,
    g: &Graph,
    ins: &[HostTensor],
    expected: &[(&str, Vec<usize>, Vec<f32>)],
    tol: f32,
) -> Value {
    for (input, ..) in g.inputs() {
        assert!(
            ins.iter().any(|t| t.name == input),
            "{name}: no value for input {input}"
        );
    }
    let expected: Value = expected
        .iter()
        .map(|(n, shape, data)| (n.to_string(), json!({ "shape": shape, "data": data })))
        .collect::<serde_json::Map<_, _>>()
        .into();
    json!({
        "name": name,
        "graph": g,
        "inputs": ins.iter().filter(|t| g.inputs().any(|(n, ..)| n == t.name)).map(tensor_json).collect::<Vec<_>>(),
        "expected": expected,
        "tolerance": tol,
    })
}

fn cpu() -> CpuBackend {
    CpuBackend::new(Some(1), Activations::Int16).expect("cpu backend")
}

fn cpu_tensor(rows: usize, cols: usize, data: Vec<f32>) -> Tensor {
    Tensor { rows, cols, data }
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/webnn-cases.json".into());
    let mut cases = Vec::new();
    let (rows, cols, outs) = (3, 64, 40);

    for (i, format) in QuantFormat::ALL.into_iter().enumerate() {
        for t in [1, rows] {
            let be = WebNnBackend::new(Support::FULL);
            let w = be
                .upload_matrix(matrix(format, outs, cols, 10 + i as u64))
                .unwrap();
            let bias_v = sample(outs, 99);
            let bias =
                (format == QuantFormat::Q8_0).then(|| be.upload_vector(bias_v.clone()).unwrap());
            be.begin_trace(t);
            let x = be.trace_input("x", t, cols).unwrap();
            let y = be.matmul(&x, &w, bias.as_ref()).unwrap();
            let g = be.end_trace_with(&[("y", &y)]).unwrap();
            let xv = sample(t * cols, 7 + t as u64);
            let c = cpu();
            let cw = c
                .upload_matrix(matrix(format, outs, cols, 10 + i as u64))
                .unwrap();
            let cb = bias
                .as_ref()
                .map(|_| c.upload_vector(bias_v.clone()).unwrap());
            let want = c
                .matmul(&cpu_tensor(t, cols, xv.clone()), &cw, cb.as_ref())
                .unwrap();
            let mut ins = be.take_stored();
            ins.push(f32_host("x", &[t, cols], &xv));
            cases.push(case(
                &format!("matmul {} [{t}, {cols}]", format.name()),
                &g,
                &ins,
                &[("y", vec![t, outs], want.data)],
                // int16 activations round the CPU side to about 1e-5.
                if format.is_quantized() { 1e-4 } else { 1e-5 },
            ));
        }

        let be = WebNnBackend::new(Support::FULL);
        let table = be
            .upload_matrix(matrix(format, 50, cols, 20 + i as u64))
            .unwrap();
        let tokens = [7u32, 3, 49];
        be.begin_trace(tokens.len());
        let y = be.embed(&table, &tokens).unwrap();
        let g = be.end_trace_with(&[("y", &y)]).unwrap();
        let c = cpu();
        let ct = c
            .upload_matrix(matrix(format, 50, cols, 20 + i as u64))
            .unwrap();
        let want = c.embed(&ct, &tokens).unwrap();
        let mut ins = be.take_stored();
        ins.push(i32_host("ids", &[3], &[7, 3, 49]));
        cases.push(case(
            &format!("embed {}", format.name()),
            &g,
            &ins,
            &[("y", vec![3, cols], want.data)],
            1e-6,
        ));
    }

    {
        let be = WebNnBackend::new(Support::FULL);
        let wv = sample(cols, 3);
        let w = be.upload_vector(wv.clone()).unwrap();
        be.begin_trace(rows);
        let x = be.trace_input("x", rows, cols).unwrap();
        let y = be.rms_norm(&x, &w, 1e-5).unwrap();
        let g = be.end_trace_with(&[("y", &y)]).unwrap();
        let xv = sample(rows * cols, 4);
        let c = cpu();
        let cw = c.upload_vector(wv).unwrap();
        let want = c
            .rms_norm(&cpu_tensor(rows, cols, xv.clone()), &cw, 1e-5)
            .unwrap();
        let mut ins = be.take_stored();
        ins.push(f32_host("x", &[rows, cols], &xv));
        cases.push(case(
            "rms_norm",
            &g,
            &ins,
            &[("y", vec![rows, cols], want.data)],
            1e-5,
        ));
    }

    {
        let be = WebNnBackend::new(Support::FULL);
        let t = 2;
        be.begin_trace(t);
        let gate = be.trace_input("g", t, outs).unwrap();
        let up = be.trace_input("u", t, outs).unwrap();
        let y = be.silu_mul(&gate, &up).unwrap();
        let g = be.end_trace_with(&[("y", &y)]).unwrap();
        let (gv, uv) = (sample(t * outs, 3), sample(t * outs, 5));
        let c = cpu();
        let want = c
            .silu_mul(
                &cpu_tensor(t, outs, gv.clone()),
                &cpu_tensor(t, outs, uv.clone()),
            )
            .unwrap();
        let ins = [
            f32_host("g", &[t, outs], &gv),
            f32_host("u", &[t, outs], &uv),
        ];
        cases.push(case(
            "silu_mul",
            &g,
            &ins,
            &[("y", vec![t, outs], want.data)],
            1e-5,
        ));
    }

    // rope and attention: 4 query heads, 2 key/value heads of 16, a cache of 12 positions.
    let (nh, nkv, hd, ctx) = (4usize, 2usize, 16usize, 12usize);
    let freqs = RopeFreqs {
        inv_freq: (0..hd / 2)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
            .collect(),
        scale: 1.0,
    };
    {
        let (t, pos) = (3, 5);
        let be = WebNnBackend::new(Support::FULL);
        let rope = be.upload_rope(freqs.tables(ctx)).unwrap();
        be.begin_trace(t);
        let mut x = be.trace_input("x", t, nh * hd).unwrap();
        be.rope(&mut x, nh, &rope, pos).unwrap();
        let g = be.end_trace_with(&[("y", &x)]).unwrap();
        let xv = sample(t * nh * hd, 8);
        let c = cpu();
        let cr = c.upload_rope(freqs.tables(ctx)).unwrap();
        let mut cx = cpu_tensor(t, nh * hd, xv.clone());
        c.rope(&mut cx, nh, &cr, pos).unwrap();
        let s = inputs::step_inputs(&[1, 2, 3], pos, t, ctx, &freqs.tables(ctx)).unwrap();
        let ins = [
            f32_host("x", &[t, nh * hd], &xv),
            f32_host("cos", &[t, hd / 2], &s.cos),
            f32_host("sin", &[t, hd / 2], &s.sin),
        ];
        cases.push(case(
            "rope",
            &g,
            &ins,
            &[("y", vec![t, nh * hd], cx.data)],
            1e-5,
        ));
    }
    {
        let cfg = ModelConfig {
            arch: Arch::Llama,
            vocab_size: 8,
            hidden_size: nh * hd,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: ctx,
            tie_word_embeddings: true,
            qkv_bias: false,
        };
        let kvd = nkv * hd;
        // History: 3 positions already cached; then 2 new rows at position 3.
        let (h, t) = (3, 2);
        let c = cpu();
        let mut cache = c.new_kv_cache(&cfg, ctx).unwrap();
        let (hq, hk, hv) = (
            sample(h * nh * hd, 30),
            sample(h * kvd, 31),
            sample(h * kvd, 32),
        );
        c.attention(
            &cpu_tensor(h, nh * hd, hq),
            &cpu_tensor(h, kvd, hk.clone()),
            &cpu_tensor(h, kvd, hv.clone()),
            &mut cache,
            0,
            0,
        )
        .unwrap();
        let (q, k, v) = (
            sample(t * nh * hd, 33),
            sample(t * kvd, 34),
            sample(t * kvd, 35),
        );
        let want = c
            .attention(
                &cpu_tensor(t, nh * hd, q.clone()),
                &cpu_tensor(t, kvd, k.clone()),
                &cpu_tensor(t, kvd, v.clone()),
                &mut cache,
                0,
                h,
            )
            .unwrap();
        let be = WebNnBackend::new(Support::FULL);
        let mut wcache = be.new_kv_cache(&cfg, ctx).unwrap();
        be.begin_trace(t);
        let (sq, sk, sv) = (
            be.trace_input("q", t, nh * hd).unwrap(),
            be.trace_input("k", t, kvd).unwrap(),
            be.trace_input("v", t, kvd).unwrap(),
        );
        let y = be.attention(&sq, &sk, &sv, &mut wcache, 0, h).unwrap();
        let g = be.end_trace_with(&[("y", &y)]).unwrap();
        let past = |rows: &[f32]| {
            let mut p = vec![0f32; ctx * kvd];
            p[..rows.len()].copy_from_slice(rows);
            p
        };
        let mut present_k = past(&hk);
        present_k[h * kvd..(h + t) * kvd].copy_from_slice(&k);
        let s = inputs::step_inputs(&[1, 2], h, t, ctx, &freqs.tables(ctx)).unwrap();
        let ins = [
            f32_host("q", &[t, nh * hd], &q),
            f32_host("k", &[t, kvd], &k),
            f32_host("v", &[t, kvd], &v),
            f32_host("past.k0", &[ctx, kvd], &past(&hk)),
            f32_host("past.v0", &[ctx, kvd], &past(&hv)),
            f32_host("mask", &[t, ctx], &s.mask),
            f32_host("write", &[t, ctx], &s.write),
            f32_host("keep", &[ctx, 1], &s.keep),
        ];
        cases.push(case(
            "attention",
            &g,
            &ins,
            &[
                ("y", vec![t, nh * hd], want.data),
                ("present.k0", vec![ctx, kvd], present_k),
            ],
            1e-5,
        ));
    }

    {
        // softmax over the last axis of a rank-3 tensor, against f64.
        let shape = [2usize, 3, 7];
        let xv: Vec<f32> = sample(42, 40).iter().map(|x| x * 8.0).collect();
        let mut g = Graph::default();
        let x = g.input("x", DataType::Float32, &shape);
        let y = g.softmax(x, 2);
        g.output("y", y);
        let want: Vec<f32> = xv
            .chunks(7)
            .flat_map(|row| {
                let m = row.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
                let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |v| (v / s) as f32)
            })
            .collect();
        cases.push(case(
            "softmax (f64 reference)",
            &g,
            &[f32_host("x", &shape, &xv)],
            &[("y", shape.to_vec(), want)],
            1e-6,
        ));
    }

    let json = serde_json::to_string(&cases).expect("json");
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("output folder");
    }
    std::fs::write(&out, json).expect("write cases");
    eprintln!("{} cases written to {out}", cases.len());
}
