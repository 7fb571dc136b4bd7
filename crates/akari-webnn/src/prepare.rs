//! From weights to the two traced graphs and the tensors they read; and which graph runs
//! which tokens. Plain Rust, shared by the browser runtime and the native tests.

use crate::backend::WebNnBackend;
use crate::graph::Graph;
use crate::layout::{HostTensor, Support};
use akari_core::backend::RopeTables;
use akari_core::model::Model;
use akari_core::weights::ModelWeights;
use akari_core::{rope, ModelConfig, Result};
use std::ops::Range;

/// Rows of the prefill graph: a prompt is fed in chunks of this many tokens (the last one
/// padded). Small, since graph memory grows with it; large enough to batch the matmuls.
pub const PREFILL_ROWS: usize = 16;

/// Everything a runtime needs: the graphs, the stored tensors they read as inputs, and the
/// rope tables the host takes its `cos`/`sin` rows from.
pub struct Prepared {
    pub config: ModelConfig,
    pub context: usize,
    pub decode: Graph,
    /// `None` when the context is too short for a chunk; prompts then go token by token.
    pub prefill: Option<Graph>,
    pub prefill_rows: usize,
    pub stored: Vec<HostTensor>,
    pub rope_short: RopeTables,
    /// Longrope's long tables and the length past which they apply.
    pub rope_long: Option<(RopeTables, usize)>,
    /// Quantised matrices dequantised at load (the context's `dequantizeLinear` lacked the
    /// data type).
    pub dequantized: usize,
}

/// Traces the decode and prefill graphs of `cfg` over a cache of `context` tokens.
pub fn prepare(
    cfg: ModelConfig,
    weights: ModelWeights,
    context: usize,
    support: Support,
) -> Result<Prepared> {
    let switch = rope::plan(&cfg).long.map(|(_, s)| s);
    let mut model = Model::load(WebNnBackend::new(support), cfg.clone(), weights, context)?;
    let mut trace = |rows: usize| -> Result<Graph> {
        model.backend().begin_trace(rows);
        let logits = model.trace(rows)?;
        model.backend().end_trace(&logits)
    };
    let decode = trace(1)?;
    let prefill_rows = PREFILL_ROWS.min(context);
    let prefill = if prefill_rows > 1 {
        Some(trace(prefill_rows)?)
    } else {
        None
    };
    let be = model.backend();
    let mut ropes = be.take_ropes().into_iter();
    let rope_short = ropes.next().ok_or_else(|| {
        akari_core::Error::InvalidArgument("the model uploaded no rope tables".into())
    })?;
    let rope_long = match (ropes.next(), switch) {
        (Some(t), Some(s)) => Some((t, s)),
        _ => None,
    };
    Ok(Prepared {
        config: cfg,
        context,
        decode,
        prefill,
        prefill_rows,
        stored: be.take_stored(),
        rope_short,
        rope_long,
        dequantized: be.dequantized_at_load(),
    })
}

/// One dispatch: these tokens, on the prefill graph or the decode graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub tokens: Range<usize>,
    pub prefill: bool,
    /// Whether longrope's long tables apply.
    pub long_rope: bool,
}

/// The decoder feeds a forward call in chunks of this many tokens and picks the rope tables
/// per chunk (`akari_core::model`); the plan follows it so longrope switches at the same
/// token as the other backends.
const MODEL_CHUNK: usize = 256;

/// The dispatches that feed `n` tokens at `pos`.
pub fn plan(
    n: usize,
    pos: usize,
    prefill_rows: Option<usize>,
    switch: Option<usize>,
) -> Vec<Dispatch> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + MODEL_CHUNK).min(n);
        let long_rope = switch.is_some_and(|s| pos + end > s);
        let mut i = start;
        while i < end {
            let (len, prefill) = match prefill_rows {
                Some(rows) if end - i > 1 => ((end - i).min(rows), true),
                _ => (1, false),
            };
            out.push(Dispatch {
                tokens: i..i + len,
                prefill,
                long_rope,
            });
            i += len;
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_go_in_chunks_and_single_tokens_alone() {
        let p = plan(35, 0, Some(16), None);
        let r: Vec<_> = p.iter().map(|d| (d.tokens.clone(), d.prefill)).collect();
        assert_eq!(r, [(0..16, true), (16..32, true), (32..35, true)]);
        assert!(!plan(1, 7, Some(16), None)[0].prefill);
        assert_eq!(
            plan(17, 0, Some(16), None)[1],
            Dispatch {
                tokens: 16..17,
                prefill: false,
                long_rope: false
            }
        );
        assert!(plan(4, 0, None, None).iter().all(|d| !d.prefill));
        // Longrope decides per decoder chunk by where the chunk ends.
        assert!(plan(10, 30, Some(16), Some(32))[0].long_rope);
        assert!(!plan(2, 30, Some(16), Some(32))[0].long_rope);
    }
}
