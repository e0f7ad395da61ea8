//! The ledger's records in memory, with an undo journal (so a failed transaction or block
//! leaves nothing behind), the set of records changed in the current block (for the state root
//! and the store), and the derived indexes (market, lease ends, unbonding queue).

use crate::matching::Market;
use cairn_primitives::{
    Account, Address, CheckerTally, Delegation, Deployment, Device, DeviceStatus, EpochRecord,
    Globals, Lease, LeaseState, OraclePrice, StateKey, StateValue, Unbonding,
};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Default)]
pub(crate) struct State {
    pub(crate) globals: Globals,
    pub(crate) accounts: HashMap<Address, Account>,
    pub(crate) devices: BTreeMap<Address, Device>,
    pub(crate) delegations: HashMap<(Address, Address), Delegation>,
    pub(crate) unbondings: BTreeMap<u64, Unbonding>,
    pub(crate) deployments: BTreeMap<u64, Deployment>,
    pub(crate) leases: BTreeMap<u64, Lease>,
    pub(crate) oracles: BTreeMap<Address, OraclePrice>,
    pub(crate) checkers: BTreeMap<Address, CheckerTally>,
    pub(crate) epochs: BTreeMap<u64, EpochRecord>,

    // Derived indexes, rebuilt on load.
    pub(crate) market: Market,
    pub(crate) lease_ends: BTreeSet<(u64, u64)>,
    /// (last report, lease) for every active lease: which devices went silent.
    pub(crate) lease_seen: BTreeSet<(u64, u64)>,
    pub(crate) unbond_queue: BTreeSet<(u64, u64)>,
    /// Devices with a non-zero epoch tally.
    pub(crate) tallied: BTreeSet<Address>,
    /// (staker, device) for every delegation: what an account has staked, without a scan.
    pub(crate) stakes_by: BTreeSet<(Address, Address)>,

    journal: Vec<(StateKey, Option<StateValue>)>,
    /// Records written in place without a journal entry (epoch close, which cannot fail once
    /// it writes and is never reverted): always reported as changed.
    dirty: Vec<StateKey>,
    /// Like `dirty`, already encoded where they were written (sorted by key).
    written: Vec<(StateKey, Vec<u8>)>,
}

impl State {
    pub(crate) fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).cloned().unwrap_or_default()
    }

    pub(crate) fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Undoes every change after `mark`.
    pub(crate) fn revert_to(&mut self, mark: usize) {
        while self.journal.len() > mark {
            if let Some((k, old)) = self.journal.pop() {
                self.raw_set(k, old);
            }
        }
    }

    /// Forgets the journal (the block is final) and hands back the records that differ from
    /// the block's start, sorted by key: `(key bytes, Some(encoded))` written, `(key bytes,
    /// None)` deleted. A record touched and then restored (by a rejected transaction) is not a
    /// change. Encoding runs on every core: an epoch close can change a million records.
    pub(crate) fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let journal = std::mem::take(&mut self.journal);
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut written = std::mem::take(&mut self.written);
        let mut first: HashMap<StateKey, Option<StateValue>> = HashMap::new();
        for (k, old) in journal {
            first.entry(k).or_insert(old);
        }
        dirty.par_sort_unstable();
        dirty.dedup();
        // A pre-encoded record written again later in the block is encoded afresh.
        if !first.is_empty() || !dirty.is_empty() {
            let mut again: Vec<StateKey> = first.keys().copied().collect();
            again.extend_from_slice(&dirty);
            again.sort_unstable();
            let stale = sorted_intersection(&written, &again);
            if !stale.is_empty() {
                written.retain(|(k, _)| !keys_contains(&stale, k));
                dirty.extend(stale);
                dirty.par_sort_unstable();
                dirty.dedup();
            }
        }
        let journaled: Vec<StateKey> = first
            .into_iter()
            .filter_map(|(k, old)| {
                let counted = keys_contains(&dirty, &k);
                (!counted && !self.holds(&k, old.as_ref())).then_some(k)
            })
            .collect();
        dirty.extend(journaled);
        dirty.par_sort_unstable();
        let encoded: Vec<(StateKey, Option<Vec<u8>>)> = dirty
            .into_par_iter()
            .map(|k| {
                let v = self.encoded(&k);
                (k, v)
            })
            .collect();
        // Merge the two sorted lists.
        let mut out = Vec::with_capacity(encoded.len() + written.len());
        let mut a = encoded.into_iter().peekable();
        let mut b = written.into_iter().peekable();
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.0 < y.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a {
                a.next()
            } else {
                b.next().map(|(k, v)| (k, Some(v)))
            };
            if let Some((k, v)) = next {
                out.push((k, v));
            }
        }
        out.into_par_iter()
            .map(|(k, v)| (k.to_bytes(), v))
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
            // A value of another kind than its key (never journaled): not equal.
            _ => false,
        }
    }

    /// Marks a record written in place, without a journal entry. Only for writes that are
    /// never reverted (see [`State::dirty`]).
    pub(crate) fn touch(&mut self, key: StateKey) {
        self.dirty.push(key);
    }

    /// Devices with a tally, in address order: walks the whole map when most devices have one
    /// (a million lookups cost more than one pass).
    pub(crate) fn tallied_devices(&self) -> Vec<(&Address, &Device)> {
        if self.tallied.len() < self.devices.len() / 8 {
            return self
                .tallied
                .iter()
                .filter_map(|a| self.devices.get_key_value(a))
                .collect();
        }
        let mut out = Vec::with_capacity(self.tallied.len());
        let mut next = self.tallied.iter().peekable();
        for (a, d) in &self.devices {
            let Some(t) = next.peek() else { break };
            if *t == a {
                out.push((a, d));
                next.next();
            }
        }
        out
    }

    /// Sets an account's balance in place (epoch close).
    pub(crate) fn set_balance_in_place(&mut self, a: Address, balance: cairn_primitives::Amount) {
        self.accounts.entry(a).or_default().balance = balance;
        self.touch(StateKey::Account(a));
    }

    /// Writes the epoch close into tallied devices in place, on every core: new stake and
    /// reputation, tallies cleared; the records are encoded as they are written. `closes` is
    /// sorted by device. `rerank`: keep the market index true one device at a time (else the
    /// caller rebuilds it).
    pub(crate) fn close_devices(&mut self, closes: &[crate::epoch::DeviceClose], rerank: bool) {
        use commonware_codec::Encode;
        if rerank {
            for c in closes.iter().filter(|c| c.reranked) {
                if let Some(d) = self.devices.get(&c.device) {
                    self.market.remove(&c.device, d);
                }
            }
        }
        let close = |d: &mut Device, c: &crate::epoch::DeviceClose| {
            d.pool.tokens = c.pool_tokens;
            d.reputation_ppm = c.reputation_ppm;
            d.attest_pass = 0;
            d.attest_fail = 0;
            d.uptime_ppm_sum = 0;
            d.work = 0;
            d.voters.clear();
            (StateKey::Device(c.device), d.encode_mut().into())
        };
        let mut written: Vec<(StateKey, Vec<u8>)> = if closes.len() < self.devices.len() / 8 {
            closes
                .iter()
                .filter_map(|c| self.devices.get_mut(&c.device).map(|d| close(d, c)))
                .collect()
        } else {
            // Most devices: one pass to pair them up, then every core.
            let mut targets = Vec::with_capacity(closes.len());
            let mut next = closes.iter().peekable();
            for (a, d) in self.devices.iter_mut() {
                let Some(c) = next.peek() else { break };
                if c.device == *a {
                    targets.push((d, *c));
                    next.next();
                }
            }
            targets.into_par_iter().map(|(d, c)| close(d, c)).collect()
        };
        if rerank {
            for c in closes.iter().filter(|c| c.reranked) {
                if let Some(d) = self.devices.get(&c.device) {
                    self.market.insert(c.device, d);
                }
            }
        }
        if self.written.is_empty() {
            self.written = written;
        } else {
            self.written.append(&mut written);
        }
        self.tallied.clear();
    }

    /// Rebuilds the market index from the devices (cheaper than a million single updates when
    /// an epoch close moves most reputations).
    pub(crate) fn rebuild_market(&mut self) {
        let old = std::mem::take(&mut self.market);
        let devices = &self.devices;
        let ((), market) = rayon::join(
            || drop(old),
            || Market::build(devices.iter().filter(|(_, d)| is_marketable(d))),
        );
        self.market = market;
    }

    pub(crate) fn put(&mut self, key: StateKey, value: Option<StateValue>) {
        let old = self.raw_set(key, value);
        self.journal.push((key, old));
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
    pub(crate) fn set_checker(&mut self, a: Address, v: CheckerTally) {
        self.put(StateKey::Checker(a), Some(StateValue::Checker(v)));
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
                let old = self.devices.remove(&a);
                if let Some(o) = &old {
                    self.market.remove(&a, o);
                    self.tallied.remove(&a);
                }
                if let Some(V::Device(d)) = v {
                    if is_marketable(&d) {
                        self.market.insert(a, &d);
                    }
                    if d.attest_pass > 0 || d.attest_fail > 0 || d.work > 0 {
                        self.tallied.insert(a);
                    }
                    self.devices.insert(a, d);
                }
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
        })
    }

    /// Every record, for a full rebuild of the root.
    pub(crate) fn all_keys(&self) -> Vec<StateKey> {
        let mut keys = vec![StateKey::Globals];
        keys.extend(self.accounts.keys().map(|a| StateKey::Account(*a)));
        keys.extend(self.devices.keys().map(|a| StateKey::Device(*a)));
        keys.extend(
            self.delegations
                .keys()
                .map(|(d, s)| StateKey::Delegation(*d, *s)),
        );
        keys.extend(self.unbondings.keys().map(|i| StateKey::Unbonding(*i)));
        keys.extend(self.deployments.keys().map(|i| StateKey::Deployment(*i)));
        keys.extend(self.leases.keys().map(|i| StateKey::Lease(*i)));
        keys.extend(self.oracles.keys().map(|a| StateKey::Oracle(*a)));
        keys.extend(self.checkers.keys().map(|a| StateKey::Checker(*a)));
        keys.extend(self.epochs.keys().map(|e| StateKey::Epoch(*e)));
        keys
    }
}

/// Whether a device can be matched to a new lease.
pub(crate) fn is_marketable(d: &Device) -> bool {
    d.status == DeviceStatus::Active && d.available && d.lease.is_none()
}

/// Whether sorted `keys` holds `k`.
fn keys_contains(keys: &[StateKey], k: &StateKey) -> bool {
    keys.binary_search(k).is_ok()
}

/// Keys of sorted `written` that also appear in sorted `keys` (one merge pass).
fn sorted_intersection(written: &[(StateKey, Vec<u8>)], keys: &[StateKey]) -> Vec<StateKey> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some((w, _)), Some(k)) = (written.get(i), keys.get(j)) {
        match w.cmp(k) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(*w);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
