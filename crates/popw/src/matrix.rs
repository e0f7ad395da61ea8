//! Deriving challenge matrices from a nonce, and the row commitment.

use cairn_primitives::{Hash, merkle_root, sha256};
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

/// Largest dimension a challenge may have (so sums fit in i32: n·128·128 < 2^31).
pub const MAX_N: u32 = 16_384;

/// Why a challenge cannot be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    /// `n` is not a power of two in range.
    #[error("dimension {0} is not a power of two between 2 and {MAX_N}")]
    BadDimension(u32),
}

/// A challenge: a nonce and a dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The nonce.
    pub nonce: [u8; 32],
    /// The dimension of the square matrices.
    pub n: u32,
    key_a: [u8; 32],
    key_b: [u8; 32],
    shuffle_a: u64,
    shuffle_b: u64,
}

impl Challenge {
    /// The challenge for `nonce` at dimension `n`.
    pub fn new(nonce: [u8; 32], n: u32) -> Result<Self, ChallengeError> {
        if !(2..=MAX_N).contains(&n) || !n.is_power_of_two() {
            return Err(ChallengeError::BadDimension(n));
        }
        let key_a = sha256(&[b"cairn/popw/A", &nonce]).0;
        let key_b = sha256(&[b"cairn/popw/B", &nonce]).0;
        let s = sha256(&[b"cairn/popw/shuffle", &nonce]).0;
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&s[..8]);
        b.copy_from_slice(&s[8..16]);
        Ok(Self {
            nonce,
            n,
            key_a,
            key_b,
            // An odd multiplier makes r -> a·r + b a permutation of Z/n for n a power of two.
            shuffle_a: u64::from_le_bytes(a) | 1,
            shuffle_b: u64::from_le_bytes(b),
        })
    }

    fn stream(key: &[u8; 32], offset: u64, out: &mut [u8]) {
        let mut c = ChaCha20::new(key.into(), &[0u8; 12].into());
        c.seek(offset);
        out.fill(0);
        c.apply_keystream(out);
    }

    /// The ChaCha20 keys of `A` and `B`, and the shuffle's multiplier and offset: what a device
    /// solver needs to generate the inputs itself.
    pub fn derivation(&self) -> ([u8; 32], [u8; 32], u64, u64) {
        (self.key_a, self.key_b, self.shuffle_a, self.shuffle_b)
    }

    /// Which row of `A` feeds row `r` of the result.
    pub fn shuffled_row(&self, r: u32) -> u32 {
        let n = u64::from(self.n);
        let v = self
            .shuffle_a
            .wrapping_mul(u64::from(r))
            .wrapping_add(self.shuffle_b)
            .checked_rem(n)
            .unwrap_or(0); // n ≥ 1: `new` refuses anything else
        v as u32
    }

    /// All of `A`, row-major (row `i` is the stream at `i·n`), generated on every core.
    pub fn a_matrix(&self) -> Vec<i8> {
        Self::whole(&self.key_a, self.n as usize)
    }

    /// All of `B`'s columns, one after another (`Bᵀ` row-major).
    pub fn b_matrix_t(&self) -> Vec<i8> {
        Self::whole(&self.key_b, self.n as usize)
    }

    #[expect(
        clippy::arithmetic_side_effects,
        reason = "n ≤ MAX_N = 2¹⁴: n² and every chunk's offset fit"
    )]
    fn whole(key: &[u8; 32], n: usize) -> Vec<i8> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let mut buf = vec![0u8; n * n];
        buf.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            Self::stream(key, (i * CHUNK) as u64, c);
        });
        buf.into_iter().map(|b| b as i8).collect()
    }

    /// Row `i` of `A`.
    pub fn a_row(&self, i: u32) -> Vec<i8> {
        let n = self.n as usize;
        let mut buf = vec![0u8; n];
        Self::stream(&self.key_a, wide_mul(i, self.n), &mut buf);
        buf.into_iter().map(|b| b as i8).collect()
    }

    /// Column `j` of `B` (stored column-major: one contiguous run of the stream).
    pub fn b_col(&self, j: u32) -> Vec<i8> {
        let n = self.n as usize;
        let mut buf = vec![0u8; n];
        Self::stream(&self.key_b, wide_mul(j, self.n), &mut buf);
        buf.into_iter().map(|b| b as i8).collect()
    }

    /// One entry of the result, computed alone in O(n).
    pub fn entry(&self, r: u32, j: u32) -> i32 {
        let a = self.a_row(self.shuffled_row(r));
        let b = self.b_col(j);
        dot(&a, &b)
    }

    /// One row of the result, computed alone in O(n²).
    pub fn result_row(&self, r: u32) -> Vec<i32> {
        let a = self.a_row(self.shuffled_row(r));
        (0..self.n)
            .map(|j| {
                let b = self.b_col(j);
                dot(&a, &b)
            })
            .collect()
    }
}

/// `a · b` widened: a `u32` product always fits a `u64`.
fn wide_mul(a: u32, b: u32) -> u64 {
    u64::from(a).wrapping_mul(u64::from(b))
}

/// The int8 dot product with int32 accumulation: `|sum| ≤ n·2¹⁴ < 2³¹` for every `n ≤ MAX_N`,
/// so the wrapping sum is the exact one (and lets LLVM vectorize).
pub(crate) fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (x, y)| {
        s.wrapping_add(i32::from(*x).wrapping_mul(i32::from(*y)))
    })
}

/// Values per chunk of a row leaf (1 KiB of int32).
pub const LEAF_CHUNK: usize = 256;

/// The 16-byte tag that opens a chunk's hash (in a 64-byte header block).
pub const CHUNK_TAG: &[u8; 16] = b"cairn/popw/chunk";
/// The 16-byte tag that opens a row's hash over its chunks' digests.
pub const ROW_TAG: &[u8; 16] = b"cairn/popw/row\0\0";

/// A 64-byte header block: the tag, zeros, and `index` big-endian in the last four bytes. A
/// whole block, so that what follows it starts on a SHA-256 block boundary (the GPU hashes
/// rows word by word straight from its tables).
fn header(tag: &[u8; 16], index: u32) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[..16].copy_from_slice(tag);
    h[60..].copy_from_slice(&index.to_be_bytes());
    h
}

/// The leaf committing to result row `r`: SHA-256 over a row header (naming `r`) and the
/// digests of the row's chunks of [`LEAF_CHUNK`] values, each chunk hashed with its own header
/// (naming its index) followed by its values as little-endian int32. Two levels rather than
/// one hash of the whole row, so a GPU hashes a table's chunks in parallel (a million threads
/// for a 16,384² table instead of 16,384, each walking 64 KiB alone); a checker's cost is the
/// same, one pass over the row.
pub fn row_leaf(r: u32, values: &[i32]) -> Hash {
    leaf_over_chunks(r, &chunk_digests(values))
}

/// The digests of a row's chunks, one after another (the first level of [`row_leaf`]).
pub fn chunk_digests(values: &[i32]) -> Vec<u8> {
    let mut digests = Vec::with_capacity(values.len().div_ceil(LEAF_CHUNK).saturating_mul(32));
    let mut bytes = Vec::with_capacity(4 * LEAF_CHUNK);
    for (c, chunk) in values.chunks(LEAF_CHUNK).enumerate() {
        bytes.clear();
        for v in chunk {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        digests.extend_from_slice(&sha256(&[&header(CHUNK_TAG, c as u32), &bytes]).0);
    }
    digests
}

/// Row `r`'s leaf over its chunks' digests (the second level of [`row_leaf`]).
pub fn leaf_over_chunks(r: u32, digests: &[u8]) -> Hash {
    sha256(&[&header(ROW_TAG, r), digests])
}

/// The commitment to a whole result: the Merkle root over its rows' leaves.
pub fn rows_root(rows: &[Vec<i32>]) -> Hash {
    let leaves: Vec<Hash> = rows
        .iter()
        .enumerate()
        .map(|(r, v)| row_leaf(r as u32, v))
        .collect();
    merkle_root(&leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shuffle_is_a_permutation() {
        let c = Challenge::new([1; 32], 64).unwrap();
        let d = Challenge::new([1; 32], 64).unwrap();
        assert_eq!(c.a_row(5), d.a_row(5));
        assert_ne!(c.a_row(5), Challenge::new([2; 32], 64).unwrap().a_row(5));
        let mut seen: Vec<u32> = (0..64).map(|r| c.shuffled_row(r)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..64).collect::<Vec<_>>());
        assert!(Challenge::new([0; 32], 3).is_err());
        assert!(Challenge::new([0; 32], MAX_N * 2).is_err());
    }
}
