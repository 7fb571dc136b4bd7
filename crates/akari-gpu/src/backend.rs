//! [`akari_core::backend::Backend`] on the GPU: the one decoder ([`akari_core::model::Model`])
//! runs here unchanged.
//!
//! - Tensors are f32 storage buffers `[rows, cols]`; weights are [`GpuMatrix`] in their file
//!   layout (the embedding is dequantised on the device by `ops/embed.wgsl`, from the same
//!   buffer the lm_head GEMV reads when tied); norms and biases are f32 buffers; rope tables
//!   are uploaded once; the KV cache is two preallocated f32 buffers per layer,
//!   `[kv_heads][max_seq][head_dim]`.
//! - Every op records its dispatches into one compute pass of a pending [`Recording`]; every
//!   [`SUBMIT_EVERY`] dispatches the recording is submitted so the GPU starts while the rest of
//!   the pass is recorded, and [`Backend::read`] submits the remainder and waits once. Work
//!   left pending when a forward pass fails is dropped at the end of [`Backend::scope`].
//! - Greedy decode runs one step ahead ([`Backend::runs_ahead`]): a step's selection is
//!   submitted with a copy to a read-back buffer ([`Backend::select_ahead`]), the next step
//!   embeds its best id straight from the selection's output and is recorded and submitted
//!   whole, and only then is the first read. The host's recording and the read's round trip
//!   overlap the device's work instead of adding to it (Q4_0 decode on an H100 at 128
//!   positions: 467–497 → 607–610 tok/s, with the step submitted whole).
//! - Nothing is created per token once shapes repeat: activation buffers come from a pool
//!   (a dropped tensor returns its buffer), uniforms and bind groups are cached by content in
//!   the context, and the two per-step inputs (token ids, position) live in fixed buffers
//!   written with `Queue::write_buffer`.
//! - Fused epilogues: `matmul_add` adds into the residual inside the GEMV, `matmul_glu`
//!   computes gate, up and `silu(gate)·up` in one pass.
//! - Activations are f32 for every weight format (there is no int8/int16 activation path).

use crate::context::PendingRead;
use crate::ops::gemv::Epilogue;
use crate::ops::{attention, elementwise, embed, gemv, rms_norm, rope, select, Recording};
use crate::{GpuContext, GpuError, GpuMatrix, KvCacheDtype};
use akari_core::backend::{Backend, RopeTables};
use akari_core::sampler::{Candidates, Selection};
use akari_core::weights::Matrix;
use akari_core::{Error, ModelConfig, QuantFormat, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Dispatches recorded before a partial submission (see the module docs). Overridable with
/// `AKARI_GPU_SUBMIT_EVERY` for tuning; 0 submits only at the read.
pub const SUBMIT_EVERY: usize = 32;

/// Free activation buffers by byte size.
type Pool = Arc<Mutex<HashMap<u64, Vec<wgpu::Buffer>>>>;

const NAME: &str = "gpu";

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Error {
        Error::Backend {
            backend: NAME,
            msg: e.to_string(),
        }
    }
}

/// Activations on the device, row-major f32. Dropping it returns its buffer to the
/// backend's pool.
#[derive(Debug)]
pub struct GpuTensor {
    buffer: Option<wgpu::Buffer>,
    rows: usize,
    cols: usize,
    pool: Pool,
    /// A rotation asked for and not yet applied: attention applies it as it reads the
    /// tensor; any other use applies it first ([`GpuBackend::settle`]).
    rope: Mutex<Option<PendingRope>>,
    /// The same values quantised for a Q4_0 GEMV ([`gemv::QUANTIZED_BLOCK_WORDS`] words per
    /// 32), when the GLU that wrote them wrote that too; dropped by any op that changes
    /// the tensor.
    quantized: Option<Box<GpuTensor>>,
    /// Split decode attention's partial results not yet merged into the tensor: the
    /// GEMV that reads it merges them as it loads its input
    /// ([`Epilogue::AccumulateCombined`]); any other use merges them first
    /// ([`GpuBackend::settle`]).
    combine: Mutex<Option<PendingCombine>>,
}

/// Partial results of a decode row's attention left in a cache's scratch buffer.
#[derive(Clone, Debug)]
struct PendingCombine {
    scratch: wgpu::Buffer,
    dims: attention::Dims,
    chunks: usize,
    /// The cache's count of attention calls, and its value when these were written: the
    /// next call overwrites the scratch, after which merging would give garbage.
    writes: Arc<AtomicU64>,
    at: u64,
}

impl PendingCombine {
    fn check(&self) -> Result<()> {
        if self.writes.load(Ordering::Relaxed) != self.at {
            return Err(Error::InvalidArgument(
                "an attention output was used after a later attention call on the same \
                 cache (its partial results are overwritten)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A rope to apply to a tensor: its tables, heads and position.
#[derive(Clone, Debug)]
struct PendingRope {
    table: rope::Table,
    heads: usize,
    pos: usize,
}

impl Drop for GpuTensor {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.entry(b.size()).or_default().push(b);
        }
    }
}

impl GpuTensor {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("a tensor holds its buffer until dropped")
    }

    /// Whether a quantised copy of the values came with them (a one-token Q4_0 GLU's
    /// output), for the next GEMV to read instead of quantising them itself.
    pub fn has_quantized(&self) -> bool {
        self.quantized.is_some()
    }
}

/// A norm weight or bias.
#[derive(Debug)]
pub struct GpuVector {
    buffer: wgpu::Buffer,
    len: usize,
}

/// Rope cos/sin tables, `[len, half]` each, in one buffer.
#[derive(Debug)]
pub struct GpuRope {
    table: rope::Table,
}

/// Keys and values of every layer, `[kv_heads][max_seq][head_dim]` per layer, as `dtype`.
#[derive(Debug)]
pub struct GpuKvCache {
    layers: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    dtype: KvCacheDtype,
    /// Partial results of split decode attention ([`attention::scratch_len`]).
    scratch: wgpu::Buffer,
    /// Attention calls so far, which each overwrite `scratch` (see [`PendingCombine`]).
    scratch_writes: Arc<AtomicU64>,
    max_seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

pub struct GpuBackend {
    ctx: GpuContext,
    pending: Mutex<Pending>,
    pool: Pool,
    /// `[pos, 0, 0, 0]`: the position of the forward pass being recorded.
    step: wgpu::Buffer,
    /// Token ids of the step being recorded; grows as needed.
    ids: Mutex<wgpu::Buffer>,
    /// Token ids a selection sets aside (the penalised ones); grows as needed.
    set_aside: Mutex<wgpu::Buffer>,
    submit_every: usize,
    /// Whether greedy decode records a step before the previous one is read back
    /// ([`Backend::runs_ahead`]). Off on software adapters: there the device's work runs on
    /// the same cores as the host's, so there is little to overlap, and the first token
    /// waits behind the step run ahead of it (lavapipe, SmolLM2 Q4_1, 64-token prompt: time
    /// to first token 2.5–3.1 s off, 3.0–4.3 s on; decode 1.5–1.8 tok/s off, 1.6–1.9 on).
    /// `AKARI_GPU_RUN_AHEAD=0|1` overrides it natively, [`GpuBackend::set_run_ahead`]
    /// anywhere.
    run_ahead: bool,
    /// Selections submitted and not yet read back ([`InFlight`]).
    in_flight: Arc<AtomicUsize>,
    /// Projections of one input fused for decode ([`GpuBackend::fused`]), by the buffers of
    /// their matrices and biases; `None` where they cannot be.
    fused: Mutex<HashMap<Vec<wgpu::Buffer>, Option<Arc<Fused>>>>,
    /// Whether f16 matrices read by one-token GEMVs get the RMS norm before them folded
    /// into their columns ([`GpuBackend::fold_norm`]); `AKARI_GPU_FOLD_NORM=0` turns it off.
    fold_norms: bool,
    /// Matrices holding a norm's weight in their columns, by their first part's buffer:
    /// that norm's buffer.
    folded: Mutex<HashMap<wgpu::Buffer, wgpu::Buffer>>,
    /// Vectors of ones by length: the weight of a norm already folded into the matrices
    /// after it, for the prompt's path, which normalises in a dispatch of its own.
    ones: Mutex<HashMap<usize, wgpu::Buffer>>,
}

/// Three projections of one input (q, k and v) as one matrix, so that a decode step runs
/// them in one dispatch: each dispatch costs several microseconds of launch and barrier
/// however little it computes, and k and v are small. A copy made on the device the first
/// time they are used together; it costs their size again in GPU memory (about 5 % of a
/// model's weights), and lives as long as the backend.
struct Fused {
    matrix: GpuMatrix,
    bias: Option<wgpu::Buffer>,
    /// Rows of each projection.
    rows: [usize; 3],
    /// The norm before the projections is folded into the copy's columns.
    norm_folded: bool,
}

/// What has been recorded and not yet submitted.
#[derive(Default)]
struct Pending {
    rec: Option<Recording>,
    /// The position the step buffer holds (as of the next submission).
    pos: Option<usize>,
    /// Whether `rec` holds dispatches that read the step buffer (recorded with a position).
    reads_step: bool,
    /// Since the first op after the last read, and the time spent recording since: logged
    /// at debug level by each read, to tell CPU-bound steps from GPU-bound ones.
    started: Option<web_time::Instant>,
    recording: std::time::Duration,
    dispatches: usize,
}

impl Pending {
    /// The recording, to submit or drop; what follows starts a new one.
    fn take(&mut self) -> Option<Recording> {
        self.reads_step = false;
        self.rec.take()
    }
}

/// How a forward pass went, logged at debug level by the read that ends it.
struct ReadStats {
    started: Option<web_time::Instant>,
    recording: std::time::Duration,
    dispatches: usize,
    /// When the wait for the GPU began.
    wait: web_time::Instant,
}

impl ReadStats {
    fn log(&self) {
        tracing::debug!(
            dispatches = self.dispatches,
            total_us = self.started.map(|s| s.elapsed().as_micros()).unwrap_or(0) as u64,
            recording_us = self.recording.as_micros() as u64,
            wait_us = self.wait.elapsed().as_micros() as u64,
            "gpu forward"
        );
    }
}

/// A selection recorded on the device: its output (best ids first, as `top_k.wgsl` writes
/// them) and how to decode it.
struct RecordedSelection {
    out: GpuTensor,
    /// Words of `out` to read.
    len: usize,
    n: usize,
    k: usize,
    penalised: Vec<u32>,
}

impl RecordedSelection {
    fn decode(&self, words: &[u32]) -> Candidates {
        select::decode(words, self.n, self.k, &self.penalised)
    }
}

/// A selection submitted with the forward pass before it and not yet read back
/// ([`Backend::select_ahead`]); the next step may embed its best token on the device.
pub struct GpuSelected {
    selection: RecordedSelection,
    read: PendingRead,
    stats: ReadStats,
    _in_flight: InFlight,
}

/// Counts a selection in flight for as long as it lives. While one is, the device has a
/// step to run, so the next step is submitted whole: submitting it in pieces
/// ([`SUBMIT_EVERY`]) would only add the cost of each submission (Q4_0 decode on an H100,
/// 128 positions: 555–572 tok/s in pieces of 32 dispatches, 605 whole).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn shape(tensor: &str, expected: Vec<usize>, got: Vec<usize>) -> Error {
    Error::ShapeMismatch {
        tensor: tensor.to_string(),
        expected,
        got,
    }
}

impl GpuBackend {
    /// Opens the default adapter ([`GpuContext::new`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::with_context(GpuContext::new()?))
    }

    /// Opens the default adapter without blocking ([`GpuContext::new_async`]).
    pub async fn new_async() -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::with_context(GpuContext::new_async().await?))
    }

    pub fn with_context(ctx: GpuContext) -> GpuBackend {
        let buffer = |label: &str, size: u64| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let step = buffer("akari.step", 16);
        let run_ahead = crate::context::env_switch("AKARI_GPU_RUN_AHEAD", !ctx.caps().software);
        let ids = Mutex::new(buffer("akari.token_ids", 256 * 4));
        let set_aside = Mutex::new(buffer("akari.set_aside", 256 * 4));
        let submit_every = std::env::var("AKARI_GPU_SUBMIT_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SUBMIT_EVERY);
        GpuBackend {
            ctx,
            pending: Mutex::new(Pending::default()),
            pool: Pool::default(),
            step,
            ids,
            set_aside,
            submit_every,
            run_ahead,
            in_flight: Arc::default(),
            fused: Mutex::new(HashMap::new()),
            fold_norms: crate::context::env_switch("AKARI_GPU_FOLD_NORM", true),
            folded: Mutex::new(HashMap::new()),
            ones: Mutex::new(HashMap::new()),
        }
    }

    /// Turns running ahead ([`Backend::runs_ahead`]) on or off; by default it is on except
    /// on software adapters.
    pub fn set_run_ahead(&mut self, on: bool) {
        self.run_ahead = on;
    }

    /// Whether one-token GEMVs of `ms` take `norm` folded into their columns: f16 rows on the
    /// decode kernels, unless turned off. Their weights then need no norm weight beside
    /// each weight word: on an H100, F16 decode of DeepSeek-R1-Distill-Qwen-1.5B gained about
    /// 10 % with it. Each product is rounded to f16 (to a neighbour: WGSL leaves the rounding
    /// mode to the implementation, so a weight moves by at most one f16 step, 2^-10 of it)
    /// and clamped to f16's finite range.
    fn folds_norm(&self, ms: &[&GpuMatrix]) -> bool {
        self.fold_norms
            && ms
                .iter()
                .all(|m| m.format() == QuantFormat::F16 && gemv::fuses_norm(&self.ctx, m))
    }

    /// Folds `norm`'s weight into the columns of `ms`, in place, unless they hold it already.
    /// A matrix holds one norm: asking for another is an error.
    ///
    /// What is recorded so far reads the weights as they were, so it is submitted first, and
    /// the fold goes in a submission of its own: the record of what each matrix holds then
    /// stays true even when the recording after it is dropped (a step run ahead that fails).
    fn fold_norm(&self, ms: &[&GpuMatrix], norm: &GpuVector) -> Result<()> {
        let mut folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        let mut todo: Vec<&GpuMatrix> = Vec::new();
        for m in ms {
            let key = &m.parts()[0].buffer;
            match folded.get(key) {
                Some(n) if *n == norm.buffer => {}
                Some(_) => {
                    return Err(GpuError::NotApplicable {
                        op: "fold_norm",
                        what: "a matrix that holds one norm's weight was used with another",
                    }
                    .into())
                }
                None if todo.iter().any(|t| t.parts()[0].buffer == *key) => {}
                None => todo.push(m),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        self.flush(&mut self.pending())?;
        self.submit_fold(&todo, norm)?;
        for m in todo {
            folded.insert(m.parts()[0].buffer.clone(), norm.buffer.clone());
        }
        Ok(())
    }

    /// Folds `norm`'s weight into every part of `ms`, in a submission of its own.
    fn submit_fold(&self, ms: &[&GpuMatrix], norm: &GpuVector) -> Result<()> {
        let mut rec = Recording::new(&self.ctx);
        for m in ms {
            for p in m.parts() {
                elementwise::fold_columns(
                    &self.ctx,
                    &mut rec,
                    &p.buffer,
                    &norm.buffer,
                    p.rows,
                    m.cols(),
                )?;
            }
        }
        self.ctx.submit("fold_norm", rec)?;
        Ok(())
    }

    /// The buffer of the norm whose weight `m` holds in its columns, if any.
    fn held_norm(&self, m: &GpuMatrix) -> Option<wgpu::Buffer> {
        let folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        folded.get(&m.parts()[0].buffer).cloned()
    }

    /// A vector of `len` ones.
    fn ones(&self, len: usize) -> Result<GpuVector> {
        let mut ones = self.ones.lock().unwrap_or_else(|p| p.into_inner());
        let buffer = match ones.get(&len) {
            Some(b) => b.clone(),
            None => {
                let b = self
                    .ctx
                    .storage_buffer("akari.ones", &f32_bytes(&vec![1.0; len]))?;
                ones.insert(len, b.clone());
                b
            }
        };
        Ok(GpuVector { buffer, len })
    }

    /// The fused form of `ws` ([`Fused`]) for a one-token GEMV: three matrices of one format
    /// and width, each one part, all with biases or none; for f16 rows, with `norm` folded in.
    fn fused(
        &self,
        ws: &[(&GpuMatrix, Option<&GpuVector>)],
        norm: &GpuVector,
    ) -> Result<Option<Arc<Fused>>> {
        let &[(a, ab), (b, bb), (c, cb)] = ws else {
            return Ok(None);
        };
        let mats = [a, b, c];
        let biases = [ab, bb, cb];
        if !mats.iter().all(|m| gemv::fuses_split(&self.ctx, m))
            || !(biases.iter().all(Option::is_some) || biases.iter().all(Option::is_none))
        {
            return Ok(None);
        }
        // The copy is read by one-token GEMVs only, so the norm can go into it.
        let fold = self.folds_norm(&mats);
        let key: Vec<wgpu::Buffer> = mats
            .iter()
            .map(|m| m.parts()[0].buffer.clone())
            .chain(biases.iter().flatten().map(|v| v.buffer.clone()))
            .chain(fold.then(|| norm.buffer.clone()))
            .collect();
        let mut cache = self.fused.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = cache.get(&key) {
            return Ok(f.clone());
        }
        let fused = match self.ctx.concat_rows(&mats)? {
            None => None,
            Some(matrix) => {
                let bias = match biases {
                    [Some(x), Some(y), Some(z)] => Some(self.concat_vectors(&[x, y, z])?),
                    _ => None,
                };
                if fold {
                    // After the copy's submission (nothing else reads the copy yet), so a
                    // dropped recording cannot leave it unfolded.
                    self.submit_fold(&[&matrix], norm)?;
                }
                Some(Arc::new(Fused {
                    matrix,
                    bias,
                    rows: mats.map(|m| m.rows()),
                    norm_folded: fold,
                }))
            }
        };
        cache.insert(key, fused.clone());
        Ok(fused)
    }

    /// `vs` one after another in one buffer, copied on the device.
    fn concat_vectors(&self, vs: &[&GpuVector]) -> Result<wgpu::Buffer> {
        let len: usize = vs.iter().map(|v| v.len).sum();
        let buffer = self.ctx.f32_buffer("akari.vector (concatenated)", len)?;
        let mut encoder =
            self.ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("akari.concat_vectors"),
                });
        let mut at = 0;
        for v in vs {
            let bytes = v.len as u64 * 4;
            encoder.copy_buffer_to_buffer(&v.buffer, 0, &buffer, at, bytes);
            at += bytes;
        }
        self.ctx.queue().submit([encoder.finish()]);
        self.ctx.check("concat_vectors")?;
        Ok(buffer)
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The adapter and its API, e.g. `gpu (llvmpipe (LLVM 19.1.7, 256 bits), Vulkan)`.
    pub fn description(&self) -> String {
        let info = self.ctx.adapter_info();
        format!("{NAME} ({}, {:?})", info.name, info.backend)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Backend::read_candidates_async`]: the selection recorded after the forward pass and
    /// read back.
    async fn select_candidates(&self, x: GpuTensor, sel: &Selection) -> Result<Candidates> {
        let recorded = match self.record_selection(x, sel)? {
            Ok(recorded) => recorded,
            // Outside what the kernel does: the whole row, selected on the host.
            Err(x) => return Ok(sel.select(&self.read_async(&x).await?)),
        };
        let selected = self.submit_selection(recorded)?;
        self.read_selected_async(selected).await
    }

    /// Submits everything recorded, ending with `selection`, and asks for its read-back
    /// without waiting.
    fn submit_selection(&self, selection: RecordedSelection) -> Result<GpuSelected> {
        let (rec, stats) = self.take_pending();
        let read = self.ctx.submit_read(
            "read candidates",
            rec,
            selection.out.buffer(),
            selection.len,
        )?;
        Ok(GpuSelected {
            selection,
            read,
            stats,
            _in_flight: InFlight::new(&self.in_flight),
        })
    }

    /// Records the selection `sel` asks for from the logits `x`, or gives `x` back where the
    /// kernel cannot make it (then the host selects from the whole row).
    fn record_selection(
        &self,
        x: GpuTensor,
        sel: &Selection,
    ) -> Result<Result<RecordedSelection, GpuTensor>> {
        self.settle(&x)?;
        if x.rows != 1 {
            return Err(shape(
                "logits to select from",
                vec![1, x.cols],
                vec![x.rows, x.cols],
            ));
        }
        let (n, k, count) = (x.cols, sel.k, sel.penalised.len());
        if k == 0 || k > select::MAX_K {
            return Ok(Err(x));
        }
        if !sel.penalised.windows(2).all(|w| w[0] < w[1]) {
            return Err(Error::InvalidArgument(
                "penalised token ids must be distinct and ascending".into(),
            ));
        }
        // Rounded up, so a growing penalty list reuses the same buffers for a while.
        let len = select::out_len(k, count).next_multiple_of(64);
        let out = self.tensor("akari.candidates", 1, len)?;
        let scratch_len = select::scratch_len(n, k);
        let s0 = self.tensor("akari.select_scratch", 1, scratch_len)?;
        let s1 = self.tensor("akari.select_scratch", 1, scratch_len)?;
        let ids = if count > 0 {
            let bytes: Vec<u8> = sel.penalised.iter().flat_map(|t| t.to_le_bytes()).collect();
            // As for the token ids: the write lands at the next submission, so what was
            // recorded before goes first.
            let mut pending = self.pending();
            self.flush(&mut pending)?;
            let mut ids = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
            if ids.size() < bytes.len() as u64 {
                *ids = self
                    .ctx
                    .f32_buffer("akari.set_aside", count.next_power_of_two())?;
            }
            self.ctx.queue.write_buffer(&ids, 0, &bytes);
            Some(ids.clone())
        } else {
            None
        };
        let buffers = select::Buffers {
            logits: x.buffer(),
            set_aside: ids.as_ref().map(|b| (b, count)),
            scratch: [s0.buffer(), s1.buffer()],
            out: out.buffer(),
        };
        self.record(None, |ctx, rec| select::encode(ctx, rec, &buffers, n, k))?;
        Ok(Ok(RecordedSelection {
            out,
            len,
            n,
            k,
            penalised: sel.penalised.clone(),
        }))
    }

    /// Takes everything recorded for the read that ends a forward pass, with its statistics.
    fn take_pending(&self) -> (Recording, ReadStats) {
        let mut p = self.pending();
        let rec = p.take().unwrap_or_else(|| Recording::new(&self.ctx));
        let stats = ReadStats {
            started: p.started.take(),
            recording: std::mem::take(&mut p.recording),
            dispatches: std::mem::take(&mut p.dispatches),
            wait: web_time::Instant::now(),
        };
        (rec, stats)
    }

    /// Submits what is recorded so far, if anything.
    fn flush(&self, pending: &mut Pending) -> Result<()> {
        if let Some(rec) = pending.take() {
            if rec.dispatches() > 0 {
                self.ctx.submit("forward", rec)?;
            }
        }
        Ok(())
    }

    /// Makes the step buffer hold `pos` for the dispatches recorded next. A write reaches
    /// the buffer at the next submission, so work recorded that reads it for another
    /// position is submitted first (work that does not read it, such as a step's embedding
    /// and first projections, stays in the same submission).
    fn set_pos(&self, pending: &mut Pending, pos: usize) -> Result<()> {
        if pending.pos != Some(pos) {
            if pending.reads_step {
                self.flush(pending)?;
            }
            let pos = u32::try_from(pos)
                .map_err(|_| Error::InvalidArgument(format!("position {pos} is too large")))?;
            self.ctx.queue.write_buffer(
                &self.step,
                0,
                &[pos, 0, 0, 0].map(u32::to_le_bytes).concat(),
            );
            pending.pos = Some(pos as usize);
        }
        Ok(())
    }

    /// Runs `f` on the pending recording (at `pos`, for kernels that read the step buffer),
    /// starting one if none is pending, and submits it once it is long enough.
    fn record(
        &self,
        pos: Option<usize>,
        f: impl FnOnce(&GpuContext, &mut Recording) -> Result<(), GpuError>,
    ) -> Result<()> {
        let t0 = web_time::Instant::now();
        let mut pending = self.pending();
        pending.started.get_or_insert(t0);
        if let Some(pos) = pos {
            self.set_pos(&mut pending, pos)?;
            pending.reads_step = true;
        }
        let rec = pending.rec.get_or_insert_with(|| Recording::new(&self.ctx));
        let before = rec.dispatches();
        f(&self.ctx, rec)?;
        let added = rec.dispatches() - before;
        if self.submit_every > 0
            && rec.dispatches() >= self.submit_every
            && self.in_flight.load(Ordering::Relaxed) == 0
        {
            self.flush(&mut pending)?;
        }
        pending.dispatches += added;
        pending.recording += t0.elapsed();
        Ok(())
    }

    fn tensor(&self, label: &str, rows: usize, cols: usize) -> Result<GpuTensor> {
        let len = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::InvalidArgument(format!("{label}: {rows}x{cols} overflows")))?;
        let size = (len.max(1) * 4) as u64;
        let reused = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&size)
            .and_then(Vec::pop);
        let buffer = match reused {
            Some(b) => b,
            None => self.ctx.f32_buffer(label, len)?,
        };
        Ok(GpuTensor {
            buffer: Some(buffer),
            rows,
            cols,
            pool: self.pool.clone(),
            rope: Mutex::new(None),
            quantized: None,
            combine: Mutex::new(None),
        })
    }

    /// `silu(x · gateᵀ) · (x · upᵀ)`, whatever the matrices hold ([`Backend::matmul_glu`]
    /// refuses matrices holding a folded norm; `norm_matmul_glu` knows what they hold).
    fn glu_of(&self, x: &GpuTensor, gate: &GpuMatrix, up: &GpuMatrix) -> Result<GpuTensor> {
        self.settle(x)?;
        Self::check_cols(x, gate.cols(), "matmul input")?;
        if up.rows() != gate.rows() || up.cols() != gate.cols() {
            return Err(shape(
                "up projection",
                vec![gate.rows(), gate.cols()],
                vec![up.rows(), up.cols()],
            ));
        }
        if up.format() != gate.format() {
            // The fused kernel reads both with one format's code.
            let mut r = self.matmul_many(x, &[(gate, None), (up, None)])?;
            let (Some(u), Some(g)) = (r.pop(), r.pop()) else {
                return Err(Error::InvalidArgument(
                    "gate/up projection returned the wrong count".into(),
                ));
            };
            return self.silu_mul(&g, &u);
        }
        self.glu(x, gate, up, None)
    }

    /// `silu(x·gateᵀ)·(x·upᵀ)` in one GEMV (gate and up of one format and shape), the input
    /// normalised first when `norm` is given.
    fn glu(
        &self,
        x: &GpuTensor,
        gate: &GpuMatrix,
        up: &GpuMatrix,
        norm: Option<gemv::Norm<'_>>,
    ) -> Result<GpuTensor> {
        Self::check_cols(x, gate.cols(), "matmul input")?;
        let mut out = self.tensor("akari.glu", x.rows, gate.rows())?;
        // One token: write the output quantised too, for the down projection.
        let quantized = if x.rows == 1 && gemv::quantizes_glu(&self.ctx, gate) {
            let words = gate.rows() / 32 * gemv::QUANTIZED_BLOCK_WORDS;
            Some(self.tensor("akari.glu.quantized", 1, words)?)
        } else {
            None
        };
        self.record(None, |ctx, rec| {
            gemv::encode_tokens(
                ctx,
                rec,
                gate,
                x.buffer(),
                norm,
                Epilogue::Glu {
                    up,
                    quantized: quantized.as_ref().map(GpuTensor::buffer),
                },
                out.buffer(),
                x.rows,
            )
        })?;
        out.quantized = quantized.map(Box::new);
        Ok(out)
    }

    /// Applies a rotation or merge still pending on `t` (see [`GpuTensor`]).
    fn settle(&self, t: &GpuTensor) -> Result<()> {
        let combine = t.combine.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = combine {
            c.check()?;
            self.record(None, |ctx, rec| {
                attention::encode_combine(ctx, rec, &c.scratch, t.buffer(), c.dims, c.chunks)
            })?;
        }
        let pending = t.rope.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(p) = pending {
            self.record(Some(p.pos), |ctx, rec| {
                rope::encode(ctx, rec, t.buffer(), &p.table, &self.step, t.rows, p.heads)
            })?;
        }
        Ok(())
    }

    /// `x` feeds `w`, and `bias` has one value per output row.
    fn check_matmul(x: &GpuTensor, w: &GpuMatrix, bias: Option<&GpuVector>) -> Result<()> {
        Self::check_cols(x, w.cols(), "matmul input")?;
        if let Some(b) = bias {
            if b.len != w.rows() {
                return Err(shape("bias", vec![w.rows()], vec![b.len]));
            }
        }
        Ok(())
    }

    fn check_cols(x: &GpuTensor, cols: usize, what: &str) -> Result<()> {
        if x.cols != cols {
            return Err(shape(what, vec![x.rows, cols], vec![x.rows, x.cols]));
        }
        Ok(())
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Matrix = GpuMatrix;
    type Vector = GpuVector;
    type Rope = GpuRope;
    type KvCache = GpuKvCache;
    type Selected = GpuSelected;

    fn name(&self) -> &'static str {
        NAME
    }

    fn supports(&self, _format: QuantFormat) -> bool {
        true
    }

    fn upload_matrix(&self, m: Matrix) -> Result<GpuMatrix> {
        Ok(self.ctx.upload_matrix(&m)?)
    }

    fn upload_vector(&self, v: Vec<f32>) -> Result<GpuVector> {
        Ok(GpuVector {
            buffer: self.ctx.storage_buffer("akari.vector", &f32_bytes(&v))?,
            len: v.len(),
        })
    }

    fn upload_rope(&self, tables: RopeTables) -> Result<GpuRope> {
        let mut both = tables.cos;
        both.extend_from_slice(&tables.sin);
        Ok(GpuRope {
            table: rope::Table {
                buffer: self
                    .ctx
                    .storage_buffer("the rope tables", &f32_bytes(&both))?,
                half: tables.half,
                len: tables.len,
            },
        })
    }

    fn new_kv_cache(&self, cfg: &ModelConfig, max_seq: usize) -> Result<GpuKvCache> {
        let dtype = self.ctx.kv_cache_dtype();
        let per_layer = cfg
            .kv_dim()
            .checked_mul(max_seq)
            .and_then(|n| n.checked_mul(dtype.bytes()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("a cache of {max_seq} tokens is too large"))
            })?;
        let layers = (0..cfg.num_layers)
            .map(|_| {
                Ok((
                    self.ctx
                        .bytes_buffer("one layer of the KV cache (keys)", per_layer)?,
                    self.ctx
                        .bytes_buffer("one layer of the KV cache (values)", per_layer)?,
                ))
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        let scratch = self.ctx.f32_buffer(
            "attention scratch",
            attention::scratch_len(cfg.num_heads, cfg.head_dim),
        )?;
        Ok(GpuKvCache {
            layers,
            dtype,
            scratch,
            scratch_writes: Arc::new(AtomicU64::new(0)),
            max_seq,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        })
    }

    fn embed(&self, table: &GpuMatrix, tokens: &[u32]) -> Result<GpuTensor> {
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= table.rows()) {
            return Err(Error::InvalidArgument(format!(
                "token id {t} is outside the embedding of {} rows",
                table.rows()
            )));
        }
        let out = self.tensor("akari.embed", tokens.len(), table.cols())?;
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        // The ids reach their buffer at the next submission: submit what was recorded with
        // the previous ids first.
        let ids = {
            let mut pending = self.pending();
            self.flush(&mut pending)?;
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            if ids.size() < bytes.len() as u64 {
                *ids = self.ctx.f32_buffer("akari.token_ids", tokens.len())?;
            }
            self.ctx.queue.write_buffer(&ids, 0, &bytes);
            ids.clone()
        };
        self.record(None, |ctx, rec| {
            embed::encode(ctx, rec, table, &ids, tokens.len(), out.buffer())
        })?;
        Ok(out)
    }

    fn rms_norm(&self, x: &GpuTensor, w: &GpuVector, eps: f32) -> Result<GpuTensor> {
        self.settle(x)?;
        Self::check_cols(x, w.len, "rms_norm input")?;
        let out = self.tensor("akari.rms_norm", x.rows, x.cols)?;
        self.record(None, |ctx, rec| {
            rms_norm::encode(
                ctx,
                rec,
                x.buffer(),
                &w.buffer,
                out.buffer(),
                x.rows,
                x.cols,
                eps,
            )
        })?;
        Ok(out)
    }

    fn matmul(&self, x: &GpuTensor, w: &GpuMatrix, bias: Option<&GpuVector>) -> Result<GpuTensor> {
        self.settle(x)?;
        Self::check_matmul(x, w, bias)?;
        let out = self.tensor("akari.matmul", x.rows, w.rows())?;
        let epilogue = Epilogue::Store {
            bias: bias.map(|b| &b.buffer),
        };
        self.record(None, |ctx, rec| {
            gemv::encode_tokens(
                ctx,
                rec,
                w,
                x.buffer(),
                None,
                epilogue,
                out.buffer(),
                x.rows,
            )
        })?;
        Ok(out)
    }

    fn norm_matmul_many(
        &self,
        x: &GpuTensor,
        norm: &GpuVector,
        eps: f32,
        ws: &[(&GpuMatrix, Option<&GpuVector>)],
    ) -> Result<Vec<GpuTensor>> {
        self.settle(x)?;
        // One token: each GEMV normalises its input itself (no rms_norm dispatch).
        let one_token = x.rows == 1
            && norm.len == x.cols
            && ws.iter().all(|(w, _)| gemv::fuses_norm(&self.ctx, w));
        let fused = if one_token {
            for (w, bias) in ws {
                Self::check_matmul(x, w, *bias)?;
            }
            self.fused(ws, norm)?
        } else {
            None
        };
        // f16 rows outside the fused copy (the lm_head, which may be the embedding too) hold
        // no folded norm weight, and an f16 GEMV that normalises reads that weight beside
        // every weight word (5 % slower on an H100 when q/k/v and gate/up did): the norm's
        // own pass is cheaper.
        let unfolded_f16 =
            fused.is_none() && ws.iter().any(|(w, _)| w.format() == QuantFormat::F16);
        if !one_token || unfolded_f16 {
            let h = self.rms_norm(x, norm, eps)?;
            return self.matmul_many(&h, ws);
        }
        let norm = |folded| {
            Some(gemv::Norm {
                weight: &norm.buffer,
                eps,
                folded,
            })
        };
        if let Some(f) = fused {
            let norm = norm(f.norm_folded);
            let [r0, r1, r2] = f.rows;
            let outs = [
                self.tensor("akari.matmul", 1, r0)?,
                self.tensor("akari.matmul", 1, r1)?,
                self.tensor("akari.matmul", 1, r2)?,
            ];
            let epilogue = Epilogue::Split {
                bias: f.bias.as_ref(),
                rows: [r0, r0 + r1],
                outputs: [outs[1].buffer(), outs[2].buffer()],
            };
            self.record(None, |ctx, rec| {
                gemv::encode_tokens(
                    ctx,
                    rec,
                    &f.matrix,
                    x.buffer(),
                    norm,
                    epilogue,
                    outs[0].buffer(),
                    1,
                )
            })?;
            return Ok(outs.into());
        }
        ws.iter()
            .map(|(w, bias)| {
                let out = self.tensor("akari.matmul", 1, w.rows())?;
                let epilogue = Epilogue::Store {
                    bias: bias.map(|b| &b.buffer),
                };
                self.record(None, |ctx, rec| {
                    let norm = norm(false);
                    gemv::encode_tokens(ctx, rec, w, x.buffer(), norm, epilogue, out.buffer(), 1)
                })?;
                Ok(out)
            })
            .collect()
    }

    fn norm_matmul_glu(
        &self,
        x: &GpuTensor,
        norm: &GpuVector,
        eps: f32,
        gate: &GpuMatrix,
        up: &GpuMatrix,
    ) -> Result<GpuTensor> {
        self.settle(x)?;
        let fused = x.rows == 1
            && norm.len == x.cols
            && gemv::fuses_norm(&self.ctx, gate)
            && up.format() == gate.format()
            && up.rows() == gate.rows()
            && up.cols() == gate.cols();
        if !fused {
            // After a one-token step folded the norm into gate and up, a prompt normalises
            // with unit weights.
            let holds = |m| self.held_norm(m).as_ref() == Some(&norm.buffer);
            let h = if holds(gate) && holds(up) {
                self.rms_norm(x, &self.ones(x.cols)?, eps)?
            } else {
                self.rms_norm(x, norm, eps)?
            };
            return self.glu_of(&h, gate, up);
        }
        // Checked before a fold changes the weights.
        Self::check_cols(x, gate.cols(), "matmul input")?;
        let folded = self.folds_norm(&[gate, up]);
        if folded {
            self.fold_norm(&[gate, up], norm)?;
        }
        let norm = gemv::Norm {
            weight: &norm.buffer,
            eps,
            folded,
        };
        self.glu(x, gate, up, Some(norm))
    }

    fn matmul_add(&self, x: &mut GpuTensor, a: &GpuTensor, w: &GpuMatrix) -> Result<()> {
        self.settle(x)?;
        Self::check_cols(a, w.cols(), "matmul input")?;
        Self::check_cols(x, w.rows(), "residual")?;
        if a.rows != x.rows {
            return Err(shape("residual rows", vec![x.rows], vec![a.rows]));
        }
        // Attention partials the GEMV can merge as it loads them (the o projection).
        let combine = {
            let mut c = a.combine.lock().unwrap_or_else(|p| p.into_inner());
            match &*c {
                Some(p)
                    if a.rows == 1 && gemv::folds_combine(&self.ctx, w, p.dims.heads, p.chunks) =>
                {
                    c.take()
                }
                _ => None,
            }
        };
        if let Some(c) = combine {
            c.check()?;
            x.quantized = None;
            let epilogue = Epilogue::AccumulateCombined {
                chunks: c.chunks,
                head_dim: c.dims.head_dim,
            };
            let done = self.record(None, |ctx, rec| {
                gemv::encode_tokens(ctx, rec, w, &c.scratch, None, epilogue, x.buffer(), 1)
            });
            if done.is_err() {
                // Still pending: a later use must merge the partials itself.
                *a.combine.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
            }
            return done;
        }
        self.settle(a)?;
        x.quantized = None;
        let epilogue = match &a.quantized {
            Some(q) if a.rows == 1 && gemv::reads_quantized(&self.ctx, w) => {
                Epilogue::AccumulateQuantized { input: q.buffer() }
            }
            _ => Epilogue::Accumulate,
        };
        self.record(None, |ctx, rec| {
            gemv::encode_tokens(ctx, rec, w, a.buffer(), None, epilogue, x.buffer(), a.rows)
        })
    }

    fn matmul_glu(&self, x: &GpuTensor, gate: &GpuMatrix, up: &GpuMatrix) -> Result<GpuTensor> {
        if self.held_norm(gate).is_some() || self.held_norm(up).is_some() {
            return Err(GpuError::NotApplicable {
                op: "matmul_glu",
                what: "gate or up holds a norm's weight in its columns (folded by \
                       norm_matmul_glu), so only norm_matmul_glu gives their products",
            }
            .into());
        }
        self.glu_of(x, gate, up)
    }

    fn rope(&self, x: &mut GpuTensor, heads: usize, rope: &GpuRope, pos: usize) -> Result<()> {
        x.quantized = None;
        let t = &rope.table;
        let hd = 2 * t.half;
        if heads * hd != x.cols {
            return Err(shape(
                "rope input",
                vec![x.rows, heads * hd],
                vec![x.rows, x.cols],
            ));
        }
        if pos + x.rows > t.len {
            return Err(Error::ContextOverflow {
                prompt: pos + x.rows,
                context: t.len,
                reserve: 0,
            });
        }
        // Deferred: attention rotates q and k as it reads them, saving two dispatches a
        // layer; anything else settles the rotation first.
        self.settle(x)?;
        *x.rope.lock().unwrap_or_else(|p| p.into_inner()) = Some(PendingRope {
            table: t.clone(),
            heads,
            pos,
        });
        Ok(())
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        cache: &mut GpuKvCache,
        layer: usize,
        pos: usize,
    ) -> Result<GpuTensor> {
        let (hd, kvh, heads) = (cache.head_dim, cache.kv_heads, cache.heads);
        if pos + q.rows > cache.max_seq {
            return Err(Error::ContextOverflow {
                prompt: pos + q.rows,
                context: cache.max_seq,
                reserve: 0,
            });
        }
        Self::check_cols(q, heads * hd, "attention query")?;
        Self::check_cols(k, kvh * hd, "attention key")?;
        Self::check_cols(v, kvh * hd, "attention value")?;
        if k.rows != q.rows || v.rows != q.rows {
            return Err(shape(
                "attention key/value rows",
                vec![q.rows],
                vec![k.rows],
            ));
        }
        let (kc, vc) = cache.layers.get(layer).ok_or_else(|| {
            Error::InvalidArgument(format!("layer {layer} is not in the KV cache"))
        })?;
        self.settle(v)?;
        // Fuse the rotation when q and k wait for the same one at this position.
        let qr = {
            let mut qr = q.rope.lock().unwrap_or_else(|p| p.into_inner());
            let mut kr = k.rope.lock().unwrap_or_else(|p| p.into_inner());
            let same = match (&*qr, &*kr) {
                (Some(a), Some(b)) => {
                    a.pos == pos && b.pos == pos && a.table.buffer == b.table.buffer
                }
                _ => false,
            };
            if same {
                kr.take();
                qr.take()
            } else {
                None
            }
        };
        if qr.is_none() {
            self.settle(q)?;
            self.settle(k)?;
        }
        let table = qr.as_ref().map(|p| &p.table);
        let out = self.tensor("akari.attention", q.rows, heads * hd)?;
        let dims = attention::Dims {
            rows: q.rows,
            heads,
            kv_heads: kvh,
            head_dim: hd,
            max_seq: cache.max_seq,
            pos,
        };
        let buffers = attention::Buffers {
            q: q.buffer(),
            k: k.buffer(),
            v: v.buffer(),
            k_cache: kc,
            v_cache: vc,
            kv_dtype: cache.dtype,
            out: out.buffer(),
            scratch: &cache.scratch,
            step: &self.step,
            rope: table,
            defer_combine: true,
        };
        let at = cache.scratch_writes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut deferred = None;
        self.record(Some(pos), |ctx, rec| {
            deferred = attention::encode(ctx, rec, &buffers, dims)?;
            Ok(())
        })?;
        if let Some(chunks) = deferred {
            *out.combine.lock().unwrap_or_else(|p| p.into_inner()) = Some(PendingCombine {
                scratch: cache.scratch.clone(),
                dims,
                chunks,
                writes: cache.scratch_writes.clone(),
                at,
            });
        }
        Ok(out)
    }

    fn silu_mul(&self, gate: &GpuTensor, up: &GpuTensor) -> Result<GpuTensor> {
        self.settle(gate)?;
        self.settle(up)?;
        Self::check_cols(up, gate.cols, "silu_mul")?;
        if up.rows != gate.rows {
            return Err(shape("silu_mul rows", vec![gate.rows], vec![up.rows]));
        }
        let out = self.tensor("akari.silu_mul", gate.rows, gate.cols)?;
        self.record(None, |ctx, rec| {
            elementwise::silu_mul(
                ctx,
                rec,
                gate.buffer(),
                up.buffer(),
                out.buffer(),
                gate.rows * gate.cols,
            )
        })?;
        Ok(out)
    }

    fn add_assign(&self, x: &mut GpuTensor, y: &GpuTensor) -> Result<()> {
        x.quantized = None;
        self.settle(x)?;
        self.settle(y)?;
        Self::check_cols(y, x.cols, "residual")?;
        if y.rows != x.rows {
            return Err(shape("residual rows", vec![x.rows], vec![y.rows]));
        }
        self.record(None, |ctx, rec| {
            elementwise::add_assign(ctx, rec, x.buffer(), y.buffer(), x.rows * x.cols)
        })
    }

    fn last_row(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.settle(x)?;
        let r = x
            .rows
            .checked_sub(1)
            .ok_or_else(|| Error::InvalidArgument("empty tensor".into()))?;
        let out = self.tensor("akari.last_row", 1, x.cols)?;
        let bytes = (x.cols * 4) as u64;
        self.record(None, |_, rec| {
            rec.encoder().copy_buffer_to_buffer(
                x.buffer(),
                r as u64 * bytes,
                out.buffer(),
                0,
                bytes,
            );
            Ok(())
        })?;
        Ok(out)
    }

    /// Submits everything recorded since the last submission and waits for `x`.
    #[cfg(not(target_arch = "wasm32"))]
    fn read(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        pollster::block_on(self.read_async(x))
    }

    /// The browser cannot block on the GPU: [`Backend::read_async`] is the read there.
    #[cfg(target_arch = "wasm32")]
    fn read(&self, _x: &GpuTensor) -> Result<Vec<f32>> {
        Err(Error::Unsupported {
            backend: NAME,
            what: "blocking reads in the browser (use the asynchronous step)".into(),
        })
    }

    async fn read_async(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        self.settle(x)?;
        let (rec, stats) = self.take_pending();
        let out = self
            .ctx
            .submit_and_read_async("read", rec, x.buffer(), x.rows * x.cols)
            .await?;
        stats.log();
        Ok(out)
    }

    /// Selects on the device and reads back only the candidates: 256 bytes for greedy,
    /// about 2 KB for `k = 256`, instead of the row (600 KB for 151936 tokens).
    #[cfg(not(target_arch = "wasm32"))]
    fn read_candidates(&self, x: GpuTensor, sel: &Selection) -> Result<Candidates> {
        pollster::block_on(self.read_candidates_async(x, sel))
    }

    #[cfg(target_arch = "wasm32")]
    fn read_candidates(&self, _x: GpuTensor, _sel: &Selection) -> Result<Candidates> {
        Err(Error::Unsupported {
            backend: NAME,
            what: "blocking reads in the browser (use the asynchronous step)".into(),
        })
    }

    async fn read_candidates_async(&self, x: GpuTensor, sel: &Selection) -> Result<Candidates> {
        let out = self.select_candidates(x, sel).await;
        if out.is_err() {
            // What was recorded for this step must not run with the next one.
            self.discard();
        }
        out
    }

    fn runs_ahead(&self) -> bool {
        // Kernel timings cover one submission at a time.
        self.run_ahead && !self.ctx.profiling()
    }

    fn select_ahead(&self, x: GpuTensor, sel: &Selection) -> Result<GpuSelected> {
        let selection = match self.record_selection(x, sel) {
            Ok(Ok(selection)) => selection,
            Ok(Err(_)) => {
                self.discard();
                return Err(Error::InvalidArgument(format!(
                    "{} candidates cannot be selected on the device (1 to {})",
                    sel.k,
                    select::MAX_K
                )));
            }
            Err(e) => {
                self.discard();
                return Err(e);
            }
        };
        self.submit_selection(selection)
    }

    fn embed_selected(&self, table: &GpuMatrix, s: &GpuSelected) -> Result<GpuTensor> {
        let out = self.tensor("akari.embed", 1, table.cols())?;
        // The best id is the output's first word, always a row of the logits' table.
        self.record(None, |ctx, rec| {
            embed::encode(ctx, rec, table, s.selection.out.buffer(), 1, out.buffer())
        })?;
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn read_selected(&self, s: GpuSelected) -> Result<Candidates> {
        pollster::block_on(self.read_selected_async(s))
    }

    #[cfg(target_arch = "wasm32")]
    fn read_selected(&self, _s: GpuSelected) -> Result<Candidates> {
        Err(Error::Unsupported {
            backend: NAME,
            what: "blocking reads in the browser (use the asynchronous step)".into(),
        })
    }

    async fn read_selected_async(&self, s: GpuSelected) -> Result<Candidates> {
        let words = self.ctx.finish_read(s.read, u32::from_le_bytes).await?;
        s.stats.log();
        Ok(s.selection.decode(&words))
    }

    fn discard(&self) {
        self.pending().take();
    }
}
