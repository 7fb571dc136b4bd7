//! Token selection: penalties, then greedy or temperature sampling with top-k, top-p and min-p.

/// Sampling settings; the defaults are greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no limit.
    pub top_k: usize,
    /// 1.0 means no limit.
    pub top_p: f32,
    /// 0.0 means no limit.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of tokens already seen; 1.0 is off.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already seen.
    pub presence_penalty: f32,
    /// Subtracted per occurrence.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens the penalties look at (0: all).
    pub penalty_window: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 64,
            seed: 0,
        }
    }
}

/// SplitMix64: tiny, and gives the same stream on every platform (wasm included), which
/// "same seed ⇒ same output" needs.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        let rng = Rng(cfg.seed);
        Sampler { cfg, rng }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let c = &self.cfg;
        if c.repetition_penalty == 1.0 && c.presence_penalty == 0.0 && c.frequency_penalty == 0.0 {
            return;
        }
        let window = if c.penalty_window == 0 {
            history
        } else {
            &history[history.len().saturating_sub(c.penalty_window)..]
        };
        let mut counts: std::collections::HashMap<u32, u32> = Default::default();
        for &t in window {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &n) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if c.repetition_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / c.repetition_penalty
                } else {
                    *l * c.repetition_penalty
                };
            }
            *l -= c.presence_penalty + c.frequency_penalty * n as f32;
        }
    }

    /// Picks the next token. `history` is every token so far (prompt and reply).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_penalties(logits, history);
        let c = &self.cfg;
        if c.temperature <= 0.0 || c.top_k == 1 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let k = if c.top_k == 0 {
            cand.len()
        } else {
            c.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // Softmax at the sampling temperature.
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|(_, v)| (((v - max) / c.temperature) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = probs[0] * c.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect()
    }

    #[test]
    fn greedy_picks_the_maximum() {
        let mut s = Sampler::new(SamplerConfig::default());
        let mut l = logits();
        let best = argmax(&l);
        assert_eq!(s.sample(&mut l, &[]), best);
        assert_eq!(l[best as usize], 9.9);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seeds_differ() {
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                temperature: 1.5,
                seed,
                ..Default::default()
            });
            (0..64)
                .map(|_| s.sample(&mut logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let best = argmax(&logits());
        for cfg in [
            SamplerConfig {
                temperature: 1.0,
                top_k: 1,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                top_p: 1e-6,
                seed: 3,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                min_p: 0.999,
                seed: 5,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(cfg);
            for _ in 0..20 {
                assert_eq!(s.sample(&mut logits(), &[]), best);
            }
        }
    }

    #[test]
    fn top_k_limits_candidates() {
        let mut l = logits();
        let mut order: Vec<u32> = (0..100).collect();
        order.sort_by(|a, b| l[*b as usize].total_cmp(&l[*a as usize]));
        let top3 = &order[..3];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 5.0,
            top_k: 3,
            seed: 1,
            ..Default::default()
        });
        for _ in 0..100 {
            l = logits();
            assert!(top3.contains(&s.sample(&mut l, &[])));
        }
    }

    #[test]
    fn penalties_demote_seen_tokens() {
        let best = argmax(&logits());
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 2.0,
            presence_penalty: 1.0,
            ..Default::default()
        });
        let mut l = logits();
        assert_ne!(s.sample(&mut l, &[best]), best);
        let mut s = Sampler::new(SamplerConfig {
            frequency_penalty: 0.2,
            ..Default::default()
        });
        let mut l = logits();
        // 9.9 - 0.2*3 = 9.3 < 9.8
        assert_ne!(s.sample(&mut l, &[best, best, best]), best);
    }
}
