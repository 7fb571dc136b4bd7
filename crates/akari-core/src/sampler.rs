//! Token selection: penalties, then greedy or temperature sampling with top-k, top-p and min-p.

/// Sampling settings; the defaults are greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no limit beyond [`MAX_CANDIDATES`], which also caps larger values.
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

/// The most candidates a [`Selection`] asks for, and how many it asks for when `top_k` is
/// 0 (no limit): sampling then draws from the 256 most likely tokens, not the whole
/// vocabulary. Past the first few dozen the probabilities are negligible, and a backend reads
/// back 256 candidates instead of the whole row of logits.
pub const MAX_CANDIDATES: usize = 256;

/// What to read back of a row of logits instead of the whole row: the `k` best tokens, once
/// the `penalised` ones are set aside, and the raw logits of those. The sampler applies the
/// penalties to the set-aside logits itself and merges them back, so the result is exactly
/// the full row's (see [`Sampler::pick`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// How many of the best tokens to return (1 for greedy).
    pub k: usize,
    /// Distinct token ids in ascending order, whose logits the penalties change.
    pub penalised: Vec<u32>,
}

/// What a backend returns for a [`Selection`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidates {
    /// The `k` best tokens not set aside, best first; equal logits in ascending id order, as
    /// [`argmax`] breaks ties. Fewer when the row has fewer tokens.
    pub top: Vec<(u32, f32)>,
    /// The raw logit of each set-aside token inside the row, in [`Selection::penalised`]
    /// order (ids past the row's end are left out).
    pub penalised: Vec<(u32, f32)>,
}

/// Rank order of candidates: higher logit first, then lower id. NaN ranks as `-inf`, and
/// `-0.0` equals `0.0`, as comparisons in [`argmax`] have it.
pub fn rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    let v = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    v(b.1)
        .partial_cmp(&v(a.1))
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

impl Selection {
    /// The candidates of a whole row of `logits`, selected on the host: the reference every
    /// backend's selection must equal.
    pub fn select(&self, logits: &[f32]) -> Candidates {
        let set_aside = |i: u32| self.penalised.binary_search(&i).is_ok();
        let mut top: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .filter(|&(i, _)| !set_aside(i))
            .collect();
        let k = self.k.min(top.len());
        if k == 0 {
            top.clear();
        } else if k < top.len() {
            top.select_nth_unstable_by(k - 1, rank);
            top.truncate(k);
        }
        top.sort_by(rank);
        let penalised = self
            .penalised
            .iter()
            .filter_map(|&i| logits.get(i as usize).map(|&v| (i, v)))
            .collect();
        Candidates { top, penalised }
    }
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

    fn greedy(&self) -> bool {
        self.cfg.temperature <= 0.0 || self.cfg.top_k == 1
    }

    /// How many candidates sampling draws from.
    fn candidate_count(&self) -> usize {
        if self.greedy() {
            1
        } else if self.cfg.top_k == 0 {
            MAX_CANDIDATES
        } else {
            self.cfg.top_k.min(MAX_CANDIDATES)
        }
    }

    /// How often each token the penalties look at occurs; empty when they are off.
    fn penalty_counts(&self, history: &[u32]) -> std::collections::BTreeMap<u32, u32> {
        let c = &self.cfg;
        let mut counts = std::collections::BTreeMap::new();
        if c.repetition_penalty == 1.0 && c.presence_penalty == 0.0 && c.frequency_penalty == 0.0 {
            return counts;
        }
        let window = if c.penalty_window == 0 {
            history
        } else {
            &history[history.len().saturating_sub(c.penalty_window)..]
        };
        for &t in window {
            *counts.entry(t).or_default() += 1;
        }
        counts
    }

    /// A logit after the penalties, for a token seen `n` times.
    fn penalise(&self, mut l: f32, n: u32) -> f32 {
        let c = &self.cfg;
        if c.repetition_penalty != 1.0 {
            l = if l > 0.0 {
                l / c.repetition_penalty
            } else {
                l * c.repetition_penalty
            };
        }
        l - (c.presence_penalty + c.frequency_penalty * n as f32)
    }

    /// What the next [`Sampler::pick`] needs from the logits: the argmax when greedy, else
    /// `top_k` candidates (at most, and when `top_k` is 0, [`MAX_CANDIDATES`]); the tokens of
    /// `history` the penalties change are set aside. `history` is every token so far.
    pub fn selection(&self, history: &[u32]) -> Selection {
        Selection {
            k: self.candidate_count(),
            penalised: self.penalty_counts(history).into_keys().collect(),
        }
    }

    /// Picks the next token from what a backend returned for [`Sampler::selection`] of the
    /// same `history`. The penalised logits are computed here and merged with the other
    /// candidates: the best `k` of both are the best `k` of the penalised row.
    pub fn pick(&mut self, cands: &Candidates, history: &[u32]) -> u32 {
        let counts = self.penalty_counts(history);
        let mut all = cands.top.clone();
        all.extend(cands.penalised.iter().map(|&(id, l)| {
            let n = counts.get(&id).copied().unwrap_or(0);
            (id, self.penalise(l, n))
        }));
        all.sort_by(rank);
        let first = all.first().map_or(0, |c| c.0);
        if self.greedy() {
            return first;
        }
        let c = &self.cfg;
        let k = self.candidate_count();
        let cand: Vec<(u32, f32)> = all
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .take(k)
            .collect();
        if cand.is_empty() {
            return first;
        }
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

    /// Picks the next token from a whole row of logits. `history` is every token so far
    /// (prompt and reply). The same as [`Sampler::pick`] on the row's [`Selection::select`].
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let cands = self.selection(history).select(logits);
        self.pick(&cands, history)
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
        let l = logits();
        let best = argmax(&l);
        assert_eq!(s.sample(&l, &[]), best);
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
                .map(|_| s.sample(&logits(), &[]))
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
                assert_eq!(s.sample(&logits(), &[]), best);
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
            assert!(top3.contains(&s.sample(&l, &[])));
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
        let l = logits();
        assert_ne!(s.sample(&l, &[best]), best);
        let mut s = Sampler::new(SamplerConfig {
            frequency_penalty: 0.2,
            ..Default::default()
        });
        let l = logits();
        // 9.9 - 0.2*3 = 9.3 < 9.8
        assert_ne!(s.sample(&l, &[best, best, best]), best);
    }

    /// Deterministic logits in ±[0.05, 1] with a few repeated values, so ties occur.
    fn rough_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let u = rng.next_f64() as f32;
                let v = (0.05 + 0.95 * u) * if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
                if rng.next_u64() % 4 == 0 {
                    (v * 8.0).round() / 8.0 + 0.01
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn selection_returns_the_best_in_rank_order_lowest_id_first_on_ties() {
        let mut l = rough_logits(1000, 1);
        // A tie for the best value: the lower id comes first, as argmax picks it.
        l[700] = 2.0;
        l[300] = 2.0;
        l[5] = f32::NAN;
        let sel = Selection {
            k: 40,
            penalised: vec![2, 300, 5000],
        };
        let c = sel.select(&l);
        assert_eq!(c.top.len(), 40);
        assert_eq!(c.top[0], (700, 2.0), "300 is set aside");
        assert_eq!(c.penalised, vec![(2, l[2]), (300, 2.0)]);
        let mut all: Vec<(u32, f32)> = l
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .filter(|(i, _)| *i != 2 && *i != 300)
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.retain(|c| !c.1.is_nan());
        assert_eq!(c.top, all[..40].to_vec());
        let greedy = Selection {
            k: 1,
            penalised: vec![],
        };
        assert_eq!(greedy.select(&l).top[0].0, argmax(&l));
    }

    /// Picking from the candidates with the penalties applied on the host equals sampling
    /// from a row with the penalties applied to every logit beforehand.
    #[test]
    fn candidates_with_penalties_give_the_full_rows_tokens() {
        let history: Vec<u32> = (0..300).map(|i| (i * 7919 % 1000) as u32).collect();
        for (i, cfg) in [
            SamplerConfig {
                repetition_penalty: 1.3,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 0.7,
                top_k: 20,
                repetition_penalty: 1.2,
                presence_penalty: 0.1,
                frequency_penalty: 0.05,
                seed: 11,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                top_p: 0.9,
                frequency_penalty: 0.3,
                penalty_window: 0,
                seed: 12,
                ..Default::default()
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut with = Sampler::new(cfg.clone());
            let mut without = Sampler::new(SamplerConfig {
                repetition_penalty: 1.0,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                ..cfg.clone()
            });
            for step in 0..50 {
                let mut l = rough_logits(1000, 100 + step);
                // Seen tokens among the best, so the penalties matter.
                for &t in &history[history.len() - 10..] {
                    l[t as usize] = 1.5;
                }
                let sel = with.selection(&history);
                assert!(!sel.penalised.is_empty());
                let got = with.pick(&sel.select(&l), &history);
                let mut full = l.clone();
                let counts = with.penalty_counts(&history);
                for (&t, &n) in &counts {
                    full[t as usize] = with.penalise(full[t as usize], n);
                }
                let want = without.sample(&full, &[]);
                assert_eq!(got, want, "config {i}, step {step}");
            }
        }
    }
}
