//! The mempool: signed transactions waiting for a block.
//!
//! Bounded (a count and a per-account window); signatures are checked in batches before
//! admission; each account's transactions are kept in nonce order and a block takes them only
//! as a contiguous run from the account's next nonce; a transaction seen before is refused as a
//! duplicate; when full, a submission is refused with [`AdmitError::Full`] (the API turns it
//! into HTTP 503 with a retry hint), never dropped silently.

use cairn_ledger::{Ledger, TxError};
use cairn_primitives::{Address, Hash, SignedTx, Tx};
use commonware_codec::EncodeSize;
use std::collections::{BTreeMap, HashMap};

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The pool holds its maximum; retry later.
    #[error("mempool full ({0} transactions); retry shortly")]
    Full(usize),
    /// This account already has its maximum of pending transactions.
    #[error("account has {0} pending transactions, the most one account may have")]
    AccountFull(usize),
    /// The same transaction is already pending or final.
    #[error("duplicate transaction")]
    Duplicate,
    /// The signature does not verify (also what a transaction for another chain gets).
    #[error("bad signature (or signed for another chain)")]
    BadSignature,
    /// The nonce is already used.
    #[error("nonce {got} already used; next is {expected}")]
    StaleNonce {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce is too far ahead of the account's next one.
    #[error("nonce {got} is too far ahead of the next nonce {expected}")]
    NonceTooHigh {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Another pending transaction has this nonce.
    #[error("another pending transaction uses nonce {0}")]
    NonceTaken(u64),
    /// The transaction would fail against the current state.
    #[error("{0}")]
    Invalid(cairn_ledger::TxError),
}

impl AdmitError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Full(_) => "mempool_full",
            Self::AccountFull(_) => "account_pending_limit",
            Self::Duplicate => "duplicate",
            Self::BadSignature => "bad_signature",
            Self::StaleNonce { .. } => "stale_nonce",
            Self::NonceTooHigh { .. } => "nonce_too_high",
            Self::NonceTaken(_) => "nonce_taken",
            Self::Invalid(e) => e.code(),
        }
    }
}

/// Mempool limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most transactions held.
    pub capacity: usize,
    /// Most pending transactions per account (also how far ahead a nonce may be).
    pub per_account: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            capacity: 200_000,
            per_account: 1_024,
        }
    }
}

/// The state admission checks against: a ledger, or a chain (its committed ledger).
pub trait PoolState {
    /// The chain id signatures must be under.
    fn chain_id(&self) -> &str;
    /// The account's next nonce.
    fn next_nonce(&self, a: &Address) -> u64;
    /// Whether `tx` would apply now; changes nothing.
    fn check(&mut self, tx: &Tx, timestamp_ms: u64) -> Result<(), TxError>;
}

impl PoolState for Ledger {
    fn chain_id(&self) -> &str {
        &self.params().chain_id
    }
    fn next_nonce(&self, a: &Address) -> u64 {
        self.account(a).nonce
    }
    fn check(&mut self, tx: &Tx, timestamp_ms: u64) -> Result<(), TxError> {
        self.check_tx(tx, timestamp_ms)
    }
}

impl PoolState for cairn_store::Chain {
    fn chain_id(&self) -> &str {
        &self.ledger().params().chain_id
    }
    fn next_nonce(&self, a: &Address) -> u64 {
        self.ledger().account(a).nonce
    }
    fn check(&mut self, tx: &Tx, timestamp_ms: u64) -> Result<(), TxError> {
        self.check_tx(tx, timestamp_ms)
    }
}

/// Pending transactions.
pub struct Mempool {
    limits: Limits,
    by_hash: HashMap<Hash, (Address, u64)>,
    accounts: BTreeMap<Address, BTreeMap<u64, SignedTx>>,
}

impl Mempool {
    /// An empty pool.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            by_hash: HashMap::new(),
            accounts: BTreeMap::new(),
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Admits a batch: signatures are verified together (on every core), then each
    /// transaction is checked against the ledger in order. `now_ms` is the time the next block
    /// will carry. `known` says whether a hash is already final. One verdict per transaction.
    pub fn admit(
        &mut self,
        ledger: &mut impl PoolState,
        txs: Vec<SignedTx>,
        now_ms: u64,
        known: impl Fn(&Hash) -> bool,
    ) -> Vec<Result<Hash, AdmitError>> {
        let verified = Ledger::verify_txs(&txs, ledger.chain_id());
        let ok = verified.verdicts().to_vec();
        self.admit_verified(ledger, txs, &ok, now_ms, known)
    }

    /// [`Mempool::admit`] with the signatures already checked (`sig_ok`, one per transaction,
    /// from [`Ledger::verify_txs`] under this chain's id): a caller that holds a lock around
    /// the pool verifies before taking it.
    pub fn admit_verified(
        &mut self,
        ledger: &mut impl PoolState,
        txs: Vec<SignedTx>,
        sig_ok: &[bool],
        now_ms: u64,
        known: impl Fn(&Hash) -> bool,
    ) -> Vec<Result<Hash, AdmitError>> {
        let ok = sig_ok.iter().copied().chain(std::iter::repeat(false));
        txs.into_iter()
            .zip(ok)
            .map(|(tx, sig_ok)| {
                if !sig_ok {
                    return Err(AdmitError::BadSignature);
                }
                self.admit_one(ledger, tx, now_ms, &known)
            })
            .collect()
    }

    fn admit_one(
        &mut self,
        ledger: &mut impl PoolState,
        tx: SignedTx,
        now_ms: u64,
        known: &impl Fn(&Hash) -> bool,
    ) -> Result<Hash, AdmitError> {
        let hash = tx.hash();
        if self.by_hash.contains_key(&hash) || known(&hash) {
            return Err(AdmitError::Duplicate);
        }
        let sender = tx.tx.sender_address();
        let expected = ledger.next_nonce(&sender);
        let nonce = tx.tx.nonce;
        if nonce < expected {
            return Err(AdmitError::StaleNonce {
                expected,
                got: nonce,
            });
        }
        let window = self.limits.per_account as u64;
        if nonce - expected >= window {
            return Err(AdmitError::NonceTooHigh {
                expected,
                got: nonce,
            });
        }
        let pending = self.accounts.get(&sender);
        if pending.is_some_and(|p| p.contains_key(&nonce)) {
            return Err(AdmitError::NonceTaken(nonce));
        }
        if pending.map_or(0, BTreeMap::len) >= self.limits.per_account {
            return Err(AdmitError::AccountFull(self.limits.per_account));
        }
        if self.by_hash.len() >= self.limits.capacity {
            return Err(AdmitError::Full(self.limits.capacity));
        }
        // The next transaction of an account is checked in full against the state; later ones
        // are checked when they become next (at block building) and fail there with a reason.
        if nonce == expected {
            ledger.check(&tx.tx, now_ms).map_err(AdmitError::Invalid)?;
        }
        self.by_hash.insert(hash, (sender, nonce));
        self.accounts.entry(sender).or_default().insert(nonce, tx);
        Ok(hash)
    }

    /// Up to `max` transactions and about `max_bytes` encoded bytes for the next block: per
    /// account, the contiguous run from its next nonce; accounts take turns so that one busy
    /// account cannot starve the others. `after` holds, per account, the next nonce once blocks
    /// ordered but not yet executed apply (what they carry is not taken again).
    pub fn take_block(
        &self,
        ledger: &Ledger,
        max: usize,
        max_bytes: usize,
        after: &HashMap<Address, u64>,
    ) -> Vec<SignedTx> {
        type Run<'a> = std::iter::Peekable<std::collections::btree_map::Range<'a, u64, SignedTx>>;
        let mut runs: Vec<Run<'_>> = Vec::new();
        let mut next: Vec<u64> = Vec::new();
        for (addr, pending) in &self.accounts {
            let n = ledger
                .account(addr)
                .nonce
                .max(after.get(addr).copied().unwrap_or(0));
            runs.push(pending.range(n..).peekable());
            next.push(n);
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut live = true;
        while live && out.len() < max {
            live = false;
            for (run, want) in runs.iter_mut().zip(next.iter_mut()) {
                if out.len() >= max {
                    break;
                }
                if let Some((n, tx)) = run.peek()
                    && **n == *want
                {
                    let size = tx.encode_size();
                    if bytes + size > max_bytes {
                        return out;
                    }
                    bytes += size;
                    out.push((*tx).clone());
                    *want += 1;
                    run.next();
                    live = true;
                }
            }
        }
        out
    }

    /// Drops what a finalized block included, and anything whose nonce the state has passed.
    pub fn prune(&mut self, ledger: &Ledger, included: &[Hash]) {
        let mut touched: Vec<Address> = Vec::with_capacity(included.len());
        for h in included {
            if let Some((addr, nonce)) = self.by_hash.remove(h) {
                if let Some(p) = self.accounts.get_mut(&addr) {
                    p.remove(&nonce);
                }
                touched.push(addr);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for addr in touched {
            let next = ledger.account(&addr).nonce;
            let Some(p) = self.accounts.get_mut(&addr) else {
                continue;
            };
            let stale: Vec<u64> = p.range(..next).map(|(n, _)| *n).collect();
            for n in stale {
                if let Some(tx) = p.remove(&n) {
                    self.by_hash.remove(&tx.hash());
                }
            }
            if p.is_empty() {
                self.accounts.remove(&addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_ledger::testing;
    use cairn_primitives::{Amount, Keypair, TxBody};

    fn setup() -> (Ledger, Vec<Keypair>) {
        let keys: Vec<Keypair> = (0..3u8).map(|i| Keypair::from_seed([i + 1; 32])).collect();
        let funded: Vec<_> = keys.iter().map(|k| (k.address(), 1_000_000_000)).collect();
        let ledger = Ledger::from_genesis(&testing::genesis(&funded)).expect("genesis");
        (ledger, keys)
    }

    fn transfer(from: &Keypair, nonce: u64, to: &Keypair) -> SignedTx {
        testing::tx(
            from,
            nonce,
            TxBody::Transfer {
                to: to.address(),
                amount: Amount::from_base(5),
            },
            "cairn-test",
        )
    }

    #[test]
    fn admits_orders_and_refuses_precisely() {
        let (mut ledger, k) = setup();
        let mut pool = Mempool::new(Limits {
            capacity: 5,
            per_account: 3,
        });
        let now = testing::TEST_GENESIS_MS + 1;
        // Out of order within an account: admitted, taken in order.
        let batch = vec![
            transfer(&k[0], 1, &k[1]),
            transfer(&k[0], 0, &k[1]),
            transfer(&k[1], 0, &k[0]),
        ];
        let r = pool.admit(&mut ledger, batch.clone(), now, |_| false);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        // Duplicates, taken nonces, too-far nonces, bad signatures, other chains.
        let mut forged = transfer(&k[2], 0, &k[0]);
        forged.tx.nonce = 1;
        let other_chain = testing::tx(
            &k[2],
            0,
            TxBody::Transfer {
                to: k[0].address(),
                amount: Amount::from_base(5),
            },
            "another-chain",
        );
        let r = pool.admit(
            &mut ledger,
            vec![
                batch[0].clone(),
                transfer(&k[0], 5, &k[1]),
                forged,
                other_chain,
            ],
            now,
            |_| false,
        );
        let codes: Vec<&str> = r
            .iter()
            .map(|x| x.as_ref().map_or_else(AdmitError::code, |_| "ok"))
            .collect();
        assert_eq!(
            codes,
            [
                "duplicate",
                "nonce_too_high",
                "bad_signature",
                "bad_signature"
            ]
        );
        let block = pool.take_block(&ledger, 10, usize::MAX, &HashMap::new());
        let order: Vec<(Address, u64)> = block
            .iter()
            .map(|t| (t.tx.sender_address(), t.tx.nonce))
            .collect();
        assert_eq!(order.len(), 3);
        let k0: Vec<u64> = order
            .iter()
            .filter(|(a, _)| *a == k[0].address())
            .map(|x| x.1)
            .collect();
        assert_eq!(k0, [0, 1]);
        // A gap is never taken past.
        let r = pool.admit(&mut ledger, vec![transfer(&k[2], 2, &k[0])], now, |_| false);
        assert!(r[0].is_ok());
        assert_eq!(
            pool.take_block(&ledger, 10, usize::MAX, &HashMap::new())
                .len(),
            3
        );
        // Full: a clear refusal.
        let r = pool.admit(&mut ledger, vec![transfer(&k[2], 0, &k[0])], now, |_| false);
        assert!(r[0].is_ok());
        let r = pool.admit(&mut ledger, vec![transfer(&k[2], 1, &k[0])], now, |_| false);
        assert_eq!(r[0], Err(AdmitError::Full(5)));
        // Applying the block prunes what it included.
        let txs = pool.take_block(&ledger, 10, usize::MAX, &HashMap::new());
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        let b = ledger.build_block(now, txs);
        ledger.apply(&b).expect("apply");
        pool.prune(&ledger, &hashes);
        assert_eq!(pool.len(), 1, "only the gapped k2 nonce 2 is left");
        // Known-final hashes are duplicates.
        let again = pool.admit(&mut ledger, vec![batch[2].clone()], now, |h| {
            hashes.contains(h)
        });
        assert_eq!(again[0], Err(AdmitError::Duplicate));
    }

    #[test]
    fn a_transaction_that_would_fail_is_refused_with_its_reason() {
        let (mut ledger, k) = setup();
        let mut pool = Mempool::new(Limits::default());
        let tx = testing::tx(
            &k[0],
            0,
            TxBody::Transfer {
                to: k[1].address(),
                amount: Amount::from_base(u64::MAX),
            },
            "cairn-test",
        );
        let r = pool.admit(&mut ledger, vec![tx], testing::TEST_GENESIS_MS, |_| false);
        assert!(matches!(r[0], Err(AdmitError::Invalid(_))), "{r:?}");
        assert!(pool.is_empty());
    }

    #[test]
    fn blocks_ordered_but_not_executed_are_not_taken_again() {
        let (mut ledger, k) = setup();
        let mut pool = Mempool::new(Limits::default());
        let now = testing::TEST_GENESIS_MS + 1;
        let txs: Vec<SignedTx> = (0..4).map(|n| transfer(&k[0], n, &k[1])).collect();
        for r in pool.admit(&mut ledger, txs.clone(), now, |_| false) {
            r.expect("admitted");
        }
        // Nonces 0 and 1 are in a block consensus ordered but this node has not executed.
        let after = HashMap::from([(k[0].address(), 2)]);
        let next = pool.take_block(&ledger, 10, usize::MAX, &after);
        let nonces: Vec<u64> = next.iter().map(|t| t.tx.nonce).collect();
        assert_eq!(nonces, [2, 3]);
        // The byte budget stops a block before it overflows.
        let one = txs[0].encode_size();
        assert_eq!(
            pool.take_block(&ledger, 10, one * 2 + one / 2, &HashMap::new())
                .len(),
            2
        );
    }
}
