//! Cairn's ledger: a pure, deterministic state machine.
//!
//! `Ledger::apply(block)` checks the block against the state, verifies every signature (in
//! batches), applies each transaction (an invalid one changes nothing and is recorded with a
//! precise error), closes epochs (emission split into reward pools; each device's share is
//! paid when the device is next settled), and returns the events, the per-transaction
//! results, the changed records and the new state root. No clock, no I/O, no randomness but
//! the block's own hash and timestamp: two ledgers fed the same blocks reach the same root.
//!
//! ```
//! use cairn_ledger::Ledger;
//! use cairn_primitives::{Amount, Genesis, GenesisAccount, Keypair, Tx, TxBody};
//!
//! let alice = Keypair::from_seed([1; 32]);
//! let bob = Keypair::from_seed([2; 32]);
//! let mut genesis = Genesis::production("example", 60, 1_700_000_000_000);
//! genesis.accounts.push(GenesisAccount { address: alice.address(), balance: "1000".into() });
//! let mut ledger = Ledger::from_genesis(&genesis).unwrap();
//! let tx = Tx {
//!     sender: alice.public_key(),
//!     nonce: 0,
//!     fee: Amount::from_base(1_000),
//!     body: TxBody::Transfer { to: bob.address(), amount: Amount::from_base(5) },
//! }
//! .sign(&alice, &genesis.chain_id);
//! let block = ledger.build_block(genesis.genesis_time_ms + 1_000, vec![tx]);
//! let outcome = ledger.apply(&block).unwrap();
//! assert!(outcome.results[0].error.is_none());
//! assert_eq!(ledger.account(&bob.address()).balance, Amount::from_base(5));
//! ```
#![deny(missing_docs)]
// Consensus code: no panics and no unchecked arithmetic outside tests (lighthouse's lints). A
// sum that could overflow is checked and fails the transaction or block with a typed error.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod assign;
mod block;
mod epoch;
mod error;
mod events;
mod journal;
mod lookup;
mod matching;
mod merkle;
mod state;
pub mod synthetic;
/// Fixtures for tests: a test genesis and signed transactions. Only with the `test-utils`
/// feature (which dev-dependencies turn on), so that release builds do not carry them.
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod tokenomics;
mod tx;

pub use block::VerifiedBlock;
pub use epoch::Settlement;
pub use error::{BlockError, InvariantViolation, RecordError, Result, TxError};
pub use events::{BlockOutcome, Event, TxResult};
pub use tx::{MAX_DURATION_SECS, MAX_MATCH_SCAN, MAX_REPLICAS, NO_UPTIME, decide};

use cairn_primitives::{
    Account, Address, Block, Deployment, Device, EpochRecord, Genesis, GenesisError, Globals, Hash,
    Lease, Params, SignedTx, StateKey, StateProof, StateValue, Unbonding,
};
use merkle::BucketTree;
use state::State;
use std::sync::Arc;

/// The ledger: state, indexes and state root.
pub struct Ledger {
    params: Arc<Params>,
    state: State,
    tree: BucketTree,
    cx: block::BlockCx,
}

impl Ledger {
    /// The state at genesis (height 0).
    pub fn from_genesis(genesis: &Genesis) -> Result<Self, GenesisError> {
        let params = Arc::new(genesis.validate()?);
        let mut state = State::new(&params);
        let mut g = Globals {
            supply: params.genesis_supply,
            ..Globals::default()
        };
        g.last_timestamp_ms = params.genesis_time_ms;
        // The first regular round comes at least the round gap after genesis.
        g.last_regular_round_ms = params.genesis_time_ms;
        state.set_globals(g);
        for (addr, bal) in &params.accounts {
            state.set_account(
                *addr,
                Account {
                    balance: *bal,
                    ..Account::default()
                },
            );
        }
        let mut ledger = Self {
            params,
            state,
            tree: BucketTree::new(),
            cx: block::BlockCx::default(),
        };
        ledger.genesis_checkers().map_err(|e| GenesisError::Field {
            field: "checkers".into(),
            message: e.to_string(),
        })?;
        ledger.finish_block();
        Ok(ledger)
    }

    /// Rebuilds a ledger from stored records (as written by [`BlockOutcome::changes`]).
    pub fn from_records(
        genesis: &Genesis,
        records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> std::result::Result<Self, RecordError> {
        let params = Arc::new(genesis.validate()?);
        let mut state = State::new(&params);
        for (k, v) in records {
            let key = StateKey::from_bytes(&k).ok_or_else(|| RecordError::Key(k.clone()))?;
            let value = StateValue::decode_value(&key, &v).map_err(|e| RecordError::Value {
                key: format!("{key:?}"),
                reason: e.to_string(),
            })?;
            state.raw_set(key, Some(value));
        }
        let mut ledger = Self {
            params,
            state,
            tree: BucketTree::new(),
            cx: block::BlockCx::default(),
        };
        let all: Vec<(Vec<u8>, Option<Vec<u8>>)> = ledger
            .state
            .all_keys()
            .into_iter()
            .map(|k| (k.to_bytes(), ledger.state.encoded(&k)))
            .collect();
        ledger.tree.update(&all);
        Ok(ledger)
    }

    /// The chain's resolved genesis parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The state root (a commitment to every record).
    pub fn state_root(&self) -> Hash {
        self.tree.root()
    }

    /// Chain-wide counters (height, supply, minted, burned, …).
    pub fn globals(&self) -> &Globals {
        &self.state.globals
    }

    /// An account (the empty account when it holds nothing).
    pub fn account(&self, a: &Address) -> Account {
        self.state.account(a)
    }

    /// A device.
    pub fn device(&self, a: &Address) -> Option<&Device> {
        self.state.devices.get(a)
    }

    /// Every device, by address.
    pub fn devices(&self) -> impl Iterator<Item = (&Address, &Device)> {
        self.state.devices.iter()
    }

    /// A deployment.
    pub fn deployment(&self, id: u64) -> Option<&Deployment> {
        self.state.deployments.get(&id)
    }

    /// Deployments with ids above `after` (all when `None`), in id order.
    pub fn deployments_after(
        &self,
        after: Option<u64>,
    ) -> impl Iterator<Item = (&u64, &Deployment)> {
        let lo = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        self.state
            .deployments
            .range((lo, std::ops::Bound::Unbounded))
    }

    /// Devices with addresses above `after` (all when `None`), in address order.
    pub fn devices_after(
        &self,
        after: Option<Address>,
    ) -> impl Iterator<Item = (&Address, &Device)> {
        let lo = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        self.state.devices.range((lo, std::ops::Bound::Unbounded))
    }

    /// Leases being served now.
    pub fn active_leases(&self) -> usize {
        self.state.lease_ends.len()
    }

    /// Closed epochs' records below `before` (all when `None`), newest first.
    pub fn epochs_before(&self, before: Option<u64>) -> impl Iterator<Item = &EpochRecord> {
        self.state
            .epochs
            .range(..before.unwrap_or(u64::MAX))
            .rev()
            .map(|(_, r)| r)
    }

    /// The round started at `height`, if it is still kept (this epoch's and the last).
    pub fn round(&self, height: u64) -> Option<&cairn_primitives::Round> {
        self.state.rounds.get(&height)
    }

    /// The kept rounds (this epoch's and the one before) started after height `after`,
    /// oldest first, at most `limit`.
    pub fn rounds_after(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Iterator<Item = (u64, &cairn_primitives::Round)> {
        self.state
            .rounds
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(h, r)| (*h, r))
    }

    /// A checker's record.
    pub fn checker(&self, a: &Address) -> Option<&cairn_primitives::Checker> {
        self.state.checkers.get(a)
    }

    /// Checkers by address, after `after`, at most `limit`.
    pub fn checkers_after(
        &self,
        after: Option<Address>,
        limit: usize,
    ) -> Vec<(Address, cairn_primitives::Checker)> {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.state
            .checkers
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(a, c)| (*a, c.clone()))
            .collect()
    }

    /// The open disputes of `checker`'s results: (device, round).
    pub fn disputes_of(&self, checker: &Address) -> Vec<(Address, u64)> {
        self.state
            .disputes
            .range((*checker, Address::MIN, 0)..=(*checker, Address::MAX, u64::MAX))
            .map(|((_, d, r), _)| (*d, *r))
            .collect()
    }

    /// The open epoch's committee.
    pub fn committee(&self) -> Option<&cairn_primitives::Committee> {
        self.state.committee()
    }

    /// A lease.
    pub fn lease(&self, id: u64) -> Option<&Lease> {
        self.state.leases.get(&id)
    }

    /// An epoch's record, once closed.
    pub fn epoch(&self, e: u64) -> Option<&EpochRecord> {
        self.state.epochs.get(&e)
    }

    /// Stake unbonding, by id.
    pub fn unbondings(&self) -> impl Iterator<Item = (&u64, &Unbonding)> {
        self.state.unbondings.iter()
    }

    /// A staker's shares in a device's pool.
    pub fn delegation(&self, device: &Address, staker: &Address) -> u64 {
        self.state
            .delegations
            .get(&(*device, *staker))
            .map_or(0, |d| d.shares)
    }

    /// What `staker` has staked: (device, shares), by device address.
    pub fn stakes_of(&self, staker: &Address) -> Vec<(Address, u64)> {
        self.state
            .stakes_by
            .range((*staker, Address::MIN)..)
            .take_while(|(s, _)| s == staker)
            .map(|(_, d)| (*d, self.delegation(d, staker)))
            .collect()
    }

    /// Number of records in the state.
    pub fn record_count(&self) -> usize {
        self.tree.len()
    }

    /// Devices that can be matched now.
    pub fn marketable_devices(&self) -> usize {
        self.state.market.len()
    }

    /// An inclusion (or absence) proof for a record against [`Ledger::state_root`].
    pub fn prove(&self, key: &StateKey) -> StateProof {
        self.tree.prove(&key.to_bytes(), self.state.encoded(key))
    }

    /// Every record, encoded: what a store persists at genesis.
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.state
            .all_keys()
            .into_iter()
            .filter_map(|k| Some((k.to_bytes(), self.state.encoded(&k)?)))
            .collect()
    }

    /// The sum of every holding: balances, stake pools, checkers' bonds, unbonding stake, epoch rewards held
    /// for devices not yet settled and (under `direct`) token escrow. Always equals `globals().supply`; property tests check that it does.
    pub fn holdings(&self) -> u128 {
        let s = &self.state;
        // A sum: the order of the accounts does not matter.
        let balances: u128 = s
            .accounts
            .values_in_any_order()
            .map(|a| u128::from(a.balance.base()))
            .sum();
        let pools: u128 = s
            .devices
            .values()
            .map(|d| u128::from(d.pool.tokens.base()))
            .sum();
        let checkers: u128 = s
            .checkers
            .values()
            .map(|c| u128::from(c.stake.base()))
            .sum();
        let unbonding: u128 = s
            .unbondings
            .values()
            .map(|u| u128::from(u.amount.base()))
            .sum();
        let unpaid: u128 = s.epochs.values().map(|e| u128::from(e.unpaid.base())).sum();
        let escrow = match self.params.payment_model {
            cairn_primitives::PaymentModel::Direct => {
                u128::from(s.globals.escrow.as_tokens().base())
            }
            cairn_primitives::PaymentModel::Bme => 0,
        };
        // Sums of u64 amounts in a u128: they cannot reach its bound.
        balances
            .saturating_add(pools)
            .saturating_add(checkers)
            .saturating_add(unbonding)
            .saturating_add(unpaid)
            .saturating_add(escrow)
    }

    /// Builds the next block on this state from `txs` (what a proposer does).
    pub fn build_block(&self, timestamp_ms: u64, txs: Vec<SignedTx>) -> Block {
        let g = &self.state.globals;
        Block::build(
            g.height.saturating_add(1),
            g.last_block,
            g.height,
            self.state_root(),
            timestamp_ms.max(g.last_timestamp_ms),
            Address::default(),
            txs,
        )
    }

    /// Hashes the records changed since the last block into the tree; returns them.
    fn finish_block(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let changes = self.state.take_changes(self.state.globals.epoch);
        self.tree.update(&changes);
        changes
    }
}
