//! A hash map for the two largest record kinds (accounts and delegations), whose lookups must
//! stay O(1) (every transaction reads and writes accounts), without letting a hash map's
//! iteration order reach consensus: it offers lookups, and iteration only under a name that
//! says the order is arbitrary, for uses that do not depend on it (the state root sorts what
//! it hashes; sums commute). `std`'s `HashMap` is disallowed everywhere else in this crate.

#![allow(clippy::disallowed_types)]

// hashbrown's map with its default hasher, foldhash, seeded at random per process (so
// nobody can choose keys that collide on every node): about 3 times faster than SipHash on
// a 33-byte key, where a round's results look up a million of them.
use hashbrown::HashMap;
use std::hash::Hash;

/// Lookups by key; no ordered iteration.
#[derive(Clone, Debug)]
pub(crate) struct LookupMap<K, V>(HashMap<K, V>);

impl<K, V> Default for LookupMap<K, V> {
    fn default() -> Self {
        Self(HashMap::default())
    }
}

impl<K: Hash + Eq, V> LookupMap<K, V> {
    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }

    pub(crate) fn contains_key(&self, k: &K) -> bool {
        self.0.contains_key(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.0.insert(k, v)
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        self.0.remove(k)
    }

    /// The keys, in no particular order: only for uses whose result does not depend on it.
    pub(crate) fn keys_in_any_order(&self) -> impl Iterator<Item = &K> {
        self.0.keys()
    }

    /// The values, in no particular order: only for uses whose result does not depend on it.
    pub(crate) fn values_in_any_order(&self) -> impl Iterator<Item = &V> {
        self.0.values()
    }
}
