//! The generation loop: prefill, sample, detokenise, split reasoning from the answer, stop.

use crate::model::LanguageModel;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};
use std::ops::ControlFlow;
use web_time::Instant;

pub const THINK_OPEN: &str = "<think>";
pub const THINK_CLOSE: &str = "</think>";

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampler: SamplerConfig,
    /// Token ids that end the reply (EOS, end-of-turn).
    pub stop_ids: Vec<u32>,
    /// Text that ends the reply; it is not part of the output.
    pub stop_strings: Vec<String>,
    /// The prompt leaves the model inside a `<think>` block (DeepSeek-R1's template does).
    pub reasoning_open: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 512,
            sampler: SamplerConfig::default(),
            stop_ids: Vec::new(),
            stop_strings: Vec::new(),
            reasoning_open: false,
        }
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<'a> {
    /// New text; `reasoning` when it belongs to the `<think>` block.
    Text {
        text: &'a str,
        reasoning: bool,
    },
    ReasoningStart,
    ReasoningEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-turn or end-of-sequence token.
    EndOfTurn,
    StopString,
    MaxTokens,
    ContextFull,
    Cancelled,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            StopReason::EndOfTurn => "end_of_turn",
            StopReason::StopString => "stop_string",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, how many were already in the cache from an earlier turn.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub ttft_ms: f64,
    pub prefill_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_ms: f64,
    pub decode_tok_s: f64,
    /// Wall time spent in reasoning, if the reply had a `<think>` block.
    pub reasoning_ms: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Completion {
    /// The answer, without the reasoning block or stop text.
    pub text: String,
    /// The `<think>` block's content, if there was one.
    pub reasoning: Option<String>,
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub stats: Stats,
}

/// Splits a text stream at `<think>` / `</think>`, holding back text that may be the start
/// of a tag split across tokens.
#[derive(Debug, Default)]
struct ReasoningSplitter {
    inside: bool,
    pending: String,
}

#[derive(Debug, PartialEq)]
enum Piece {
    Text(String, bool),
    Start,
    End,
}

impl ReasoningSplitter {
    fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.pending.push_str(text);
        loop {
            let tag = if self.inside { THINK_CLOSE } else { THINK_OPEN };
            if let Some(at) = self.pending.find(tag) {
                if at > 0 {
                    out.push(Piece::Text(self.pending[..at].to_string(), self.inside));
                }
                self.pending.drain(..at + tag.len());
                self.inside = !self.inside;
                out.push(if self.inside {
                    Piece::Start
                } else {
                    Piece::End
                });
                continue;
            }
            // Keep the longest suffix that could still grow into the tag.
            let keep = (1..tag.len())
                .rev()
                .find(|&n| self.pending.ends_with(&tag[..n]))
                .unwrap_or(0);
            let cut = self.pending.len() - keep;
            if cut > 0 {
                out.push(Piece::Text(self.pending[..cut].to_string(), self.inside));
                self.pending.drain(..cut);
            }
            return;
        }
    }

    fn flush(&mut self, out: &mut Vec<Piece>) {
        if !self.pending.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut self.pending), self.inside));
        }
    }
}

/// Holds back text that may be the start of a stop string.
#[derive(Debug, Default)]
struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// Returns the text now safe to emit, and whether a stop string was hit.
    fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&n| s.is_char_boundary(n))
                    .map(move |n| &s[..n])
            })
            .filter(|p| self.pending.ends_with(p))
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// A model plus what its cache holds, so a multi-turn chat only feeds each turn's new tokens.
pub struct Session {
    model: Box<dyn LanguageModel>,
    /// Every token fed to the model, in order.
    fed: Vec<u32>,
}

impl Session {
    pub fn new(model: Box<dyn LanguageModel>) -> Session {
        Session {
            model,
            fed: Vec::new(),
        }
    }

    pub fn model(&self) -> &dyn LanguageModel {
        self.model.as_ref()
    }

    pub fn model_mut(&mut self) -> &mut dyn LanguageModel {
        self.model.as_mut()
    }

    pub fn reset(&mut self) {
        self.model.reset();
        self.fed.clear();
    }

    /// Feeds `prompt`, reusing the cached prefix it shares with what was fed before, and
    /// returns the last logits and how many tokens came from the cache.
    fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        let mut common = self
            .fed
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token must be run to get its logits.
        common = common.min(prompt.len() - 1);
        self.model.truncate(common);
        self.fed.truncate(common);
        let logits = self.model.forward(&prompt[common..])?;
        self.fed.extend_from_slice(&prompt[common..]);
        Ok((logits, common))
    }

    /// Generates a reply to `prompt` (token ids), calling `on_event` as text arrives;
    /// `on_event` returning `Break` cancels.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_event: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let max_seq = self.model.max_seq();
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        if prompt.len() >= max_seq {
            return Err(Error::ContextOverflow {
                prompt: prompt.len(),
                context: max_seq,
                reserve: 1,
            });
        }
        let start = Instant::now();
        let (mut logits, cached) = self.prefill(prompt)?;
        let prefill_s = start.elapsed().as_secs_f64();

        let mut sampler = Sampler::new(opts.sampler.clone());
        let mut detok = Detokenizer::new(true);
        let mut stop_filter = StopFilter {
            stops: opts
                .stop_strings
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            pending: String::new(),
        };
        let mut splitter = ReasoningSplitter {
            inside: opts.reasoning_open,
            pending: String::new(),
        };
        let mut history: Vec<u32> = prompt.to_vec();
        let mut tokens = Vec::new();
        let (mut text, mut reasoning) = (String::new(), String::new());
        let mut saw_reasoning = opts.reasoning_open;
        let mut reasoning_start = opts.reasoning_open.then_some(start);
        let mut reasoning_ms = None;
        let mut ttft_ms = 0.0;
        let mut decode_start = None;
        let mut decode_steps = 0usize;
        let mut pieces = Vec::new();
        let stop;

        let mut emit = |pieces: &mut Vec<Piece>,
                        text: &mut String,
                        reasoning: &mut String,
                        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>|
         -> ControlFlow<()> {
            for p in pieces.drain(..) {
                let flow = match &p {
                    Piece::Text(t, r) => {
                        if *r {
                            reasoning.push_str(t);
                        } else {
                            text.push_str(t);
                        }
                        on_event(Event::Text {
                            text: t,
                            reasoning: *r,
                        })
                    }
                    Piece::Start => {
                        saw_reasoning = true;
                        reasoning_start = Some(Instant::now());
                        on_event(Event::ReasoningStart)
                    }
                    Piece::End => {
                        if let Some(s) = reasoning_start.take() {
                            reasoning_ms = Some(s.elapsed().as_secs_f64() * 1e3);
                        }
                        on_event(Event::ReasoningEnd)
                    }
                };
                flow?;
            }
            ControlFlow::Continue(())
        };

        if opts.reasoning_open && on_event(Event::ReasoningStart).is_break() {
            stop = StopReason::Cancelled;
        } else {
            loop {
                let tok = sampler.sample(&mut logits, &history);
                if tokens.is_empty() {
                    ttft_ms = start.elapsed().as_secs_f64() * 1e3;
                    decode_start = Some(Instant::now());
                }
                tokens.push(tok);
                history.push(tok);
                if opts.stop_ids.contains(&tok) {
                    stop = StopReason::EndOfTurn;
                    break;
                }
                let piece = detok.push(tokenizer, tok)?;
                let (safe, hit) = stop_filter.push(&piece);
                splitter.push(&safe, &mut pieces);
                if emit(&mut pieces, &mut text, &mut reasoning, &mut on_event).is_break() {
                    stop = StopReason::Cancelled;
                    break;
                }
                if hit {
                    stop = StopReason::StopString;
                    break;
                }
                if tokens.len() >= opts.max_new_tokens {
                    stop = StopReason::MaxTokens;
                    break;
                }
                if self.model.position() >= max_seq {
                    stop = StopReason::ContextFull;
                    break;
                }
                logits = self.model.forward(&[tok])?;
                self.fed.push(tok);
                decode_steps += 1;
            }
        }
        if stop != StopReason::StopString {
            let tail = detok.flush(tokenizer)?;
            let (mut safe, _) = stop_filter.push(&tail);
            safe.push_str(&stop_filter.flush());
            splitter.push(&safe, &mut pieces);
        }
        splitter.flush(&mut pieces);
        // Nothing can be cancelled any more; deliver what is left.
        let _ = emit(&mut pieces, &mut text, &mut reasoning, &mut on_event);
        if let (Some(s), None) = (reasoning_start, reasoning_ms) {
            if saw_reasoning {
                reasoning_ms = Some(s.elapsed().as_secs_f64() * 1e3);
            }
        }
        let decode_s = decode_start
            .map(|d| d.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let fed_now = prompt.len() - cached;
        let stats = Stats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated_tokens: tokens.len(),
            ttft_ms,
            prefill_ms: prefill_s * 1e3,
            prefill_tok_s: if prefill_s > 0.0 {
                fed_now as f64 / prefill_s
            } else {
                0.0
            },
            decode_ms: decode_s * 1e3,
            decode_tok_s: if decode_s > 0.0 {
                decode_steps as f64 / decode_s
            } else {
                0.0
            },
            reasoning_ms,
        };
        let text = if saw_reasoning {
            text.trim_start().to_string()
        } else {
            text
        };
        Ok(Completion {
            text,
            reasoning: saw_reasoning.then(|| reasoning.trim().to_string()),
            tokens,
            stop,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str], inside: bool) -> Vec<Piece> {
        let mut s = ReasoningSplitter {
            inside,
            pending: String::new(),
        };
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.flush(&mut out);
        // Merge adjacent text of the same kind so the test does not depend on chunking.
        let mut merged: Vec<Piece> = Vec::new();
        for p in out {
            match (merged.last_mut(), p) {
                (Some(Piece::Text(a, ra)), Piece::Text(b, rb)) if *ra == rb => a.push_str(&b),
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    #[test]
    fn reasoning_tags_split_across_chunks() {
        let want = vec![
            Piece::Start,
            Piece::Text("plan".into(), true),
            Piece::End,
            Piece::Text("answer <th".into(), false),
        ];
        assert_eq!(split(&["<think>plan</think>answer <th"], false), want);
        assert_eq!(
            split(&["<th", "ink>pl", "an</", "think", ">answer <th"], false),
            want
        );
        assert_eq!(
            split(&["plan</th", "ink>ok"], true),
            vec![
                Piece::Text("plan".into(), true),
                Piece::End,
                Piece::Text("ok".into(), false)
            ]
        );
    }

    #[test]
    fn stop_strings_hold_back_prefixes() {
        let mut f = StopFilter {
            stops: vec!["User:".into()],
            pending: String::new(),
        };
        assert_eq!(f.push("Hello Us"), ("Hello ".into(), false));
        assert_eq!(f.push("ually"), ("Usually".into(), false));
        assert_eq!(f.push(" then\nUse"), (" then\n".into(), false));
        assert_eq!(f.push("r: more"), ("".into(), true));
    }
}
