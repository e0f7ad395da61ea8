//! Who checks whom: the seed, the stake-weighted draw of each device's checkers, and each
//! checker's devices in assignment order (docs/checkers.md).
//!
//! Everything random in checking comes from [`round_seed`]. Today that is a hash of a
//! finalized block, which the block's proposer could grind (try many blocks, publish one
//! whose seed suits it); the node's threshold randomness replaces it without changing any
//! caller.

use cairn_primitives::{Address, Committee, Device, Hash, UPTIME_STEPS, sha256};

/// The seed a block gives: what starts rounds, fixes each device's nonce in a round, and (for
/// the block that opens an epoch) draws the epoch's assignment.
pub fn round_seed(block_hash: &Hash) -> Hash {
    sha256(&[b"cairn/seed", &block_hash.0])
}

/// Uptime in 1/200 steps as parts per million (a value past 200 counts as 0: unreported).
pub fn uptime_ppm(steps: u8) -> u32 {
    let s = u32::from(steps);
    if s > UPTIME_STEPS {
        return 0;
    }
    // s ≤ 200: the product is at most 10⁶.
    s.saturating_mul(1_000_000 / UPTIME_STEPS)
}

/// Draws from a committee by stake.
pub struct Draw<'a> {
    committee: &'a Committee,
    /// Stake before each member (cumulative), and the total at the end.
    before: Vec<u64>,
    k: usize,
}

impl<'a> Draw<'a> {
    /// Draws of `k` members from `committee`.
    pub fn new(committee: &'a Committee, k: u8) -> Self {
        let mut before = Vec::with_capacity(committee.members.len().saturating_add(1));
        let mut sum = 0u64;
        for m in &committee.members {
            before.push(sum);
            // Stakes are bounded by the supply (a u64): their sum cannot overflow.
            sum = sum.saturating_add(m.stake.base());
        }
        before.push(sum);
        Self {
            committee,
            before,
            k: usize::from(k).min(committee.members.len()),
        }
    }

    /// The members checking `device`, as indexes into the committee: `k` distinct ones drawn
    /// without replacement, each with probability proportional to its stake among those not
    /// yet drawn. One SHA-256 of (seed, device) gives four 64-bit draws (a second, for the
    /// next four); a draw is taken modulo the stake left, whose bias is below 2⁻⁶⁴ · stake.
    pub fn of(&self, device: &Address) -> Vec<usize> {
        let mut picked: Vec<usize> = Vec::with_capacity(self.k);
        let total = self.before.last().copied().unwrap_or(0);
        let mut taken = 0u64;
        let mut words = [0u64; 8];
        for (chunk, block) in words.chunks_mut(4).enumerate() {
            let h = sha256(&[
                b"cairn/assign",
                &self.committee.seed.0,
                &device.0,
                &[chunk as u8],
            ]);
            for (w, b) in block.iter_mut().zip(h.0.chunks_exact(8)) {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                *w = u64::from_le_bytes(x);
            }
            if chunk == 0 && self.k <= 4 {
                break;
            }
        }
        for w in words.iter().take(self.k) {
            let left = total.saturating_sub(taken);
            let Some(mut x) = w.checked_rem(left) else {
                break;
            };
            // Map a position among the members not drawn onto the whole line: every drawn
            // member at or before it shifts it past that member's stake.
            let mut sorted = picked.clone();
            sorted.sort_unstable();
            for p in sorted {
                let start = self.before.get(p).copied().unwrap_or(0);
                if x >= start {
                    x = x.saturating_add(self.stake(p));
                } else {
                    break;
                }
            }
            // The member whose stake interval holds x: the last start ≤ x.
            let i = self
                .before
                .partition_point(|b| *b <= x)
                .saturating_sub(1)
                .min(self.committee.members.len().saturating_sub(1));
            picked.push(i);
            taken = taken.saturating_add(self.stake(i));
        }
        picked
    }

    fn stake(&self, i: usize) -> u64 {
        self.committee.members.get(i).map_or(0, |m| m.stake.base())
    }

    /// The checkers of `device`, by address, in draw order.
    pub fn checkers_of(&self, device: &Address) -> Vec<Address> {
        self.of(device)
            .into_iter()
            .filter_map(|i| self.committee.members.get(i).map(|m| m.checker))
            .collect()
    }
}

/// Where a device sits in its checkers' lists: devices registered before the epoch opened
/// first (by address), then those registered during it, by height, then address.
pub(crate) fn list_key(d: &Device, epoch_start: u64) -> u64 {
    let h = d.standing.registered_height;
    if h < epoch_start { 0 } else { h }
}

/// Each committee member's devices in assignment order: the order in which a checker's
/// `PostResults` lists its results. Every device on record is listed (retired and slashed
/// ones too, whose results must be `not checked`), so a device never moves within an epoch.
pub struct Assignment {
    /// The epoch start height the lists are keyed by.
    epoch_start: u64,
    /// By committee index: (list key, device), sorted.
    lists: Vec<Vec<(u64, Address)>>,
    /// The draw, by committee index (a copy of the committee it was built from).
    committee: Committee,
    k: u8,
}

impl Assignment {
    /// Builds the lists from every device (one draw per device, on every core).
    pub(crate) fn build<'a>(
        committee: &Committee,
        k: u8,
        epoch_start: u64,
        devices: impl Iterator<Item = (&'a Address, &'a Device)>,
    ) -> Self {
        use rayon::prelude::*;
        let all: Vec<(&Address, &Device)> = devices.collect();
        let draw = Draw::new(committee, k);
        let drawn: Vec<(u64, Address, Vec<usize>)> = all
            .par_iter()
            .map(|(a, d)| (list_key(d, epoch_start), **a, draw.of(a)))
            .collect();
        let mut lists = vec![Vec::new(); committee.members.len()];
        for (key, a, members) in drawn {
            for m in members {
                if let Some(l) = lists.get_mut(m) {
                    l.push((key, a));
                }
            }
        }
        for l in &mut lists {
            l.par_sort_unstable();
        }
        Self {
            epoch_start,
            lists,
            committee: committee.clone(),
            k,
        }
    }

    /// Adds a device that appeared (registration, or a load).
    pub(crate) fn add(&mut self, a: Address, d: &Device) {
        let key = (list_key(d, self.epoch_start), a);
        for m in Draw::new(&self.committee, self.k).of(&a) {
            if let Some(l) = self.lists.get_mut(m)
                && let Err(at) = l.binary_search(&key)
            {
                l.insert(at, key);
            }
        }
    }

    /// Removes a device that disappeared (a registration rolled back).
    pub(crate) fn remove(&mut self, a: Address, d: &Device) {
        let key = (list_key(d, self.epoch_start), a);
        for m in Draw::new(&self.committee, self.k).of(&a) {
            if let Some(l) = self.lists.get_mut(m)
                && let Ok(at) = l.binary_search(&key)
            {
                l.remove(at);
            }
        }
    }

    /// Committee member `member`'s devices, in order.
    pub(crate) fn devices_of(&self, member: usize) -> &[(u64, Address)] {
        self.lists.get(member).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_primitives::{Amount, Member};

    fn committee(stakes: &[u64]) -> Committee {
        Committee {
            seed: Hash([5; 32]),
            start_height: 0,
            members: stakes
                .iter()
                .enumerate()
                .map(|(i, s)| Member {
                    checker: Address([i as u8 + 1; 32]),
                    stake: Amount::from_base(*s),
                })
                .collect(),
        }
    }

    #[test]
    fn draws_are_distinct_and_follow_stake() {
        let c = committee(&[1, 1, 1, 7]);
        let d = Draw::new(&c, 3);
        let mut first = [0u32; 4];
        for i in 0..20_000u32 {
            let dev = Address(sha256(&[&i.to_be_bytes()]).0);
            let got = d.of(&dev);
            assert_eq!(got.len(), 3);
            let mut s = got.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "{got:?}");
            first[got[0]] += 1;
            assert_eq!(got, d.of(&dev), "deterministic");
        }
        // The first draw is by stake: 70 % for the heavy member.
        let heavy = f64::from(first[3]) / 20_000.0;
        assert!((0.67..0.73).contains(&heavy), "{heavy}");
        // Fewer members than k: all of them.
        let small = committee(&[5, 9]);
        let mut all = Draw::new(&small, 3).of(&Address([1; 32]));
        all.sort_unstable();
        assert_eq!(all, vec![0, 1]);
        assert!(
            Draw::new(&committee(&[]), 3)
                .of(&Address([1; 32]))
                .is_empty()
        );
    }

    #[test]
    fn uptime_steps_map_to_ppm() {
        assert_eq!(uptime_ppm(200), 1_000_000);
        assert_eq!(uptime_ppm(100), 500_000);
        assert_eq!(uptime_ppm(201), 0);
    }
}
