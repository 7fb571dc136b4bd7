//! The generation loop: prefill, sample, detokenise, split reasoning from the answer, stop.

use crate::model::LanguageModel;
use crate::sampler::{Candidates, Sampler, SamplerConfig, Selection};
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

    /// Drops what follows the cached prefix `prompt` shares with what was fed before and
    /// returns that prefix's length: the tokens from there on must be fed.
    fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .fed
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            // The last prompt token must be run to get its logits.
            .min(prompt.len() - 1);
        self.model.truncate(common);
        self.fed.truncate(common);
        common
    }

    /// Feeds `prompt`, reusing the cached prefix it shares with what was fed before, and
    /// returns the candidates `sel` asks for from the last logits and how many tokens came
    /// from the cache.
    fn prefill(&mut self, prompt: &[u32], sel: &Selection) -> Result<(Candidates, usize)> {
        let common = self.reuse_prefix(prompt);
        let cands = self.model.forward_select(&prompt[common..], sel)?;
        self.fed.extend_from_slice(&prompt[common..]);
        Ok((cands, common))
    }

    /// [`Session::prefill`] through [`LanguageModel::forward_select_async`].
    async fn prefill_async(
        &mut self,
        prompt: &[u32],
        sel: &Selection,
    ) -> Result<(Candidates, usize)> {
        let common = self.reuse_prefix(prompt);
        let cands = self
            .model
            .forward_select_async(&prompt[common..], sel)
            .await?;
        self.fed.extend_from_slice(&prompt[common..]);
        Ok((cands, common))
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
        let mut generation = self.start(prompt, opts)?;
        loop {
            if let Some(done) = generation.step(self, tokenizer, &mut on_event)? {
                return Ok(done);
            }
        }
    }

    /// Starts a reply to `prompt` that the caller drives one token at a time with
    /// [`Generation::step`] (the browser worker does, so it can handle messages between
    /// tokens). Nothing runs until the first step, which also feeds the prompt.
    pub fn start(&mut self, prompt: &[u32], opts: &GenerateOptions) -> Result<Generation> {
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
        Ok(Generation {
            opts: opts.clone(),
            prompt: prompt.to_vec(),
            start: Instant::now(),
            prefill_s: 0.0,
            cached: 0,
            candidates: None,
            sampler: Sampler::new(opts.sampler.clone()),
            detok: Detokenizer::new(true),
            stop_filter: StopFilter {
                stops: opts
                    .stop_strings
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect(),
                pending: String::new(),
            },
            splitter: ReasoningSplitter {
                inside: opts.reasoning_open,
                pending: String::new(),
            },
            history: prompt.to_vec(),
            tokens: Vec::new(),
            text: String::new(),
            reasoning: String::new(),
            saw_reasoning: opts.reasoning_open,
            reasoning_start: None,
            reasoning_ms: None,
            ttft_ms: 0.0,
            decode_start: None,
            decode_steps: 0,
            finished: false,
        })
    }
}

/// What a step does after sampling.
enum Next {
    Done(Completion),
    Feed(u32),
}

/// A reply in progress, advanced one token per [`Generation::step`]. It belongs to the
/// [`Session`] that started it: each step feeds that session's model.
pub struct Generation {
    opts: GenerateOptions,
    prompt: Vec<u32>,
    start: Instant,
    prefill_s: f64,
    /// Prompt tokens that were already in the cache.
    cached: usize,
    /// What the next token is picked from (the best logits, see [`Selection`]); `None`
    /// until the prompt is fed.
    candidates: Option<Candidates>,
    sampler: Sampler,
    detok: Detokenizer,
    stop_filter: StopFilter,
    splitter: ReasoningSplitter,
    /// Prompt and reply so far, for the repetition penalties.
    history: Vec<u32>,
    tokens: Vec<u32>,
    text: String,
    reasoning: String,
    saw_reasoning: bool,
    reasoning_start: Option<Instant>,
    reasoning_ms: Option<f64>,
    ttft_ms: f64,
    decode_start: Option<Instant>,
    decode_steps: usize,
    finished: bool,
}

impl Generation {
    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Whether the reply is complete (a step returned it, or it was cancelled).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Samples one token (feeding the prompt first, on the first step), reports the text it
    /// completes through `on_event`, and feeds it to the model. Returns the completion once
    /// the reply ends; `on_event` returning `Break` ends it as cancelled.
    pub fn step(
        &mut self,
        session: &mut Session,
        tokenizer: &Tokenizer,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Completion>> {
        self.begin()?;
        let cands = match self.candidates.take() {
            Some(c) => c,
            None => {
                let sel = self.sampler.selection(&self.history);
                let (cands, cached) = session.prefill(&self.prompt, &sel)?;
                if let Some(done) = self.prefilled(cached, tokenizer, on_event)? {
                    return Ok(Some(done));
                }
                cands
            }
        };
        match self.advance(&cands, session, tokenizer, on_event)? {
            Next::Done(done) => Ok(Some(done)),
            Next::Feed(tok) => {
                let sel = self.sampler.selection(&self.history);
                let cands = session.model.forward_select(&[tok], &sel)?;
                self.fed(session, tok, cands);
                Ok(None)
            }
        }
    }

    /// [`Generation::step`] for callers that must not block (the browser's GPU and WebNN
    /// devices): the model runs through [`LanguageModel::forward_async`].
    pub async fn step_async(
        &mut self,
        session: &mut Session,
        tokenizer: &Tokenizer,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Completion>> {
        self.begin()?;
        let cands = match self.candidates.take() {
            Some(c) => c,
            None => {
                let sel = self.sampler.selection(&self.history);
                let (cands, cached) = session.prefill_async(&self.prompt, &sel).await?;
                if let Some(done) = self.prefilled(cached, tokenizer, on_event)? {
                    return Ok(Some(done));
                }
                cands
            }
        };
        match self.advance(&cands, session, tokenizer, on_event)? {
            Next::Done(done) => Ok(Some(done)),
            Next::Feed(tok) => {
                let sel = self.sampler.selection(&self.history);
                let cands = session.model.forward_select_async(&[tok], &sel).await?;
                self.fed(session, tok, cands);
                Ok(None)
            }
        }
    }

    fn begin(&mut self) -> Result<()> {
        if self.finished {
            return Err(Error::InvalidArgument(
                "this reply is already complete".into(),
            ));
        }
        // A failed step leaves the cache in an unknown state; the reply cannot go on.
        self.finished = true;
        Ok(())
    }

    /// Records the prompt's feeding; a reply that opens inside reasoning says so now.
    fn prefilled(
        &mut self,
        cached: usize,
        tokenizer: &Tokenizer,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Completion>> {
        self.prefill_s = self.start.elapsed().as_secs_f64();
        self.cached = cached;
        if self.opts.reasoning_open {
            self.reasoning_start = Some(self.start);
            if on_event(Event::ReasoningStart).is_break() {
                return self
                    .finish(tokenizer, StopReason::Cancelled, on_event)
                    .map(Some);
            }
        }
        Ok(None)
    }

    /// Picks the next token from `cands` and reports its text: either the reply ends here or
    /// the token must be fed.
    fn advance(
        &mut self,
        cands: &Candidates,
        session: &Session,
        tokenizer: &Tokenizer,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Next> {
        let tok = self.sampler.pick(cands, &self.history);
        if self.tokens.is_empty() {
            self.ttft_ms = self.start.elapsed().as_secs_f64() * 1e3;
            self.decode_start = Some(Instant::now());
        }
        self.tokens.push(tok);
        self.history.push(tok);
        let stop = if self.opts.stop_ids.contains(&tok) {
            Some(StopReason::EndOfTurn)
        } else {
            let piece = self.detok.push(tokenizer, tok)?;
            let (safe, hit) = self.stop_filter.push(&piece);
            let mut pieces = Vec::new();
            self.splitter.push(&safe, &mut pieces);
            if self.emit(&mut pieces, on_event).is_break() {
                Some(StopReason::Cancelled)
            } else if hit {
                Some(StopReason::StopString)
            } else if self.tokens.len() >= self.opts.max_new_tokens {
                Some(StopReason::MaxTokens)
            } else if session.model.position() >= session.model.max_seq() {
                Some(StopReason::ContextFull)
            } else {
                None
            }
        };
        match stop {
            Some(stop) => self.finish(tokenizer, stop, on_event).map(Next::Done),
            None => Ok(Next::Feed(tok)),
        }
    }

    /// Records that `tok` was fed and gave `cands`; the reply goes on.
    fn fed(&mut self, session: &mut Session, tok: u32, cands: Candidates) {
        self.candidates = Some(cands);
        session.fed.push(tok);
        self.decode_steps += 1;
        self.finished = false;
    }

    /// Ends the reply now, as cancelled: the text held back so far is reported and the
    /// completion returned. The cache keeps what was fed, so the next turn reuses it.
    pub fn cancel(
        &mut self,
        tokenizer: &Tokenizer,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Completion> {
        if self.finished {
            return Err(Error::InvalidArgument(
                "this reply is already complete".into(),
            ));
        }
        self.finished = true;
        self.finish(tokenizer, StopReason::Cancelled, on_event)
    }

    /// Delivers `pieces`, keeping the text and reasoning timing; stops at the first `Break`.
    fn emit(
        &mut self,
        pieces: &mut Vec<Piece>,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        for p in pieces.drain(..) {
            let flow = match &p {
                Piece::Text(t, r) => {
                    if *r {
                        self.reasoning.push_str(t);
                    } else {
                        self.text.push_str(t);
                    }
                    on_event(Event::Text {
                        text: t,
                        reasoning: *r,
                    })
                }
                Piece::Start => {
                    self.saw_reasoning = true;
                    self.reasoning_start = Some(Instant::now());
                    on_event(Event::ReasoningStart)
                }
                Piece::End => {
                    if let Some(s) = self.reasoning_start.take() {
                        self.reasoning_ms = Some(s.elapsed().as_secs_f64() * 1e3);
                    }
                    on_event(Event::ReasoningEnd)
                }
            };
            flow?;
        }
        ControlFlow::Continue(())
    }

    /// Flushes held-back text and builds the completion.
    fn finish(
        &mut self,
        tokenizer: &Tokenizer,
        stop: StopReason,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let mut pieces = Vec::new();
        if stop != StopReason::StopString {
            let tail = self.detok.flush(tokenizer)?;
            let (mut safe, _) = self.stop_filter.push(&tail);
            safe.push_str(&self.stop_filter.flush());
            self.splitter.push(&safe, &mut pieces);
        }
        self.splitter.flush(&mut pieces);
        // Nothing can be cancelled any more; deliver what is left.
        let _ = self.emit(&mut pieces, on_event);
        if let (Some(s), None) = (self.reasoning_start, self.reasoning_ms) {
            if self.saw_reasoning {
                self.reasoning_ms = Some(s.elapsed().as_secs_f64() * 1e3);
            }
        }
        let decode_s = self
            .decode_start
            .map(|d| d.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let prefill_s = self.prefill_s;
        let fed_now = self.prompt.len() - self.cached;
        let stats = Stats {
            prompt_tokens: self.prompt.len(),
            cached_tokens: self.cached,
            generated_tokens: self.tokens.len(),
            ttft_ms: self.ttft_ms,
            prefill_ms: prefill_s * 1e3,
            prefill_tok_s: if prefill_s > 0.0 {
                fed_now as f64 / prefill_s
            } else {
                0.0
            },
            decode_ms: decode_s * 1e3,
            decode_tok_s: if decode_s > 0.0 {
                self.decode_steps as f64 / decode_s
            } else {
                0.0
            },
            reasoning_ms: self.reasoning_ms,
        };
        let text = std::mem::take(&mut self.text);
        let text = if self.saw_reasoning {
            text.trim_start().to_string()
        } else {
            text
        };
        Ok(Completion {
            text,
            reasoning: self
                .saw_reasoning
                .then(|| self.reasoning.trim().to_string()),
            tokens: std::mem::take(&mut self.tokens),
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
