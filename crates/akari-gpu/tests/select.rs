//! Token selection on a real device against the host's reference
//! ([`Selection::select`], what the CPU path samples from): random rows whose lengths are
//! not multiples of the workgroup's chunk, ties, penalised tokens set aside, and the
//! backend's `read_candidates` end to end.
//!
//! Like the other GPU tests these need an adapter (lavapipe in CI) and fail without one.

use akari_core::backend::Backend;
use akari_core::sampler::{Candidates, Selection};
use akari_core::weights::{Bytes, Matrix};
use akari_core::QuantFormat;
use akari_gpu::ops::select::{self, Buffers};
use akari_gpu::ops::Recording;
use akari_gpu::{GpuBackend, GpuContext};
use std::sync::OnceLock;

mod common;

fn backend() -> &'static GpuBackend {
    static BACKEND: OnceLock<GpuBackend> = OnceLock::new();
    BACKEND.get_or_init(|| match GpuContext::new() {
        Ok(ctx) => GpuBackend::with_context(ctx),
        Err(e) => panic!("no GPU device for the GPU tests: {e}"),
    })
}

/// Deterministic logits, never zero: ±[0.05, 4], and with `ties` every value rounded to
/// one of a few dozen levels, so most of the best ones are shared by several tokens.
fn logits(n: usize, seed: u64, ties: bool) -> Vec<f32> {
    let v = common::signed(n, seed, 3.95);
    if !ties {
        return v;
    }
    v.into_iter()
        .map(|x| x.signum() * (x.abs() * 8.0).ceil() / 8.0)
        .collect()
}

/// Runs the kernels on `row` directly (no backend).
fn select_on_device(row: &[f32], sel: &Selection) -> Candidates {
    let ctx = backend().context();
    let bytes = common::f32_bytes(row);
    let buffer = |label: &str, len: usize| ctx.f32_buffer(label, len).expect("buffer");
    let logits = ctx.storage_buffer("test.logits", &bytes).expect("logits");
    let ids: Vec<u8> = sel.penalised.iter().flat_map(|t| t.to_le_bytes()).collect();
    let ids = ctx.storage_buffer("test.ids", &ids).expect("ids");
    let scratch = select::scratch_len(row.len(), sel.k);
    let (s0, s1) = (buffer("s0", scratch), buffer("s1", scratch));
    let out_len = select::out_len(sel.k, sel.penalised.len());
    let out = buffer("out", out_len);
    let mut rec = Recording::new(ctx);
    let b = Buffers {
        logits: &logits,
        set_aside: (!sel.penalised.is_empty()).then_some((&ids, sel.penalised.len())),
        scratch: [&s0, &s1],
        out: &out,
    };
    select::encode(ctx, &mut rec, &b, row.len(), sel.k).expect("encode");
    let words = pollster::block_on(ctx.submit_and_read_words_async("test", rec, &out, out_len))
        .expect("read");
    select::decode(&words, row.len(), sel.k, &sel.penalised)
}

fn check(n: usize, k: usize, penalised: Vec<u32>, ties: bool) {
    let row = logits(n, (n * 31 + k) as u64, ties);
    let sel = Selection { k, penalised };
    let want = sel.select(&row);
    let got = select_on_device(&row, &sel);
    assert_eq!(
        got.top.len(),
        want.top.len(),
        "n={n} k={k}: candidate count"
    );
    assert_eq!(got, want, "n={n} k={k} ties={ties}");
}

/// Row lengths around the 1024-candidate chunk and the 256-thread workgroup, and real
/// vocabularies (SmolLM2's 49152, Qwen2's 151936).
const LENGTHS: [usize; 9] = [1, 7, 255, 1000, 1025, 3001, 49152, 65537, 151936];

#[test]
fn argmax_matches_the_host() {
    for n in LENGTHS {
        check(n, 1, vec![], false);
        check(n, 1, vec![], true);
    }
}

#[test]
fn top_k_matches_the_host() {
    for n in LENGTHS {
        for k in [2, 20, 40, 256, 512] {
            check(n, k, vec![], n % 2 == 0);
        }
    }
}

#[test]
fn ties_go_to_the_lowest_id() {
    // Every value equal: the best are the lowest ids, across chunk boundaries.
    let n = 5000;
    let sel = Selection {
        k: 64,
        penalised: vec![],
    };
    let got = select_on_device(&vec![0.5; n], &sel);
    let ids: Vec<u32> = got.top.iter().map(|c| c.0).collect();
    assert_eq!(ids, (0..64).collect::<Vec<u32>>());
    // A maximum shared by a late and an early token, in different chunks.
    let mut row = logits(n, 9, false);
    row[4321] = 10.0;
    row[1234] = 10.0;
    let got = select_on_device(&row, &Selection { k: 1, ..sel });
    assert_eq!(got.top, vec![(1234, 10.0)]);
}

#[test]
fn penalised_tokens_are_set_aside_with_their_raw_logits() {
    for n in [100, 1025, 49152] {
        let row = logits(n, 5, false);
        // The best tokens among them, so the selection must skip them; one past the row.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]));
        let mut penalised: Vec<u32> = order[..30].iter().step_by(2).copied().collect();
        penalised.push(n as u32 + 5);
        penalised.sort_unstable();
        for k in [1, 40] {
            check(n, k, penalised.clone(), false);
            check(n, k, penalised.clone(), true);
        }
    }
}

/// The backend's `read_candidates` (flush, the growing id buffer, decoding) on a row made by
/// the embedding gather.
#[test]
fn backend_reads_candidates_equal_to_the_host() {
    let be = backend();
    let n = 151936;
    let row = logits(n, 77, true);
    let bytes = common::f32_bytes(&row);
    let table = be
        .upload_matrix(Matrix {
            format: QuantFormat::F32,
            rows: 1,
            cols: n,
            bytes: Bytes::from_vec(bytes),
        })
        .expect("upload");
    for (k, count) in [(1, 0), (1, 3), (50, 0), (256, 40), (256, 700), (20, 2)] {
        let penalised: Vec<u32> = (0..count).map(|i| i * 211 % n as u32).collect();
        let mut penalised = penalised;
        penalised.sort_unstable();
        penalised.dedup();
        let sel = Selection { k, penalised };
        let x = be.embed(&table, &[0]).expect("embed");
        let got = be.read_candidates(x, &sel).expect("read_candidates");
        assert_eq!(got, sel.select(&row), "k={k}, {count} penalised");
    }
}
