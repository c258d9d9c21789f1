//! Streaming generation, independent of the backend: a [`TokenStream`] drives a backend's
//! [`TokenSource`] one token at a time and owns what every backend shares: stop strings (cut
//! here, and only here), text held back while it may still become a stop string, incomplete
//! UTF-8, and the finish reason.

use std::fmt;

use crate::SkillError;
use crate::decision::Dispatch;
use crate::request::{FinishReason, GeneratedToken, Generation};

/// One step of a backend's generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStep {
    /// The token generated.
    pub token_id: u32,
    /// The decoded text of every token generated so far, this one included (an end-of-sequence
    /// token adds none). Empty when the model has no tokenizer.
    pub text: String,
    /// Set when the backend ends here: [`FinishReason::Eos`] or [`FinishReason::Length`].
    pub finish: Option<FinishReason>,
}

/// A backend's side of a streaming generation: the next token and the text so far.
pub trait TokenSource: Send + fmt::Debug {
    /// Generate the next token. Not called again after a step with a finish reason or an error.
    fn step(&mut self) -> Result<SourceStep, SkillError>;
}

/// The earliest occurrence of any of `stops` in `text`: (byte position, the stop string).
pub fn earliest_stop<'s>(text: &str, stops: &'s [String]) -> Option<(usize, &'s str)> {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|i| (i, s.as_str())))
        .min_by_key(|(i, _)| *i)
}

/// The length of the longest suffix of `text` that is a proper prefix of a stop string: text
/// that must be held back until the next token says whether it completes the stop string.
pub fn held_back(text: &str, stop: &[String]) -> usize {
    let mut best = 0;
    for s in stop {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
}

/// A streaming generation: an iterator of [`GeneratedToken`]s.
///
/// The last item carries the [`FinishReason`]: `Length` (`max_tokens` or the model's context
/// reached), `Eos` (the token is an end-of-sequence id; it is yielded, with empty text) or
/// `Stop` (the generated text now contains a stop string; the text is cut before it). After
/// an error or the last token, the iterator ends. The texts of a stream concatenate to the
/// [`Generation::text`] of the same non-streaming call.
pub struct TokenStream {
    source: Option<Box<dyn TokenSource>>,
    generated: Vec<u32>,
    stop: Vec<String>,
    /// Bytes of the decoded text already yielded.
    emitted: usize,
    finish: Option<FinishReason>,
    dispatch: Option<Dispatch>,
}

impl fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStream")
            .field("source", &self.source)
            .field("generated", &self.generated)
            .field("stop", &self.stop)
            .field("finish", &self.finish)
            .finish()
    }
}

impl TokenStream {
    /// A stream over `source`, cutting at the `stop` strings.
    pub fn new(source: Box<dyn TokenSource>, stop: Vec<String>) -> Self {
        Self {
            source: Some(source),
            generated: Vec::new(),
            stop,
            emitted: 0,
            finish: None,
            dispatch: None,
        }
    }

    /// Where it runs (set when started through dispatch, e.g. `generate_stream`).
    pub fn dispatch(&self) -> Option<&Dispatch> {
        self.dispatch.as_ref()
    }

    /// Attach the dispatch record.
    pub fn with_dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = Some(dispatch);
        self
    }

    /// Why generation stopped, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The token ids generated so far.
    pub fn token_ids(&self) -> &[u32] {
        &self.generated
    }

    /// Run to the end and collect a [`Generation`].
    pub fn collect_generation(mut self) -> Result<Generation, SkillError> {
        let mut text = String::new();
        for t in self.by_ref() {
            text.push_str(&t?.text);
        }
        Ok(Generation {
            text,
            token_ids: self.generated,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        })
    }

    fn step(&mut self) -> Result<GeneratedToken, SkillError> {
        let Some(source) = self.source.as_mut() else {
            return Err(SkillError::Internal {
                detail: "the stream has ended".to_owned(),
            });
        };
        let SourceStep {
            token_id,
            text: full,
            finish,
        } = source.step()?;
        self.generated.push(token_id);
        let mut finish = finish;
        // Stop strings: search the not-yet-emitted tail (plus room for a straddling match).
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.emitted.saturating_sub(longest);
        while !full.is_char_boundary(from) {
            from -= 1;
        }
        let hit = full
            .get(from..)
            .and_then(|tail| earliest_stop(tail, &self.stop))
            .map(|(i, _)| from + i);
        let end = if let Some(at) = hit {
            finish = Some(FinishReason::Stop);
            at
        } else if finish.is_some() {
            full.len()
        } else if full.ends_with('\u{FFFD}') {
            // An incomplete multi-byte character: wait for the next token.
            self.emitted
        } else {
            full.len() - held_back(&full, &self.stop)
        };
        let text = if end > self.emitted {
            full.get(self.emitted..end).unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        self.emitted = self.emitted.max(end);
        if finish.is_some() {
            self.finish = finish;
            self.source = None;
        }
        Ok(GeneratedToken {
            token_id,
            text,
            finish_reason: finish,
        })
    }
}

impl Iterator for TokenStream {
    type Item = Result<GeneratedToken, SkillError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.source.as_ref()?;
        let r = self.step();
        if r.is_err() {
            self.source = None;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_is_the_longest_stop_prefix_at_the_end() {
        let stop = vec!["</s>".to_owned(), "\n\n".to_owned(), "é!".to_owned()];
        assert_eq!(held_back("abc", &stop), 0);
        assert_eq!(held_back("abc<", &stop), 1);
        assert_eq!(held_back("abc</", &stop), 2);
        assert_eq!(held_back("abc\n", &stop), 1);
        assert_eq!(held_back("abé", &stop), 2);
        // A complete stop string is not "held back" (the caller cuts at it).
        assert_eq!(held_back("abc</s>", &stop), 0);
        assert_eq!(held_back("", &stop), 0);
        assert_eq!(held_back("abc<", &[]), 0);
    }

    #[test]
    fn earliest_stop_wins() {
        let stops = vec!["b".to_owned(), "a".to_owned()];
        assert_eq!(earliest_stop("xxab", &stops), Some((2, "a")));
        assert_eq!(earliest_stop("xx", &stops), None);
    }

    /// A scripted source: each step yields the next (id, full text) pair.
    #[derive(Debug)]
    struct Scripted(Vec<(u32, &'static str)>, usize);

    impl TokenSource for Scripted {
        fn step(&mut self) -> Result<SourceStep, SkillError> {
            let (id, text) = self.0[self.1];
            self.1 += 1;
            Ok(SourceStep {
                token_id: id,
                text: text.to_owned(),
                finish: (self.1 == self.0.len()).then_some(FinishReason::Length),
            })
        }
    }

    #[test]
    fn stream_cuts_at_a_stop_string_split_across_tokens() {
        let src = Scripted(vec![(1, "ab"), (2, "ab<"), (3, "ab</s"), (4, "ab</s>x")], 0);
        let s = TokenStream::new(Box::new(src), vec!["</s>".to_owned()]);
        let toks: Vec<_> = s.map(Result::unwrap).collect();
        let texts: Vec<_> = toks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["ab", "", "", ""]);
        assert_eq!(toks[2].finish_reason, None);
        assert_eq!(toks[3].finish_reason, Some(FinishReason::Stop));
    }
}
