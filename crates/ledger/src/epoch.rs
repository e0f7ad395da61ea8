//! Closing an epoch, and settling what it owes each device.
//!
//! The close mints the schedule's emission and splits it into pools. It pays the checkers
//! and the treasury (a few accounts) at once, and records for each device pool the total
//! weight of the tallies it is shared by: [`State::weights`](crate::state::State) keeps those
//! totals true on every device write, so the close reads three sums instead of walking a
//! million devices. It writes no device record.
//!
//! A device's share is paid when its tally is settled: by the device's next transaction
//! (an attestation, a lease report, an update, a stake change, a booking) or by a
//! `SettleRewards` transaction from anyone. Every write to a device settles it first, so its
//! record at settlement is its record at the close, and it is paid exactly what a close that
//! paid everyone at once would have paid; its reputation moves at the same moment.
//!
//! Rounding rule, named once: every share is `floor(pool · weight / total)`
//! ([`crate::tokenomics::floor_share`]), so the shares of a pool never add up to more than the
//! pool. Pools with nobody to pay go to the treasury at the close; the rest is held in the
//! epoch record as `unpaid` (part of the supply) and paid out as devices settle; when the last
//! one settles, what the floors left goes to the treasury. Each epoch's record therefore adds
//! up exactly at every moment: minted = capacity + work + stakers (paid to devices so far) +
//! checkers + treasury + unpaid.

use crate::events::Event;
use crate::state::TallyWeight;
use crate::tokenomics::{emission_between, floor_share};
use crate::{InvariantViolation, Ledger, Result, TxError};
use cairn_primitives::{Address, Amount, Device, EpochRecord};

/// Share of the gap to 100% a passing device gains each epoch, and share of its reputation a
/// failing one loses (both in parts of 1,000,000).
const REPUTATION_GAIN_PPM: u64 = 100_000;
const REPUTATION_LOSS_PPM: u64 = 200_000;

/// Settlements added up, to be written once (see [`Ledger::pay_out`]).
#[derive(Default)]
struct Payouts {
    /// (owner, epoch) → (capacity, work).
    owners: std::collections::BTreeMap<(Address, u64), (Amount, Amount)>,
    /// Added to stake pools.
    staked: Amount,
    /// Per epoch: what its devices were paid.
    epochs: std::collections::BTreeMap<u64, EpochPaid>,
}

/// What one epoch's devices were paid in a batch.
#[derive(Default)]
struct EpochPaid {
    devices: u64,
    owed: u64,
    capacity: Amount,
    work: Amount,
    stake: Amount,
}

/// What settling a device's tally pays and changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// The epoch the tally counted for.
    pub epoch: u64,
    /// Paid to the owner from the capacity pool.
    pub capacity: Amount,
    /// Paid to the owner from the work pool.
    pub work: Amount,
    /// Added to the device's stake pool.
    pub stake: Amount,
    /// The device's reputation afterwards.
    pub reputation_ppm: u32,
}

impl Ledger {
    /// The epoch a block time falls in.
    pub fn epoch_of(&self, ts: u64) -> u64 {
        // `epoch_ms` ≥ 1: the genesis refuses a zero epoch.
        ts.saturating_sub(self.params.genesis_time_ms)
            .checked_div(self.params.epoch_ms)
            .unwrap_or(0)
    }

    pub(crate) fn maybe_close_epoch(&mut self, ts: u64) -> Result<()> {
        let new = self.epoch_of(ts);
        let old = self.state.globals.epoch;
        if new <= old {
            return Ok(());
        }
        // The billing period ends with the epoch: pay every running lease for the time its
        // device has shown it served (up to its latest report).
        let active: Vec<(u64, u64)> = self.state.lease_seen.iter().copied().collect();
        for (seen, id) in active {
            self.settle_lease(id, seen)?;
        }
        self.close_epoch(old, new)
    }

    /// Closes epoch `old`: mints, splits, pays checkers and treasury, records the device
    /// pools with their total weights.
    fn close_epoch(&mut self, old: u64, new: u64) -> Result<()> {
        let p = self.params.clone();
        let g = self.state.globals.clone();
        let mut minted = emission_between(&p, old, new);
        if p.net_emission && old >= p.emission_epochs {
            minted = minted
                .checked_add(g.epoch_burned)
                .ok_or(TxError::Overflow("net emission"))?;
        }
        // Never cross the cap.
        let room = p.supply_cap.checked_sub(g.supply).unwrap_or(Amount::ZERO);
        let minted = minted.min(room).base();
        let share = |bps: u32| floor_share(minted, u128::from(bps), 10_000);
        let w = self.state.weights.get(&old).copied().unwrap_or_default();
        // A pool with no weight has nobody to pay.
        let held = |pool: u64, total: u128| if total > 0 { pool } else { 0 };
        let capacity = held(share(p.rewards.capacity_bps), w.capacity);
        let work = held(share(p.rewards.work_bps), w.work);
        let stakers = held(share(p.rewards.stakers_bps), w.stake);
        let check_pool = share(p.rewards.checkers_bps);
        // Checkers are paid per result that agreed with its device's verdict.
        let checkers: Vec<(Address, u128)> = self
            .state
            .checkers
            .iter()
            .filter(|(_, t)| t.tally_epoch == old && t.agreed > 0)
            .map(|(a, t)| (*a, u128::from(t.agreed)))
            .collect();
        let check_total: u128 = checkers.iter().map(|x| x.1).sum();
        let mut paid_checkers = 0u64;
        for (c, weight) in &checkers {
            let pay = floor_share(check_pool, *weight, check_total);
            paid_checkers = paid_checkers
                .checked_add(pay)
                .ok_or(TxError::Overflow("checker rewards"))?;
            self.credit(c, Amount::from_base(pay))?;
            if pay > 0 {
                self.emit(Event::Reward {
                    account: *c,
                    epoch: old,
                    capacity: Amount::ZERO,
                    work: Amount::ZERO,
                    checkers: Amount::from_base(pay),
                });
            }
        }
        let overflow = || TxError::Overflow("epoch split");
        let unpaid = capacity
            .checked_add(work)
            .and_then(|x| x.checked_add(stakers))
            .ok_or_else(overflow)?;
        let treasury = minted
            .checked_sub(unpaid)
            .and_then(|x| x.checked_sub(paid_checkers))
            .ok_or_else(overflow)?;
        self.credit(&p.treasury, Amount::from_base(treasury))?;

        let mut globals = self.state.globals.clone();
        globals.supply = g
            .supply
            .checked_add(Amount::from_base(minted))
            .ok_or(TxError::Overflow("supply"))?;
        globals.minted = g
            .minted
            .checked_add(Amount::from_base(minted))
            .ok_or(TxError::Overflow("minted"))?;
        globals.epoch_burned = Amount::ZERO;
        globals.epoch = new;
        self.state.set_globals(globals);
        let record = EpochRecord {
            epoch: old,
            closed_at_height: self.cx.height,
            minted: Amount::from_base(minted),
            burned: g.epoch_burned,
            capacity: Amount::ZERO,
            work: Amount::ZERO,
            stakers: Amount::ZERO,
            checkers: Amount::from_base(paid_checkers),
            treasury: Amount::from_base(treasury),
            devices_rewarded: w.rewarded,
            capacity_pool: Amount::from_base(capacity),
            work_pool: Amount::from_base(work),
            stakers_pool: Amount::from_base(stakers),
            capacity_weight: w.capacity,
            work_weight: w.work,
            stake_weight: w.stake,
            unsettled: w.devices,
            unpaid: Amount::from_base(unpaid),
        };
        self.state.set_epoch(old, record.clone());
        self.emit(Event::EpochClosed { record });
        // The new epoch's committee, drawn from this block's seed; rounds of the epoch before
        // the one closing are no longer needed.
        let seed = crate::assign::round_seed(&self.cx.block_hash);
        self.fix_committee(new, seed, self.cx.height);
        self.prune_rounds(old);
        Ok(())
    }

    /// What settling `d`'s tally would pay and change now: `None` when its tally counts for
    /// the open epoch or it has none. Pure; [`Ledger::settled_device`] applies it.
    pub(crate) fn settlement_of(&self, d: &Device) -> Option<Settlement> {
        self.settlement_within(d, &Payouts::default())
    }

    /// [`Ledger::settlement_of`], for a device settled after those in `batch` (paid from
    /// what the epoch still holds once they are).
    fn settlement_within(&self, d: &Device, batch: &Payouts) -> Option<Settlement> {
        if d.tally_epoch >= self.state.globals.epoch {
            return None;
        }
        let w = TallyWeight::of(d, &self.state.class_weights)?;
        let mut s = Settlement {
            epoch: d.tally_epoch,
            reputation_ppm: next_reputation(d.reputation_ppm, d.tally_verdict),
            ..Settlement::default()
        };
        // A tally whose epoch has no record (cannot happen: a tally counts for the epoch that
        // was open when it was written, and every open epoch closes with a record) pays
        // nothing.
        if let Some(r) = self.state.epochs.get(&d.tally_epoch) {
            // Shares of the tokens still held: never more than the record holds, even if the
            // floors were wrong.
            let spent = batch.epochs.get(&d.tally_epoch).map_or(0, |e| e.owed);
            let mut left = r.unpaid.base().saturating_sub(spent);
            let mut take = |pool: Amount, part: u128, whole: u128| {
                let v = floor_share(pool.base(), part, whole).min(left);
                left = left.saturating_sub(v); // v ≤ left
                Amount::from_base(v)
            };
            s.capacity = take(r.capacity_pool, w.capacity, r.capacity_weight);
            s.work = take(r.work_pool, w.work, r.work_weight);
            s.stake = take(r.stakers_pool, w.stake, r.stake_weight);
        }
        Some(s)
    }

    /// The device, with a tally from a closed epoch settled first (and written, so a caller
    /// that only reads it loses nothing): owner paid, stake pool grown, reputation moved,
    /// tally cleared. Every transaction that writes a
    /// device reads it through here, so a record never changes between an epoch's close and
    /// its settlement.
    pub(crate) fn settled_device(&mut self, addr: &Address) -> Result<Device> {
        let mut d = self
            .state
            .devices
            .get(addr)
            .cloned()
            .ok_or(TxError::UnknownDevice(*addr))?;
        let current = self.state.globals.epoch;
        if d.tally_epoch >= current {
            return Ok(d);
        }
        let Some(s) = self.settlement_of(&d) else {
            // No tally to settle: the caller's write carries the new epoch.
            d.tally_epoch = current;
            return Ok(d);
        };
        let mut batch = Payouts::default();
        self.settle_into(addr, &mut d, &s, &mut batch)?;
        d.tally_epoch = current;
        self.state.set_device(*addr, d.clone());
        self.pay_out(batch)?;
        Ok(d)
    }

    /// `SettleRewards`: settles each named device that has a tally from a closed epoch; what
    /// they are paid is added up and written once per owner, stake total and epoch.
    pub(crate) fn settle_rewards(&mut self, devices: &[Address]) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        let mut batch = Payouts::default();
        let current = self.state.globals.epoch;
        for a in devices {
            if !seen.insert(*a) {
                return Err(TxError::DuplicateDevice(*a));
            }
            let d = self
                .state
                .devices
                .get(a)
                .ok_or(TxError::UnknownDevice(*a))?;
            let Some(s) = self.settlement_within(d, &batch) else {
                continue;
            };
            let mut d = d.clone();
            self.settle_into(a, &mut d, &s, &mut batch)?;
            d.tally_epoch = current;
            self.state.set_device(*a, d);
        }
        if batch.epochs.is_empty() {
            return Err(TxError::NothingToSettle);
        }
        self.pay_out(batch)
    }

    /// Applies a settlement to the device (stake pool, reputation, tally cleared) and adds
    /// what it pays to `batch`.
    fn settle_into(
        &mut self,
        addr: &Address,
        d: &mut Device,
        s: &Settlement,
        batch: &mut Payouts,
    ) -> Result<()> {
        let overflow = || TxError::Overflow("settlement");
        let owed = s
            .capacity
            .checked_add(s.work)
            .and_then(|x| x.checked_add(s.stake))
            .ok_or_else(overflow)?;
        if s.stake > Amount::ZERO {
            d.pool.tokens = d.pool.tokens.checked_add(s.stake).ok_or_else(overflow)?;
            batch.staked = batch.staked.checked_add(s.stake).ok_or_else(overflow)?;
            self.emit(Event::StakingReward {
                device: *addr,
                epoch: s.epoch,
                amount: s.stake,
            });
        }
        if s.capacity > Amount::ZERO || s.work > Amount::ZERO {
            let o = batch.owners.entry((d.owner, s.epoch)).or_default();
            o.0 = o.0.checked_add(s.capacity).ok_or_else(overflow)?;
            o.1 = o.1.checked_add(s.work).ok_or_else(overflow)?;
        }
        let e = batch.epochs.entry(s.epoch).or_default();
        e.devices = e.devices.checked_add(1).ok_or_else(overflow)?;
        e.owed = e.owed.checked_add(owed.base()).ok_or_else(overflow)?;
        e.capacity = e.capacity.checked_add(s.capacity).ok_or_else(overflow)?;
        e.work = e.work.checked_add(s.work).ok_or_else(overflow)?;
        e.stake = e.stake.checked_add(s.stake).ok_or_else(overflow)?;
        d.reputation_ppm = s.reputation_ppm;
        d.tally_verdict = cairn_primitives::Verdict::Pending;
        d.tally_uptime = 0;
        d.work = 0;
        Ok(())
    }

    /// Writes a batch of settlements: owners credited (one `Reward` event per owner and
    /// epoch), the staked total, and each epoch's record (when its last device is settled,
    /// what the floors left goes to the treasury).
    fn pay_out(&mut self, batch: Payouts) -> Result<()> {
        for ((owner, epoch), (capacity, work)) in batch.owners {
            let pay = capacity
                .checked_add(work)
                .ok_or(TxError::Overflow("settlement"))?;
            self.credit(&owner, pay)?;
            self.emit(Event::Reward {
                account: owner,
                epoch,
                capacity,
                work,
                checkers: Amount::ZERO,
            });
        }
        if batch.staked > Amount::ZERO {
            self.add_staked(batch.staked)?;
        }
        for (epoch, paid) in batch.epochs {
            let Some(mut r) = self.state.epochs.get(&epoch).cloned() else {
                continue;
            };
            let overflow = || TxError::Overflow("epoch record");
            r.unpaid = r
                .unpaid
                .checked_sub(Amount::from_base(paid.owed))
                .ok_or_else(overflow)?;
            r.capacity = r.capacity.checked_add(paid.capacity).ok_or_else(overflow)?;
            r.work = r.work.checked_add(paid.work).ok_or_else(overflow)?;
            r.stakers = r.stakers.checked_add(paid.stake).ok_or_else(overflow)?;
            r.unsettled = r.unsettled.saturating_sub(paid.devices);
            if r.unsettled == 0 && r.unpaid > Amount::ZERO {
                let dust = std::mem::take(&mut r.unpaid);
                r.treasury = r.treasury.checked_add(dust).ok_or_else(overflow)?;
                let treasury = self.params.treasury;
                self.credit(&treasury, dust)?;
            }
            self.state.set_epoch(epoch, r);
        }
        Ok(())
    }

    /// Checks what the epoch accounting keeps without a full pass, against a full pass (for
    /// tests and fuzzing; O(devices)): the weights kept for the open epoch equal their sum
    /// over its devices; no tally counts for an epoch to come; each closed epoch's record adds
    /// up, counts exactly its devices not yet settled, and holds at least what they are owed;
    /// the market index equals one built from the devices.
    pub fn check_invariants(&self) -> std::result::Result<(), InvariantViolation> {
        use crate::state::EpochWeights;
        let built = crate::matching::Market::build(
            self.state
                .devices
                .iter()
                .filter(|(_, d)| crate::state::is_marketable(d)),
        );
        if built != self.state.market {
            return Err(InvariantViolation(
                "the market index differs from one built from the devices".into(),
            ));
        }
        let current = self.state.globals.epoch;
        let mut open = EpochWeights::default();
        let mut owed: std::collections::BTreeMap<u64, (u64, u128)> = Default::default();
        for (a, d) in &self.state.devices {
            if d.tally_epoch > current {
                return Err(InvariantViolation(format!(
                    "device {a} has a tally for epoch {} > {current}",
                    d.tally_epoch
                )));
            }
            let Some(w) = TallyWeight::of(d, &self.state.class_weights) else {
                continue;
            };
            if d.tally_epoch == current {
                if open.add(&w).is_none() {
                    return Err(InvariantViolation(format!(
                        "the open epoch's weights overflow at device {a}"
                    )));
                }
            } else if let Some(s) = self.settlement_of(d) {
                let e = owed.entry(d.tally_epoch).or_default();
                // Sums of u64 amounts in a u128: they cannot reach its bound.
                e.0 = e.0.saturating_add(1);
                e.1 = e.1.saturating_add(
                    u128::from(s.capacity.base())
                        .saturating_add(u128::from(s.work.base()))
                        .saturating_add(u128::from(s.stake.base())),
                );
            }
        }
        let kept = self
            .state
            .weights
            .get(&current)
            .copied()
            .unwrap_or_default();
        if kept != open {
            return Err(InvariantViolation(format!(
                "kept weights {kept:?} != summed {open:?}"
            )));
        }
        for (e, r) in &self.state.epochs {
            let sum: u128 = [
                r.capacity, r.work, r.stakers, r.checkers, r.treasury, r.unpaid,
            ]
            .iter()
            .map(|x| u128::from(x.base()))
            .sum();
            if sum != u128::from(r.minted.base()) {
                return Err(InvariantViolation(format!(
                    "epoch {e} does not add up: {r:?}"
                )));
            }
            let (devices, due) = owed.get(e).copied().unwrap_or_default();
            if devices != r.unsettled {
                return Err(InvariantViolation(format!(
                    "epoch {e}: {devices} devices to settle, record says {}",
                    r.unsettled
                )));
            }
            if due > u128::from(r.unpaid.base()) {
                return Err(InvariantViolation(format!(
                    "epoch {e}: devices are owed {due}, record holds {}",
                    r.unpaid.base()
                )));
            }
        }
        Ok(())
    }

    /// What settling `device` would pay now (`None`: nothing pending): what a client shows
    /// beside the balance.
    pub fn pending_settlement(&self, device: &Address) -> Option<Settlement> {
        self.settlement_of(self.state.devices.get(device)?)
    }
}

/// Reputation after an epoch's verdict: a passing device gains a share of its gap to 100%, a
/// failing one loses a share of what it has; no verdict, no change.
fn next_reputation(rep: u32, verdict: cairn_primitives::Verdict) -> u32 {
    use cairn_primitives::Verdict;
    let passed = match verdict {
        Verdict::Pending => return rep,
        Verdict::Pass => true,
        Verdict::Fail | Verdict::Missed => false,
    };
    let rep = u64::from(rep).min(1_000_000);
    // rep ≤ 10⁶ and the rates ≤ 10⁶: every product fits a u64, every difference is ≥ 0.
    let rep = if passed {
        let gap = 1_000_000u64.saturating_sub(rep);
        rep.saturating_add(gap.saturating_mul(REPUTATION_GAIN_PPM) / 1_000_000)
    } else {
        rep.saturating_sub(rep.saturating_mul(REPUTATION_LOSS_PPM) / 1_000_000)
    };
    u32::try_from(rep).unwrap_or(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::Market;
    use crate::testing;
    use cairn_primitives::{DeviceSpec, StateKey, sha256};

    /// `n` attested, passing devices; the first `moving` start at half reputation (so an epoch
    /// close moves their rank), the rest at the top (a pass leaves them where they are).
    fn fleet(n: u64, moving: u64) -> (cairn_primitives::Genesis, Ledger) {
        let genesis = testing::genesis(&[]);
        let stake = 1_000_000u64;
        let devices = (0..n).map(|i| {
            let addr = Address(sha256(&[b"dev", &i.to_be_bytes()]).0);
            let owner = if i == 0 {
                operator().address()
            } else {
                Address(sha256(&[b"own", &(i % 7).to_be_bytes()]).0)
            };
            let spec = DeviceSpec {
                gpu_count: 0,
                vram_mib: 0,
                cpu_cores: 4,
                ram_mib: 8192,
            };
            let rep = if i < moving { 500_000 } else { 1_000_000 };
            let region = ["eu", "us"][usize::from(i % 2 == 0)];
            let d = Device {
                tally_verdict: cairn_primitives::Verdict::Pass,
                tally_uptime: 198,
                ..testing::device_record(owner, 11, spec, region, 100 + i % 5, rep, stake)
            };
            (addr, d)
        });
        // Fees for the operator's transaction in the closing block.
        let fees = [(operator().address(), Amount::from_base(1_000_000))];
        let records = testing::fleet_records(devices, &fees);
        let ledger = Ledger::from_records(&genesis, records).expect("fleet");
        (genesis, ledger)
    }

    fn operator() -> cairn_primitives::Keypair {
        cairn_primitives::Keypair::from_seed([7; 32])
    }

    #[test]
    fn close_writes_no_device_and_settling_pays_what_it_owes() {
        let (genesis, mut ledger) = fleet(100, 90);
        let ts = testing::TEST_GENESIS_MS + ledger.params().epoch_ms + 1;
        let before = ledger.state.devices.clone();
        // The closing block also reprices device 0: it is settled by that transaction.
        let dev0 = Address(sha256(&[b"dev", &0u64.to_be_bytes()]).0);
        let tx = |nonce, body| testing::tx(&operator(), nonce, body, &genesis.chain_id);
        let reprice = cairn_primitives::TxBody::UpdateDevice {
            device: dev0,
            price_per_hour: Some(cairn_primitives::PayUnits(777)),
            available: None,
        };
        let block = ledger.build_block(ts, vec![tx(0, reprice)]);
        let outcome = ledger.apply(&block).expect("close");
        assert_eq!(outcome.results[0].error, None);
        let record = ledger.epoch(0).expect("closed").clone();
        assert_eq!(record.devices_rewarded, 100);
        assert_eq!(record.unsettled, 99);
        // The close wrote the globals, the record, the checker's and the treasury's accounts
        // and (through the reprice) device 0, its owner and the fee payer: no other device.
        let devices_written = outcome
            .changes
            .iter()
            .filter(|(k, _)| matches!(StateKey::from_bytes(k), Some(StateKey::Device(_))))
            .count();
        assert_eq!(devices_written, 1);
        let d0 = ledger.device(&dev0).expect("device 0");
        assert_eq!((d0.price_per_hour.0, d0.reputation_ppm), (777, 550_000));
        let untouched = ledger.state.devices.iter().filter(|(a, _)| **a != dev0);
        assert!(untouched.clone().all(|(a, d)| before.get(a) == Some(d)));
        assert_eq!(untouched.count(), 99);
        ledger.check_invariants().expect("after the close");
        let again = Ledger::from_records(&genesis, ledger.records()).expect("reload");
        assert_eq!(again.state_root(), ledger.state_root());

        // Anyone settles the rest; the market moves with their reputations.
        let all: Vec<Address> = ledger.state.devices.keys().copied().collect();
        let settle = cairn_primitives::TxBody::SettleRewards { devices: all };
        let block = ledger.build_block(ts + 1, vec![tx(1, settle)]);
        let outcome = ledger.apply(&block).expect("settle");
        assert_eq!(outcome.results[0].error, None);
        let record = ledger.epoch(0).expect("closed");
        assert_eq!((record.unsettled, record.unpaid), (0, Amount::ZERO));
        let moved = ledger
            .state
            .devices
            .values()
            .filter(|d| d.reputation_ppm == 550_000)
            .count();
        assert_eq!(moved, 90);
        assert!(
            ledger.state.devices.values().all(|d| d.tally_verdict
                == cairn_primitives::Verdict::Pending
                && d.tally_epoch == 1)
        );
        let rebuilt = Market::build(
            ledger
                .state
                .devices
                .iter()
                .filter(|(_, d)| crate::state::is_marketable(d)),
        );
        assert_eq!(ledger.state.market, rebuilt);
        ledger.check_invariants().expect("after settling");
        let again = Ledger::from_records(&genesis, ledger.records()).expect("reload");
        assert_eq!(again.state_root(), ledger.state_root());
    }
}
