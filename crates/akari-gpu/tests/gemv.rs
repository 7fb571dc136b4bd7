//! GEMV on a real device against a dequantised f64 reference, every weight format.
//!
//! These tests need a GPU adapter and fail, with the reason, when there is none: CI gets
//! Mesa's software Vulkan driver (lavapipe) from `scripts/test.sh`.

use akari_core::QuantFormat;
use akari_gpu::ops::gemv::{encode_tokens, Epilogue};
use akari_gpu::ops::Recording;
use akari_gpu::{GpuContext, GpuError};
use std::sync::OnceLock;

mod common;
use common::{f32_bytes, quantized, sample};

fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(mut ctx) => {
            // The decode kernels are tested on software adapters too, where they are off by
            // default.
            ctx.set_decode_kernels(true);
            let info = ctx.adapter_info();
            eprintln!(
                "adapter: {} ({:?}, {:?}, driver {} {})\ncaps: {:?}",
                info.name,
                info.backend,
                info.device_type,
                info.driver,
                info.driver_info,
                ctx.caps()
            );
            ctx
        }
        Err(e) => panic!("no GPU device for the GPU tests: {e}"),
    })
}

/// A second context with the other tiled GEMM (`gemm.wgsl` or `gemm_soft.wgsl`) than the
/// adapter's default, so both are tested on any adapter.
fn ctx_other_gemm() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(mut c) => {
            c.set_decode_kernels(true);
            c.set_soft_gemm(!ctx().soft_gemm());
            c
        }
        Err(e) => panic!("no GPU device for the GPU tests: {e}"),
    })
}

/// `W·x (+ bias)` on the dequantised rows, in f64, and Σ|W·x| per row (the scale that
/// rounding errors grow with).
fn reference(
    format: QuantFormat,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let row_bytes = format.row_bytes(cols);
    let mut w = vec![0f32; cols];
    (0..rows)
        .map(|r| {
            format.dequantize_row(&bytes[r * row_bytes..(r + 1) * row_bytes], &mut w);
            let mut dot = 0f64;
            let mut abs = 0f64;
            for (a, b) in w.iter().zip(x) {
                dot += f64::from(*a) * f64::from(*b);
                abs += (f64::from(*a) * f64::from(*b)).abs();
            }
            let b = bias.map_or(0.0, |b| f64::from(b[r]));
            (dot + b, abs + b.abs())
        })
        .unzip()
}

/// What the one-token Q4_0 integer-dot kernel's 16-bit inputs may add to each row's error
/// (it takes vocabulary-sized matrices, and GLU): each input is rounded to a step of its
/// 32-value block's max |x| / 32767, so it moves by at most half of that, times |w|. Zero
/// for the kernels that read f32 inputs.
fn input_rounding(
    format: QuantFormat,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
) -> Vec<f64> {
    if format != QuantFormat::Q4_0 || rows < 16384 || cols > 4096 {
        return vec![0.0; rows];
    }
    let row_bytes = format.row_bytes(cols);
    let mut w = vec![0f32; cols];
    (0..rows)
        .map(|r| {
            format.dequantize_row(&bytes[r * row_bytes..(r + 1) * row_bytes], &mut w);
            w.chunks(32)
                .zip(x.chunks(32))
                .map(|(wb, xb)| {
                    let amax = xb.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
                    let wsum: f64 = wb.iter().map(|v| f64::from(v.abs())).sum();
                    amax / 65534.0 * wsum
                })
                .sum()
        })
        .collect()
}

fn check(ctx: &GpuContext, format: QuantFormat, rows: usize, cols: usize, with_bias: bool) {
    let seed = (rows * 7919 + cols) as u64;
    let bytes = quantized(format, rows, cols, seed);
    let x = sample(cols, seed ^ 0xA5A5);
    let bias = with_bias.then(|| sample(rows, seed ^ 0x5A5A));
    let w = ctx
        .upload_matrix_bytes(format, rows, cols, &bytes)
        .unwrap_or_else(|e| panic!("{format} [{rows}, {cols}]: {e}"));
    let got = ctx
        .gemv(&w, &x, bias.as_deref())
        .unwrap_or_else(|e| panic!("{format} [{rows}, {cols}]: {e}"));
    let (want, scale) = reference(format, &bytes, rows, cols, &x, bias.as_deref());
    let rounding = input_rounding(format, &bytes, rows, cols, &x);
    assert_eq!(got.len(), rows);
    for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scale).enumerate() {
        // f32 accumulation over `cols` terms: relative to the magnitude of what was summed.
        let err = (f64::from(*g) - w).abs();
        let q = rounding[i];
        assert!(
            err <= 1e-5 * s + 1e-6 + q,
            "{format} [{rows}, {cols}] bias={with_bias}: row {i}: gpu {g}, reference {w} \
             (error {err:e}, Σ|terms| {s})"
        );
        // And, for rows whose result is not a cancellation, ~1e-4 relative to the result.
        if w.abs() > 0.1 * s {
            assert!(err <= 1e-4 * w.abs() + q, "{format} row {i}: {g} vs {w}");
        }
    }
}

const ROWS: [usize; 4] = [1, 7, 333, 1000];
// Up to 2048 columns the decode kernel stages the input in workgroup memory; 2560 is past it.
const COLS: [usize; 5] = [32, 96, 576, 1536, 2560];

fn check_all(ctx: &GpuContext, format: QuantFormat) {
    for rows in ROWS {
        for cols in COLS {
            check(ctx, format, rows, cols, false);
        }
    }
    check(ctx, format, 333, 576, true);
    check(ctx, format, 7, 96, true);
}

#[test]
fn gemv_f32() {
    check_all(ctx(), QuantFormat::F32);
}

#[test]
fn gemv_f16() {
    check_all(ctx(), QuantFormat::F16);
}

#[test]
fn gemv_q8_0() {
    check_all(ctx(), QuantFormat::Q8_0);
}

#[test]
fn gemv_q4_0() {
    check_all(ctx(), QuantFormat::Q4_0);
}

/// Vocabulary-sized Q4_0 matrices take the integer-dot kernel: one block, a row of 1536
/// (DeepSeek-R1-Distill-Qwen-1.5B's width) and the longest row it takes; and more row
/// groups than workgroups, so each loops over several.
#[test]
fn gemv_q4_0_integer_dot() {
    integer_dot(ctx());
}

fn integer_dot(ctx: &GpuContext) {
    for cols in [32, 1536, 4096] {
        check(ctx, QuantFormat::Q4_0, 16389, cols, true);
    }
    check(ctx, QuantFormat::Q4_0, 2048 * 32 * 2 + 5, 64, true);
}

/// A context whose one-token GEMVs sum across threads through workgroup memory, where the
/// default one uses subgroups (on adapters with a fixed subgroup size, lavapipe's among
/// them).
fn ctx_workgroup_sums() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(mut c) => {
            c.set_decode_kernels(true);
            c.set_subgroup_sums(ctx().subgroup_sums().is_none());
            c
        }
        Err(e) => panic!("no GPU device for the GPU tests: {e}"),
    })
}

/// The decode kernels with the other way of summing across threads: every format, the
/// integer-dot kernel and the fused norm (whose sum of squares spans the workgroup).
#[test]
fn decode_kernels_sum_the_other_way_too() {
    let other = ctx_workgroup_sums();
    eprintln!(
        "subgroup sums: default {:?}, other {:?}",
        ctx().subgroup_sums(),
        other.subgroup_sums()
    );
    for format in [
        QuantFormat::F16,
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
    ] {
        check_all(other, format);
    }
    integer_dot(other);
    fused_norm_matches(other);
}

#[test]
fn gemv_q4_1() {
    check_all(ctx(), QuantFormat::Q4_1);
}

#[test]
fn f16_rows_of_odd_length_start_mid_word() {
    // K odd: every other row starts 2 bytes into a word.
    check(ctx(), QuantFormat::F16, 5, 33, true);
    check(ctx(), QuantFormat::F32, 3, 17, false);
}

#[test]
fn shape_errors_are_reported_not_panicked() {
    let ctx = ctx();
    let f = QuantFormat::Q8_0;
    let bytes = vec![0u8; 2 * f.row_bytes(64)];
    assert!(matches!(
        ctx.upload_matrix_bytes(f, 2, 64, &bytes[1..]),
        Err(GpuError::Shape { .. })
    ));
    assert!(matches!(
        ctx.upload_matrix_bytes(f, 2, 48, &bytes),
        Err(GpuError::Shape { .. })
    ));
    let w = ctx.upload_matrix_bytes(f, 2, 64, &bytes).unwrap();
    assert!(matches!(
        ctx.gemv(&w, &[1.0; 63], None),
        Err(GpuError::Shape { .. })
    ));
    assert!(matches!(
        ctx.gemv(&w, &[1.0; 64], Some(&[0.0; 3])),
        Err(GpuError::Shape { .. })
    ));
    assert_eq!(ctx.gemv(&w, &[1.0; 64], None).unwrap(), vec![0.0, 0.0]);
}

#[test]
fn rows_past_the_dispatch_limit_use_a_second_dimension() {
    // One workgroup per 8 rows: more row groups than one dispatch dimension allows (65535 on
    // most devices, including lavapipe) needs the 2-D row numbering.
    let per_wg = akari_gpu::ops::gemv::ROWS_PER_WORKGROUP as usize;
    let rows =
        (ctx().caps().max_compute_workgroups_per_dimension as usize * per_wg + 3).min(1 << 21);
    check(ctx(), QuantFormat::Q4_0, rows, 32, true);
}

/// The batched GEMV (one x row per token, several tokens per workgroup) and the tiled GEMM
/// (from `GEMM_MIN_TOKENS` tokens; here over two token tiles and two row tiles, neither
/// full; both tiled GEMMs) give each token what the one-token GEMV gives it, to f32
/// rounding.
#[test]
fn tokens_in_one_dispatch_match_one_at_a_time() {
    for ctx in [ctx(), ctx_other_gemm()] {
        tokens_match_one_at_a_time(ctx);
    }
}

fn tokens_match_one_at_a_time(ctx: &GpuContext) {
    for (format, (rows, tokens)) in QuantFormat::ALL
        .into_iter()
        .flat_map(|f| [(f, (13, 6)), (f, (70, 70))])
    {
        let cols = 96;
        let bytes = quantized(format, rows, cols, 11);
        let w = ctx.upload_matrix_bytes(format, rows, cols, &bytes).unwrap();
        let x = sample(tokens * cols, 12);
        let bias = sample(rows, 13);
        let xb = ctx.storage_buffer("x", &f32_bytes(&x)).unwrap();
        let bb = ctx.storage_buffer("bias", &f32_bytes(&bias)).unwrap();
        let y = ctx.f32_buffer("y", tokens * rows).unwrap();
        let mut rec = Recording::new(ctx);
        let epilogue = Epilogue::Store { bias: Some(&bb) };
        encode_tokens(ctx, &mut rec, &w, &xb, None, epilogue, &y, tokens).unwrap();
        let got = ctx
            .submit_and_read("tokens", rec, &y, tokens * rows)
            .unwrap();
        for (t, xr) in x.chunks_exact(cols).enumerate() {
            let one = ctx.gemv(&w, xr, Some(&bias)).unwrap();
            // Same terms, summed in a different order where the batched path differs.
            for (g, o) in got[t * rows..(t + 1) * rows].iter().zip(&one) {
                let tol = 1e-5 * o.abs().max(1.0);
                assert!((g - o).abs() <= tol, "{format} token {t}: {g} vs {o}");
            }
        }
    }
}

/// The fused epilogues against the f64 reference: `y += W·x` keeps what `y` held, and
/// `silu(W·x)·(U·x)` is the gated MLP's activation, for one token (decode) and several
/// (prefill, both tiled GEMMs), on shapes that are not multiples of the workgroup's rows.
#[test]
fn fused_epilogues_match_the_reference() {
    for ctx in [ctx(), ctx_other_gemm()] {
        fused_epilogues_match(ctx);
    }
}

fn fused_epilogues_match(ctx: &GpuContext) {
    for format in QuantFormat::ALL {
        // 96 columns are 3 blocks (the general kernel for Q4_0/Q8_0 at one token), 128 are 4
        // (the aligned-pair decode kernel).
        // 37 tokens take the tiled GEMM.
        for (tokens, cols) in [(1, 96), (1, 128), (5, 96), (5, 128), (37, 96), (37, 128)] {
            let rows = 21;
            let wb = quantized(format, rows, cols, 21);
            let ub = quantized(format, rows, cols, 22);
            let w = ctx.upload_matrix_bytes(format, rows, cols, &wb).unwrap();
            let u = ctx.upload_matrix_bytes(format, rows, cols, &ub).unwrap();
            let x = sample(tokens * cols, 23);
            let y0 = sample(tokens * rows, 24);
            let xb = ctx.storage_buffer("x", &f32_bytes(&x)).unwrap();

            let acc = ctx.storage_buffer("y", &f32_bytes(&y0)).unwrap();
            let mut rec = Recording::new(ctx);
            encode_tokens(
                ctx,
                &mut rec,
                &w,
                &xb,
                None,
                Epilogue::Accumulate,
                &acc,
                tokens,
            )
            .unwrap();
            let got_acc = ctx
                .submit_and_read("acc", rec, &acc, tokens * rows)
                .unwrap();

            let glu = ctx.f32_buffer("glu", tokens * rows).unwrap();
            let mut rec = Recording::new(ctx);
            let epilogue = Epilogue::Glu {
                up: &u,
                quantized: None,
            };
            encode_tokens(ctx, &mut rec, &w, &xb, None, epilogue, &glu, tokens).unwrap();
            let got_glu = ctx
                .submit_and_read("glu", rec, &glu, tokens * rows)
                .unwrap();

            for t in 0..tokens {
                let xr = &x[t * cols..(t + 1) * cols];
                let (gw, sw) = reference(format, &wb, rows, cols, xr, None);
                let (gu, su) = reference(format, &ub, rows, cols, xr, None);
                for r in 0..rows {
                    let i = t * rows + r;
                    let want = y0[i] as f64 + gw[r];
                    let tol = 1e-5 * (sw[r] + y0[i].abs() as f64 + 1.0);
                    assert!(
                        (got_acc[i] as f64 - want).abs() <= tol,
                        "{format} accumulate t{t} r{r}: {} vs {want}",
                        got_acc[i]
                    );
                    let silu = gw[r] / (1.0 + (-gw[r]).exp());
                    let want = silu * gu[r];
                    let tol = 1e-5 * (sw[r] + 1.0) * (su[r] + 1.0);
                    assert!(
                        (got_glu[i] as f64 - want).abs() <= tol,
                        "{format} glu t{t} r{r}: {} vs {want}",
                        got_glu[i]
                    );
                }
            }
        }
    }
}

/// A one-token GEMV that RMS-normalises its input itself matches the reference on the
/// normalised input, for every format the decode kernel takes.
#[test]
fn fused_norm_matches_the_reference() {
    fused_norm_matches(ctx());
}

fn fused_norm_matches(ctx: &GpuContext) {
    use akari_gpu::ops::gemv::{fuses_norm, Norm};
    let mut checked = 0;
    // 128 columns: the input staged in workgroup memory; 2560: read from memory per row;
    // Q4_0 with 16389 rows: the integer-dot kernel, which quantises the normalised input;
    // F16 with 1000: 125 groups of 8 over 64 lanes, so some lanes repeat the row's last group
    // (weighted 0).
    for (format, cols, rows) in QuantFormat::ALL
        .into_iter()
        .flat_map(|f| [(f, 128, 37), (f, 2560, 37)])
        .chain([
            (QuantFormat::Q4_0, 1536, 16389),
            (QuantFormat::F16, 1000, 37),
        ])
    {
        let eps = 1e-5f32;
        let wb = quantized(format, rows, cols, 31);
        let w = ctx.upload_matrix_bytes(format, rows, cols, &wb).unwrap();
        if !fuses_norm(ctx, &w) {
            continue;
        }
        let x = sample(cols, 32);
        let nw = sample(cols, 33);
        let xb = ctx.storage_buffer("x", &f32_bytes(&x)).unwrap();
        let nb = ctx.storage_buffer("norm", &f32_bytes(&nw)).unwrap();
        let y = ctx.f32_buffer("y", rows).unwrap();
        let mut rec = Recording::new(ctx);
        let norm = Some(Norm {
            weight: &nb,
            eps,
            folded: false,
        });
        let epilogue = Epilogue::Store { bias: None };
        encode_tokens(ctx, &mut rec, &w, &xb, norm, epilogue, &y, 1).unwrap();
        let got = ctx.submit_and_read("norm", rec, &y, rows).unwrap();
        let ms = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / cols as f64;
        let scale = 1.0 / (ms + f64::from(eps)).sqrt();
        let xn: Vec<f32> = x
            .iter()
            .zip(&nw)
            .map(|(a, b)| (f64::from(*a) * scale * f64::from(*b)) as f32)
            .collect();
        let (want, s) = reference(format, &wb, rows, cols, &xn, None);
        for r in 0..rows {
            let err = (f64::from(got[r]) - want[r]).abs();
            assert!(
                err <= 1e-5 * (s[r] + 1.0),
                "{format} row {r}: {} vs {}",
                got[r],
                want[r]
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "the decode kernel should take F16, Q8_0, Q4_0 and Q4_1"
    );
}
