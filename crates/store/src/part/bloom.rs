//! A block's word filter: a bloom filter over the lowercased words of its
//! messages, so a text search skips blocks that cannot hold its words.
//!
//! Numbers of at most [`MAX_UNINDEXED_DIGITS`] digits, and words of at most
//! [`MAX_UNINDEXED_BYTES`] bytes (`a`, `to`, `of`, `ms`), are not indexed:
//! they are in nearly every block, so they would rule out almost none, and
//! they are half the words of a log line (short numbers alone 40% in the
//! benchmark's corpus), each one to hash. [`WordBloom::may_contain`]
//! answers `true` for them.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};
use tailwater_model::words::for_each_word;
use xxhash_rust::xxh3::xxh3_128;

/// Bits per distinct word: about 3% false positives with 5 probes (a
/// false positive costs one block read; the bits cost disk and memory).
const BITS_PER_WORD: usize = 7;
const PROBES: u64 = 5;
/// Words of only digits, up to this many, are not indexed.
pub const MAX_UNINDEXED_DIGITS: usize = 4;
/// Words of up to this many bytes are not indexed.
pub const MAX_UNINDEXED_BYTES: usize = 2;

fn is_indexed(word: &[u8]) -> bool {
    word.len() > MAX_UNINDEXED_DIGITS
        || (word.len() > MAX_UNINDEXED_BYTES && !word.iter().all(u8::is_ascii_digit))
}

/// Collects the words of a block's messages, each distinct word once (a
/// block repeats most of its words many times).
pub struct BloomBuilder {
    hashes: HashSet<u128, BuildHasherDefault<AlreadyHashed>>,
    /// The hash last added in each slot (by its low bits): most words of a
    /// block were added before, and are found here without going to the
    /// set. Cleared with the set.
    recent: Box<[u128; RECENT_SLOTS]>,
    lowercase: Vec<u8>,
}

/// Slots of [`BloomBuilder::recent`]: 32 KiB, which stays in the L1 cache.
const RECENT_SLOTS: usize = 2048;

impl Default for BloomBuilder {
    fn default() -> BloomBuilder {
        BloomBuilder {
            hashes: HashSet::default(),
            recent: Box::new([0; RECENT_SLOTS]),
            lowercase: Vec::new(),
        }
    }
}

impl BloomBuilder {
    /// Adds the words of a message: lowercased whole first (one pass that
    /// vectorizes), then cut into words, the same words as
    /// [`tailwater_model::words::words`] finds.
    pub fn add_text(&mut self, text: &str) {
        let BloomBuilder {
            hashes,
            recent,
            lowercase,
        } = self;
        lowercase.clear();
        lowercase.extend_from_slice(text.as_bytes());
        lowercase.make_ascii_lowercase();
        for_each_word(lowercase, |word| {
            if is_indexed(word) {
                let hash = xxh3_128(word);
                // An empty slot holds 0: a hash of 0 always goes to the set.
                let slot = &mut recent[hash as usize % RECENT_SLOTS];
                if *slot != hash || hash == 0 {
                    *slot = hash;
                    hashes.insert(hash);
                }
            }
        });
    }

    /// The filter of the words added since the last `take`; the builder is
    /// left empty, its room kept for the next block.
    pub fn take(&mut self) -> WordBloom {
        self.recent.fill(0);
        WordBloom::from_hashes(self.hashes.drain())
    }
}

/// The set's hasher for keys that are already hashes: their low bits.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only u128 hashes are keys");
    }

    fn write_u128(&mut self, hash: u128) {
        self.0 = hash as u64;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordBloom {
    bits: Vec<u64>,
}

impl WordBloom {
    pub fn builder() -> BloomBuilder {
        BloomBuilder::default()
    }

    /// A filter holding `words` (already lowercased).
    pub fn build<'a>(words: impl Iterator<Item = &'a str>) -> WordBloom {
        let mut builder = WordBloom::builder();
        for word in words {
            builder.add_text(word);
        }
        builder.take()
    }

    /// A filter holding the words with these hashes (distinct).
    fn from_hashes(hashes: impl ExactSizeIterator<Item = u128>) -> WordBloom {
        let bit_count = (hashes.len() * BITS_PER_WORD).max(64).next_multiple_of(64);
        let mut bloom = WordBloom {
            bits: vec![0; bit_count / 64],
        };
        for hash in hashes {
            for bit in probes(hash, bit_count as u64) {
                bloom.bits[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        bloom
    }

    /// `false` when `word` (lowercased) is surely absent.
    pub fn may_contain(&self, word: &str) -> bool {
        if self.bits.is_empty() || !is_indexed(word.as_bytes()) {
            return true;
        }
        let bit_count = self.bits.len() as u64 * 64;
        probes(xxh3_128(word.as_bytes()), bit_count)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    pub fn size_bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Kirsch–Mitzenmacher double hashing from one 128-bit hash.
fn probes(hash: u128, bit_count: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (hash as u64, (hash >> 64) as u64 | 1);
    (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bit_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_exactly_the_words_the_model_finds_lowercased() {
        let messages = [
            "CUDA out-of-memory: Tried to allocate 2.00 GiB (GPU 0; 79.35 GiB total)",
            "torch.OutOfMemoryError at step 12345 of 9; request_id=Req-42_ABC",
            "  naïve Ünïcode 東京 words, snake_case and kebab-case; trailing_",
            "",
            "...",
            "1234 12345 007 x",
        ];
        let mut builder = WordBloom::builder();
        let mut expected = HashSet::new();
        for message in messages {
            builder.add_text(message);
            for word in tailwater_model::words::words(message) {
                let lowered = word.to_ascii_lowercase();
                if is_indexed(lowered.as_bytes()) {
                    expected.insert(xxh3_128(lowered.as_bytes()));
                }
            }
        }
        let built: HashSet<u128> = builder.hashes.iter().copied().collect();
        assert_eq!(built, expected);
        assert!(built.contains(&xxh3_128(b"12345")) && !built.contains(&xxh3_128(b"1234")));
        assert!(built.contains(&xxh3_128(b"gib")) && !built.contains(&xxh3_128(b"x")));
    }

    #[test]
    fn holds_what_it_was_built_with_and_rejects_most_else() {
        let words: Vec<String> = (0..2000).map(|n| format!("word{n}")).collect();
        let bloom = WordBloom::build(words.iter().map(String::as_str));
        assert!(words.iter().all(|word| bloom.may_contain(word)));
        let false_positives = (0..10_000)
            .filter(|n| bloom.may_contain(&format!("other{n}")))
            .count();
        // About 3.5% expected at 7 bits and 5 probes a word.
        assert!(
            false_positives < 500,
            "{false_positives} false positives in 10000"
        );
        // Short numbers and words are not indexed, so never ruled out.
        assert!(bloom.may_contain("404") && bloom.may_contain("7"));
        assert!(bloom.may_contain("of") && bloom.may_contain("x") && !bloom.may_contain("off"));
    }
}
