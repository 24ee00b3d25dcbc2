//! Matching strings: label [`Matcher`]s, size-bounded regexes ([`Pattern`])
//! and substrings ([`Substring`]), each with the words it requires of a
//! message, so a store can skip blocks by their word filters.
//!
//! What each one matches:
//!
//! - A label matcher compares a whole label value: `Eq` and `Ne` exactly
//!   (case and all), `Re` and `NotRe` with a regex that must match the
//!   *whole* value, as in Prometheus and Loki: `gpu-.*` matches `gpu-a100-1`,
//!   `gpu` alone does not.
//! - A message regex ([`Pattern::search`]) matches anywhere in the message,
//!   like grep: `oom|out of memory`. Case matters unless the regex says
//!   `(?i)`.
//! - A substring ([`Substring`]) is found anywhere in the message, inside
//!   words too: `memor` finds `memoryless`. Case-sensitive, or ignoring
//!   ASCII case (like word search: `É` and `é` stay different).
//!
//! Regexes use the [`regex`] crate's syntax (Unicode-aware, no look-around,
//! no backreferences; matching time is linear in the text) and are refused
//! past a size limit once compiled: [`DEFAULT_REGEX_SIZE_LIMIT`], or the
//! server's `--regex-size-limit` through the `*_within` constructors.

use std::fmt;

use regex::{Regex, RegexBuilder};
use regex_syntax::hir::{Hir, HirKind};

use crate::words::inner_words;

/// The most memory one regex may take once compiled, in bytes, unless
/// configured otherwise (the server's `--regex-size-limit`): 1 MiB. A regex
/// past it (`\w{500}` is one: `\w` is Unicode-wide) is refused with an
/// error rather than compiled, so a query cannot make the server build an
/// unbounded automaton. It also bounds substrings, which are compiled the
/// same way.
pub const DEFAULT_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled regex, with the text it was written as.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    whole: bool,
    regex: Regex,
    /// Lowercased words any matching text holds whole.
    required_words: Vec<String>,
    /// Alternatives of words beyond those: any match holds every word of
    /// at least one of them.
    word_alternatives: Vec<Vec<String>>,
}

impl Pattern {
    /// A regex that must match the whole value (label matchers): `gpu-.*`
    /// matches `gpu-a100-1` but not `old-gpu-1`.
    pub fn whole(source: &str) -> Result<Pattern, String> {
        Pattern::whole_within(source, DEFAULT_REGEX_SIZE_LIMIT)
    }

    /// [`Pattern::whole`], refused past `size_limit` bytes once compiled.
    pub fn whole_within(source: &str, size_limit: usize) -> Result<Pattern, String> {
        // Validate the regex alone first: wrapped, `a)|(b` would be valid.
        compile(source, size_limit)?;
        let regex = compile(&format!(r"\A(?:{source})\z"), size_limit)?;
        Ok(Pattern {
            source: source.to_owned(),
            whole: true,
            regex,
            required_words: Vec::new(),
            word_alternatives: Vec::new(),
        })
    }

    /// A regex found anywhere in the text (message search).
    pub fn search(source: &str) -> Result<Pattern, String> {
        Pattern::search_within(source, DEFAULT_REGEX_SIZE_LIMIT)
    }

    /// [`Pattern::search`], refused past `size_limit` bytes once compiled.
    pub fn search_within(source: &str, size_limit: usize) -> Result<Pattern, String> {
        let regex = compile(source, size_limit)?;
        let (required_words, word_alternatives) = regex_words(source);
        Ok(Pattern {
            source: source.to_owned(),
            whole: false,
            regex,
            required_words,
            word_alternatives,
        })
    }

    /// The regex as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    /// Lowercased words that every text this regex matches holds as whole
    /// words (see [`crate::words`]): literal words with a literal separator
    /// on both sides, outside optional parts, and in every branch of an
    /// alternation. `failed to (load|open) model\.` requires `to`; `(?i)…`
    /// letters require nothing. Possibly none: an empty list never rules
    /// anything out.
    pub fn required_words(&self) -> &[String] {
        &self.required_words
    }

    /// What alternations require beyond [`Pattern::required_words`]: every
    /// match holds all the words of at least one of these lists. `failed to
    /// (load|open) model` gives `[["load"], ["open"]]`; `out of memory|
    /// connection refused by peer` gives `[["by", "refused"], ["of"]]`.
    /// Empty when some branch requires no whole word (then nothing can be
    /// ruled out by them).
    pub fn word_alternatives(&self) -> &[Vec<String>] {
        &self.word_alternatives
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.whole == other.whole
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.whole { "whole" } else { "search" };
        write!(f, "Pattern::{kind}({:?})", self.source)
    }
}

/// Compiles `pattern` within `size_limit` bytes. Errors say what is wrong
/// and what to do, without repeating the regex (the caller names it).
fn compile(pattern: &str, size_limit: usize) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(limit) => format!(
                "too large once compiled (past the {} limit); use fewer or smaller repetitions \
                 and classes (\\w, \\d and . are Unicode-wide; (?-u) makes them ASCII), or \
                 raise the server's --regex-size-limit",
                size(limit)
            ),
            regex::Error::Syntax(text) => {
                // The crate's message is several lines ending "error: <what>".
                let what = text
                    .lines()
                    .rev()
                    .find_map(|line| line.trim().strip_prefix("error: "))
                    .unwrap_or(text.trim())
                    .to_owned();
                format!(
                    "{what}; fix the regex, or put \\ before special characters to match them \
                     as written"
                )
            }
            other => other.to_string(),
        })
}

/// `bytes` as people read it: `1 MiB`, `512 KiB`.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.trailing_zeros() >= 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Alternatives a regex is expanded into at most when finding the words it
/// requires; past it, an alternation is treated as requiring nothing.
const MAX_WORD_ALTERNATIVES: usize = 16;

/// See [`Pattern::required_words`] and [`Pattern::word_alternatives`].
fn regex_words(source: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let Ok(hir) = regex_syntax::parse(source) else {
        return (Vec::new(), Vec::new());
    };
    let mut alternatives = vec![Runs::default()];
    feed(&hir, &mut alternatives);
    let mut word_sets: Vec<Vec<String>> = alternatives
        .into_iter()
        .map(|mut runs| {
            runs.end_run();
            let mut words: Vec<String> = runs
                .done
                .iter()
                .filter_map(|bytes| std::str::from_utf8(bytes).ok())
                .flat_map(inner_words)
                .map(str::to_ascii_lowercase)
                .collect();
            words.sort();
            words.dedup();
            words
        })
        .collect();
    word_sets.sort();
    word_sets.dedup();
    // Words in every alternative are simply required.
    let Some(first) = word_sets.first() else {
        return (Vec::new(), Vec::new());
    };
    let mut required = first.clone();
    required.retain(|word| word_sets.iter().all(|set| set.contains(word)));
    for set in &mut word_sets {
        set.retain(|word| !required.contains(word));
    }
    let alternatives = if word_sets.len() > 1 && word_sets.iter().all(|set| !set.is_empty()) {
        word_sets
    } else {
        Vec::new()
    };
    (required, alternatives)
}

/// Byte strings one way of matching surely holds verbatim: runs of
/// consecutive literals (`done`), and the run still growing (`open`).
#[derive(Clone, Default)]
struct Runs {
    done: Vec<Vec<u8>>,
    open: Vec<u8>,
}

impl Runs {
    fn end_run(&mut self) {
        if !self.open.is_empty() {
            self.done.push(std::mem::take(&mut self.open));
        }
    }
}

/// Extends each way of matching with what `hir` surely adds: literals join
/// the open run; groups and concatenations are followed; an alternation
/// multiplies the ways (up to [`MAX_WORD_ALTERNATIVES`]); a repetition of at
/// least one adds what its body requires, as runs of their own. Anything
/// else (classes, optional parts, look-arounds, an alternation too wide)
/// ends the runs and adds nothing, which is always safe.
fn feed(hir: &Hir, ways: &mut Vec<Runs>) {
    match hir.kind() {
        HirKind::Empty => {}
        HirKind::Literal(literal) => {
            for way in ways.iter_mut() {
                way.open.extend_from_slice(&literal.0);
            }
        }
        HirKind::Capture(capture) => feed(&capture.sub, ways),
        HirKind::Concat(items) => {
            for item in items {
                feed(item, ways);
            }
        }
        HirKind::Alternation(branches) if ways.len() * branches.len() <= MAX_WORD_ALTERNATIVES => {
            let mut expanded = Vec::with_capacity(ways.len() * branches.len());
            for branch in branches {
                let mut branch_ways = ways.clone();
                feed(branch, &mut branch_ways);
                expanded.extend(branch_ways);
            }
            *ways = expanded;
        }
        HirKind::Repetition(repetition) if repetition.min >= 1 => {
            let mut body = vec![Runs::default()];
            feed(&repetition.sub, &mut body);
            let combined: Vec<Runs> = if ways.len() * body.len() <= MAX_WORD_ALTERNATIVES {
                ways.iter()
                    .flat_map(|way| {
                        body.iter().map(move |inside| {
                            let mut way = way.clone();
                            way.end_run();
                            let mut inside = inside.clone();
                            inside.end_run();
                            way.done.extend(inside.done);
                            way
                        })
                    })
                    .collect()
            } else {
                ways.clone()
            };
            *ways = combined;
            for way in ways.iter_mut() {
                way.end_run();
            }
        }
        _ => {
            for way in ways.iter_mut() {
                way.end_run();
            }
        }
    }
}

/// How a label value is matched (see the [module](self) for semantics).
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// Exactly this value.
    Eq(String),
    /// Any value but this one.
    Ne(String),
    /// Values the regex matches whole ([`Pattern::whole`]).
    Re(Pattern),
    /// Values the regex does not match whole.
    NotRe(Pattern),
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Eq(wanted) => value == wanted,
            Matcher::Ne(unwanted) => value != unwanted,
            Matcher::Re(pattern) => pattern.is_match(value),
            Matcher::NotRe(pattern) => !pattern.is_match(value),
        }
    }
}

impl From<&str> for Matcher {
    fn from(value: &str) -> Matcher {
        Matcher::Eq(value.to_owned())
    }
}

impl From<String> for Matcher {
    fn from(value: String) -> Matcher {
        Matcher::Eq(value)
    }
}

/// Text to find anywhere in a message, inside words too.
#[derive(Clone)]
pub struct Substring {
    text: String,
    case_sensitive: bool,
    regex: Regex,
    required_words: Vec<String>,
}

impl Substring {
    /// `text` as written when `case_sensitive`, else ignoring ASCII case
    /// (`OOM` finds `oom`; `É` does not find `é`). Fails only when `text` is
    /// too long to compile within [`DEFAULT_REGEX_SIZE_LIMIT`].
    pub fn new(text: &str, case_sensitive: bool) -> Result<Substring, String> {
        Substring::within(text, case_sensitive, DEFAULT_REGEX_SIZE_LIMIT)
    }

    /// [`Substring::new`], refused past `size_limit` bytes once compiled.
    pub fn within(
        text: &str,
        case_sensitive: bool,
        size_limit: usize,
    ) -> Result<Substring, String> {
        let pattern = if case_sensitive {
            regex::escape(text)
        } else {
            let mut pattern = String::with_capacity(text.len() * 2);
            for c in text.chars() {
                if c.is_ascii_alphabetic() {
                    pattern.extend(['[', c.to_ascii_lowercase(), c.to_ascii_uppercase(), ']']);
                } else {
                    pattern.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
                }
            }
            pattern
        };
        let regex = RegexBuilder::new(&pattern)
            .size_limit(size_limit)
            .build()
            .map_err(|_| {
                format!(
                    "too long to search for ({} bytes, past the {} limit once compiled): \
                     search for a shorter part of it, or raise the server's --regex-size-limit",
                    text.len(),
                    size(size_limit)
                )
            })?;
        let mut required_words: Vec<String> =
            inner_words(text).map(str::to_ascii_lowercase).collect();
        required_words.sort();
        required_words.dedup();
        Ok(Substring {
            text: text.to_owned(),
            case_sensitive,
            regex,
            required_words,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn case_sensitive(&self) -> bool {
        self.case_sensitive
    }

    pub fn is_in(&self, message: &str) -> bool {
        self.regex.is_match(message)
    }

    /// Lowercased words any message holding the text holds whole: its inner
    /// words ([`inner_words`]).
    pub fn required_words(&self) -> &[String] {
        &self.required_words
    }
}

impl PartialEq for Substring {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.case_sensitive == other.case_sensitive
    }
}

impl fmt::Debug for Substring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Substring")
            .field("text", &self.text)
            .field("case_sensitive", &self.case_sensitive)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_regexes_match_whole_values() {
        let re = Matcher::Re(Pattern::whole("gpu-.*").unwrap());
        assert!(re.matches("gpu-a100-1"));
        assert!(!re.matches("old-gpu-1"));
        let alternatives = Matcher::Re(Pattern::whole("r1|r2").unwrap());
        assert!(alternatives.matches("r1") && alternatives.matches("r2"));
        assert!(
            !alternatives.matches("r12"),
            "anchored around the alternation"
        );
        let not = Matcher::NotRe(Pattern::whole("r[12]").unwrap());
        assert!(not.matches("r3") && !not.matches("r1"));
        assert!(Matcher::Ne("a".into()).matches("b"));
        assert!(!Matcher::Ne("a".into()).matches("a"));
        assert_eq!(Matcher::from("x"), Matcher::Eq("x".into()));
        // (?m) inside does not loosen the anchors.
        assert!(!Pattern::whole("(?m)a$").unwrap().is_match("a\nb"));
    }

    #[test]
    fn bad_and_huge_regexes_get_clear_errors() {
        let error = Pattern::whole("gpu-(").unwrap_err();
        assert!(
            error.starts_with("unclosed group; fix the regex"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
        // Valid only once wrapped: still refused.
        assert!(Pattern::whole("a)|(b").is_err());
        let error = Pattern::search(r"\w{1000}").unwrap_err();
        assert!(
            error.starts_with("too large once compiled (past the 1 MiB limit)"),
            "{error}"
        );
        let error = Substring::new(&"x".repeat(200_000), false).unwrap_err();
        assert!(
            error.starts_with("too long to search for (200000 bytes"),
            "{error}"
        );
    }

    #[test]
    fn message_regexes_search_anywhere() {
        let pattern = Pattern::search("out of (memory|time)").unwrap();
        assert!(pattern.is_match("CUDA out of memory."));
        assert!(!pattern.is_match("CUDA Out Of Memory."));
        assert!(Pattern::search("(?i)out of memory")
            .unwrap()
            .is_match("CUDA Out Of Memory."));
    }

    #[test]
    fn regexes_require_only_words_they_surely_hold() {
        let words = |source| Pattern::search(source).unwrap().required_words().to_vec();
        assert_eq!(words("failed to (load|open) model"), ["to"]);
        assert_eq!(words("CUDA out of memory"), ["of", "out"]);
        assert_eq!(words(r"Error: (code 42\.)+"), ["42"]);
        assert_eq!(words("a (b c)? d"), Vec::<String>::new());
        assert_eq!(words("x (?i)foo bar baz 42 y"), ["42"]);
        assert_eq!(words(r"\bfoo\b"), Vec::<String>::new());
        assert_eq!(words("one|two three four"), Vec::<String>::new());
        assert_eq!(words("say (one|two) more"), Vec::<String>::new());
        assert_eq!(words("(?:a b )*c d e"), ["d"]);
        // Each word found really is a whole word of any match.
        let pattern = Pattern::search("x OutOfMemory, y").unwrap();
        assert_eq!(pattern.required_words(), ["outofmemory"]);
    }

    #[test]
    fn alternations_require_the_words_of_one_branch() {
        let pattern = |source| Pattern::search(source).unwrap();
        let alternatives = |source| pattern(source).word_alternatives().to_vec();
        assert_eq!(
            alternatives("failed to (load|open) model"),
            [vec!["load"], vec!["open"]]
        );
        assert_eq!(
            pattern("failed to (load|open) model").required_words(),
            ["to"]
        );
        assert_eq!(
            alternatives("out of memory|connection refused by peer"),
            [vec!["by", "refused"], vec!["of"]]
        );
        // Words every branch holds are required outright.
        let shared = pattern("a (x out of y|z of w) b");
        assert_eq!(shared.required_words(), ["of"]);
        assert_eq!(
            shared.word_alternatives(),
            [vec!["out", "x", "y"], vec!["w", "z"]]
        );
        // A branch without a whole word rules nothing out.
        assert!(alternatives("oom|out of memory").is_empty());
        assert!(alternatives("a (b|c)? d").is_empty());
        // Nested, and under a repetition of at least one.
        assert_eq!(
            alternatives("go ((to|from) (the|a) )+x"),
            [vec!["a"], vec!["the"]]
        );
        // Too many ways to expand: required words only, as before.
        let wide = (0..40)
            .map(|n| format!("w{n}"))
            .collect::<Vec<_>>()
            .join("|");
        assert!(alternatives(&format!("x ({wide}) y")).is_empty());
    }

    #[test]
    fn the_size_limit_is_a_setting() {
        let source = "x{300}";
        assert!(Pattern::search(source).is_ok(), "within the default");
        let error = Pattern::search_within(source, 1024).unwrap_err();
        assert!(
            error.starts_with("too large once compiled (past the 1 KiB limit)"),
            "{error}"
        );
        assert!(
            error.ends_with("or raise the server's --regex-size-limit"),
            "{error}"
        );
        assert!(Pattern::whole_within(source, 1024).is_err());
        assert!(Substring::within(&"x".repeat(5000), true, 1024).is_err());
        assert!(Substring::within(&"x".repeat(5000), true, DEFAULT_REGEX_SIZE_LIMIT).is_ok());
    }

    #[test]
    fn substrings_match_inside_words_with_or_without_case() {
        let insensitive = Substring::new("Out Of Mem", false).unwrap();
        assert!(insensitive.is_in("cuda OUT OF MEMORY"));
        assert!(insensitive.is_in("timeout of memoryless"));
        assert!(!insensitive.is_in("out  of memory"));
        let sensitive = Substring::new("Out Of Mem", true).unwrap();
        assert!(!sensitive.is_in("cuda OUT OF MEMORY"));
        assert!(sensitive.is_in("xOut Of Memory"));
        // Special characters are text, and only ASCII case is ignored.
        assert!(Substring::new("a.b(", false).unwrap().is_in("xA.B(y"));
        assert!(!Substring::new("a.b(", false).unwrap().is_in("axb("));
        assert!(!Substring::new("É", false).unwrap().is_in("é"));
        assert!(Substring::new("", true).unwrap().is_in("anything"));
        assert_eq!(
            Substring::new("timeout of memory", false)
                .unwrap()
                .required_words(),
            ["of"]
        );
    }
}
