//! The [`Splice`]: a continuation's events mapped into the client's answer that broke, and the
//! [`Seam`] that joins its text to what the client already has.

use super::{Delta, Event, StartBlock, Usage};
use std::collections::HashMap;

/// An overlap shorter than this must begin at a word of the client's text; one this long is
/// taken wherever it begins (a coincidence that long does not happen in prose or code).
const ANYWHERE: usize = 12;

/// Joins a continuation's text to the text the client already has, with no gap and no
/// duplicate. A model asked in words to go on from a cut often restates the last words, the
/// whole answer, or starts with a newline first; `dedupe` removes the longest suffix of the
/// client's text that the continuation starts with (character level, so a cut inside a word
/// works; any run of whitespace matches any other; the continuation's leading whitespace is
/// skipped). The overlap must begin at a word of the client's text (or be at least
/// [`ANYWHERE`] characters long): a continuation "ok" after "bo" is "book", not "bok", though
/// "o" is a suffix that "ok" starts with. When the client's text ends in whitespace, the
/// continuation's leading whitespace is dropped (the prefill had it trimmed).
///
/// The text is held only while it could still be a restatement; the first character that
/// rules every candidate out releases it.
#[derive(Debug)]
pub struct Seam {
    /// The client's text, whitespace runs as one `' '`.
    delivered: Vec<char>,
    /// The client's text ends in whitespace.
    ends_in_space: bool,
    /// Where an overlap may begin in `delivered`, ascending (longest first), each with how
    /// many characters of the continuation it matched so far; a candidate is dropped at its
    /// first mismatch.
    alive: Vec<(usize, usize)>,
    /// The held continuation text as it came.
    held: String,
    /// The held text, whitespace runs as one `' '`, leading whitespace left out; with the byte
    /// offset in `held` just after each character (a run's end moves as it grows).
    norm: Vec<(char, usize)>,
    /// Decided: text now passes (but leading whitespace while `trim` holds).
    decided: bool,
    /// Drop leading whitespace of what passes next.
    trim: bool,
    /// Look for an overlap at all (instruction); a prefill only needs the whitespace rule.
    dedupe: bool,
    /// Characters the decision removed (for tests and the log).
    removed: usize,
}

fn normalize(text: &str) -> Vec<char> {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c.is_whitespace() {
            if out.last() != Some(&' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Seam {
    /// A seam after `delivered` (the client's text); `dedupe` for a continuation asked by
    /// instruction.
    pub fn new(delivered: &str, dedupe: bool) -> Seam {
        let norm = normalize(delivered);
        let word = |p: usize| {
            norm[p] != ' '
                && (p == 0
                    || !norm[p - 1].is_alphanumeric()
                    || !norm[p].is_alphanumeric()
                    || norm.len() - p >= ANYWHERE)
        };
        let alive = if dedupe {
            (0..norm.len())
                .filter(|&p| word(p))
                .map(|p| (p, 0))
                .collect()
        } else {
            Vec::new()
        };
        Seam {
            ends_in_space: delivered.ends_with(char::is_whitespace),
            delivered: norm,
            alive,
            held: String::new(),
            norm: Vec::new(),
            decided: false,
            trim: false,
            dedupe,
            removed: 0,
        }
    }

    /// Characters of the continuation the seam removed as a restatement.
    pub fn removed(&self) -> usize {
        self.removed
    }

    /// Takes the next piece of the continuation's text; returns what may go to the client now.
    pub fn push(&mut self, text: &str) -> String {
        if self.decided {
            return self.pass(text.to_owned());
        }
        let start = self.held.len();
        self.held.push_str(text);
        for (i, c) in text.char_indices() {
            let end = start + i + c.len_utf8();
            if c.is_whitespace() {
                match self.norm.last_mut() {
                    Some((' ', e)) => *e = end,
                    Some(_) => self.norm.push((' ', end)),
                    None => {} // leading whitespace is skipped
                }
            } else {
                self.norm.push((c, end));
            }
        }
        match self.decide(false) {
            Some(from) => self.settle(from),
            None => String::new(),
        }
    }

    /// The continuation's text block ended (or something else comes): decide with what is
    /// held and return what goes to the client.
    pub fn flush(&mut self) -> String {
        if self.decided {
            return String::new();
        }
        let from = self.decide(true).unwrap_or(0);
        self.settle(from)
    }

    /// Decided: the held text before byte `from` was a restatement; the rest passes.
    fn settle(&mut self, from: usize) -> String {
        let rest = self.held.split_off(from);
        self.removed = self.held.chars().count();
        self.held.clear();
        self.decided = true;
        self.trim = self.ends_in_space;
        self.pass(rest)
    }

    fn pass(&mut self, mut text: String) -> String {
        if self.trim {
            let kept = text.trim_start();
            if kept.is_empty() {
                return String::new();
            }
            text = kept.to_owned();
            self.trim = false;
        }
        text
    }

    /// Advances every candidate over the held text; `Some(byte offset)` where the text after
    /// the overlap begins (0: no overlap) once no longer overlap is possible, `None` while one
    /// is. `last`: nothing more comes, so a candidate still matching is no overlap.
    fn decide(&mut self, last: bool) -> Option<usize> {
        if !self.dedupe {
            // Only the whitespace rule: hold whitespace until a character shows.
            return (last || !self.norm.is_empty() || !self.ends_in_space).then_some(0);
        }
        let d = &self.delivered;
        let b = &self.norm;
        // The longest candidate still in play decides: through the client's text (an
        // overlap) or still matching (wait for more). Shorter ones only matter once it fails.
        let mut verdict: Option<Option<usize>> = None;
        self.alive.retain_mut(|(p, k)| {
            if verdict.is_some() {
                return true;
            }
            loop {
                let at = *p + *k;
                // The client's text is matched through its end (its trailing whitespace is
                // optional).
                let through = at == d.len()
                    || (at + 1 == d.len() && d[at] == ' ' && b.get(*k).is_some_and(|c| c.0 != ' '));
                if through {
                    verdict = Some(Some(if *k == 0 { 0 } else { b[*k - 1].1 }));
                    return true;
                }
                let Some(&(c, _)) = b.get(*k) else {
                    if last {
                        return false; // nothing more comes: no overlap here
                    }
                    verdict = Some(None);
                    return true;
                };
                if c != d[at] {
                    return false;
                }
                *k += 1;
            }
        });
        match verdict {
            Some(Some(from)) => Some(from),
            Some(None) => None,
            None => Some(0),
        }
    }
}

/// Maps a continuation's strict events into the client's answer that broke (protocol: one
/// message, indices never reused): the continuation's `Start` is dropped; its first text block
/// continues the client's open text block at the same index, through the [`Seam`]; other
/// blocks take the next indices; the finish carries the summed usage.
#[derive(Debug)]
pub struct Splice {
    open_text: Option<usize>,
    next_index: usize,
    seam: Seam,
    /// The continuation's block the seam works on (its first text block), once it started.
    seam_block: Option<usize>,
    map: HashMap<usize, usize>,
    merged: bool,
    prior: Usage,
}

impl Splice {
    /// A splice after `delivered`, whose client-side indices run up to `next_index`
    /// (exclusive) with the open text block, if any, at `open_text`; `seam` joins the text.
    pub fn new(open_text: Option<usize>, next_index: usize, seam: Seam, prior: Usage) -> Splice {
        Splice {
            open_text,
            next_index,
            seam,
            seam_block: None,
            map: HashMap::new(),
            merged: false,
            prior,
        }
    }

    /// Characters of the continuation the seam removed as a restatement.
    pub fn removed(&self) -> usize {
        self.seam.removed()
    }

    fn close_unmerged(&mut self, out: &mut Vec<Event>) {
        if !self.merged {
            if let Some(i) = self.open_text.take() {
                out.push(Event::BlockStop { index: i });
            }
        }
    }

    /// What the seam still holds, as a delta of its block.
    fn flush_seam(&mut self, out: &mut Vec<Event>) {
        if let Some(index) = self.seam_block {
            let rest = self.seam.flush();
            if !rest.is_empty() {
                out.push(Event::Delta {
                    index: self.map.get(&index).copied().unwrap_or(index),
                    delta: Delta::Text(rest),
                });
            }
        }
    }

    /// Rewrites one strict event of the continuation.
    pub fn map(&mut self, ev: Event, out: &mut Vec<Event>) {
        match ev {
            Event::Start { .. } => {}
            Event::BlockStart {
                index,
                block: StartBlock::Text,
            } if !self.merged && self.open_text.is_some() => {
                self.merged = true;
                self.seam_block = Some(index);
                self.map.insert(index, self.open_text.expect("checked"));
            }
            Event::BlockStart { index, block } => {
                self.flush_seam(out);
                self.close_unmerged(out);
                if block == StartBlock::Text && self.seam_block.is_none() {
                    self.seam_block = Some(index);
                }
                self.merged = true;
                let mapped = self.next_index;
                self.next_index += 1;
                self.map.insert(index, mapped);
                out.push(Event::BlockStart {
                    index: mapped,
                    block,
                });
            }
            Event::Delta {
                index,
                delta: Delta::Text(t),
            } if Some(index) == self.seam_block => {
                let t = self.seam.push(&t);
                if !t.is_empty() {
                    out.push(Event::Delta {
                        index: self.map.get(&index).copied().unwrap_or(index),
                        delta: Delta::Text(t),
                    });
                }
            }
            Event::Delta { index, delta } => {
                let mapped = self.map.get(&index).copied().unwrap_or(index);
                out.push(Event::Delta {
                    index: mapped,
                    delta,
                });
            }
            Event::BlockStop { index } => {
                if Some(index) == self.seam_block {
                    self.flush_seam(out);
                }
                let mapped = self.map.get(&index).copied().unwrap_or(index);
                out.push(Event::BlockStop { index: mapped });
            }
            Event::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => {
                self.flush_seam(out);
                self.close_unmerged(out);
                let p = self.prior;
                let usage = Usage {
                    input: p.input + usage.input,
                    cache_read: p.cache_read + usage.cache_read,
                    cache_creation: p.cache_creation + usage.cache_creation,
                    output: p.output + usage.output,
                };
                out.push(Event::Finish {
                    stop_reason,
                    stop_sequence,
                    usage,
                });
            }
            Event::Ping => out.push(Event::Ping),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the client ends with: `delivered`, then the continuation through a seam, fed in
    /// pieces of `step` characters.
    fn joined(delivered: &str, continuation: &str, dedupe: bool, step: usize) -> String {
        let mut seam = Seam::new(delivered, dedupe);
        let mut out = delivered.to_owned();
        let chars: Vec<char> = continuation.chars().collect();
        for piece in chars.chunks(step.max(1)) {
            out.push_str(&seam.push(&piece.iter().collect::<String>()));
        }
        out.push_str(&seam.flush());
        out
    }

    fn every_step(delivered: &str, continuation: &str, dedupe: bool) -> String {
        let first = joined(delivered, continuation, dedupe, 1);
        for step in [2, 3, 5, 7, 1000] {
            assert_eq!(
                joined(delivered, continuation, dedupe, step),
                first,
                "{delivered:?} + {continuation:?} in pieces of {step}"
            );
        }
        first
    }

    #[test]
    fn a_restatement_is_cut_at_the_seam_however_much_is_restated() {
        let want = "The quick brown fox jumps over the lazy dog. That is all.";
        let cut = "The quick brown fo";
        for continuation in [
            "x jumps over the lazy dog. That is all.",
            "quick brown fox jumps over the lazy dog. That is all.",
            "brown fox jumps over the lazy dog. That is all.",
            "The quick brown fox jumps over the lazy dog. That is all.",
            "\nThe quick brown fox jumps over the lazy dog. That is all.",
            "  \n\nquick  brown fox jumps over the lazy dog. That is all.",
        ] {
            assert_eq!(
                every_step(cut, continuation, true),
                want,
                "{continuation:?}"
            );
        }
    }

    #[test]
    fn whitespace_runs_match_any_whitespace_and_trailing_space_is_not_doubled() {
        assert_eq!(
            every_step("Step one.\n\nStep", "Step one. Step two.", true),
            "Step one.\n\nStep two."
        );
        assert_eq!(every_step("Hello, ", " world.", true), "Hello, world.");
        assert_eq!(
            every_step("Hello, ", "Hello, world.", true),
            "Hello, world."
        );
        assert_eq!(every_step("Hello, ", "\n world.", false), "Hello, world.");
        assert_eq!(every_step("Hello,", " world.", false), "Hello, world.");
    }

    #[test]
    fn a_coincidence_inside_a_word_is_not_an_overlap() {
        // "o" is a suffix of "bo" that "ok" starts with; the word is "book".
        assert_eq!(
            every_step("I read a bo", "ok today.", true),
            "I read a book today."
        );
        assert_eq!(every_step("It was goo", "d.", true), "It was good.");
        // Nothing in common: the continuation is taken as it comes.
        assert_eq!(every_step("Say no", " more.", true), "Say no more.");
    }

    #[test]
    fn text_that_could_still_be_a_restatement_is_held_and_released_at_the_first_difference() {
        let mut seam = Seam::new("One two three", true);
        assert_eq!(seam.push("One"), "", "may be the answer restated");
        assert_eq!(seam.push(" two"), "");
        assert_eq!(seam.push(" thr"), "");
        assert_eq!(seam.push("ee four"), " four");
        assert_eq!(seam.removed(), "One two three".len());
        let mut seam = Seam::new("One two three", true);
        assert_eq!(
            seam.push(" four"),
            " four",
            "nothing held that cannot overlap"
        );
        assert_eq!(seam.removed(), 0);
        // The block ends while the text still matched: no overlap after all.
        let mut seam = Seam::new("One two three", true);
        assert_eq!(seam.push("One"), "");
        assert_eq!(seam.flush(), "One");
    }

    #[test]
    fn a_long_overlap_counts_wherever_it_begins() {
        assert_eq!(
            every_step("configuration_manag", "ation_manager.load()", true),
            "configuration_managation_manager.load()",
            "an overlap of 11 characters inside a word is not taken"
        );
        assert_eq!(
            every_step(
                "let x = configuration_manag",
                "uration_manager.load()",
                true
            ),
            "let x = configuration_manager.load()",
        );
    }
}
