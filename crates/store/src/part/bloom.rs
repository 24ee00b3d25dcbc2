//! A block's word filter: a bloom filter over the lowercased words of its
//! messages, so a text search skips blocks that cannot hold its words.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

/// Bits per distinct word: about 1% false positives with 7 probes.
const BITS_PER_WORD: usize = 10;
const PROBES: u64 = 7;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordBloom {
    bits: Vec<u64>,
}

impl WordBloom {
    /// A filter holding `words` (already lowercased and deduplicated).
    pub fn build<'a>(words: impl ExactSizeIterator<Item = &'a str>) -> WordBloom {
        let bit_count = (words.len() * BITS_PER_WORD).max(64).next_multiple_of(64);
        let mut bloom = WordBloom {
            bits: vec![0; bit_count / 64],
        };
        for word in words {
            for bit in probes(word, bit_count as u64) {
                bloom.bits[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        bloom
    }

    /// `false` when `word` (lowercased) is surely absent.
    pub fn may_contain(&self, word: &str) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        let bit_count = self.bits.len() as u64 * 64;
        probes(word, bit_count).all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    pub fn size_bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Kirsch–Mitzenmacher double hashing from one 128-bit hash.
fn probes(word: &str, bit_count: u64) -> impl Iterator<Item = u64> {
    let hash = xxh3_128(word.as_bytes());
    let (h1, h2) = (hash as u64, (hash >> 64) as u64 | 1);
    (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bit_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_it_was_built_with_and_rejects_most_else() {
        let words: Vec<String> = (0..2000).map(|n| format!("word{n}")).collect();
        let bloom = WordBloom::build(words.iter().map(String::as_str));
        assert!(words.iter().all(|word| bloom.may_contain(word)));
        let false_positives = (0..10_000)
            .filter(|n| bloom.may_contain(&format!("other{n}")))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 10000"
        );
    }
}
