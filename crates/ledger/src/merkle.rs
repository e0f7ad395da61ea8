//! The state root: records spread over 2^16 buckets, buckets under a binary tree.
//! See `cairn_primitives::StateProof` for the layout and the client-side check.

use cairn_primitives::{
    BUCKET_BITS, BucketEntry, Hash, StateProof, bucket_hash, bucket_of, leaf_hash, node_hash,
};
use rayon::prelude::*;
use std::collections::BTreeMap;

const BUCKETS: usize = 1 << BUCKET_BITS;

/// The authenticated index over every record's leaf hash.
pub(crate) struct BucketTree {
    buckets: Vec<BTreeMap<Vec<u8>, Hash>>,
    /// `levels[0]` holds the bucket hashes; each next level halves; the last is the root.
    levels: Vec<Vec<Hash>>,
}

impl BucketTree {
    pub(crate) fn new() -> Self {
        let mut levels = Vec::with_capacity((BUCKET_BITS as usize).saturating_add(1));
        let mut n = BUCKETS;
        loop {
            levels.push(vec![Hash::ZERO; n]);
            if n == 1 {
                break;
            }
            n /= 2;
        }
        Self {
            buckets: vec![BTreeMap::new(); BUCKETS],
            levels,
        }
    }

    pub(crate) fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(Hash::ZERO)
    }

    /// Applies `(key, Some(value))` inserts and `(key, None)` deletes, then rehashes what changed.
    /// Applies changed records (`None`: deleted) and rehashes what they touched. Leaves,
    /// buckets and bucket hashes are worked on every core, buckets in disjoint chunks.
    #[expect(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "indices are bucket numbers below BUCKETS (bucket_of's range) and their \
                  ancestors, in levels that halve from BUCKETS down to the root"
    )]
    pub(crate) fn update(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        if changes.is_empty() {
            return;
        }
        let mut leaves: Vec<(usize, &[u8], Option<Hash>)> = changes
            .par_iter()
            .map(|(k, v)| {
                (
                    bucket_of(k),
                    k.as_slice(),
                    v.as_ref().map(|v| leaf_hash(k, v)),
                )
            })
            .collect();
        leaves.par_sort_unstable_by_key(|x| x.0);
        const CHUNK: usize = 256;
        let (level0, _) = self.levels.split_at_mut(1);
        let level0 = &mut level0[0];
        self.buckets
            .par_chunks_mut(CHUNK)
            .zip(level0.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, (buckets, hashes))| {
                let lo = i * CHUNK;
                let start = leaves.partition_point(|x| x.0 < lo);
                let end = leaves.partition_point(|x| x.0 < lo + CHUNK);
                let Some(mine) = leaves.get(start..end) else {
                    return;
                };
                for (b, k, leaf) in mine {
                    let bucket = &mut buckets[b - lo];
                    match leaf {
                        Some(h) => match bucket.get_mut(*k) {
                            Some(slot) => *slot = *h,
                            None => {
                                bucket.insert(k.to_vec(), *h);
                            }
                        },
                        None => {
                            bucket.remove(*k);
                        }
                    }
                }
                let mut last = usize::MAX;
                for (b, _, _) in mine {
                    if *b != last {
                        last = *b;
                        let bucket = &buckets[b - lo];
                        hashes[b - lo] = bucket_hash(bucket.iter().map(|(k, l)| (k.as_slice(), l)));
                    }
                }
            });
        let mut dirty: Vec<usize> = leaves.iter().map(|x| x.0).collect();
        dirty.dedup();
        for level in 1..self.levels.len() {
            let mut parents: Vec<usize> = dirty.iter().map(|i| i / 2).collect();
            parents.dedup();
            let (lower, upper) = self.levels.split_at_mut(level);
            let below = &lower[level - 1];
            let hashes: Vec<(usize, Hash)> = parents
                .par_iter()
                .map(|&p| (p, node_hash(&below[2 * p], &below[2 * p + 1])))
                .collect();
            for (p, h) in hashes {
                upper[0][p] = h;
            }
            dirty = parents;
        }
    }

    #[expect(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "indices are bucket numbers below BUCKETS (bucket_of's range) and their \
                  ancestors, in levels that halve from BUCKETS down to the root"
    )]
    pub(crate) fn prove(&self, key: &[u8], value: Option<Vec<u8>>) -> StateProof {
        let b = bucket_of(key);
        let bucket = self.buckets[b]
            .iter()
            .map(|(k, l)| BucketEntry {
                key: k.clone(),
                leaf: *l,
            })
            .collect();
        let mut siblings = Vec::with_capacity(BUCKET_BITS as usize);
        let mut i = b;
        for level in &self.levels[..self.levels.len() - 1] {
            siblings.push(level[i ^ 1]);
            i /= 2;
        }
        StateProof {
            key: key.to_vec(),
            value,
            bucket,
            siblings,
        }
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.buckets.iter().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_and_detect_tampering() {
        let mut t = BucketTree::new();
        assert_eq!(t.root(), Hash::ZERO);
        let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..500u32)
            .map(|i| (i.to_be_bytes().to_vec(), Some(vec![i as u8; 3])))
            .collect();
        t.update(&changes);
        let root = t.root();
        for i in [0u32, 7, 499] {
            let key = i.to_be_bytes().to_vec();
            let p = t.prove(&key, Some(vec![i as u8; 3]));
            p.verify(&root).unwrap();
            let mut bad = p.clone();
            bad.value = Some(vec![9, 9, 9]);
            assert!(bad.verify(&root).is_err());
        }
        // Absence of a key.
        let missing = 1000u32.to_be_bytes().to_vec();
        t.prove(&missing, None).verify(&root).unwrap();
        assert!(t.prove(&missing, Some(vec![1])).verify(&root).is_err());
        // Delete and reinsert gives back the same root; order of updates does not matter.
        t.update(&[(changes[3].0.clone(), None)]);
        assert_ne!(t.root(), root);
        t.update(&[changes[3].clone()]);
        assert_eq!(t.root(), root);
        let mut u = BucketTree::new();
        let mut rev = changes.clone();
        rev.reverse();
        u.update(&rev);
        assert_eq!(u.root(), root);
        assert_eq!(u.len(), 500);
    }
}
