//! Words: the unit of full-text search.
//!
//! A word is a maximal run of ASCII letters, digits and `_`, or of non-ASCII
//! characters; everything else separates words. Text search finds a phrase
//! when its words stand consecutively in a message, ignoring ASCII case:
//! `out of memory` finds `CUDA out-of-memory`, `OutOfMemoryError` finds
//! `torch.OutOfMemoryError: …`, and `memory` does not find `memoryless`.
//! Because matches are whole words, a store can index words (in bloom
//! filters) and skip whatever cannot match. For parts of words, use a
//! substring (`contains`) or a regex; those can still skip blocks by the
//! whole words they require ([`inner_words`]).

/// Whether `byte` belongs to a word.
pub fn is_word_byte(byte: u8) -> bool {
    WORD_BYTES[byte as usize]
}

/// [`is_word_byte`] as a table: one load a byte where the store's word
/// filters tokenize every message of every block they build.
static WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        byte += 1;
    }
    table
};

/// Calls `each` with the words of `bytes`, in order: the words [`words`]
/// finds, found 64 bytes at a time from a mask of which bytes belong to
/// words, so without a branch per byte. This is how the store's word
/// filters cut every message of every block they build.
pub fn for_each_word(bytes: &[u8], mut each: impl FnMut(&[u8])) {
    let mut in_word = false;
    let mut start = 0;
    let mut take_mask = |mask: u64, base: usize| {
        // A bit for each byte where a word starts or ends.
        let mut edges = mask ^ ((mask << 1) | u64::from(in_word));
        while edges != 0 {
            let at = base + edges.trailing_zeros() as usize;
            if in_word {
                each(&bytes[start..at]);
            } else {
                start = at;
            }
            in_word = !in_word;
            edges &= edges - 1;
        }
    };
    let mut chunks = bytes.chunks_exact(64);
    let mut base = 0;
    for chunk in &mut chunks {
        take_mask(word_byte_mask(chunk.try_into().expect("64 bytes")), base);
        base += 64;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Zeros are not word bytes: a word running to the end ends there.
        let mut padded = [0; 64];
        padded[..rest.len()].copy_from_slice(rest);
        take_mask(word_byte_mask(&padded), base);
    }
    if in_word {
        each(&bytes[start..]);
    }
}

/// Bit `i` set when `chunk[i]` belongs to a word.
#[cfg(target_arch = "x86_64")]
fn word_byte_mask(chunk: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut mask = 0;
    for (i, part) in chunk.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of every x86_64 processor, and the load reads
        // the 16 bytes of `part`, unaligned.
        let word = unsafe {
            let bytes = _mm_loadu_si128(part.as_ptr().cast());
            let in_range = |bytes, low: u8, high: u8| {
                // Signed compares: bytes of 0x80 and up are out of every
                // ASCII range, and their own top bit marks them below.
                _mm_and_si128(
                    _mm_cmpgt_epi8(bytes, _mm_set1_epi8(low as i8 - 1)),
                    _mm_cmplt_epi8(bytes, _mm_set1_epi8(high as i8 + 1)),
                )
            };
            let letter = in_range(_mm_or_si128(bytes, _mm_set1_epi8(0x20)), b'a', b'z');
            let digit = in_range(bytes, b'0', b'9');
            let underscore = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'_' as i8));
            let ascii_word = _mm_or_si128(_mm_or_si128(letter, digit), underscore);
            _mm_movemask_epi8(_mm_or_si128(ascii_word, bytes))
        };
        mask |= u64::from(word as u16) << (16 * i);
    }
    mask
}

/// Bit `i` set when `chunk[i]` belongs to a word.
#[cfg(not(target_arch = "x86_64"))]
fn word_byte_mask(chunk: &[u8; 64]) -> u64 {
    word_byte_mask_by_table(chunk)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn word_byte_mask_by_table(chunk: &[u8; 64]) -> u64 {
    chunk.iter().enumerate().fold(0, |mask, (i, &byte)| {
        mask | u64::from(is_word_byte(byte)) << i
    })
}

/// The words of `text`, in order.
pub fn words(text: &str) -> Words<'_> {
    Words { rest: text }
}

#[derive(Clone, Debug)]
pub struct Words<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.rest.as_bytes();
        // Word boundaries are ASCII bytes, so slicing there stays on char
        // boundaries.
        let start = bytes.iter().position(|&b| is_word_byte(b))?;
        let len = bytes[start..]
            .iter()
            .position(|&b| !is_word_byte(b))
            .unwrap_or(bytes.len() - start);
        let word = &self.rest[start..start + len];
        self.rest = &self.rest[start + len..];
        Some(word)
    }
}

/// The words of `text` that stand whole inside it: with a separator on both
/// sides, so not its first or last word unless `text` begins or ends with a
/// separator. Any message that holds `text` verbatim (or ignoring ASCII case)
/// holds each of these as a whole word, which is what a word filter can
/// check: ` of ` in `out of memory`, while `out` may end `timeout` and
/// `memory` may begin `memoryless`.
pub fn inner_words(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let base = text.as_ptr() as usize;
    words(text).filter(move |word| {
        let start = word.as_ptr() as usize - base;
        let end = start + word.len();
        start > 0 && end < bytes.len()
    })
}

/// A phrase to find in messages, prepared once per query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phrase {
    /// As the user typed it.
    pub text: String,
    /// Its words, lowercased (ASCII).
    pub words: Vec<String>,
}

impl Phrase {
    pub fn new(text: &str) -> Phrase {
        Phrase {
            text: text.to_owned(),
            words: words(text).map(|word| word.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether the phrase's words stand consecutively in `message`. A phrase
    /// with no words at all (`...`) is looked for as plain text instead.
    pub fn is_in(&self, message: &str) -> bool {
        let Some(first) = self.words.first() else {
            return contains_ignore_ascii_case(message, &self.text);
        };
        let mut candidates = words(message);
        loop {
            let Some(word) = candidates.next() else {
                return false;
            };
            if !word.eq_ignore_ascii_case(first) {
                continue;
            }
            let mut following = candidates.clone();
            if self.words[1..].iter().all(|wanted| {
                following
                    .next()
                    .is_some_and(|word| word.eq_ignore_ascii_case(wanted))
            }) {
                return true;
            }
        }
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_punctuation_and_keep_unicode() {
        let found: Vec<_> =
            words("torch.OutOfMemoryError: CUDA out-of-memory (2.50 GiB) für_dich ✓").collect();
        assert_eq!(
            found,
            [
                "torch",
                "OutOfMemoryError",
                "CUDA",
                "out",
                "of",
                "memory",
                "2",
                "50",
                "GiB",
                "für_dich",
                "✓"
            ]
        );
        assert_eq!(words("  ...  ").count(), 0);
    }

    #[test]
    fn words_by_mask_are_the_words_found_byte_by_byte() {
        // Word and separator runs of every length across the 64-byte
        // chunks, in texts of every length around them.
        let pieces = [
            "a", "Zz", "_", "09", "für", "東京", "x1_y", " ", ".", "-:", "@[`{", "/", "\t",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        for _ in 0..2000 {
            let mut text = String::new();
            let len = next(300);
            while text.len() < len {
                let piece = pieces[next(pieces.len())];
                let most = if next(8) == 0 { 80 } else { 3 };
                for _ in 0..1 + next(most) {
                    text.push_str(piece);
                }
            }
            let mut found = Vec::new();
            for_each_word(text.as_bytes(), |word| found.push(word.to_vec()));
            let expected: Vec<_> = words(&text).map(|word| word.as_bytes().to_vec()).collect();
            assert_eq!(found, expected, "{text:?}");
        }
        // Every byte value, at every place of a chunk.
        for byte in 0..=255u8 {
            for at in 0..64 {
                let mut chunk = [b' '; 64];
                chunk[at] = byte;
                assert_eq!(word_byte_mask(&chunk), word_byte_mask_by_table(&chunk));
                assert_eq!(word_byte_mask(&chunk) >> at & 1 == 1, is_word_byte(byte));
            }
        }
    }

    #[test]
    fn phrases_match_whole_consecutive_words_ignoring_case() {
        let message = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB";
        for hit in [
            "out of memory",
            "OUT OF MEMORY",
            "outofmemoryerror",
            "cuda",
            "2.50 gib",
            "memory. tried",
        ] {
            assert!(Phrase::new(hit).is_in(message), "{hit}");
        }
        for miss in ["memor", "of out", "out memory", "allocated", "tor"] {
            assert!(!Phrase::new(miss).is_in(message), "{miss}");
        }
        // A repeated first word does not hide a later match.
        assert!(Phrase::new("out of time").is_in("out of memory, out of time"));
    }

    #[test]
    fn inner_words_are_those_with_a_separator_on_both_sides() {
        let inner = |text| inner_words(text).collect::<Vec<_>>();
        assert_eq!(inner("out of memory"), ["of"]);
        assert_eq!(inner(" out of memory."), ["out", "of", "memory"]);
        assert_eq!(inner("(für)"), ["für"]);
        assert!(inner("memory").is_empty());
        assert!(inner("a-b").is_empty());
        assert!(inner("").is_empty());
    }

    #[test]
    fn a_phrase_without_words_is_plain_text() {
        assert!(Phrase::new("->").is_in("a -> b"));
        assert!(!Phrase::new("->").is_in("a - b"));
    }
}
