//! Applying blocks and transactions.

use crate::events::{BlockOutcome, Event, TxResult};
use crate::state::is_marketable;
use crate::tokenomics::{ceil_mul_div, floor_mul_div};
use crate::{BlockError, Ledger, Result, TxError};
use cairn_primitives::wire::Encode;
use cairn_primitives::{
    Address, Amount, Block, ClassId, ClassKind, Credits, Delegation, Deployment, DeploymentStatus,
    Device, DeviceStatus, Hash, Lease, LeaseReportKind, LeaseState, MAX_BLOCK_TXS, OpenDeployment,
    OraclePrice, PaymentModel, RegisterDevice, SignedTx, StakePool, Tx, TxBody, Unbonding, Usage,
    device_pop_message, namespace, sha256, verify_batch, verify_signature,
};
use rayon::prelude::*;

/// Most candidate devices one deployment may scan before matching gives up.
pub const MAX_MATCH_SCAN: usize = 100_000;
/// Most replicas in one deployment.
pub const MAX_REPLICAS: u16 = 64;
/// Longest deployment.
pub const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;
const HOUR_MS: u64 = 3_600_000;
/// One credit is $0.00001: ten micro-dollars.
const MICRO_USD_PER_CREDIT: u128 = 10;
/// Signatures verified per batch (each batch runs on one core).
const SIG_BATCH: usize = 512;
/// Reputation a new device starts with (ppm).
pub(crate) const INITIAL_REPUTATION_PPM: u32 = 500_000;

/// Per-block context: the block's time and hash, and the events so far.
#[derive(Default)]
pub(crate) struct BlockCx {
    pub(crate) ts: u64,
    pub(crate) height: u64,
    pub(crate) block_hash: Hash,
    pub(crate) tx_index: Option<u32>,
    pub(crate) events: Vec<(Option<u32>, Event)>,
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
        if h.height != g.height + 1 {
            return Err(BlockError::WrongHeight {
                expected: g.height + 1,
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
        let mut results = Vec::with_capacity(block.txs.len());
        for (i, tx) in block.txs.iter().enumerate() {
            // Bounded by MAX_BLOCK_TXS, checked before. Nothing after the epoch close may fail:
            // its writes are not journaled (see `State::touch`).
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.cx.tx_index = Some(index);
            let hash = tx.hash();
            let error = if !sig_ok.get(i).copied().unwrap_or(false) {
                Some(TxError::BadSignature)
            } else {
                let mark = self.state.mark();
                let events = self.cx.events.len();
                match self.apply_tx(&tx.tx) {
                    Ok(()) => None,
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
            TxBody::Transfer { to, amount } => {
                if *amount == Amount::ZERO {
                    return Err(TxError::ZeroAmount);
                }
                self.debit(&sender, *amount)?;
                self.credit(to, *amount)?;
                self.emit(Event::Transfer {
                    from: sender,
                    to: *to,
                    amount: *amount,
                });
                Ok(())
            }
            TxBody::BuyCredits { amount } => self.buy_credits(sender, *amount),
            TxBody::SubmitPrice {
                micro_usd_per_token,
            } => {
                if !self.params.oracle_keys.contains(&sender) {
                    return Err(TxError::NotOracle(sender));
                }
                if *micro_usd_per_token == 0 {
                    return Err(TxError::ZeroPrice);
                }
                self.state.set_oracle(
                    sender,
                    OraclePrice {
                        micro_usd_per_token: *micro_usd_per_token,
                        at_ms: self.cx.ts,
                    },
                );
                self.emit(Event::PriceSubmitted {
                    oracle: sender,
                    micro_usd_per_token: *micro_usd_per_token,
                });
                Ok(())
            }
            TxBody::RegisterDevice(r) => self.register_device(sender, r),
            TxBody::UpdateDevice {
                device,
                price_per_hour,
                available,
            } => {
                let mut d = self.owned_device(&sender, device)?;
                if d.status != DeviceStatus::Active {
                    return Err(TxError::DeviceNotActive(*device));
                }
                if price_per_hour.is_none() && available.is_none() {
                    return Err(TxError::NothingToUpdate);
                }
                if let Some(p) = price_per_hour {
                    if *p == 0 {
                        return Err(TxError::ZeroPrice);
                    }
                    d.price_per_hour = *p;
                }
                if let Some(a) = available {
                    d.available = *a;
                }
                self.state.set_device(*device, d);
                self.emit(Event::DeviceUpdated { device: *device });
                Ok(())
            }
            TxBody::RetireDevice { device } => self.retire_device(sender, device),
            TxBody::Delegate { device, amount } => self.delegate(sender, device, *amount),
            TxBody::Undelegate { device, shares } => self.undelegate(sender, device, *shares),
            TxBody::OpenDeployment(o) => self.open_deployment(sender, o),
            TxBody::ExtendDeployment {
                deployment,
                extra_secs,
            } => self.extend_deployment(sender, *deployment, *extra_secs),
            TxBody::CloseDeployment { deployment } => {
                let dep = self
                    .state
                    .deployments
                    .get(deployment)
                    .cloned()
                    .ok_or(TxError::UnknownDeployment(*deployment))?;
                if dep.owner != sender {
                    return Err(TxError::NotDeploymentOwner {
                        deployment: *deployment,
                        sender,
                    });
                }
                if dep.status != DeploymentStatus::Open {
                    return Err(TxError::DeploymentNotOpen(*deployment));
                }
                for id in &dep.leases {
                    if self
                        .state
                        .leases
                        .get(id)
                        .is_some_and(|l| l.state == LeaseState::Active)
                    {
                        self.end_lease(*id, LeaseState::Closed, None)?;
                    }
                }
                let mut dep = self
                    .state
                    .deployments
                    .get(deployment)
                    .cloned()
                    .ok_or(TxError::UnknownDeployment(*deployment))?;
                dep.status = DeploymentStatus::Closed;
                self.state.set_deployment(*deployment, dep);
                self.emit(Event::DeploymentClosed {
                    deployment: *deployment,
                });
                Ok(())
            }
            TxBody::LeaseReport { lease, kind, usage } => {
                self.lease_report(sender, *lease, kind, usage)
            }
            TxBody::Attest { epoch, entries } => self.attest(sender, *epoch, entries),
            TxBody::SubmitFraudProof(p) => self.fraud_proof(sender, p),
            TxBody::SettleRewards { devices } => self.settle_rewards(devices),
        }
    }

    // ----- balances and supply -------------------------------------------------------------

    pub(crate) fn debit(&mut self, who: &Address, amount: Amount) -> Result<()> {
        let mut a = self.state.account(who);
        a.balance = a
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientBalance {
                account: *who,
                need: amount.base(),
                have: a.balance.base(),
            })?;
        self.state.set_account(*who, a);
        Ok(())
    }

    pub(crate) fn credit(&mut self, who: &Address, amount: Amount) -> Result<()> {
        if amount == Amount::ZERO {
            return Ok(());
        }
        let mut a = self.state.account(who);
        a.balance = a
            .balance
            .checked_add(amount)
            .ok_or(TxError::Overflow("balance"))?;
        self.state.set_account(*who, a);
        Ok(())
    }

    /// Removes `amount` from the supply (the caller already took it from a holding).
    pub(crate) fn burn_supply(&mut self, amount: Amount) -> Result<()> {
        if amount == Amount::ZERO {
            return Ok(());
        }
        let mut g = self.state.globals.clone();
        g.supply = g
            .supply
            .checked_sub(amount)
            .ok_or(TxError::Overflow("supply"))?;
        g.burned = g
            .burned
            .checked_add(amount)
            .ok_or(TxError::Overflow("burned"))?;
        g.epoch_burned = g
            .epoch_burned
            .checked_add(amount)
            .ok_or(TxError::Overflow("epoch burned"))?;
        self.state.set_globals(g);
        Ok(())
    }

    /// The median of fresh oracle prices (the lower middle for an even count: the protocol's
    /// side, since fewer credits per token are minted).
    pub fn oracle_price(&self, now_ms: u64) -> Option<u64> {
        let max_age = self.params.oracle_max_age_ms;
        let mut fresh: Vec<u64> = self
            .state
            .oracles
            .iter()
            .filter(|(k, p)| {
                self.params.oracle_keys.contains(k) && p.at_ms.saturating_add(max_age) >= now_ms
            })
            .map(|(_, p)| p.micro_usd_per_token)
            .collect();
        if fresh.is_empty() {
            return None;
        }
        fresh.sort_unstable();
        fresh.get((fresh.len() - 1) / 2).copied()
    }

    fn buy_credits(&mut self, sender: Address, amount: Amount) -> Result<()> {
        if amount == Amount::ZERO {
            return Err(TxError::ZeroAmount);
        }
        let price = self.oracle_price(self.cx.ts).ok_or(TxError::StalePrice {
            max_age_secs: self.params.oracle_max_age_ms / 1000,
        })?;
        // credits = tokens · (µUSD/token) / (µUSD/credit), tokens = base / 10^decimals.
        let scale = 10u128.pow(u32::from(self.params.decimals));
        let credits = u128::from(amount.base())
            .checked_mul(u128::from(price))
            .ok_or(TxError::Overflow("credits"))?
            / scale
            / MICRO_USD_PER_CREDIT;
        let credits = u64::try_from(credits).map_err(|_| TxError::Overflow("credits"))?;
        if credits == 0 {
            return Err(TxError::AmountTooSmall);
        }
        self.debit(&sender, amount)?;
        self.burn_supply(amount)?;
        let mut a = self.state.account(&sender);
        a.credits = a
            .credits
            .checked_add(Credits(credits))
            .ok_or(TxError::Overflow("credits"))?;
        self.state.set_account(sender, a);
        let mut g = self.state.globals.clone();
        g.credits_outstanding = g
            .credits_outstanding
            .checked_add(credits)
            .ok_or(TxError::Overflow("credits"))?;
        self.state.set_globals(g);
        self.emit(Event::Burn {
            from: sender,
            amount,
            reason: "buy_credits",
        });
        self.emit(Event::CreditsBought {
            account: sender,
            tokens: amount,
            credits,
        });
        Ok(())
    }

    // ----- devices and stake ---------------------------------------------------------------

    /// The sender's device, settled (see [`Ledger::settled_device`]).
    fn owned_device(&mut self, sender: &Address, device: &Address) -> Result<Device> {
        let owner = self
            .state
            .devices
            .get(device)
            .map(|d| d.owner)
            .ok_or(TxError::UnknownDevice(*device))?;
        if owner != *sender {
            return Err(TxError::NotDeviceOwner {
                device: *device,
                sender: *sender,
            });
        }
        self.settled_device(device)
    }

    /// The stake a device of `class` with `spec` must bond.
    pub fn required_stake(&self, class: ClassId, units: u64) -> Option<Amount> {
        let c = self.params.classes.get(usize::from(class))?;
        let per_unit = self
            .params
            .min_stake
            .mul_div_floor(u64::from(c.stake_multiplier_pct), 100)?;
        Amount::from_base(per_unit.base().checked_mul(units)?).into()
    }

    fn register_device(&mut self, sender: Address, r: &RegisterDevice) -> Result<()> {
        let device = Address::of(&r.device_key);
        if self.state.devices.contains_key(&device) {
            return Err(TxError::DeviceExists(device));
        }
        let (class_id, class) = self
            .params
            .class_by_name(r.class.as_str())
            .ok_or_else(|| TxError::UnknownClass(r.class.to_string()))?;
        let class = class.clone();
        let mismatch = |why: &str| TxError::SpecMismatch {
            class: class.name.clone(),
            why: why.to_string(),
        };
        let units = match class.kind {
            ClassKind::Gpu => {
                if r.spec.gpu_count == 0 || r.spec.gpu_count > 16 {
                    return Err(mismatch("a GPU device has 1-16 GPUs"));
                }
                if r.spec.vram_mib > class.vram_mib || r.spec.vram_mib < class.vram_mib / 10 * 9 {
                    return Err(mismatch(
                        "memory per GPU must be within 90-100% of the class's",
                    ));
                }
                u64::from(r.spec.gpu_count)
            }
            ClassKind::Cpu => {
                if r.spec.gpu_count != 0 {
                    return Err(mismatch("a CPU device has no GPUs"));
                }
                if r.spec.cpu_cores == 0 || r.spec.cpu_cores > 4096 {
                    return Err(mismatch("a CPU device has 1-4096 cores"));
                }
                u64::from(r.spec.cpu_cores)
            }
        };
        let region = r.region.as_str();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TxError::BadRegion);
        }
        if r.price_per_hour == 0 {
            return Err(TxError::ZeroPrice);
        }
        if !verify_signature(
            &r.device_key,
            &namespace("device-pop", &self.params.chain_id),
            &device_pop_message(&sender),
            &r.pop,
        ) {
            return Err(TxError::BadProofOfPossession);
        }
        let stake = self
            .required_stake(class_id, units)
            .ok_or(TxError::Overflow("stake"))?;
        self.debit(&sender, stake)?;
        self.add_staked(stake)?;
        self.state.set_delegation(
            device,
            sender,
            Delegation {
                shares: stake.base(),
            },
        );
        self.state.set_device(
            device,
            Device {
                owner: sender,
                class: class_id,
                spec: r.spec.clone(),
                region: r.region.clone(),
                price_per_hour: r.price_per_hour,
                status: DeviceStatus::Active,
                available: true,
                reputation_ppm: INITIAL_REPUTATION_PPM,
                pool: StakePool {
                    tokens: stake,
                    shares: stake.base(),
                },
                required_stake: stake,
                lease: None,
                registered_ms: self.cx.ts,
                tally_epoch: self.state.globals.epoch,
                attest_pass: 0,
                attest_fail: 0,
                uptime_ppm_sum: 0,
                work: 0,
                voters: Vec::new(),
            },
        );
        self.emit(Event::DeviceRegistered {
            device,
            owner: sender,
            class: class.name,
            stake,
        });
        Ok(())
    }

    pub(crate) fn add_staked(&mut self, amount: Amount) -> Result<()> {
        let mut g = self.state.globals.clone();
        g.staked = g
            .staked
            .checked_add(amount)
            .ok_or(TxError::Overflow("staked"))?;
        self.state.set_globals(g);
        Ok(())
    }

    fn sub_staked(&mut self, amount: Amount) -> Result<()> {
        let mut g = self.state.globals.clone();
        g.staked = g
            .staked
            .checked_sub(amount)
            .ok_or(TxError::Overflow("staked"))?;
        self.state.set_globals(g);
        Ok(())
    }

    /// Redeems `shares` of `staker` in `device`'s pool into an unbonding entry.
    fn redeem(&mut self, device: &Address, staker: Address, shares: u64) -> Result<Amount> {
        let mut d = self.settled_device(device)?;
        let held = self
            .state
            .delegations
            .get(&(*device, staker))
            .map_or(0, |x| x.shares);
        if held == 0 {
            return Err(TxError::NoDelegation(staker));
        }
        if shares == 0 || shares > held {
            return Err(TxError::NotEnoughShares {
                asked: shares,
                held,
            });
        }
        let tokens = floor_mul_div(d.pool.tokens.base(), shares, d.pool.shares)
            .ok_or(TxError::Overflow("redeem"))?;
        let tokens = Amount::from_base(tokens);
        d.pool.tokens = d
            .pool
            .tokens
            .checked_sub(tokens)
            .ok_or(TxError::Overflow("pool"))?;
        d.pool.shares = d
            .pool
            .shares
            .checked_sub(shares)
            .ok_or(TxError::Overflow("shares"))?;
        self.sub_staked(tokens)?;
        // The last shares out take the dust that flooring left: no token is stranded.
        let mut out = tokens;
        if d.pool.shares == 0 && d.pool.tokens > Amount::ZERO {
            let dust = d.pool.tokens;
            d.pool.tokens = Amount::ZERO;
            self.sub_staked(dust)?;
            out = out.checked_add(dust).ok_or(TxError::Overflow("redeem"))?;
        }
        self.state.set_device(*device, d);
        self.state.set_delegation(
            *device,
            staker,
            Delegation {
                shares: held - shares,
            },
        );
        if out > Amount::ZERO {
            self.start_unbonding(staker, out)?;
        }
        Ok(out)
    }

    fn start_unbonding(&mut self, owner: Address, amount: Amount) -> Result<()> {
        let mut g = self.state.globals.clone();
        let id = g.next_unbonding;
        g.next_unbonding = id.checked_add(1).ok_or(TxError::Overflow("unbonding id"))?;
        g.unbonding = g
            .unbonding
            .checked_add(amount)
            .ok_or(TxError::Overflow("unbonding"))?;
        self.state.set_globals(g);
        let release_ms = self
            .cx
            .ts
            .checked_add(self.params.unbonding_ms)
            .ok_or(TxError::Overflow("release time"))?;
        self.state.set_unbonding(
            id,
            Some(Unbonding {
                owner,
                amount,
                release_ms,
            }),
        );
        Ok(())
    }

    fn release_unbonding(&mut self, ts: u64) -> Result<()> {
        let due: Vec<u64> = self
            .state
            .unbond_queue
            .range(..=(ts, u64::MAX))
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            let Some(u) = self.state.unbondings.get(&id).cloned() else {
                continue;
            };
            self.state.set_unbonding(id, None);
            let mut g = self.state.globals.clone();
            g.unbonding = g
                .unbonding
                .checked_sub(u.amount)
                .ok_or(TxError::Overflow("unbonding"))?;
            self.state.set_globals(g);
            self.credit(&u.owner, u.amount)?;
            self.emit(Event::UnbondingReleased {
                owner: u.owner,
                amount: u.amount,
            });
        }
        Ok(())
    }

    fn retire_device(&mut self, sender: Address, device: &Address) -> Result<()> {
        let mut d = self.owned_device(&sender, device)?;
        if d.status != DeviceStatus::Active {
            return Err(TxError::DeviceNotActive(*device));
        }
        if d.lease.is_some() {
            return Err(TxError::DeviceBusy(*device));
        }
        d.status = DeviceStatus::Retired;
        self.state.set_device(*device, d);
        let shares = self
            .state
            .delegations
            .get(&(*device, sender))
            .map_or(0, |x| x.shares);
        let unbonding = if shares > 0 {
            self.redeem(device, sender, shares)?
        } else {
            Amount::ZERO
        };
        self.emit(Event::DeviceRetired {
            device: *device,
            unbonding,
        });
        Ok(())
    }

    fn delegate(&mut self, sender: Address, device: &Address, amount: Amount) -> Result<()> {
        if amount == Amount::ZERO {
            return Err(TxError::ZeroAmount);
        }
        let mut d = self.settled_device(device)?;
        if d.status != DeviceStatus::Active {
            return Err(TxError::DeviceNotActive(*device));
        }
        let shares = if d.pool.shares == 0 {
            amount.base()
        } else if d.pool.tokens == Amount::ZERO {
            return Err(TxError::PoolEmpty(*device));
        } else {
            floor_mul_div(amount.base(), d.pool.shares, d.pool.tokens.base())
                .ok_or(TxError::Overflow("shares"))?
        };
        if shares == 0 {
            return Err(TxError::AmountTooSmall);
        }
        self.debit(&sender, amount)?;
        self.add_staked(amount)?;
        d.pool.tokens = d
            .pool
            .tokens
            .checked_add(amount)
            .ok_or(TxError::Overflow("pool"))?;
        d.pool.shares = d
            .pool
            .shares
            .checked_add(shares)
            .ok_or(TxError::Overflow("shares"))?;
        self.state.set_device(*device, d);
        let held = self.delegation(device, &sender);
        self.state.set_delegation(
            *device,
            sender,
            Delegation {
                shares: held
                    .checked_add(shares)
                    .ok_or(TxError::Overflow("shares"))?,
            },
        );
        self.emit(Event::Delegated {
            device: *device,
            staker: sender,
            amount,
            shares,
        });
        Ok(())
    }

    fn undelegate(&mut self, sender: Address, device: &Address, shares: u64) -> Result<()> {
        let d = self.settled_device(device)?;
        if sender == d.owner && d.status == DeviceStatus::Active {
            let held = self.delegation(device, &sender);
            let left = held.saturating_sub(shares);
            let left_tokens = floor_mul_div(d.pool.tokens.base(), left, d.pool.shares.max(1))
                .ok_or(TxError::Overflow("stake"))?;
            if left_tokens < d.required_stake.base() {
                return Err(TxError::StakeBelowMinimum);
            }
        }
        let amount = self.redeem(device, sender, shares)?;
        self.emit(Event::Undelegated {
            device: *device,
            staker: sender,
            amount,
            shares,
        });
        Ok(())
    }

    // ----- deployments and leases ----------------------------------------------------------

    fn open_deployment(&mut self, sender: Address, o: &OpenDeployment) -> Result<()> {
        if o.job.image.is_none() && o.job.command.is_empty() {
            return Err(TxError::EmptyJob);
        }
        let seed = {
            let idx = self.cx.tx_index.unwrap_or(u32::MAX).to_be_bytes();
            Address(sha256(&[b"cairn/match", &self.cx.block_hash.0, &idx]).0)
        };
        let deposits = self.quote(o, seed)?;
        let total = deposits
            .iter()
            .try_fold(0u64, |t, (_, _, d)| t.checked_add(*d))
            .ok_or(TxError::Overflow("deposit"))?;
        self.take_payment(&sender, total)?;
        let mut g = self.state.globals.clone();
        let dep_id = g.next_deployment;
        g.next_deployment = dep_id
            .checked_add(1)
            .ok_or(TxError::Overflow("deployment id"))?;
        g.escrow = g
            .escrow
            .checked_add(total)
            .ok_or(TxError::Overflow("escrow"))?;
        let first_lease = g.next_lease;
        g.next_lease = g
            .next_lease
            .checked_add(u64::from(o.replicas))
            .ok_or(TxError::Overflow("lease id"))?;
        self.state.set_globals(g);
        let end_ms = self
            .cx
            .ts
            .checked_add(o.duration_secs.saturating_mul(1000))
            .ok_or(TxError::Overflow("end time"))?;
        let mut leases = Vec::with_capacity(deposits.len());
        for (i, (device, price, deposit)) in deposits.into_iter().enumerate() {
            let id = first_lease + i as u64;
            let mut d = self.settled_device(&device)?;
            d.lease = Some(id);
            self.state.set_device(device, d);
            self.state.set_lease(
                id,
                Lease {
                    deployment: dep_id,
                    device,
                    price_per_hour: price,
                    start_ms: self.cx.ts,
                    end_ms,
                    settled_ms: self.cx.ts,
                    paid: 0,
                    deposit,
                    state: LeaseState::Active,
                    started: false,
                    exit_code: None,
                    usage: Usage::default(),
                    last_seen_ms: self.cx.ts,
                    reason: None,
                },
            );
            leases.push((id, device));
        }
        self.state.set_deployment(
            dep_id,
            Deployment {
                owner: sender,
                request: o.clone(),
                created_ms: self.cx.ts,
                status: DeploymentStatus::Open,
                leases: leases.iter().map(|(l, _)| *l).collect(),
                deposit: total,
                paid: 0,
                refunded: 0,
            },
        );
        self.emit(Event::DeploymentOpened {
            deployment: dep_id,
            owner: sender,
            deposit: total,
            leases,
        });
        Ok(())
    }

    fn extend_deployment(&mut self, sender: Address, id: u64, extra_secs: u64) -> Result<()> {
        let mut dep = self
            .state
            .deployments
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownDeployment(id))?;
        if dep.owner != sender {
            return Err(TxError::NotDeploymentOwner {
                deployment: id,
                sender,
            });
        }
        if dep.status != DeploymentStatus::Open {
            return Err(TxError::DeploymentNotOpen(id));
        }
        let total_secs = dep.request.duration_secs.checked_add(extra_secs);
        if extra_secs == 0 || total_secs.is_none_or(|t| t > MAX_DURATION_SECS) {
            return Err(TxError::BadDuration {
                max_secs: MAX_DURATION_SECS,
            });
        }
        let extra_ms = extra_secs.saturating_mul(1000);
        let mut extended = Vec::new();
        let mut total: u64 = 0;
        for lid in &dep.leases {
            let Some(l) = self.state.leases.get(lid) else {
                continue;
            };
            if l.state != LeaseState::Active {
                continue;
            }
            let add = ceil_mul_div(l.price_per_hour, extra_secs, 3600)
                .ok_or(TxError::Overflow("deposit"))?;
            let mut l = l.clone();
            l.end_ms = l
                .end_ms
                .checked_add(extra_ms)
                .ok_or(TxError::Overflow("end time"))?;
            l.deposit = l
                .deposit
                .checked_add(add)
                .ok_or(TxError::Overflow("deposit"))?;
            total = total.checked_add(add).ok_or(TxError::Overflow("deposit"))?;
            extended.push((*lid, l));
        }
        // Checked before anything is written: a failed payment leaves the state untouched.
        self.take_payment(&sender, total)?;
        let mut g = self.state.globals.clone();
        g.escrow = g
            .escrow
            .checked_add(total)
            .ok_or(TxError::Overflow("escrow"))?;
        self.state.set_globals(g);
        let end_ms = extended.iter().map(|(_, l)| l.end_ms).max().unwrap_or(0);
        for (lid, l) in extended {
            self.state.set_lease(lid, l);
        }
        dep.request.duration_secs = total_secs.unwrap_or(dep.request.duration_secs);
        dep.deposit = dep
            .deposit
            .checked_add(total)
            .ok_or(TxError::Overflow("deposit"))?;
        self.state.set_deployment(id, dep);
        self.emit(Event::DeploymentExtended {
            deployment: id,
            extra_deposit: total,
            end_ms,
        });
        Ok(())
    }

    /// What `o` would book now (its job aside): each device with its price per hour and the
    /// deposit its lease holds, or the error opening it would get. `OpenDeployment` and the
    /// API's quote both go through here.
    pub fn quote(&self, o: &OpenDeployment, seed: Address) -> Result<Vec<(Address, u64, u64)>> {
        if o.replicas == 0 || o.replicas > MAX_REPLICAS {
            return Err(TxError::BadReplicas { max: MAX_REPLICAS });
        }
        if o.duration_secs == 0 || o.duration_secs > MAX_DURATION_SECS {
            return Err(TxError::BadDuration {
                max_secs: MAX_DURATION_SECS,
            });
        }
        if o.max_price_per_hour == 0 {
            return Err(TxError::ZeroPrice);
        }
        let picked = self.match_deployment(o, seed)?;
        // Deposits: each lease holds its full price for the full duration, rounded up.
        picked
            .into_iter()
            .map(|a| {
                let price = self.state.devices.get(&a).map_or(0, |d| d.price_per_hour);
                let dep = ceil_mul_div(price, o.duration_secs, 3600)
                    .ok_or(TxError::Overflow("deposit"))?;
                Ok((a, price, dep))
            })
            .collect()
    }

    /// The devices a deployment would get: all replicas or an error, in order of price, then
    /// reputation, ties broken by `seed` (in a block: derived from the block hash).
    pub fn match_deployment(&self, o: &OpenDeployment, seed: Address) -> Result<Vec<Address>> {
        let classes = self.candidate_classes(o)?;
        let r = &o.resources;
        let devices = &self.state.devices;
        let (picked, scanned) = self.state.market.pick(
            &classes,
            o.region.as_ref(),
            o.max_price_per_hour,
            usize::from(o.replicas),
            seed,
            MAX_MATCH_SCAN,
            |a| {
                devices.get(a).is_some_and(|d| {
                    d.spec.gpu_count >= r.gpu_count
                        && d.spec.vram_mib >= r.min_vram_mib
                        && d.spec.cpu_cores >= r.cpu_cores
                        && d.spec.ram_mib >= r.ram_mib
                })
            },
        );
        if picked.len() < usize::from(o.replicas) {
            if scanned >= MAX_MATCH_SCAN {
                return Err(TxError::MatchScanLimit(scanned));
            }
            return Err(TxError::NotEnoughCapacity {
                wanted: o.replicas,
                found: u16::try_from(picked.len()).unwrap_or(u16::MAX),
                max_price: o.max_price_per_hour,
            });
        }
        Ok(picked)
    }

    fn candidate_classes(&self, o: &OpenDeployment) -> Result<Vec<ClassId>> {
        let r = &o.resources;
        if !r.classes.is_empty() {
            return r
                .classes
                .iter()
                .map(|n| {
                    self.params
                        .class_by_name(n.as_str())
                        .map(|(id, _)| id)
                        .ok_or_else(|| TxError::UnknownClass(n.to_string()))
                })
                .collect();
        }
        Ok(self
            .params
            .classes
            .iter()
            .enumerate()
            .filter(|(_, c)| match c.kind {
                ClassKind::Gpu => c.vram_mib >= r.min_vram_mib,
                ClassKind::Cpu => r.gpu_count == 0 && r.min_vram_mib == 0,
            })
            .filter_map(|(i, _)| ClassId::try_from(i).ok())
            .collect())
    }

    /// Takes a deposit in the payment model's unit: credits under `bme`, tokens under `direct`.
    fn take_payment(&mut self, who: &Address, units: u64) -> Result<()> {
        match self.params.payment_model {
            PaymentModel::Direct => self.debit(who, Amount::from_base(units)),
            PaymentModel::Bme => {
                let mut a = self.state.account(who);
                a.credits =
                    a.credits
                        .checked_sub(Credits(units))
                        .ok_or(TxError::InsufficientCredits {
                            account: *who,
                            need: units,
                            have: a.credits.0,
                        })?;
                self.state.set_account(*who, a);
                let mut g = self.state.globals.clone();
                g.credits_outstanding = g
                    .credits_outstanding
                    .checked_sub(units)
                    .ok_or(TxError::Overflow("credits"))?;
                self.state.set_globals(g);
                Ok(())
            }
        }
    }

    /// Gives back escrowed units to the customer.
    fn refund(&mut self, who: &Address, units: u64) -> Result<()> {
        if units == 0 {
            return Ok(());
        }
        let mut g = self.state.globals.clone();
        g.escrow = g
            .escrow
            .checked_sub(units)
            .ok_or(TxError::Overflow("escrow"))?;
        if self.params.payment_model == PaymentModel::Bme {
            g.credits_outstanding = g
                .credits_outstanding
                .checked_add(units)
                .ok_or(TxError::Overflow("credits"))?;
        }
        self.state.set_globals(g);
        match self.params.payment_model {
            PaymentModel::Direct => self.credit(who, Amount::from_base(units)),
            PaymentModel::Bme => {
                let mut a = self.state.account(who);
                a.credits = a
                    .credits
                    .checked_add(Credits(units))
                    .ok_or(TxError::Overflow("credits"))?;
                self.state.set_account(*who, a);
                Ok(())
            }
        }
    }

    /// Pays a lease for the time served up to `until` (capped at its end): credits consumed
    /// under `bme`, tokens to the provider less the burned protocol fee under `direct`. The
    /// amount due is computed from the start each time, so rounding never drifts, and never
    /// exceeds the deposit, so nothing is paid twice.
    pub(crate) fn settle_lease(&mut self, id: u64, until: u64) -> Result<()> {
        let mut l = self
            .state
            .leases
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownLease(id))?;
        let until = until.min(l.end_ms).max(l.settled_ms);
        let served = until.saturating_sub(l.start_ms);
        let due = floor_mul_div(l.price_per_hour, served, HOUR_MS)
            .ok_or(TxError::Overflow("lease pay"))?
            .min(l.deposit);
        let delta = due.saturating_sub(l.paid);
        l.settled_ms = until;
        l.paid = l
            .paid
            .checked_add(delta)
            .ok_or(TxError::Overflow("lease pay"))?;
        let device = l.device;
        let deployment = l.deployment;
        self.state.set_lease(id, l);
        if delta == 0 {
            return Ok(());
        }
        let mut g = self.state.globals.clone();
        g.escrow = g
            .escrow
            .checked_sub(delta)
            .ok_or(TxError::Overflow("escrow"))?;
        self.state.set_globals(g);
        let mut d = self.settled_device(&device)?;
        d.work = d.work.checked_add(delta).ok_or(TxError::Overflow("work"))?;
        let owner = d.owner;
        self.state.set_device(device, d);
        if let Some(mut dep) = self.state.deployments.get(&deployment).cloned() {
            dep.paid = dep
                .paid
                .checked_add(delta)
                .ok_or(TxError::Overflow("paid"))?;
            self.state.set_deployment(deployment, dep);
        }
        if self.params.payment_model == PaymentModel::Direct {
            let fee = ceil_mul_div(delta, u64::from(self.params.protocol_fee_bps), 10_000)
                .ok_or(TxError::Overflow("protocol fee"))?
                .min(delta);
            self.credit(&owner, Amount::from_base(delta - fee))?;
            self.burn_supply(Amount::from_base(fee))?;
        }
        Ok(())
    }

    /// Ends an active lease: pays for time served, refunds the rest, frees the device.
    pub(crate) fn end_lease(
        &mut self,
        id: u64,
        state: LeaseState,
        exit_code: Option<i32>,
    ) -> Result<()> {
        self.end_lease_served(id, state, exit_code, self.cx.ts)
    }

    /// Ends an active lease served up to `served_until` (now, or a silent device's last
    /// report): pays for that, refunds the rest, frees the device.
    fn end_lease_served(
        &mut self,
        id: u64,
        state: LeaseState,
        exit_code: Option<i32>,
        served_until: u64,
    ) -> Result<()> {
        self.settle_lease(id, served_until)?;
        let mut l = self
            .state
            .leases
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownLease(id))?;
        if l.state != LeaseState::Active {
            return Err(TxError::LeaseNotActive(id));
        }
        let refund = l.deposit.saturating_sub(l.paid);
        l.state = state;
        l.exit_code = exit_code;
        l.deposit = l.paid;
        let (device, deployment, paid) = (l.device, l.deployment, l.paid);
        self.state.set_lease(id, l);
        let mut dep = self
            .state
            .deployments
            .get(&deployment)
            .cloned()
            .ok_or(TxError::UnknownDeployment(deployment))?;
        self.refund(&dep.owner, refund)?;
        dep.refunded = dep
            .refunded
            .checked_add(refund)
            .ok_or(TxError::Overflow("refund"))?;
        let all_done = dep.leases.iter().all(|x| {
            self.state
                .leases
                .get(x)
                .is_none_or(|l| l.state != LeaseState::Active)
        });
        if all_done && dep.status == DeploymentStatus::Open {
            dep.status = DeploymentStatus::Finished;
        }
        self.state.set_deployment(deployment, dep);
        if self.state.devices.contains_key(&device) {
            let mut d = self.settled_device(&device)?;
            if d.lease == Some(id) {
                d.lease = None;
            }
            self.state.set_device(device, d);
        }
        self.emit(Event::LeaseEnded {
            lease: id,
            deployment,
            device,
            state,
            paid,
            refunded: refund,
        });
        Ok(())
    }

    fn expire_leases(&mut self, ts: u64) -> Result<()> {
        let due: Vec<u64> = self
            .state
            .lease_ends
            .range(..=(ts, u64::MAX))
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            self.end_lease(id, LeaseState::Expired, None)?;
        }
        Ok(())
    }

    /// Ends the leases whose device has not reported for the genesis lease timeout, paid up
    /// to its last report (a dead worker is paid for what it served, not for the silence).
    fn time_out_leases(&mut self, ts: u64) -> Result<()> {
        let Some(cutoff) = ts.checked_sub(self.params.lease_timeout_ms) else {
            return Ok(());
        };
        let due: Vec<(u64, u64)> = self
            .state
            .lease_seen
            .range(..(cutoff, 0))
            .copied()
            .collect();
        for (seen, id) in due {
            self.end_lease_served(id, LeaseState::TimedOut, None, seen)?;
        }
        Ok(())
    }

    fn lease_report(
        &mut self,
        sender: Address,
        lease: u64,
        kind: &LeaseReportKind,
        usage: &Usage,
    ) -> Result<()> {
        let mut l = self
            .state
            .leases
            .get(&lease)
            .cloned()
            .ok_or(TxError::UnknownLease(lease))?;
        if l.device != sender {
            return Err(TxError::NotLeaseDevice {
                lease,
                device: l.device,
            });
        }
        if l.state != LeaseState::Active {
            return Err(TxError::LeaseNotActive(lease));
        }
        l.usage = usage.clone();
        l.last_seen_ms = self.cx.ts;
        let deployment = l.deployment;
        let name = match kind {
            LeaseReportKind::Started => {
                l.started = true;
                "started"
            }
            LeaseReportKind::Running => "running",
            LeaseReportKind::Finished { .. } => "finished",
            LeaseReportKind::Failed { reason } => {
                l.reason = Some(reason.clone());
                "failed"
            }
        };
        let (started, start_ms) = (l.started, l.start_ms);
        self.state.set_lease(lease, l);
        self.emit(Event::LeaseReported {
            lease,
            deployment,
            device: sender,
            kind: name,
        });
        match kind {
            LeaseReportKind::Finished { exit_code } => {
                self.end_lease(lease, LeaseState::Finished, Some(*exit_code))
            }
            LeaseReportKind::Failed { .. } if started => {
                self.end_lease(lease, LeaseState::Failed, None)
            }
            // The job never started (the device could not set it up): the provider's
            // failure, so the customer pays for none of the time it took to say so.
            LeaseReportKind::Failed { .. } => {
                self.end_lease_served(lease, LeaseState::Failed, None, start_ms)
            }
            _ => Ok(()),
        }
    }

    // ----- checkers ------------------------------------------------------------------------

    fn attest(
        &mut self,
        sender: Address,
        epoch: u64,
        entries: &[cairn_primitives::AttestEntry],
    ) -> Result<()> {
        if !self.params.checkers.contains(&sender) {
            return Err(TxError::NotChecker(sender));
        }
        let current = self.state.globals.epoch;
        if epoch != current {
            return Err(TxError::WrongEpoch {
                expected: current,
                got: epoch,
            });
        }
        if entries.is_empty() {
            return Err(TxError::EmptyAttestation);
        }
        for e in entries {
            if e.uptime_ppm > 1_000_000 {
                return Err(TxError::BadUptime(e.uptime_ppm));
            }
            let mut d = self.settled_device(&e.device)?;
            if d.voters.contains(&sender) {
                return Err(TxError::DuplicateAttestation(e.device));
            }
            d.voters.push(sender);
            if e.passed {
                d.attest_pass = d.attest_pass.saturating_add(1);
            } else {
                d.attest_fail = d.attest_fail.saturating_add(1);
            }
            d.uptime_ppm_sum = d.uptime_ppm_sum.saturating_add(u64::from(e.uptime_ppm));
            self.state.set_device(e.device, d);
        }
        let mut t = self
            .state
            .checkers
            .get(&sender)
            .cloned()
            .unwrap_or_default();
        if t.epoch != current {
            t = cairn_primitives::CheckerTally {
                epoch: current,
                results: 0,
            };
        }
        t.results = t.results.saturating_add(entries.len() as u64);
        self.state.set_checker(sender, t);
        self.emit(Event::Attested {
            checker: sender,
            epoch,
            results: entries.len() as u64,
        });
        Ok(())
    }

    fn fraud_proof(&mut self, sender: Address, p: &cairn_primitives::FraudProof) -> Result<()> {
        let mut d = self.settled_device(&p.device)?;
        if d.status == DeviceStatus::Slashed {
            return Err(TxError::DeviceNotActive(p.device));
        }
        let key = p
            .device
            .public_key()
            .ok_or_else(|| TxError::BadFraudProof("device key is not a curve point".into()))?;
        cairn_popw::verify_fraud_proof(&self.params.chain_id, &key, p)
            .map_err(|e| TxError::BadFraudProof(e.to_string()))?;
        // Slash: burn a share of the whole pool (owner and delegators alike); the reporter gets
        // nothing from the burn, so a provider cannot profit from reporting itself.
        let slash = d
            .pool
            .tokens
            .mul_div_floor(u64::from(self.params.slash_bps), 10_000)
            .ok_or(TxError::Overflow("slash"))?;
        d.pool.tokens = d
            .pool
            .tokens
            .checked_sub(slash)
            .ok_or(TxError::Overflow("slash"))?;
        d.status = DeviceStatus::Slashed;
        d.reputation_ppm = 0;
        self.state.set_device(p.device, d);
        self.sub_staked(slash)?;
        self.burn_supply(slash)?;
        self.emit(Event::Slashed {
            device: p.device,
            amount: slash,
            reporter: sender,
        });
        Ok(())
    }

    /// Whether a device can currently be matched.
    pub fn is_marketable(&self, device: &Address) -> bool {
        self.state.devices.get(device).is_some_and(is_marketable)
    }
}

fn invariant(e: TxError) -> BlockError {
    BlockError::Invariant(e.to_string())
}
