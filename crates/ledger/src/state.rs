//! The ledger's records in memory, with an undo journal (so a failed transaction or block
//! leaves nothing behind), the set of records changed in the current block (for the state root
//! and the store), and the derived indexes (market, lease ends, unbonding queue).

use crate::matching::Market;
use cairn_primitives::{
    Account, Address, CheckerTally, Delegation, Deployment, Device, DeviceStatus, EpochRecord,
    Globals, Lease, LeaseState, OraclePrice, StateKey, StateValue, Unbonding,
};
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
    pub(crate) unbond_queue: BTreeSet<(u64, u64)>,
    /// Devices with a non-zero epoch tally.
    pub(crate) tallied: BTreeSet<Address>,

    journal: Vec<(StateKey, Option<StateValue>)>,
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
    /// the block's start: `(key, Some(encoded))` written, `(key, None)` deleted. A record
    /// touched and then restored (by a rejected transaction) is not a change.
    pub(crate) fn take_changes(&mut self) -> Vec<(StateKey, Option<Vec<u8>>)> {
        let journal = std::mem::take(&mut self.journal);
        let mut first: HashMap<StateKey, Option<StateValue>> = HashMap::new();
        for (k, old) in journal {
            first.entry(k).or_insert(old);
        }
        let mut out: Vec<(StateKey, Option<Vec<u8>>)> = first
            .into_iter()
            .filter_map(|(k, old)| {
                let now = self.value(&k);
                (now != old).then(|| (k, now.map(|v| v.encode_value())))
            })
            .collect();
        out.sort_unstable_by_key(|x| x.0);
        out
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
                    Some(V::Delegation(x)) => self.delegations.insert((d, s), x),
                    _ => self.delegations.remove(&(d, s)),
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
                }
                if let Some(V::Lease(l)) = v {
                    if l.state == LeaseState::Active {
                        self.lease_ends.insert((l.end_ms, id));
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

    /// The current record under `key`, encoded.
    pub(crate) fn encoded(&self, key: &StateKey) -> Option<Vec<u8>> {
        self.value(key).map(|v| v.encode_value())
    }

    /// The current record under `key`.
    pub(crate) fn value(&self, key: &StateKey) -> Option<StateValue> {
        use StateValue as V;
        Some(match key {
            StateKey::Globals => V::Globals(self.globals.clone()),
            StateKey::Account(a) => V::Account(self.accounts.get(a)?.clone()),
            StateKey::Device(a) => V::Device(self.devices.get(a)?.clone()),
            StateKey::Delegation(d, s) => V::Delegation(self.delegations.get(&(*d, *s))?.clone()),
            StateKey::Unbonding(i) => V::Unbonding(self.unbondings.get(i)?.clone()),
            StateKey::Deployment(i) => V::Deployment(self.deployments.get(i)?.clone()),
            StateKey::Lease(i) => V::Lease(self.leases.get(i)?.clone()),
            StateKey::Oracle(a) => V::Oracle(self.oracles.get(a)?.clone()),
            StateKey::Checker(a) => V::Checker(self.checkers.get(a)?.clone()),
            StateKey::Epoch(e) => V::Epoch(self.epochs.get(e)?.clone()),
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
