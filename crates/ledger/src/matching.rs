//! Matching a deployment to devices, inside the ledger (Aethir's indexer, made verifiable).
//!
//! Available devices are indexed per (class, region), each set ordered by price, then
//! reputation (higher first), then address. A request walks the candidate sets with a k-way
//! merge in that order; within a run of equal price and reputation the order starts at an
//! address drawn from the block hash and wraps around, so ties are broken by the block, not by
//! whoever built the index. Cost: O(sets · log n) per device taken or skipped.

use cairn_primitives::{Address, BoundedString, ClassId, Device, PayUnits};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound;

/// Order within a set: price, then reputation (higher first), then address.
pub(crate) type Slot = (PayUnits, u32, Address);

/// The index of available devices.
#[derive(Default, Debug, PartialEq)]
pub(crate) struct Market {
    sets: BTreeMap<ClassId, BTreeMap<BoundedString<32>, BTreeSet<Slot>>>,
}

fn slot(a: Address, d: &Device) -> Slot {
    // Higher reputation first: u32::MAX − reputation (exact: reputation ≤ u32::MAX).
    (
        d.price_per_hour,
        u32::MAX.saturating_sub(d.reputation_ppm),
        a,
    )
}

impl Market {
    /// Builds the index from marketable devices at once: what the index kept one write at a
    /// time must equal.
    pub(crate) fn build<'a>(devices: impl Iterator<Item = (&'a Address, &'a Device)>) -> Self {
        let mut m = Self::default();
        for (a, d) in devices {
            m.insert(*a, d);
        }
        m
    }

    pub(crate) fn insert(&mut self, a: Address, d: &Device) {
        let by_region = self.sets.entry(d.class).or_default();
        match by_region.get_mut(&d.region) {
            Some(set) => {
                set.insert(slot(a, d));
            }
            None => {
                by_region.insert(d.region.clone(), BTreeSet::from([slot(a, d)]));
            }
        }
    }

    pub(crate) fn remove(&mut self, a: &Address, d: &Device) {
        let Some(by_region) = self.sets.get_mut(&d.class) else {
            return;
        };
        if let Some(set) = by_region.get_mut(&d.region) {
            set.remove(&slot(*a, d));
            if set.is_empty() {
                by_region.remove(&d.region);
            }
        }
        if by_region.is_empty() {
            self.sets.remove(&d.class);
        }
    }

    /// Number of marketable devices.
    pub(crate) fn len(&self) -> usize {
        self.sets
            .values()
            .flat_map(BTreeMap::values)
            .map(BTreeSet::len)
            .sum()
    }

    /// The sets to search: the given classes, in one region or all.
    fn candidate_sets<'a>(
        &'a self,
        classes: &[ClassId],
        region: Option<&BoundedString<32>>,
    ) -> Vec<&'a BTreeSet<Slot>> {
        let mut out = Vec::new();
        for c in classes {
            let Some(by_region) = self.sets.get(c) else {
                continue;
            };
            match region {
                Some(r) => out.extend(by_region.get(r)),
                None => out.extend(by_region.values()),
            }
        }
        out
    }

    /// Picks `wanted` devices in order among `classes` (and `region`), at most `max_price`,
    /// that pass `fits`; scans at most `scan_limit` candidates. Returns what it found (fewer
    /// than wanted when capacity is short) and how many it scanned.
    #[allow(clippy::too_many_arguments)] // Each is one facet of the request; a struct adds nothing.
    pub(crate) fn pick(
        &self,
        classes: &[ClassId],
        region: Option<&BoundedString<32>>,
        max_price: PayUnits,
        wanted: usize,
        seed: Address,
        scan_limit: usize,
        mut fits: impl FnMut(&Address) -> bool,
    ) -> (Vec<Address>, usize) {
        let sets = self.candidate_sets(classes, region);
        let mut cursors: Vec<Cursor<'_>> = sets.iter().map(|s| Cursor::new(s, seed)).collect();
        let mut heap = BinaryHeap::new();
        for (i, c) in cursors.iter_mut().enumerate() {
            if let Some(s) = c.next() {
                heap.push(Reverse((order_key(&s, &seed), i)));
            }
        }
        let mut found = Vec::with_capacity(wanted);
        let mut scanned = 0;
        while let Some(Reverse((key, i))) = heap.pop() {
            if found.len() >= wanted || scanned >= scan_limit {
                break;
            }
            let (price, _, _, addr) = key;
            if price > max_price {
                break;
            }
            scanned = scanned.saturating_add(1);
            if fits(&addr) {
                found.push(addr);
            }
            if let Some(s) = cursors.get_mut(i).and_then(Cursor::next) {
                heap.push(Reverse((order_key(&s, &seed), i)));
            }
        }
        (found, scanned)
    }
}

/// The total order of candidates: price, reputation, then addresses at or after the seed
/// before those below it (a rotation of the address space chosen by the block).
pub(crate) fn order_key(s: &Slot, seed: &Address) -> (PayUnits, u32, bool, Address) {
    (s.0, s.1, s.2 < *seed, s.2)
}

/// Walks one set in `order_key` order.
struct Cursor<'a> {
    set: &'a BTreeSet<Slot>,
    seed: Address,
    level: Option<(PayUnits, u32)>,
    /// false: addresses >= seed; true: addresses < seed.
    wrapped: bool,
    last: Option<Address>,
}

impl<'a> Cursor<'a> {
    fn new(set: &'a BTreeSet<Slot>, seed: Address) -> Self {
        Self {
            set,
            seed,
            level: None,
            wrapped: false,
            last: None,
        }
    }

    fn next(&mut self) -> Option<Slot> {
        loop {
            let (p, r) = match self.level {
                Some(l) => l,
                None => {
                    let first = self.set.iter().next()?;
                    self.level = Some((first.0, first.1));
                    (first.0, first.1)
                }
            };
            let lower = match (self.wrapped, self.last) {
                (_, Some(a)) => Bound::Excluded((p, r, a)),
                (false, None) => Bound::Included((p, r, self.seed)),
                (true, None) => Bound::Included((p, r, Address::MIN)),
            };
            let upper = if self.wrapped {
                Bound::Excluded((p, r, self.seed))
            } else {
                Bound::Included((p, r, Address::MAX))
            };
            if let Some(s) = self.set.range((lower, upper)).next() {
                self.last = Some(s.2);
                return Some(*s);
            }
            if !self.wrapped {
                self.wrapped = true;
                self.last = None;
                continue;
            }
            // Level exhausted: move to the next (price, reputation).
            let next = self
                .set
                .range((Bound::Excluded((p, r, Address::MAX)), Bound::Unbounded))
                .next()?;
            self.level = Some((next.0, next.1));
            self.wrapped = false;
            self.last = None;
        }
    }
}
