//! Applying blocks: their checks, signature verification, the time-driven work at the start
//! of each block (unbonding, lease expiry and time-outs, epoch close), and dispatching each
//! transaction to its family in [`crate::tx`].

use crate::events::{BlockOutcome, Event, TxResult};
use crate::{BlockError, Ledger, Result, TxError};
use cairn_primitives::wire::Encode;
use cairn_primitives::{
    Address, Block, Hash, MAX_BLOCK_TXS, SignedTx, Tx, TxBody, namespace, verify_batch,
    verify_signature,
};
use rayon::prelude::*;
/// Signatures verified per batch (each batch runs on one core).
const SIG_BATCH: usize = 512;

/// Per-block context: the block's time and hash, and the events so far.
#[derive(Default)]
pub(crate) struct BlockCx {
    pub(crate) ts: u64,
    pub(crate) height: u64,
    pub(crate) block_hash: Hash,
    pub(crate) tx_index: Option<u32>,
    pub(crate) events: Vec<(Option<u32>, Event)>,
    /// Checkers whose results agreed with a verdict in the transaction being applied.
    pub(crate) agreed: Vec<Address>,
}

/// Verifies every transaction's signature, in parallel batches; a failed batch is re-checked
/// one by one to find the culprits. Returns one flag per transaction.
pub(crate) fn verify_signatures(txs: &[SignedTx], chain_id: &str) -> Vec<bool> {
    let ns = namespace("tx", chain_id);
    txs.par_chunks(SIG_BATCH)
        .flat_map_iter(|chunk| {
            let msgs: Vec<_> = chunk.iter().map(|t| t.tx.encode()).collect();
            let items: Vec<_> = chunk
                .iter()
                .zip(&msgs)
                .map(|(t, m)| (&t.tx.sender, ns.as_slice(), m.as_ref(), &t.signature))
                .collect();
            let all = verify_batch(&items);
            let flags: Vec<bool> = if all {
                vec![true; chunk.len()]
            } else {
                items
                    .iter()
                    .map(|(k, n, m, s)| verify_signature(k, n, m, s))
                    .collect()
            };
            flags.into_iter()
        })
        .collect()
}

/// The signature verdicts of one block's transactions, computed ahead of applying it (a node
/// verifies the next block while the previous one is written to disk). Only
/// [`Ledger::verify_txs`] makes one, and it is bound to the transactions' root.
#[derive(Clone, Debug)]
pub struct VerifiedBlock {
    tx_root: cairn_primitives::Hash,
    ok: Vec<bool>,
}

impl VerifiedBlock {
    /// One verdict per transaction, in order.
    pub fn verdicts(&self) -> &[bool] {
        &self.ok
    }
}
impl Ledger {
    /// Checks a block's transaction signatures under `chain_id`, on every core; needs no state, so it can
    /// run while another block is applied or committed.
    pub fn verify_txs(txs: &[SignedTx], chain_id: &str) -> VerifiedBlock {
        VerifiedBlock {
            tx_root: Block::tx_root_of(txs),
            ok: verify_signatures(txs, chain_id),
        }
    }

    /// Applies a block: on success the state has moved to the block's height; on error
    /// nothing changed.
    pub fn apply(&mut self, block: &Block) -> Result<BlockOutcome, BlockError> {
        let verified = Self::verify_txs(&block.txs, &self.params.chain_id);
        self.apply_verified(block, verified)
    }

    /// [`Ledger::apply`] with signatures checked beforehand by [`Ledger::verify_txs`]
    /// (verdicts for another block are refused).
    pub fn apply_verified(
        &mut self,
        block: &Block,
        verified: VerifiedBlock,
    ) -> Result<BlockOutcome, BlockError> {
        let g = &self.state.globals;
        let h = &block.header;
        let next = g
            .height
            .checked_add(1)
            .ok_or(BlockError::Overflow("height"))?;
        if h.height != next {
            return Err(BlockError::WrongHeight {
                expected: next,
                got: h.height,
            });
        }
        if h.parent != g.last_block {
            return Err(BlockError::WrongParent {
                expected: g.last_block,
                got: h.parent,
            });
        }
        if h.state_height >= h.height {
            return Err(BlockError::StateAheadOfBlock {
                height: h.height,
                state_height: h.state_height,
            });
        }
        // An earlier anchor is checked by whoever keeps the history of roots (the store); the
        // ledger holds only the current one.
        if h.state_height == g.height && h.state_root != self.state_root() {
            return Err(BlockError::WrongStateRoot {
                expected: self.state_root(),
                got: h.state_root,
            });
        }
        if h.timestamp_ms < g.last_timestamp_ms {
            return Err(BlockError::TimeWentBackwards {
                parent: g.last_timestamp_ms,
                got: h.timestamp_ms,
            });
        }
        if block.txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTxs(block.txs.len()));
        }
        if verified.tx_root != h.tx_root || verified.ok.len() != block.txs.len() {
            return Err(BlockError::WrongTxRoot);
        }
        let sig_ok = verified.ok;
        let block_hash = block.hash();
        self.cx = BlockCx {
            ts: h.timestamp_ms,
            height: h.height,
            block_hash,
            tx_index: None,
            events: Vec::new(),
            agreed: Vec::new(),
        };
        let mark = self.state.mark();
        let results = match self.apply_body(block, &sig_ok) {
            Ok(r) => r,
            Err(e) => {
                self.state.revert_to(mark);
                self.cx.events.clear();
                return Err(e);
            }
        };
        if std::mem::take(&mut self.state.weights_overflow) {
            // Unreachable by the bounds on the weights; a replica that gets here stops rather
            // than pay rewards from wrong sums.
            self.state.revert_to(mark);
            self.cx.events.clear();
            return Err(BlockError::Overflow("epoch weights"));
        }
        let mut g = self.state.globals.clone();
        g.height = h.height;
        g.last_block = block_hash;
        g.last_timestamp_ms = h.timestamp_ms;
        self.state.set_globals(g);
        let changes = self.finish_block();
        Ok(BlockOutcome {
            height: h.height,
            block_hash,
            state_root: self.state_root(),
            results,
            events: std::mem::take(&mut self.cx.events),
            changes,
        })
    }

    fn apply_body(&mut self, block: &Block, sig_ok: &[bool]) -> Result<Vec<TxResult>, BlockError> {
        let ts = block.header.timestamp_ms;
        // Time moves first: stake whose unbonding ended comes back, leases that ran out end,
        // and an epoch boundary passed since the parent closes the epoch.
        self.release_unbonding(ts).map_err(invariant)?;
        self.expire_leases(ts).map_err(invariant)?;
        self.time_out_leases(ts).map_err(invariant)?;
        self.maybe_close_epoch(ts).map_err(invariant)?;
        self.expire_disputes(ts).map_err(invariant)?;
        self.maybe_start_round(ts).map_err(invariant)?;
        let mut results = Vec::with_capacity(block.txs.len());
        for (i, tx) in block.txs.iter().enumerate() {
            // Bounded by MAX_BLOCK_TXS, checked before. A transaction that fails is rolled back
            // to its mark; a failure in the work before the loop fails the whole block.
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.cx.tx_index = Some(index);
            let hash = tx.hash();
            let error = if !sig_ok.get(i).copied().unwrap_or(false) {
                Some(TxError::BadSignature)
            } else {
                let mark = self.state.mark();
                let events = self.cx.events.len();
                match self.apply_tx(&tx.tx) {
                    Ok(()) => {
                        self.state.commit_tx(mark);
                        None
                    }
                    Err(e) => {
                        self.state.revert_to(mark);
                        self.cx.events.truncate(events);
                        Some(e)
                    }
                }
            };
            results.push(TxResult { hash, error });
        }
        self.cx.tx_index = None;
        Ok(results)
    }

    /// Checks a transaction against the current state without applying it (what a mempool
    /// does before admission). The signature is not checked here.
    pub fn check_tx(&mut self, tx: &Tx, timestamp_ms: u64) -> Result<()> {
        let saved_ts = self.cx.ts;
        self.cx.ts = timestamp_ms.max(self.state.globals.last_timestamp_ms);
        let mark = self.state.mark();
        let events = self.cx.events.len();
        let r = self.apply_tx(tx);
        self.state.revert_to(mark);
        self.cx.events.truncate(events);
        self.cx.ts = saved_ts;
        r
    }

    pub(crate) fn emit(&mut self, e: Event) {
        self.cx.events.push((self.cx.tx_index, e));
    }

    fn fee_payer(&self, tx: &Tx) -> Result<Address> {
        if let TxBody::LeaseReport { lease, .. } = &tx.body {
            let l = self
                .state
                .leases
                .get(lease)
                .ok_or(TxError::UnknownLease(*lease))?;
            let d = self
                .state
                .devices
                .get(&l.device)
                .ok_or(TxError::UnknownDevice(l.device))?;
            return Ok(d.owner);
        }
        Ok(tx.sender_address())
    }

    fn apply_tx(&mut self, tx: &Tx) -> Result<()> {
        let sender = tx.sender_address();
        let payer = self.fee_payer(tx)?;
        let mut acct = self.state.account(&sender);
        if tx.nonce != acct.nonce {
            return Err(TxError::BadNonce {
                expected: acct.nonce,
                got: tx.nonce,
            });
        }
        if tx.fee < self.params.min_fee {
            return Err(TxError::FeeTooLow {
                min: self.params.min_fee.base(),
                got: tx.fee.base(),
            });
        }
        acct.nonce = acct
            .nonce
            .checked_add(1)
            .ok_or(TxError::Overflow("nonce"))?;
        self.state.set_account(sender, acct);
        self.debit(&payer, tx.fee)?;
        self.burn_supply(tx.fee)?;
        match &tx.body {
            TxBody::Transfer { to, amount } => self.transfer(sender, to, *amount),
            TxBody::BuyCredits { amount } => self.buy_credits(sender, *amount),
            TxBody::SubmitPrice {
                micro_usd_per_token,
            } => self.submit_price(sender, *micro_usd_per_token),
            TxBody::RegisterDevice(r) => self.register_device(sender, r),
            TxBody::UpdateDevice {
                device,
                price_per_hour,
                available,
            } => self.update_device(sender, device, *price_per_hour, *available),
            TxBody::RetireDevice { device } => self.retire_device(sender, device),
            TxBody::Delegate { device, amount } => self.delegate(sender, device, *amount),
            TxBody::Undelegate { device, shares } => self.undelegate(sender, device, *shares),
            TxBody::OpenDeployment(o) => self.open_deployment(sender, o),
            TxBody::ExtendDeployment {
                deployment,
                extra_secs,
            } => self.extend_deployment(sender, *deployment, *extra_secs),
            TxBody::CloseDeployment { deployment } => self.close_deployment(sender, *deployment),
            TxBody::LeaseReport { lease, kind, usage } => {
                self.lease_report(sender, *lease, kind, usage)
            }
            TxBody::PostResults(p) => self.post_results(sender, p),
            TxBody::RegisterChecker { endpoint, stake } => {
                self.register_checker(sender, endpoint, *stake)
            }
            TxBody::RetireChecker => self.retire_checker(sender),
            TxBody::DisputeResult {
                checker,
                device,
                round,
            } => self.dispute_result(sender, *checker, *device, *round),
            TxBody::BackResult {
                device,
                round,
                receipt,
            } => self.back_result(sender, *device, *round, receipt),
            TxBody::SubmitFraudProof(p) => self.fraud_proof(sender, p),
            TxBody::SettleRewards { devices } => self.settle_rewards(devices),
        }
    }
}

fn invariant(e: TxError) -> BlockError {
    BlockError::Invariant(e)
}
