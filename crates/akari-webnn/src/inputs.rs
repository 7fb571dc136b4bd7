//! The per-call inputs of a traced graph, computed on the host (see [`crate::backend`]).

use crate::backend::MASKED;
use akari_core::backend::RopeTables;
use akari_core::{Error, Result};

/// Values for one dispatch of a graph of `rows` rows.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInputs {
    pub ids: Vec<i32>,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub mask: Vec<f32>,
    pub write: Vec<f32>,
    pub keep: Vec<f32>,
    pub last: i32,
}

/// Inputs that feed `tokens` at `pos..` through a graph of `rows ≥ tokens.len()` rows over a
/// cache of `ctx` positions. Padding rows write nothing and see position 0..=pos only.
pub fn step_inputs(
    tokens: &[u32],
    pos: usize,
    rows: usize,
    ctx: usize,
    rope: &RopeTables,
) -> Result<StepInputs> {
    let n = tokens.len();
    if n == 0 || n > rows {
        return Err(Error::InvalidArgument(format!(
            "{n} tokens do not fit a graph of {rows} rows"
        )));
    }
    if pos + n > ctx || pos + n > rope.len {
        return Err(Error::ContextOverflow {
            prompt: pos + n,
            context: ctx.min(rope.len),
            reserve: 0,
        });
    }
    let half = rope.half;
    let mut s = StepInputs {
        ids: vec![0; rows],
        cos: vec![0.0; rows * half],
        sin: vec![0.0; rows * half],
        mask: vec![MASKED; rows * ctx],
        write: vec![0.0; rows * ctx],
        keep: vec![1.0; ctx],
        last: (n - 1) as i32,
    };
    for i in 0..rows {
        let real = i < n;
        // A padding row repeats the last real token at its position; it writes nothing.
        let (token, p) = if real {
            (tokens[i], pos + i)
        } else {
            (tokens[n - 1], pos + n - 1)
        };
        s.ids[i] = token as i32;
        s.cos[i * half..(i + 1) * half].copy_from_slice(&rope.cos[p * half..(p + 1) * half]);
        s.sin[i * half..(i + 1) * half].copy_from_slice(&rope.sin[p * half..(p + 1) * half]);
        s.mask[i * ctx..i * ctx + p + 1].fill(0.0);
        if real {
            s.write[i * ctx + p] = 1.0;
            s.keep[p] = 0.0;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_padded_chunk_writes_only_real_rows() {
        let rope = RopeTables {
            half: 1,
            len: 8,
            cos: (0..8).map(|p| p as f32).collect(),
            sin: (0..8).map(|p| -(p as f32)).collect(),
        };
        let s = step_inputs(&[5, 6], 3, 4, 8, &rope).unwrap();
        assert_eq!(s.ids, [5, 6, 6, 6]);
        assert_eq!(s.cos, [3.0, 4.0, 4.0, 4.0]);
        assert_eq!(s.last, 1);
        assert_eq!(s.keep, [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(&s.write[..8], &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(s.write[16..].iter().all(|&w| w == 0.0));
        // Row 1 (position 4) sees 0..=4.
        assert_eq!(s.mask[8 + 4], 0.0);
        assert_eq!(s.mask[8 + 5], MASKED);
        assert!(step_inputs(&[1, 2], 7, 4, 8, &rope).is_err());
    }
}
