//! State-root inclusion proofs, verifiable by a client without the node.
//!
//! The state root commits to every `(key, value)` record. Records are spread over
//! 2^[`BUCKET_BITS`] buckets by the hash of their key; a bucket's hash covers its records'
//! keys and leaf hashes in key order; the buckets are the leaves of a complete binary tree
//! (an empty subtree hashes to zero, so an empty state costs nothing). A proof carries the
//! record, its bucket's other entries, and the path of sibling hashes: enough to show that a
//! key holds a value, or that it holds nothing, under a given root.

use crate::{Hash, sha256};
use serde::{Deserialize, Serialize};

/// Buckets are indexed by this many leading bits of [`bucket_of`].
pub const BUCKET_BITS: u32 = 16;

/// The hash of one record.
pub fn leaf_hash(key: &[u8], value: &[u8]) -> Hash {
    sha256(&[&[0u8], &(key.len() as u32).to_be_bytes(), key, value])
}

/// The bucket a key belongs to.
///
/// A fixed 64-bit mix of the key bytes (FNV-1a, then the splitmix64 finalizer), top
/// [`BUCKET_BITS`] bits. It spreads sequential ids and random addresses evenly and costs a few
/// nanoseconds (a SHA-256 here was a tenth of an epoch close). It is no security boundary, and
/// need not be: with 2^16 buckets anyone can grind keys into one bucket under any public
/// function, which only lengthens the proofs of those keys.
pub fn bucket_of(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    usize::try_from(h >> (64 - BUCKET_BITS)).unwrap_or(0)
}

/// The hash of a bucket from its `(key, leaf hash)` entries in key order.
pub fn bucket_hash<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a Hash)>) -> Hash {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    let mut any = false;
    for (k, leaf) in entries {
        any = true;
        h.update((k.len() as u32).to_be_bytes());
        h.update(k);
        h.update(leaf.0);
    }
    if any {
        Hash(h.finalize().into())
    } else {
        Hash::ZERO
    }
}

/// The hash of an inner node; two empty children make an empty node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    if *left == Hash::ZERO && *right == Hash::ZERO {
        Hash::ZERO
    } else {
        sha256(&[&[2u8], &left.0, &right.0])
    }
}

/// A proof that `key` holds `value` (or nothing) under a state root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    /// The record's key bytes, hex.
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    /// The record's canonical encoding, hex; absent when the key holds nothing.
    #[serde(with = "opt_hex_bytes")]
    pub value: Option<Vec<u8>>,
    /// Every entry of the key's bucket (including the key's own, when present), in key order.
    pub bucket: Vec<BucketEntry>,
    /// Sibling hashes from the bucket level up to the root.
    pub siblings: Vec<Hash>,
}

/// One entry of a bucket in a proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEntry {
    /// The key bytes, hex.
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    /// The record's leaf hash.
    pub leaf: Hash,
}

/// Why a proof does not check out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// Wrong number of sibling hashes.
    #[error("proof has {0} sibling hashes; expected {BUCKET_BITS}")]
    WrongDepth(usize),
    /// Bucket entries are not strictly sorted by key.
    #[error("bucket entries are not sorted by key")]
    Unsorted,
    /// The record's leaf is not in the bucket as claimed.
    #[error("the record does not match its bucket entry")]
    LeafMismatch,
    /// Some bucket entry's key does not belong to this bucket.
    #[error("a bucket entry belongs to another bucket")]
    WrongBucket,
    /// The recomputed root differs.
    #[error("proof recomputes root {computed}, not {expected}")]
    RootMismatch {
        /// What the proof yields.
        computed: Hash,
        /// What it was checked against.
        expected: Hash,
    },
}

impl StateProof {
    /// Checks the proof against `root`: on success, the key holds exactly `self.value`.
    pub fn verify(&self, root: &Hash) -> Result<(), ProofError> {
        if self.siblings.len() != BUCKET_BITS as usize {
            return Err(ProofError::WrongDepth(self.siblings.len()));
        }
        if self.bucket.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err(ProofError::Unsorted);
        }
        let index = bucket_of(&self.key);
        if self.bucket.iter().any(|e| bucket_of(&e.key) != index) {
            return Err(ProofError::WrongBucket);
        }
        let own = self.bucket.iter().find(|e| e.key == self.key);
        match (&self.value, own) {
            (Some(v), Some(e)) if e.leaf == leaf_hash(&self.key, v) => {}
            (None, None) => {}
            _ => return Err(ProofError::LeafMismatch),
        }
        let mut h = bucket_hash(self.bucket.iter().map(|e| (e.key.as_slice(), &e.leaf)));
        let mut i = index;
        for sib in &self.siblings {
            h = if i & 1 == 0 {
                node_hash(&h, sib)
            } else {
                node_hash(sib, &h)
            };
            i >>= 1;
        }
        if h != *root {
            return Err(ProofError::RootMismatch {
                computed: h,
                expected: *root,
            });
        }
        Ok(())
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod opt_hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
