//! Weight matrices split by rows across buffers, where one exceeds the binding limit
//! (`maxStorageBufferBindingSize`, 128 MiB by default in browsers). A context with a lowered
//! limit splits what another keeps whole; every kernel must give the split matrix exactly
//! the whole one's results (each output row is computed by the same code over the same
//! terms), and a 151936×1536 f16 embedding must run under a 128 MiB limit.
//!
//! Like the other GPU tests these need an adapter (lavapipe in CI) and fail without one.

use akari_core::backend::Backend;
use akari_core::weights::{Bytes, Matrix};
use akari_core::QuantFormat;
use akari_gpu::ops::gemv::{encode_tokens, fuses_norm, Epilogue, Norm};
use akari_gpu::ops::Recording;
use akari_gpu::{GpuBackend, GpuContext, GpuMatrix};

mod common;
use common::{f32_bytes, quantized, sample};

fn context(limit: Option<u64>, decode_kernels: bool) -> GpuContext {
    let mut ctx = GpuContext::new().unwrap_or_else(|e| panic!("no GPU device: {e}"));
    ctx.set_decode_kernels(decode_kernels);
    if let Some(l) = limit {
        ctx.set_matrix_binding_limit(l);
    }
    ctx
}

/// What one GEMV gives on `ctx`: `epilogue` 0 stores with a bias, 1 accumulates into y,
/// 2 is the GLU with a second matrix, 3 stores after the fused norm (one token).
fn run(
    ctx: &GpuContext,
    format: QuantFormat,
    (rows, cols, tokens): (usize, usize, usize),
    epilogue: u32,
) -> (Vec<f32>, usize) {
    let up = |seed| {
        ctx.upload_matrix_bytes(format, rows, cols, &quantized(format, rows, cols, seed))
            .expect("upload")
    };
    let (w, u): (GpuMatrix, GpuMatrix) = (up(1), up(2));
    let xb = ctx
        .storage_buffer("x", &f32_bytes(&sample(tokens * cols, 3)))
        .expect("x");
    let bias = ctx
        .storage_buffer("bias", &f32_bytes(&sample(rows, 4)))
        .expect("bias");
    let norm = ctx
        .storage_buffer("norm", &f32_bytes(&sample(cols, 5)))
        .expect("norm");
    let y = ctx
        .storage_buffer("y", &f32_bytes(&sample(tokens * rows, 6)))
        .expect("y");
    let (ep, norm) = match epilogue {
        0 => (Epilogue::Store { bias: Some(&bias) }, None),
        1 => (Epilogue::Accumulate, None),
        2 => (
            Epilogue::Glu {
                up: &u,
                quantized: None,
            },
            None,
        ),
        _ => (
            Epilogue::Store { bias: None },
            Some(Norm {
                weight: &norm,
                eps: 1e-5,
                folded: false,
            }),
        ),
    };
    let mut rec = Recording::new(ctx);
    encode_tokens(ctx, &mut rec, &w, &xb, norm, ep, &y, tokens).expect("encode");
    let out = ctx
        .submit_and_read("split", rec, &y, tokens * rows)
        .expect("read");
    (out, w.parts().len())
}

/// Every format, epilogue and kernel (one-token decode kernel and general GEMV, batched
/// GEMV, tiled GEMM) on a matrix split into parts of 256 rows (aligned to the GEMM's
/// tiles) and of 9 rows (not aligned): bit for bit the unsplit results.
#[test]
fn split_matrices_give_the_whole_ones_results() {
    for decode_kernels in [false, true] {
        let whole = context(None, decode_kernels);
        for format in QuantFormat::ALL {
            let (rows, cols) = (1000, 128);
            let rb = format.row_bytes(cols) as u64;
            for per_part in [300, 9] {
                let split = context(Some(rb * per_part + 8), decode_kernels);
                for tokens in [1, 3, 20] {
                    for epilogue in 0..4 {
                        if epilogue == 3 {
                            let probe = whole
                                .upload_matrix_bytes(
                                    format,
                                    1,
                                    cols,
                                    &quantized(format, 1, cols, 0),
                                )
                                .expect("upload");
                            if tokens != 1 || !fuses_norm(&whole, &probe) {
                                continue;
                            }
                        }
                        let case = format!(
                            "{format} decode_kernels={decode_kernels} {per_part} rows a part, \
                             {tokens} tokens, epilogue {epilogue}"
                        );
                        let (want, one) = run(&whole, format, (rows, cols, tokens), epilogue);
                        let (got, parts) = run(&split, format, (rows, cols, tokens), epilogue);
                        assert_eq!(one, 1, "{case}: the whole matrix is one part");
                        let expected = if per_part == 300 {
                            4
                        } else {
                            1000usize.div_ceil(9)
                        };
                        assert_eq!(parts, expected, "{case}: parts");
                        let bad = got.iter().zip(&want).position(|(g, w)| g != w);
                        assert!(
                            bad.is_none() && got.len() == want.len(),
                            "{case}: first difference at {bad:?}"
                        );
                    }
                }
            }
        }
    }
}

/// The embedding gather reads each token's row from the part that holds it.
#[test]
fn split_embeddings_gather_every_row() {
    for format in QuantFormat::ALL {
        let (rows, cols) = (777, 96);
        let bytes = quantized(format, rows, cols, 8);
        let matrix = || Matrix {
            format,
            rows,
            cols,
            bytes: Bytes::from_vec(bytes.clone()),
        };
        let rb = format.row_bytes(cols) as u64;
        let whole = GpuBackend::with_context(context(None, false));
        let split = GpuBackend::with_context(context(Some(rb * 100), false));
        let tokens: Vec<u32> = vec![0, 63, 64, 65, 776, 300, 5, 640, 639];
        let read = |be: &GpuBackend| {
            let table = be.upload_matrix(matrix()).expect("upload");
            let x = be.embed(&table, &tokens).expect("embed");
            (be.read(&x).expect("read"), table.parts().len())
        };
        let (want, one) = read(&whole);
        let (got, parts) = read(&split);
        assert_eq!((one, parts), (1, 13), "{format}: parts");
        assert_eq!(got, want, "{format}");
        // And the values are the rows themselves.
        let mut row = vec![0f32; cols];
        for (i, &t) in tokens.iter().enumerate() {
            let rbu = rb as usize;
            format.dequantize_row(&bytes[t as usize * rbu..(t as usize + 1) * rbu], &mut row);
            assert_eq!(
                &got[i * cols..(i + 1) * cols],
                &row[..],
                "{format} token {t}"
            );
        }
    }
}

/// The case: Qwen2's 151936×1536 f16 embedding (467 MB) under WebGPU's default
/// 128 MiB binding limit, gathered and used as the tied lm_head.
#[test]
fn a_467_mb_embedding_runs_under_a_128_mib_limit() {
    let (rows, cols) = (151_936, 1536);
    let values = sample(rows * cols, 9);
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let be = GpuBackend::with_context(context(Some(128 << 20), true));
    let table = be
        .upload_matrix(Matrix {
            format: QuantFormat::F16,
            rows,
            cols,
            bytes: Bytes::from_vec(bytes),
        })
        .expect("a split upload");
    assert_eq!(table.parts().len(), 4);
    let f16 = |i: usize| half::f16::from_f32(values[i]).to_f32();
    let tokens = [0u32, 43_647, 43_648, 87_296, 151_935];
    let x = be.embed(&table, &tokens).expect("embed");
    let got = be.read(&x).expect("read");
    for (i, &t) in tokens.iter().enumerate() {
        for c in [0, 1, 777, cols - 1] {
            assert_eq!(
                got[i * cols + c],
                f16(t as usize * cols + c),
                "token {t} col {c}"
            );
        }
    }
    // The last token's row times the table, against an f64 reference on every 997th row
    // (all four parts).
    let last = be.embed(&table, &[151_935]).expect("embed");
    let logits = be
        .read(&be.matmul(&last, &table, None).expect("matmul"))
        .expect("read");
    assert_eq!(logits.len(), rows);
    let xrow: Vec<f64> = (0..cols)
        .map(|c| f64::from(f16(151_935 * cols + c)))
        .collect();
    for r in (0..rows).step_by(997).chain([rows - 1]) {
        let want: f64 = (0..cols)
            .map(|c| f64::from(f16(r * cols + c)) * xrow[c])
            .sum();
        let scale: f64 = (0..cols)
            .map(|c| (f64::from(f16(r * cols + c)) * xrow[c]).abs())
            .sum();
        let err = (f64::from(logits[r]) - want).abs();
        assert!(err <= 1e-5 * scale, "row {r}: {} vs {want}", logits[r]);
    }
}
