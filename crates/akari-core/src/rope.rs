//! Rotary position embeddings: base frequencies and every scaling kind, as Hugging Face
//! transformers computes them.

use crate::backend::RopeTables;
use crate::config::{ModelConfig, RopeScaling};

/// Rotation frequencies per pair, and the cos/sin multiplier.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeFreqs {
    pub inv_freq: Vec<f32>,
    pub scale: f32,
}

/// The frequency sets a model needs: one, or for longrope a short and a long set with the
/// sequence length at which the long one takes over.
pub struct RopePlan {
    pub short: RopeFreqs,
    /// `(long, switch)`: the long set is used once a sequence grows past `switch` tokens.
    pub long: Option<(RopeFreqs, usize)>,
}

fn base_inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let d = cfg.head_dim as f64;
    (0..cfg.head_dim / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f64).powf(2.0 * i as f64 / d))
        .collect()
}

fn to_f32(v: impl IntoIterator<Item = f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

pub fn plan(cfg: &ModelConfig) -> RopePlan {
    let base = base_inv_freq(cfg);
    let plain = |inv: Vec<f32>| RopeFreqs {
        inv_freq: inv,
        scale: 1.0,
    };
    match &cfg.rope_scaling {
        RopeScaling::None => RopePlan {
            short: plain(to_f32(base)),
            long: None,
        },
        RopeScaling::Linear { factor } => RopePlan {
            short: plain(to_f32(base.iter().map(|f| f / *factor as f64))),
            long: None,
        },
        RopeScaling::FreqFactors(ff) => RopePlan {
            short: plain(to_f32(base.iter().zip(ff).map(|(f, d)| f / *d as f64))),
            long: None,
        },
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let (factor, low, high) = (
                *factor as f64,
                *low_freq_factor as f64,
                *high_freq_factor as f64,
            );
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            let inv = base.iter().map(|&f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            });
            RopePlan {
                short: plain(to_f32(inv)),
                long: None,
            }
        }
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
        } => {
            let set = |factors: &[f32]| RopeFreqs {
                inv_freq: to_f32(base.iter().zip(factors).map(|(f, d)| f / *d as f64)),
                scale: *attention_factor,
            };
            RopePlan {
                short: set(short_factor),
                long: Some((set(long_factor), *original_max_position_embeddings)),
            }
        }
    }
}

impl RopeFreqs {
    /// cos/sin tables for positions `0..len`.
    pub fn tables(&self, len: usize) -> RopeTables {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in 0..len {
            for &f in &self.inv_freq {
                // f32 product, like transformers, so angles round the same way.
                let angle = (pos as f32 * f) as f64;
                cos.push((angle.cos() * self.scale as f64) as f32);
                sin.push((angle.sin() * self.scale as f64) as f32);
            }
        }
        RopeTables {
            half,
            len,
            cos,
            sin,
        }
    }
}

/// Applies the rotation to one head in place (the `rotate_half` pairing: `i` with `i + half`).
pub fn rotate_head(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x0, x1) = (a[i], b[i]);
        a[i] = x0 * cos[i] - x1 * sin[i];
        b[i] = x1 * cos[i] + x0 * sin[i];
    }
}
