//! A streamed reply split into reasoning (`<think>` … `</think>`) and answer segments.
//!
//! The engine labels chunks `think` or `answer`; a model whose tags reach the answer stream
//! unlabelled is split here as well, including tags cut across two chunks.
use crate::types::{Chunk, Stats};

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// One part of a reply, in order of arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Think {
        text: String,
        started_ms: f64,
        /// Set once the reasoning has ended.
        duration_ms: Option<f64>,
    },
    Answer {
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Think,
    Answer,
}

/// What the splitter found in a piece of answer text.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(Kind, String),
    /// A `</think>` with no `<think>` before it: templates that open the reasoning in the
    /// prompt (DeepSeek-R1's) make the model start inside it, so all text so far was reasoning.
    CloseWithoutOpen,
}

/// Finds `<think>`/`</think>` in answer text that arrives in pieces.
#[derive(Debug, Clone, Default, PartialEq)]
struct TagSplitter {
    inside: bool,
    /// The end of the last piece when it could be the start of a tag.
    pending: String,
}

impl TagSplitter {
    fn feed(&mut self, text: &str) -> Vec<Piece> {
        let mut buffer = std::mem::take(&mut self.pending);
        buffer.push_str(text);
        let mut out = Vec::new();
        let mut rest = buffer.as_str();
        loop {
            let kind = if self.inside {
                Kind::Think
            } else {
                Kind::Answer
            };
            let tags: &[&str] = if self.inside {
                &[CLOSE]
            } else {
                &[OPEN, CLOSE]
            };
            let found = tags
                .iter()
                .filter_map(|tag| rest.find(tag).map(|at| (at, *tag)))
                .min();
            if let Some((at, tag)) = found {
                if at > 0 {
                    out.push(Piece::Text(kind, rest[..at].to_string()));
                }
                rest = &rest[at + tag.len()..];
                if tag == OPEN {
                    self.inside = true;
                } else if self.inside {
                    self.inside = false;
                } else {
                    out.push(Piece::CloseWithoutOpen);
                }
                continue;
            }
            // Hold back a tail that may be the first part of a tag.
            let keep = (1..CLOSE.len())
                .rev()
                .find(|&n| {
                    rest.len() >= n
                        && rest.is_char_boundary(rest.len() - n)
                        && tags.iter().any(|t| t.starts_with(&rest[rest.len() - n..]))
                })
                .unwrap_or(0);
            let emit = &rest[..rest.len() - keep];
            if !emit.is_empty() {
                out.push(Piece::Text(kind, emit.to_string()));
            }
            self.pending = rest[rest.len() - keep..].to_string();
            return out;
        }
    }

    fn flush(&mut self) -> Option<(Kind, String)> {
        let kind = if self.inside {
            Kind::Think
        } else {
            Kind::Answer
        };
        let text = std::mem::take(&mut self.pending);
        (!text.is_empty()).then_some((kind, text))
    }
}

/// Everything known about one assistant reply while it streams and after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub segments: Vec<Segment>,
    pub stats: Option<Stats>,
    /// Time of the first chunk with text, for the live token rate.
    pub first_piece_ms: Option<f64>,
    /// Time of the latest chunk with text.
    pub last_piece_ms: Option<f64>,
    /// Chunks with text received; the engine sends about one per token.
    pub pieces: u64,
    pub done: bool,
    splitter: TagSplitter,
}

impl Reply {
    /// Adds one chunk that arrived at `now_ms`.
    pub fn push(&mut self, chunk: Chunk, now_ms: f64) {
        match chunk {
            Chunk::Think { text } => {
                self.count_piece(&text, now_ms);
                self.append(Kind::Think, &text, now_ms);
            }
            Chunk::Answer { text } => {
                self.count_piece(&text, now_ms);
                for piece in self.splitter.feed(&text) {
                    match piece {
                        Piece::Text(kind, part) => self.append(kind, &part, now_ms),
                        Piece::CloseWithoutOpen => self.reasoning_was_everything(now_ms),
                    }
                }
            }
            Chunk::Done { stats } => {
                self.finish(now_ms);
                // The engine's own measure of the reasoning beats ours when there is one block.
                if stats.thinking_ms > 0.0 {
                    let mut thinks = self.segments.iter_mut().filter_map(|s| match s {
                        Segment::Think { duration_ms, .. } => Some(duration_ms),
                        Segment::Answer { .. } => None,
                    });
                    if let (Some(d), None) = (thinks.next(), thinks.next()) {
                        *d = Some(stats.thinking_ms);
                    }
                }
                self.stats = Some(stats);
            }
        }
    }

    /// Ends the reply (done, stopped or failed): flushes held-back text, closes reasoning.
    pub fn finish(&mut self, now_ms: f64) {
        if let Some((kind, text)) = self.splitter.flush() {
            self.append(kind, &text, now_ms);
        }
        self.close_think(now_ms);
        self.done = true;
    }

    /// The answer without reasoning: what goes back to the model as the assistant turn.
    pub fn answer(&self) -> String {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Answer { text } => Some(text.as_str()),
                Segment::Think { .. } => None,
            })
            .collect()
    }

    /// How long the reasoning at `index` has gone on, as of the latest chunk.
    pub fn thinking_so_far(&self, index: usize) -> Option<f64> {
        match self.segments.get(index)? {
            Segment::Think {
                started_ms,
                duration_ms,
                ..
            } => duration_ms.or_else(|| Some(self.last_piece_ms? - started_ms)),
            Segment::Answer { .. } => None,
        }
    }

    /// Tokens per second so far, from chunk arrivals.
    pub fn live_rate(&self, now_ms: f64) -> Option<f64> {
        let start = self.first_piece_ms?;
        // The first piece starts the clock; the rate counts the ones after it.
        crate::format::rate(self.pieces.saturating_sub(1), now_ms - start)
    }

    fn count_piece(&mut self, text: &str, now_ms: f64) {
        if text.is_empty() {
            return;
        }
        self.pieces += 1;
        self.first_piece_ms.get_or_insert(now_ms);
        self.last_piece_ms = Some(now_ms);
    }

    fn append(&mut self, kind: Kind, text: &str, now_ms: f64) {
        if text.is_empty() {
            return;
        }
        match (kind, self.segments.last_mut()) {
            (
                Kind::Think,
                Some(Segment::Think {
                    text: t,
                    duration_ms: None,
                    ..
                }),
            ) => t.push_str(text),
            (Kind::Answer, Some(Segment::Answer { text: t })) => t.push_str(text),
            (Kind::Think, _) => self.segments.push(Segment::Think {
                text: text.to_string(),
                started_ms: now_ms,
                duration_ms: None,
            }),
            (Kind::Answer, _) => {
                self.close_think(now_ms);
                // Whitespace between the reasoning and the answer is not part of the answer.
                let text = if self.segments.is_empty()
                    || matches!(self.segments.last(), Some(Segment::Think { .. }))
                {
                    text.trim_start()
                } else {
                    text
                };
                if !text.is_empty() {
                    self.segments.push(Segment::Answer {
                        text: text.to_string(),
                    });
                }
            }
        }
    }

    /// Turns the answer so far into reasoning, unless the reply already has reasoning (then
    /// the stray tag is dropped).
    fn reasoning_was_everything(&mut self, now_ms: f64) {
        if self
            .segments
            .iter()
            .any(|s| matches!(s, Segment::Think { .. }))
        {
            return;
        }
        let text = self.answer();
        self.segments.clear();
        if !text.is_empty() {
            let started_ms = self.first_piece_ms.unwrap_or(now_ms);
            self.segments.push(Segment::Think {
                text,
                started_ms,
                duration_ms: Some(now_ms - started_ms),
            });
        }
    }

    fn close_think(&mut self, now_ms: f64) {
        if let Some(Segment::Think {
            started_ms,
            duration_ms: d @ None,
            ..
        }) = self.segments.last_mut()
        {
            *d = Some(now_ms - *started_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn think(t: &str) -> Chunk {
        Chunk::Think { text: t.into() }
    }
    fn answer(t: &str) -> Chunk {
        Chunk::Answer { text: t.into() }
    }

    fn texts(reply: &Reply) -> Vec<(bool, &str)> {
        reply
            .segments
            .iter()
            .map(|s| match s {
                Segment::Think { text, .. } => (true, text.as_str()),
                Segment::Answer { text } => (false, text.as_str()),
            })
            .collect()
    }

    #[test]
    fn labelled_chunks_become_segments_with_durations() {
        let mut r = Reply::default();
        r.push(think("Let me "), 100.0);
        r.push(think("see."), 200.0);
        assert_eq!(r.thinking_so_far(0), Some(100.0));
        r.push(answer("\n\nIt is "), 2600.0);
        r.push(answer("4."), 2700.0);
        assert_eq!(texts(&r), vec![(true, "Let me see."), (false, "It is 4.")]);
        assert!(matches!(
            r.segments[0],
            Segment::Think { duration_ms: Some(d), .. } if d == 2500.0
        ));
        assert_eq!(r.answer(), "It is 4.");
        assert_eq!(r.thinking_so_far(0), Some(2500.0));
        assert_eq!(r.thinking_so_far(1), None);
        assert_eq!(r.pieces, 4);
        // Three pieces after the first, over 2.6 s.
        assert_eq!(r.live_rate(2700.0), Some(3.0 * 1000.0 / 2600.0));
    }

    #[test]
    fn engine_thinking_time_wins_for_a_single_block() {
        let mut r = Reply::default();
        r.push(think("hmm"), 0.0);
        r.push(answer("yes"), 900.0);
        r.push(
            Chunk::Done {
                stats: Stats {
                    thinking_ms: 1234.0,
                    ..Stats::default()
                },
            },
            1000.0,
        );
        assert!(r.done);
        assert!(matches!(
            r.segments[0],
            Segment::Think { duration_ms: Some(d), .. } if d == 1234.0
        ));
        assert_eq!(r.stats.as_ref().map(|s| s.thinking_ms), Some(1234.0));
    }

    #[test]
    fn literal_tags_in_answer_text_are_split_even_across_chunks() {
        let mut r = Reply::default();
        for (i, piece) in [
            "<thi",
            "nk>\nplan",
            " it</th",
            "ink>",
            "\n\nDone <",
            "b>ok</b>",
        ]
        .iter()
        .enumerate()
        {
            r.push(answer(piece), i as f64 * 10.0);
        }
        r.finish(100.0);
        assert_eq!(
            texts(&r),
            vec![(true, "\nplan it"), (false, "Done <b>ok</b>")]
        );
        assert_eq!(r.answer(), "Done <b>ok</b>");
    }

    #[test]
    fn a_partial_tag_at_the_end_is_text() {
        let mut r = Reply::default();
        r.push(answer("a < b and x <thi"), 0.0);
        assert_eq!(texts(&r), vec![(false, "a < b and x ")]);
        r.finish(5.0);
        assert_eq!(texts(&r), vec![(false, "a < b and x <thi")]);
    }

    #[test]
    fn unclosed_reasoning_is_closed_when_the_reply_stops() {
        let mut r = Reply::default();
        r.push(answer("<think>still going"), 1000.0);
        r.finish(4000.0);
        assert_eq!(texts(&r), vec![(true, "still going")]);
        assert!(matches!(
            r.segments[0],
            Segment::Think { duration_ms: Some(d), .. } if d == 3000.0
        ));
        assert_eq!(r.answer(), "");
    }

    #[test]
    fn a_close_tag_without_open_makes_the_text_before_it_reasoning() {
        let mut r = Reply::default();
        r.push(answer("日本語"), 1000.0);
        r.push(answer("…<"), 1500.0);
        r.push(answer("/think>\n\né"), 3000.0);
        r.finish(3100.0);
        assert_eq!(texts(&r), vec![(true, "日本語…"), (false, "é")]);
        assert!(matches!(
            r.segments[0],
            Segment::Think { duration_ms: Some(d), .. } if d == 2000.0
        ));
        // A second stray close tag is dropped, not a reason to rewrite the answer.
        let mut r = Reply::default();
        r.push(think("a"), 0.0);
        r.push(answer("b</think>c"), 1.0);
        r.finish(2.0);
        assert_eq!(texts(&r), vec![(true, "a"), (false, "bc")]);
    }
}
