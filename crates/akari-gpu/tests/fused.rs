//! Projections of one input fused into one dispatch (decode's q, k and v): the matrices'
//! rows copied one after another on the device, one GEMV writing each projection's rows to
//! its own output. Each output row is computed by the same code over the same terms as in
//! a GEMV of its own matrix, so the results must be bit for bit the same, except for f16
//! rows: their copy holds the norm's weight in its columns, within f16 rounding.
//!
//! And a one-token Q4_0 GLU writes its output quantised as well, which the down projection
//! reads instead of quantising it again: within the rounding of 16-bit inputs of what it
//! gives on the f32 output.
//!
//! Like the other GPU tests these need an adapter (lavapipe in CI) and fail without one.

use akari_core::backend::Backend;
use akari_core::weights::{Bytes, Matrix};
use akari_core::QuantFormat;
use akari_gpu::ops::gemv::{encode_tokens, fuses_split, Epilogue, Norm};
use akari_gpu::ops::Recording;
use akari_gpu::{GpuBackend, GpuContext, GpuError, GpuMatrix, GpuTensor};

mod common;
use common::{f32_bytes, quantized, sample};

fn context() -> GpuContext {
    let mut ctx = GpuContext::new().unwrap_or_else(|e| panic!("no GPU device: {e}"));
    // The one-token kernels, which fusing needs, are off by default on software adapters.
    ctx.set_decode_kernels(true);
    ctx
}

/// Rows of q, k and v (k and v smaller, as with grouped-query attention), and their width.
const ROWS: [usize; 3] = [96, 32, 32];
const COLS: usize = 128;

/// The formats with a one-token kernel.
const FORMATS: [QuantFormat; 4] = [
    QuantFormat::F16,
    QuantFormat::Q8_0,
    QuantFormat::Q4_0,
    QuantFormat::Q4_1,
];

/// `bytes` (`[rows, cols]` of `format`) on the backend.
fn upload(
    be: &GpuBackend,
    format: QuantFormat,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
) -> GpuMatrix {
    be.upload_matrix(Matrix {
        format,
        rows,
        cols,
        bytes: Bytes::from_vec(bytes),
    })
    .expect("upload")
}

/// A one-row activation holding `values` (an embedding lookup in an f32 table of one row).
fn one_row(be: &GpuBackend, values: &[f32]) -> GpuTensor {
    let table = upload(be, QuantFormat::F32, 1, values.len(), f32_bytes(values));
    be.embed(&table, &[0]).expect("one row")
}

/// The split epilogue over a concatenated matrix, against one GEMV per matrix.
#[test]
fn split_gemv_gives_each_matrix_its_own_results() {
    let ctx = context();
    for format in FORMATS {
        let mats: Vec<GpuMatrix> = ROWS
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let bytes = quantized(format, rows, COLS, 10 + i as u64);
                ctx.upload_matrix_bytes(format, rows, COLS, &bytes)
                    .expect("upload")
            })
            .collect();
        let refs: Vec<&GpuMatrix> = mats.iter().collect();
        let fused = ctx
            .concat_rows(&refs)
            .expect("concat")
            .expect("whole words: the rows concatenate");
        assert_eq!((fused.rows(), fused.cols()), (160, COLS));
        assert!(fuses_split(&ctx, &fused), "{format}");
        let total: usize = ROWS.iter().sum();
        let bias_values = sample(total, 20);
        let x = ctx
            .storage_buffer("x", &f32_bytes(&sample(COLS, 21)))
            .expect("x");
        let nw = ctx
            .storage_buffer("norm", &f32_bytes(&sample(COLS, 22)))
            .expect("norm");
        let norm = Some(Norm {
            weight: &nw,
            eps: 1e-5,
            folded: false,
        });
        let fused_bias = ctx
            .storage_buffer("bias", &f32_bytes(&bias_values))
            .expect("bias");
        let outs: Vec<wgpu::Buffer> = ROWS
            .iter()
            .map(|&r| ctx.f32_buffer("y", r).expect("y"))
            .collect();
        let mut rec = Recording::new(&ctx);
        let epilogue = Epilogue::Split {
            bias: Some(&fused_bias),
            rows: [ROWS[0], ROWS[0] + ROWS[1]],
            outputs: [&outs[1], &outs[2]],
        };
        encode_tokens(&ctx, &mut rec, &fused, &x, norm, epilogue, &outs[0], 1).expect("split");
        ctx.submit("split", rec).expect("submit");
        let mut first = 0;
        for (i, m) in mats.iter().enumerate() {
            let got = ctx
                .submit_and_read("read", Recording::new(&ctx), &outs[i], ROWS[i])
                .expect("read");
            let bias = ctx
                .storage_buffer("bias", &f32_bytes(&bias_values[first..first + ROWS[i]]))
                .expect("bias");
            let y = ctx.f32_buffer("y", ROWS[i]).expect("y");
            let mut rec = Recording::new(&ctx);
            let epilogue = Epilogue::Store { bias: Some(&bias) };
            encode_tokens(&ctx, &mut rec, m, &x, norm, epilogue, &y, 1).expect("one");
            let want = ctx.submit_and_read("one", rec, &y, ROWS[i]).expect("read");
            assert_eq!(got, want, "{format} projection {i}");
            first += ROWS[i];
        }
    }
}

/// Through the backend: `norm_matmul_many` of three projections (fused) against each alone.
#[test]
fn fused_projections_match_separate_ones() {
    let be = GpuBackend::with_context(context());
    for format in FORMATS {
        for with_bias in [true, false] {
            let mats: Vec<GpuMatrix> = ROWS
                .iter()
                .enumerate()
                .map(|(i, &rows)| {
                    upload(
                        &be,
                        format,
                        rows,
                        COLS,
                        quantized(format, rows, COLS, 30 + i as u64),
                    )
                })
                .collect();
            let biases: Vec<_> = ROWS
                .iter()
                .enumerate()
                .map(|(i, &r)| be.upload_vector(sample(r, 40 + i as u64)).expect("bias"))
                .collect();
            let norm = be.upload_vector(sample(COLS, 50)).expect("norm");
            let x = one_row(&be, &sample(COLS, 51));
            let ws: Vec<_> = mats
                .iter()
                .zip(&biases)
                .map(|(m, b)| (m, with_bias.then_some(b)))
                .collect();
            let together = be.norm_matmul_many(&x, &norm, 1e-5, &ws).expect("fused");
            assert_eq!(together.len(), 3);
            for (i, t) in together.iter().enumerate() {
                let alone = be
                    .norm_matmul_many(&x, &norm, 1e-5, &ws[i..=i])
                    .expect("alone");
                let (got, want) = (be.read(t).expect("read"), be.read(&alone[0]).expect("read"));
                if format == QuantFormat::F16 {
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 4e-3 * (w.abs() + 1.0),
                            "{format} bias={with_bias} projection {i}: {g} vs {w}"
                        );
                    }
                } else {
                    assert_eq!(got, want, "{format} bias={with_bias} projection {i}");
                }
            }
        }
    }
}

/// A GLU over `format` rows of gate and up (as stored) after an RMS norm with weight `norm`
/// (eps 1e-5), computed on the host in f64.
struct GluReference<'a> {
    format: QuantFormat,
    gate: &'a [u8],
    up: &'a [u8],
    norm: &'a [f32],
}

impl GluReference<'_> {
    /// Asserts `got` = silu(gate · x̂) · (up · x̂), x̂ the normalised `x`, row by row, within
    /// `rel` times the terms' magnitudes (|Σ|gate·x̂|·Σ|up·x̂| + Σ|gate·x̂| + Σ|up·x̂|) plus `abs`.
    fn check(&self, got: &[f32], x: &[f32], (rel, abs): (f64, f64), what: &str) {
        let cols = x.len();
        let ms = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        let xn: Vec<f64> = x
            .iter()
            .zip(self.norm)
            .map(|(a, b)| f64::from(*a) * inv * f64::from(*b))
            .collect();
        let rb = self.format.row_bytes(cols);
        let mut row = vec![0f32; cols];
        let mut dot = |bytes: &[u8], r: usize| {
            self.format
                .dequantize_row(&bytes[r * rb..(r + 1) * rb], &mut row);
            let terms: f64 = row
                .iter()
                .zip(&xn)
                .map(|(a, b)| (f64::from(*a) * b).abs())
                .sum();
            let sum: f64 = row.iter().zip(&xn).map(|(a, b)| f64::from(*a) * b).sum();
            (sum, terms)
        };
        for (r, got) in got.iter().enumerate() {
            let (g, gt) = dot(self.gate, r);
            let (u, ut) = dot(self.up, r);
            let want = g / (1.0 + (-g).exp()) * u;
            let err = (f64::from(*got) - want).abs();
            assert!(
                err <= rel * (gt * ut + gt + ut) + abs,
                "{what} row {r}: {got} vs {want}"
            );
        }
    }
}

/// F16 gate and up take the norm's weight into their columns at their first one-token use;
/// a prompt after that normalises without it. Both against the host.
#[test]
fn f16_gate_and_up_hold_the_norm_after_a_decode_step() {
    let be = GpuBackend::with_context(context());
    let (hidden, inter) = (128, 64);
    let gate_bytes = quantized(QuantFormat::F16, inter, hidden, 70);
    let up_bytes = quantized(QuantFormat::F16, inter, hidden, 71);
    let gate = upload(&be, QuantFormat::F16, inter, hidden, gate_bytes.clone());
    let up = upload(&be, QuantFormat::F16, inter, hidden, up_bytes.clone());
    let nw = sample(hidden, 72);
    let norm = be.upload_vector(nw.clone()).expect("norm");
    let rows = [sample(hidden, 73), sample(hidden, 74)];
    // Each folded weight is rounded to f16 once more: at most a step, 2^-10 relative.
    let glu = GluReference {
        format: QuantFormat::F16,
        gate: &gate_bytes,
        up: &up_bytes,
        norm: &nw,
    };
    let check = |got: &[f32], x: &[f32], what: &str| glu.check(got, x, (1e-3, 1e-5), what);
    let one = be
        .norm_matmul_glu(&one_row(&be, &rows[0]), &norm, 1e-5, &gate, &up)
        .expect("one token");
    check(&be.read(&one).expect("read"), &rows[0], "one token");
    let table = upload(&be, QuantFormat::F32, 2, hidden, f32_bytes(&rows.concat()));
    let x = be.embed(&table, &[0, 1]).expect("two rows");
    let two = be
        .norm_matmul_glu(&x, &norm, 1e-5, &gate, &up)
        .expect("prompt");
    let two = be.read(&two).expect("read");
    check(&two[..inter], &rows[0], "prompt row 0");
    check(&two[inter..], &rows[1], "prompt row 1");
    // Without the norm, their products would silently lack its weight: refused; and so is
    // another norm, which the weights cannot hold as well.
    assert!(be.matmul_glu(&x, &gate, &up).is_err());
    let other = be.upload_vector(sample(hidden, 75)).expect("norm");
    let err = be
        .norm_matmul_glu(&one_row(&be, &rows[0]), &other, 1e-5, &gate, &up)
        .expect_err("a second norm");
    assert!(err.to_string().contains("norm"), "{err}");
}

/// GLU (Q4_0, one token) then the down projection, reading the GLU's quantised output,
/// against the same down projection of a plain copy of that output; with the kernels'
/// sums across threads by subgroups (where the adapter allows) and through workgroup memory.
#[test]
fn down_projection_reads_the_glu_output_quantised() {
    for subgroups in [true, false] {
        let mut ctx = context();
        ctx.set_subgroup_sums(subgroups);
        down_projection_check(ctx);
    }
}

fn down_projection_check(ctx: GpuContext) {
    let be = GpuBackend::with_context(ctx);
    // Rows long enough that every lane of the GLU (8 a row) and of the down projection
    // (64) holds blocks of its own.
    let (hidden, inter) = (512, 2048);
    let q4 = |rows: usize, cols: usize, seed: u64| {
        let bytes = quantized(QuantFormat::Q4_0, rows, cols, seed);
        (
            upload(&be, QuantFormat::Q4_0, rows, cols, bytes.clone()),
            bytes,
        )
    };
    let (gate, gate_bytes) = q4(inter, hidden, 60);
    let (up, up_bytes) = q4(inter, hidden, 61);
    let (down, down_bytes) = q4(hidden, inter, 62);
    let norm = be.upload_vector(sample(hidden, 63)).expect("norm");
    let residual = sample(hidden, 64);
    let x = one_row(&be, &residual);
    let glu = be
        .norm_matmul_glu(&x, &norm, 1e-5, &gate, &up)
        .expect("glu");
    assert!(glu.has_quantized(), "the GLU wrote its output quantised");
    let plain = be.last_row(&glu).expect("copy");
    assert!(!plain.has_quantized());
    let mut with_q = one_row(&be, &residual);
    let mut with_f = one_row(&be, &residual);
    be.matmul_add(&mut with_q, &glu, &down)
        .expect("down, quantised input");
    be.matmul_add(&mut with_f, &plain, &down)
        .expect("down, f32 input");
    let (got, want) = (
        be.read(&with_q).expect("read"),
        be.read(&with_f).expect("read"),
    );
    let h = be.read(&plain).expect("read");
    // The GLU itself against the host.
    let nw = sample(hidden, 63);
    let reference = GluReference {
        format: QuantFormat::Q4_0,
        gate: &gate_bytes,
        up: &up_bytes,
        norm: &nw,
    };
    reference.check(&h[..inter], &residual, (1e-4, 1e-6), "GLU");
    // Each input moves by at most half a step of its block (max |x| / 32767); the f32 path
    // sums in another order.
    let rb = QuantFormat::Q4_0.row_bytes(inter);
    let mut w = vec![0f32; inter];
    for r in 0..hidden {
        QuantFormat::Q4_0.dequantize_row(&down_bytes[r * rb..(r + 1) * rb], &mut w);
        let mut bound = 0f64;
        let mut terms = 0f64;
        for (wb, hb) in w.chunks(32).zip(h.chunks(32)) {
            let amax = hb.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            let wsum: f64 = wb.iter().map(|v| f64::from(v.abs())).sum();
            bound += amax / 65534.0 * wsum;
            terms += wb
                .iter()
                .zip(hb)
                .map(|(a, b)| f64::from(a * b).abs())
                .sum::<f64>();
        }
        let err = f64::from((got[r] - want[r]).abs());
        assert!(
            err <= bound + 1e-5 * (terms + f64::from(want[r].abs())) + 1e-6,
            "row {r}: {} vs {} (error {err:e}, bound {bound:e})",
            got[r],
            want[r]
        );
    }
}

/// The fused variants, asked for where they do not apply, are errors, not wrong results.
#[test]
fn fused_variants_refuse_what_they_cannot_do() {
    let ctx = context();
    let f16 = ctx
        .upload_matrix_bytes(
            QuantFormat::F16,
            64,
            COLS,
            &quantized(QuantFormat::F16, 64, COLS, 70),
        )
        .expect("upload");
    let x = ctx
        .storage_buffer("x", &f32_bytes(&sample(2 * COLS, 71)))
        .expect("x");
    let y = ctx.f32_buffer("y", 2 * 64).expect("y");
    let spare = ctx.f32_buffer("spare", 2 * 64).expect("spare");
    let split = Epilogue::Split {
        bias: None,
        rows: [32, 48],
        outputs: [&spare, &spare],
    };
    let quantized_input = Epilogue::AccumulateQuantized { input: &spare };
    for (epilogue, tokens, what) in [
        (split, 2, "a split GEMV of two tokens"),
        (quantized_input, 1, "an f16 matrix on a quantised input"),
    ] {
        let mut rec = Recording::new(&ctx);
        let r = encode_tokens(&ctx, &mut rec, &f16, &x, None, epilogue, &y, tokens);
        assert!(
            matches!(r, Err(GpuError::NotApplicable { .. })),
            "{what}: {r:?}"
        );
    }
}
