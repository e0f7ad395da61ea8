//! The ledger's records in memory, with an undo journal (so a failed transaction or block
//! leaves nothing behind), the set of records changed in the current block (for the state root
//! and the store), and the derived indexes (market, lease ends, unbonding queue).

use crate::TxError;
use crate::journal::Undo;
use crate::lookup::LookupMap;
use crate::matching::Market;
use cairn_primitives::{
    Account, Address, CheckStatus, Checker, ClassKind, Committee, Delegation, Deployment, Device,
    DeviceStatus, Dispute, EpochRecord, Globals, Lease, LeaseState, OraclePrice, Round, StateKey,
    StateValue, Unbonding, Verdict,
};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub(crate) struct State {
    pub(crate) globals: Globals,
    pub(crate) accounts: LookupMap<Address, Account>,
    pub(crate) devices: BTreeMap<Address, Device>,
    pub(crate) delegations: LookupMap<(Address, Address), Delegation>,
    pub(crate) unbondings: BTreeMap<u64, Unbonding>,
    pub(crate) deployments: BTreeMap<u64, Deployment>,
    pub(crate) leases: BTreeMap<u64, Lease>,
    pub(crate) oracles: BTreeMap<Address, OraclePrice>,
    pub(crate) checkers: BTreeMap<Address, Checker>,
    pub(crate) epochs: BTreeMap<u64, EpochRecord>,
    /// Committees by epoch (the open epoch's, and none older).
    pub(crate) committees: BTreeMap<u64, Committee>,
    /// Rounds by starting height (the open epoch's and the one before).
    pub(crate) rounds: BTreeMap<u64, Round>,
    /// Open disputes by (checker, device, round).
    pub(crate) disputes: BTreeMap<(Address, Address, u64), Dispute>,

    // Derived indexes, rebuilt on load.
    pub(crate) market: Market,
    pub(crate) lease_ends: BTreeSet<(u64, u64)>,
    /// (last report, lease) for every active lease: which devices went silent.
    pub(crate) lease_seen: BTreeSet<(u64, u64)>,
    pub(crate) unbond_queue: BTreeSet<(u64, u64)>,
    /// Reward weights of device tallies, by the epoch they count for (see [`EpochWeights`]).
    pub(crate) weights: BTreeMap<u64, EpochWeights>,
    /// The class catalog's (kind, reward weight), by class id: what a tally weighs.
    pub(crate) class_weights: Vec<(ClassKind, u32)>,
    /// (staker, device) for every delegation: what an account has staked, without a scan.
    pub(crate) stakes_by: BTreeSet<(Address, Address)>,
    /// Set when an epoch's weights would have left u128's range (they cannot, by the bounds in
    /// [`EpochWeights::add`]; the block that did it fails with an invariant error).
    pub(crate) weights_overflow: bool,
    /// (opened, checker, device, round) of every open dispute: which ran out of time.
    pub(crate) dispute_opened: BTreeSet<(u64, Address, Address, u64)>,
    /// Each committee member's devices in assignment order, for the open epoch's committee
    /// and the one before (results for the last epoch's rounds are taken in the next), by
    /// epoch parity; built when first needed (see [`crate::assign`]), then kept as devices are
    /// added.
    pub(crate) assignments: [std::sync::OnceLock<crate::assign::Assignment>; 2],

    /// Undo entries, oldest first: (key, what undoing the write restores). Within a block,
    /// once a transaction has succeeded only the entries the block needs are kept
    /// ([`State::commit_tx`]).
    journal: crate::journal::Journal,
    /// The keys with an entry in the journal from a transaction that succeeded in this block,
    /// and whether one of those entries holds the whole record (not only checking fields).
    committed: LookupMap<StateKey, bool>,
    /// The journal's length after the latest [`State::commit_tx`]: entries before it belong
    /// to the block's work or to transactions that succeeded.
    settled: usize,
}

/// What the tallies counting for one epoch weigh, summed over devices: kept true on every
/// device write, so closing an epoch reads its totals instead of walking every device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochWeights {
    /// Verified devices' class weight × units × mean uptime.
    pub(crate) capacity: u128,
    /// Payment units consumed.
    pub(crate) work: u128,
    /// Verified devices' pool tokens.
    pub(crate) stake: u128,
    /// Devices with a tally.
    pub(crate) devices: u64,
    /// Devices with a capacity or work weight.
    pub(crate) rewarded: u64,
}

/// One device's tally, weighed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TallyWeight {
    pub(crate) capacity: u128,
    pub(crate) work: u128,
    pub(crate) stake: u128,
}

impl TallyWeight {
    /// A device's tally weighed with the class catalog's `(kind, reward weight)`; `None` when it
    /// has no tally (no verdict and no work). Capacity and stake count only for a tally whose
    /// verdict is a pass on an active device still verified; work counts for a device not
    /// jailed (it was verified when its lease was matched).
    pub(crate) fn of(d: &Device, class_weights: &[(ClassKind, u32)]) -> Option<Self> {
        if d.tally_verdict == Verdict::Pending && d.work == 0 {
            return None;
        }
        let standing = d.standing.status;
        let mut w = Self::default();
        if standing != CheckStatus::Jailed {
            w.work = u128::from(d.work);
        }
        if d.status == DeviceStatus::Active
            && d.tally_verdict == Verdict::Pass
            && standing == CheckStatus::Verified
        {
            let (weight, units) = match class_weights.get(usize::from(d.class)) {
                Some((ClassKind::Gpu, weight)) => (*weight, u64::from(d.spec.gpu_count)),
                Some((ClassKind::Cpu, weight)) => (*weight, u64::from(d.standing.cores)),
                None => (0, 0),
            };
            let uptime_ppm = crate::assign::uptime_ppm(d.tally_uptime);
            // u32 · u32 · u64: below 2¹²⁸.
            w.capacity = u128::from(weight)
                .saturating_mul(u128::from(units))
                .saturating_mul(u128::from(uptime_ppm));
            w.stake = u128::from(d.pool.tokens.base());
        }
        Some(w)
    }
}

/// The cores matching counts for a device: for a CPU class, those its latest pass counted
/// (`Standing::cores`: measured, at most claimed); for a GPU class, the host cores it claims.
pub(crate) fn counted_cores(d: &Device, class_kinds: &[(ClassKind, u32)]) -> u32 {
    match class_kinds.get(usize::from(d.class)) {
        Some((ClassKind::Cpu, _)) => d.standing.cores,
        _ => d.spec.cpu_cores,
    }
}

impl EpochWeights {
    /// Adds a device's weight; `None` (and nothing changed) if a sum would leave its range.
    /// It cannot: a device's capacity weight is below 2⁸⁴ (u32 weight · u32 units · 10⁶
    /// uptime) and its work and stake below 2⁶⁴, and there are fewer than 2⁴⁰ devices (each
    /// bonds at least the minimum stake out of a capped supply).
    pub(crate) fn add(&mut self, w: &TallyWeight) -> Option<()> {
        let rewarded = u64::from(w.capacity > 0 || w.work > 0);
        *self = Self {
            capacity: self.capacity.checked_add(w.capacity)?,
            work: self.work.checked_add(w.work)?,
            stake: self.stake.checked_add(w.stake)?,
            devices: self.devices.checked_add(1)?,
            rewarded: self.rewarded.checked_add(rewarded)?,
        };
        Some(())
    }

    /// Removes a device's weight added before; `None` (and nothing changed) if it was not.
    fn sub(&mut self, w: &TallyWeight) -> Option<()> {
        let rewarded = u64::from(w.capacity > 0 || w.work > 0);
        *self = Self {
            capacity: self.capacity.checked_sub(w.capacity)?,
            work: self.work.checked_sub(w.work)?,
            stake: self.stake.checked_sub(w.stake)?,
            devices: self.devices.checked_sub(1)?,
            rewarded: self.rewarded.checked_sub(rewarded)?,
        };
        Some(())
    }
}

impl State {
    /// An empty state for a chain with these parameters.
    pub(crate) fn new(params: &cairn_primitives::Params) -> Self {
        Self {
            class_weights: params
                .classes
                .iter()
                .map(|c| (c.kind, c.reward_weight))
                .collect(),
            ..Self::default()
        }
    }

    /// The open epoch's committee.
    pub(crate) fn committee(&self) -> Option<&Committee> {
        self.committees.get(&self.globals.epoch)
    }

    /// Epoch `epoch`'s committee, while it is kept (the open epoch's and the one before).
    pub(crate) fn committee_of(&self, epoch: u64) -> Option<&Committee> {
        self.committees.get(&epoch)
    }

    /// A copy of lease `id`'s record, to change and write back.
    pub(crate) fn lease_of(&self, id: u64) -> Result<Lease, TxError> {
        self.leases
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownLease(id))
    }

    /// A copy of deployment `id`'s record, to change and write back.
    pub(crate) fn deployment_of(&self, id: u64) -> Result<Deployment, TxError> {
        self.deployments
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownDeployment(id))
    }

    pub(crate) fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).cloned().unwrap_or_default()
    }

    pub(crate) fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Undoes every change after `mark`: a failed transaction's, or (from the block's
    /// mark) a failed block's.
    pub(crate) fn revert_to(&mut self, mark: usize) {
        while self.journal.len() > mark {
            if let Some((k, old)) = self.journal.pop() {
                // Undoing a failed block reaches the entries of its transactions that
                // succeeded: their keys are no longer written in it.
                if self.journal.len() < self.settled {
                    self.committed.remove(&k);
                }
                match old {
                    Undo::Record(old) => {
                        self.raw_set(k, old.map(|b| *b));
                    }
                    Undo::Checking {
                        standing,
                        tally_uptime,
                        tally_verdict,
                    } => {
                        if let StateKey::Device(a) = k
                            && let Some(mut d) = self.devices.get(&a).cloned()
                        {
                            d.standing = standing;
                            d.tally_uptime = tally_uptime;
                            d.tally_verdict = tally_verdict;
                            self.raw_set(k, Some(StateValue::Device(d)));
                        }
                    }
                }
            }
        }
        self.settled = self.settled.min(mark);
    }

    /// The transaction whose changes start at `mark` succeeded: of its journal entries only
    /// those that undoing the block still needs are kept. That is the block's first entry
    /// per key, and a whole record after a kept [`Undo::Checking`] (which restores only the
    /// checking fields); the others only served to undo this transaction. This keeps the
    /// journal at about one entry per key written in the block (a round's results write each
    /// device once per checker), where one per write would hold up to a block's worth of
    /// results (about 6.7 million in 8 MiB).
    pub(crate) fn commit_tx(&mut self, mark: usize) {
        // In place: the entries needed move down over those dropped, which are then truncated
        // away (a round's results from its second checker keep almost none). Each is judged
        // against the keys kept before this transaction: an entry is needed when its key is
        // new to the block (a key the transaction wrote twice keeps both entries; the first
        // one counts), or when the block kept only checking fields for it and this entry is a
        // whole record.
        let mut kept = mark;
        for i in mark..self.journal.len() {
            let needed = self.journal.get(i).is_some_and(|(k, u)| {
                self.committed
                    .get(k)
                    .is_none_or(|full| !*full && u.is_full())
            });
            if needed {
                if kept != i {
                    self.journal.swap(kept, i);
                }
                kept = kept.saturating_add(1);
            }
        }
        self.journal.truncate(kept);
        for (k, u) in self.journal.iter_from(mark) {
            let full = u.is_full() || self.committed.get(k).copied().unwrap_or(false);
            self.committed.insert(*k, full);
        }
        self.settled = self.journal.len();
    }

    /// Forgets the journal (the block is final) and hands back the records that differ from
    /// the block's start, sorted by key: `(key bytes, Some(encoded))` written, `(key bytes,
    /// None)` deleted. A record touched and then restored (by a rejected transaction) is not a
    /// change. Also drops the weights of epochs before `epoch` (closed: never read again, and
    /// no longer reverted).
    pub(crate) fn take_changes(&mut self, epoch: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let journal = std::mem::take(&mut self.journal);
        self.committed = LookupMap::default();
        self.settled = 0;
        // After [`State::commit_tx`] a key has about one entry, except where writes outside a
        // transaction's commit (the block's own work, genesis) wrote it more than once: the
        // first entry per key is the record at the block's start. Sorting (key, position)
        // finds it and leaves the keys in order, on every core (a round's results leave a
        // million entries: hashing each into a map was a cache miss apiece).
        let mut first: Vec<(StateKey, usize)> = journal
            .iter_from(0)
            .enumerate()
            .map(|(i, (k, _))| (*k, i))
            .collect();
        first.par_sort_unstable();
        first.dedup_by_key(|(k, _)| *k);
        // A key whose first entry kept only checking fields counts as changed (other
        // fields may have changed after it): rewriting a record that did not change is
        // harmless.
        let changed: Vec<StateKey> = first
            .into_par_iter()
            .filter(|(k, i)| {
                !journal.get(*i).is_some_and(|(_, old)| match old {
                    Undo::Record(old) => self.holds(k, old.as_deref()),
                    Undo::Checking { .. } => false,
                })
            })
            .map(|(k, _)| k)
            .collect();
        drop(journal);
        self.weights = self.weights.split_off(&epoch);
        changed
            .into_par_iter()
            .map(|k| {
                let v = self.encoded(&k);
                (k.to_bytes(), v)
            })
            .collect()
    }

    /// Whether the record under `key` equals `old` (`None`: absent).
    fn holds(&self, key: &StateKey, old: Option<&StateValue>) -> bool {
        use StateValue as V;
        match (key, old) {
            (StateKey::Globals, Some(V::Globals(o))) => self.globals == *o,
            (StateKey::Account(a), Some(V::Account(o))) => self.accounts.get(a) == Some(o),
            (StateKey::Account(a), None) => !self.accounts.contains_key(a),
            (StateKey::Device(a), Some(V::Device(o))) => self.devices.get(a) == Some(o),
            (StateKey::Device(a), None) => !self.devices.contains_key(a),
            (StateKey::Delegation(d, s), Some(V::Delegation(o))) => {
                self.delegations.get(&(*d, *s)) == Some(o)
            }
            (StateKey::Delegation(d, s), None) => !self.delegations.contains_key(&(*d, *s)),
            (StateKey::Unbonding(i), Some(V::Unbonding(o))) => self.unbondings.get(i) == Some(o),
            (StateKey::Unbonding(i), None) => !self.unbondings.contains_key(i),
            (StateKey::Deployment(i), Some(V::Deployment(o))) => self.deployments.get(i) == Some(o),
            (StateKey::Deployment(i), None) => !self.deployments.contains_key(i),
            (StateKey::Lease(i), Some(V::Lease(o))) => self.leases.get(i) == Some(o),
            (StateKey::Lease(i), None) => !self.leases.contains_key(i),
            (StateKey::Oracle(a), Some(V::Oracle(o))) => self.oracles.get(a) == Some(o),
            (StateKey::Oracle(a), None) => !self.oracles.contains_key(a),
            (StateKey::Checker(a), Some(V::Checker(o))) => self.checkers.get(a) == Some(o),
            (StateKey::Checker(a), None) => !self.checkers.contains_key(a),
            (StateKey::Epoch(e), Some(V::Epoch(o))) => self.epochs.get(e) == Some(o),
            (StateKey::Epoch(e), None) => !self.epochs.contains_key(e),
            (StateKey::Committee(e), Some(V::Committee(o))) => self.committees.get(e) == Some(o),
            (StateKey::Committee(e), None) => !self.committees.contains_key(e),
            (StateKey::Round(h), Some(V::Round(o))) => self.rounds.get(h) == Some(o),
            (StateKey::Round(h), None) => !self.rounds.contains_key(h),
            (StateKey::Dispute(c, d, r), Some(V::Dispute(o))) => {
                self.disputes.get(&(*c, *d, *r)) == Some(o)
            }
            (StateKey::Dispute(c, d, r), None) => !self.disputes.contains_key(&(*c, *d, *r)),
            // A value of another kind than its key (never journaled): not equal.
            _ => false,
        }
    }

    pub(crate) fn put(&mut self, key: StateKey, value: Option<StateValue>) {
        let old = self.raw_set(key, value);
        self.journal.push((key, Undo::Record(old.map(Box::new))));
    }

    /// Sets device `a`'s checking fields (its standing and its epoch tally's verdict and
    /// uptime) in place: one walk down the map, and only those fields copied into the
    /// journal, where [`State::set_device`] copies and replaces the whole record. Keeps the
    /// epoch weights and the market true. `false` (nothing changed) when there is no such
    /// device.
    pub(crate) fn set_checking(
        &mut self,
        a: Address,
        standing: cairn_primitives::Standing,
        tally_uptime: u8,
        tally_verdict: Verdict,
    ) -> bool {
        let epoch = self.globals.epoch;
        let Some(slot) = self.devices.get_mut(&a) else {
            return false;
        };
        let before = open_weight(slot, epoch, &self.class_weights);
        let was_marketable = is_marketable(slot);
        let old = Undo::Checking {
            standing: std::mem::replace(&mut slot.standing, standing),
            tally_uptime: std::mem::replace(&mut slot.tally_uptime, tally_uptime),
            tally_verdict: std::mem::replace(&mut slot.tally_verdict, tally_verdict),
        };
        let after = open_weight(slot, epoch, &self.class_weights);
        let marketable = is_marketable(slot);
        self.move_weight(before, after);
        if was_marketable != marketable {
            // The market's rank (price, reputation, class, region) is not a checking field:
            // the record as it is now ranks as it did.
            if let Some(d) = self.devices.get(&a) {
                if was_marketable {
                    self.market.remove(&a, d);
                } else {
                    self.market.insert(a, d);
                }
            }
        }
        self.journal.push((StateKey::Device(a), old));
        true
    }

    /// Moves the kept epoch weights from a device's weight before a write to its weight
    /// after (each with the epoch it counts for); flags `weights_overflow` when a sum would
    /// leave its range.
    fn move_weight(
        &mut self,
        before: Option<(u64, TallyWeight)>,
        after: Option<(u64, TallyWeight)>,
    ) {
        if before == after {
            return;
        }
        let removed =
            before.is_none_or(|(e, w)| self.weights.entry(e).or_default().sub(&w).is_some());
        let added = after.is_none_or(|(e, w)| self.weights.entry(e).or_default().add(&w).is_some());
        if !(removed && added) {
            self.weights_overflow = true;
        }
    }

    pub(crate) fn set_globals(&mut self, g: Globals) {
        self.put(StateKey::Globals, Some(StateValue::Globals(g)));
    }
    pub(crate) fn set_account(&mut self, a: Address, v: Account) {
        let value = (!v.is_empty()).then_some(StateValue::Account(v));
        self.put(StateKey::Account(a), value);
    }
    pub(crate) fn set_device(&mut self, a: Address, v: Device) {
        self.put(StateKey::Device(a), Some(StateValue::Device(v)));
    }
    pub(crate) fn set_delegation(&mut self, d: Address, s: Address, v: Delegation) {
        let value = (v.shares > 0).then_some(StateValue::Delegation(v));
        self.put(StateKey::Delegation(d, s), value);
    }
    pub(crate) fn set_unbonding(&mut self, id: u64, v: Option<Unbonding>) {
        self.put(StateKey::Unbonding(id), v.map(StateValue::Unbonding));
    }
    pub(crate) fn set_deployment(&mut self, id: u64, v: Deployment) {
        self.put(StateKey::Deployment(id), Some(StateValue::Deployment(v)));
    }
    pub(crate) fn set_lease(&mut self, id: u64, v: Lease) {
        self.put(StateKey::Lease(id), Some(StateValue::Lease(v)));
    }
    pub(crate) fn set_oracle(&mut self, a: Address, v: OraclePrice) {
        self.put(StateKey::Oracle(a), Some(StateValue::Oracle(v)));
    }
    pub(crate) fn set_checker(&mut self, a: Address, v: Checker) {
        self.put(StateKey::Checker(a), Some(StateValue::Checker(v)));
    }
    pub(crate) fn set_committee(&mut self, e: u64, v: Option<Committee>) {
        self.put(StateKey::Committee(e), v.map(StateValue::Committee));
    }
    pub(crate) fn set_round(&mut self, h: u64, v: Option<Round>) {
        self.put(StateKey::Round(h), v.map(StateValue::Round));
    }
    pub(crate) fn set_dispute(&mut self, key: (Address, Address, u64), v: Option<Dispute>) {
        self.put(
            StateKey::Dispute(key.0, key.1, key.2),
            v.map(StateValue::Dispute),
        );
    }
    pub(crate) fn set_epoch(&mut self, e: u64, v: EpochRecord) {
        self.put(StateKey::Epoch(e), Some(StateValue::Epoch(v)));
    }

    /// Sets a record without journaling, keeping the indexes true; returns the old record.
    pub(crate) fn raw_set(
        &mut self,
        key: StateKey,
        value: Option<StateValue>,
    ) -> Option<StateValue> {
        use StateValue as V;
        match (key, value) {
            (StateKey::Globals, Some(V::Globals(g))) => {
                Some(V::Globals(std::mem::replace(&mut self.globals, g)))
            }
            (StateKey::Globals, None) => Some(V::Globals(std::mem::take(&mut self.globals))),
            (StateKey::Account(a), v) => {
                let old = match v {
                    Some(V::Account(x)) => self.accounts.insert(a, x),
                    _ => self.accounts.remove(&a),
                };
                old.map(V::Account)
            }
            (StateKey::Device(a), v) => {
                let new = match v {
                    Some(V::Device(d)) => Some(d),
                    _ => None,
                };
                let epoch = self.globals.epoch;
                let after = new
                    .as_ref()
                    .and_then(|d| open_weight(d, epoch, &self.class_weights));
                // One walk down the map when the record is replaced. The market entry stays
                // when the device was and is marketable with the same rank and set (a verdict
                // or a tally changes neither): no walk down the market either.
                let old = match (new, self.devices.get_mut(&a)) {
                    (Some(d), Some(slot)) => {
                        let same_slot = is_marketable(&d)
                            && is_marketable(slot)
                            && d.price_per_hour == slot.price_per_hour
                            && d.reputation_ppm == slot.reputation_ppm
                            && d.class == slot.class
                            && d.region == slot.region;
                        if !same_slot {
                            if is_marketable(slot) {
                                self.market.remove(&a, slot);
                            }
                            if is_marketable(&d) {
                                self.market.insert(a, &d);
                            }
                        }
                        Some(std::mem::replace(slot, d))
                    }
                    (Some(d), None) => {
                        if is_marketable(&d) {
                            self.market.insert(a, &d);
                        }
                        for asg in self.assignments.iter_mut().filter_map(|x| x.get_mut()) {
                            asg.add(a, &d);
                        }
                        self.devices.insert(a, d)
                    }
                    (None, _) => {
                        let old = self.devices.remove(&a);
                        if let Some(o) = &old {
                            if is_marketable(o) {
                                self.market.remove(&a, o);
                            }
                            for asg in self.assignments.iter_mut().filter_map(|x| x.get_mut()) {
                                asg.remove(a, o);
                            }
                        }
                        old
                    }
                };
                let before = old
                    .as_ref()
                    .and_then(|o| open_weight(o, epoch, &self.class_weights));
                self.move_weight(before, after);
                old.map(V::Device)
            }
            (StateKey::Delegation(d, s), v) => {
                let old = match v {
                    Some(V::Delegation(x)) => {
                        self.stakes_by.insert((s, d));
                        self.delegations.insert((d, s), x)
                    }
                    _ => {
                        self.stakes_by.remove(&(s, d));
                        self.delegations.remove(&(d, s))
                    }
                };
                old.map(V::Delegation)
            }
            (StateKey::Unbonding(id), v) => {
                let old = self.unbondings.remove(&id);
                if let Some(o) = &old {
                    self.unbond_queue.remove(&(o.release_ms, id));
                }
                if let Some(V::Unbonding(u)) = v {
                    self.unbond_queue.insert((u.release_ms, id));
                    self.unbondings.insert(id, u);
                }
                old.map(V::Unbonding)
            }
            (StateKey::Deployment(id), v) => {
                let old = match v {
                    Some(V::Deployment(x)) => self.deployments.insert(id, x),
                    _ => self.deployments.remove(&id),
                };
                old.map(V::Deployment)
            }
            (StateKey::Lease(id), v) => {
                let old = self.leases.remove(&id);
                if let Some(o) = &old {
                    self.lease_ends.remove(&(o.end_ms, id));
                    self.lease_seen.remove(&(o.last_seen_ms, id));
                }
                if let Some(V::Lease(l)) = v {
                    if l.state == LeaseState::Active {
                        self.lease_ends.insert((l.end_ms, id));
                        self.lease_seen.insert((l.last_seen_ms, id));
                    }
                    self.leases.insert(id, l);
                }
                old.map(V::Lease)
            }
            (StateKey::Oracle(a), v) => {
                let old = match v {
                    Some(V::Oracle(x)) => self.oracles.insert(a, x),
                    _ => self.oracles.remove(&a),
                };
                old.map(V::Oracle)
            }
            (StateKey::Checker(a), v) => {
                let old = match v {
                    Some(V::Checker(x)) => self.checkers.insert(a, x),
                    _ => self.checkers.remove(&a),
                };
                old.map(V::Checker)
            }
            (StateKey::Epoch(e), v) => {
                let old = match v {
                    Some(V::Epoch(x)) => self.epochs.insert(e, x),
                    _ => self.epochs.remove(&e),
                };
                old.map(V::Epoch)
            }
            (StateKey::Committee(e), v) => {
                // The assignments follow the committees: rebuilt when next needed.
                self.assignments = Default::default();
                let old = match v {
                    Some(V::Committee(x)) => self.committees.insert(e, x),
                    _ => self.committees.remove(&e),
                };
                old.map(V::Committee)
            }
            (StateKey::Round(h), v) => {
                let old = match v {
                    Some(V::Round(x)) => self.rounds.insert(h, x),
                    _ => self.rounds.remove(&h),
                };
                old.map(V::Round)
            }
            (StateKey::Dispute(c, d, r), v) => {
                let old = self.disputes.remove(&(c, d, r));
                if let Some(o) = &old {
                    self.dispute_opened.remove(&(o.opened_ms, c, d, r));
                }
                if let Some(V::Dispute(x)) = v {
                    self.dispute_opened.insert((x.opened_ms, c, d, r));
                    self.disputes.insert((c, d, r), x);
                }
                old.map(V::Dispute)
            }
            // A key paired with a value of another kind: ignored (cannot be built by callers,
            // which go through the typed setters).
            (_, Some(_)) => None,
        }
    }

    /// The current record under `key`, encoded (without copying it first).
    pub(crate) fn encoded(&self, key: &StateKey) -> Option<Vec<u8>> {
        use commonware_codec::Encode;
        Some(match key {
            StateKey::Globals => self.globals.encode_mut().into(),
            StateKey::Account(a) => self.accounts.get(a)?.encode_mut().into(),
            StateKey::Device(a) => self.devices.get(a)?.encode_mut().into(),
            StateKey::Delegation(d, s) => self.delegations.get(&(*d, *s))?.encode_mut().into(),
            StateKey::Unbonding(i) => self.unbondings.get(i)?.encode_mut().into(),
            StateKey::Deployment(i) => self.deployments.get(i)?.encode_mut().into(),
            StateKey::Lease(i) => self.leases.get(i)?.encode_mut().into(),
            StateKey::Oracle(a) => self.oracles.get(a)?.encode_mut().into(),
            StateKey::Checker(a) => self.checkers.get(a)?.encode_mut().into(),
            StateKey::Epoch(e) => self.epochs.get(e)?.encode_mut().into(),
            StateKey::Committee(e) => self.committees.get(e)?.encode_mut().into(),
            StateKey::Round(h) => self.rounds.get(h)?.encode_mut().into(),
            StateKey::Dispute(c, d, r) => self.disputes.get(&(*c, *d, *r))?.encode_mut().into(),
        })
    }

    /// Every record, for a full rebuild of the root.
    pub(crate) fn all_keys(&self) -> Vec<StateKey> {
        let mut keys = vec![StateKey::Globals];
        // The root's rebuild sorts what it hashes: the maps' order does not matter here.
        keys.extend(
            self.accounts
                .keys_in_any_order()
                .map(|a| StateKey::Account(*a)),
        );
        keys.extend(self.devices.keys().map(|a| StateKey::Device(*a)));
        keys.extend(
            self.delegations
                .keys_in_any_order()
                .map(|(d, s)| StateKey::Delegation(*d, *s)),
        );
        keys.extend(self.unbondings.keys().map(|i| StateKey::Unbonding(*i)));
        keys.extend(self.deployments.keys().map(|i| StateKey::Deployment(*i)));
        keys.extend(self.leases.keys().map(|i| StateKey::Lease(*i)));
        keys.extend(self.oracles.keys().map(|a| StateKey::Oracle(*a)));
        keys.extend(self.checkers.keys().map(|a| StateKey::Checker(*a)));
        keys.extend(self.epochs.keys().map(|e| StateKey::Epoch(*e)));
        keys.extend(self.committees.keys().map(|e| StateKey::Committee(*e)));
        keys.extend(self.rounds.keys().map(|h| StateKey::Round(*h)));
        keys.extend(
            self.disputes
                .keys()
                .map(|(c, d, r)| StateKey::Dispute(*c, *d, *r)),
        );
        keys
    }
}

/// A device's tally weight with the epoch it counts for, when that is the open epoch: only
/// the open epoch's weights are kept (a closed epoch's were read when it closed, and dropped
/// at the end of that block).
fn open_weight(
    d: &Device,
    epoch: u64,
    class_weights: &[(ClassKind, u32)],
) -> Option<(u64, TallyWeight)> {
    if d.tally_epoch < epoch {
        return None;
    }
    TallyWeight::of(d, class_weights).map(|w| (d.tally_epoch, w))
}

/// Whether a device can be matched to a new lease: active, offered, free, and verified by
/// its checkers (matching also skips a verification that has lapsed).
pub(crate) fn is_marketable(d: &Device) -> bool {
    d.status == DeviceStatus::Active
        && d.available
        && d.lease.is_none()
        && d.standing.status == CheckStatus::Verified
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(balance: u64) -> Account {
        Account {
            balance: cairn_primitives::Amount::from_base(balance),
            ..Account::default()
        }
    }

    fn balance(s: &State, a: &Address) -> Option<u64> {
        s.accounts.get(a).map(|x| x.balance.base())
    }

    const A: Address = Address([1; 32]);
    const B: Address = Address([2; 32]);

    /// A block of three transactions: the first writes A twice, the second writes A and B
    /// and fails, the third writes A and B.
    fn block() -> State {
        let mut s = State::default();
        s.raw_set(StateKey::Account(A), Some(StateValue::Account(account(10))));
        let m1 = s.mark();
        s.set_account(A, account(11));
        s.set_account(A, account(12));
        s.commit_tx(m1);
        // Both entries are its own: A was not written before in the block.
        assert_eq!(s.journal.len(), 2);
        let m2 = s.mark();
        s.set_account(A, account(20));
        s.set_account(B, account(5));
        s.revert_to(m2);
        assert_eq!((balance(&s, &A), balance(&s, &B)), (Some(12), None));
        let m3 = s.mark();
        s.set_account(A, account(30));
        s.set_account(B, account(6));
        s.commit_tx(m3);
        // A's entry went (A was written before in the block), B's stayed.
        assert_eq!(s.journal.len(), 3);
        s
    }

    /// The journal keeps about one old record per key written in a block once transactions
    /// succeed; undoing a failed transaction, or the whole block, still restores exactly what
    /// was there, and the block's changes name each key once.
    #[test]
    fn a_compacted_journal_undoes_transactions_and_blocks_exactly() {
        let mut failed = block();
        failed.revert_to(0);
        assert_eq!(
            (balance(&failed, &A), balance(&failed, &B)),
            (Some(10), None)
        );
        assert!(failed.journal.is_empty() && failed.settled == 0);
        // The keys of the undone block are forgotten: a new transaction's entries stay.
        let m = failed.mark();
        failed.set_account(A, account(40));
        failed.commit_tx(m);
        assert_eq!(failed.journal.len(), 1);

        let mut kept = block();
        let changes = kept.take_changes(0);
        let keys: Vec<Vec<u8>> = changes.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            [
                StateKey::Account(A).to_bytes(),
                StateKey::Account(B).to_bytes()
            ]
        );
        assert_eq!(
            (balance(&kept, &A), balance(&kept, &B)),
            (Some(30), Some(6))
        );
        assert!(kept.journal.is_empty() && kept.settled == 0);

        // A record written and then restored within the block is no change.
        let mut same = State::default();
        same.raw_set(StateKey::Account(A), Some(StateValue::Account(account(10))));
        same.set_account(A, account(11));
        same.set_account(A, account(10));
        assert!(same.take_changes(0).is_empty());
    }

    /// A device written in place (only its checking fields journaled) and whole by a later
    /// transaction: undoing the block restores the whole record as it was, undoing a
    /// transaction restores exactly what it changed, the market and the weights follow,
    /// and the block's changes name the device.
    #[test]
    fn checking_fields_written_in_place_undo_exactly_beside_whole_records() {
        let spec = cairn_primitives::DeviceSpec {
            gpu_count: 0,
            vram_mib: 0,
            cpu_cores: 4,
            ram_mib: 8_192,
        };
        let mut unverified = crate::synthetic::device_record(B, 0, spec, "eu", 100, 500_000, 1_000);
        unverified.standing.status = CheckStatus::Unverified;
        let params = crate::testing::genesis(&[]).validate().expect("params");
        let mut s = State::new(&params);
        s.raw_set(
            StateKey::Device(A),
            Some(StateValue::Device(unverified.clone())),
        );
        let market_true = |s: &State| {
            Market::build(s.devices.iter().filter(|(_, d)| is_marketable(d))) == s.market
        };
        let start = s.weights.clone();
        assert!(!is_marketable(&unverified));

        let mut passed = unverified.standing;
        passed.status = CheckStatus::Verified;
        passed.round = 7;
        let m1 = s.mark();
        assert!(s.set_checking(A, passed, 150, Verdict::Pass));
        s.commit_tx(m1);
        let written = s.devices.get(&A).expect("device").clone();
        assert!(is_marketable(&written) && written.tally_verdict == Verdict::Pass);
        assert_ne!(s.weights, start);
        assert!(market_true(&s) && s.market != Market::build(std::iter::empty()));

        // A failed transaction's in-place write is undone exactly.
        let m2 = s.mark();
        let mut jailed = passed;
        jailed.status = CheckStatus::Jailed;
        assert!(s.set_checking(A, jailed, 0, Verdict::Fail));
        s.revert_to(m2);
        assert_eq!(s.devices.get(&A), Some(&written));
        assert!(market_true(&s));

        // A later transaction writes the whole record: its entry is kept, since the
        // block's first entry for the device restores only the checking fields.
        let m3 = s.mark();
        let mut repriced = written.clone();
        repriced.price_per_hour = cairn_primitives::PayUnits(999);
        s.set_device(A, repriced);
        s.commit_tx(m3);
        assert_eq!(s.journal.len(), 2);
        // Another in-place write after it is not needed by the block.
        let m4 = s.mark();
        assert!(s.set_checking(A, passed, 120, Verdict::Pass));
        s.commit_tx(m4);
        assert_eq!(s.journal.len(), 2);
        assert!(
            !s.set_checking(B, passed, 0, Verdict::Pass),
            "no such device"
        );

        let mut undone = s;
        undone.revert_to(0);
        assert_eq!(undone.devices.get(&A), Some(&unverified));
        assert_eq!(
            undone.weights.get(&0).copied().unwrap_or_default(),
            EpochWeights::default()
        );
        assert!(market_true(&undone) && undone.market == Market::build(std::iter::empty()));

        let mut kept = State::new(&params);
        kept.raw_set(StateKey::Device(A), Some(StateValue::Device(unverified)));
        let m = kept.mark();
        assert!(kept.set_checking(A, passed, 150, Verdict::Pass));
        kept.commit_tx(m);
        let changes = kept.take_changes(0);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, StateKey::Device(A).to_bytes());
    }
}
