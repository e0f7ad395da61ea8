//! Closing an epoch: mint the schedule's emission, split it into pools, pay out.
//!
//! Rounding rule, named once: every share is `floor(pool · weight / total)`
//! ([`crate::tokenomics::floor_share`]), so the shares of a pool never add up to more than the
//! pool; whatever the floors leave, and every pool that has nobody to pay, goes to the
//! treasury. Each epoch therefore adds up exactly: minted = paid + treasury.

use crate::events::Event;
use crate::state::is_marketable;
use crate::tokenomics::{emission_between, floor_share};
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, Amount, ClassKind, DeviceStatus, EpochRecord};
use rayon::prelude::*;
use std::collections::HashMap;

/// Share of the gap to 100% a passing device gains each epoch, and share of its reputation a
/// failing one loses (both in parts of 1,000,000).
const REPUTATION_GAIN_PPM: u64 = 100_000;
const REPUTATION_LOSS_PPM: u64 = 200_000;

/// What one account receives at an epoch close.
#[derive(Default, Clone, Copy)]
struct Payout {
    capacity: u64,
    work: u64,
    checkers: u64,
    treasury: u64,
}

impl Payout {
    fn total(&self) -> Option<u64> {
        self.capacity
            .checked_add(self.work)?
            .checked_add(self.checkers)?
            .checked_add(self.treasury)
    }

    fn add(&mut self, o: &Payout) {
        // Each field is a share of one pool, and pools add up to the epoch's emission, which
        // fits in the supply (a u64): these sums cannot overflow.
        self.capacity = self.capacity.saturating_add(o.capacity);
        self.work = self.work.saturating_add(o.work);
        self.checkers = self.checkers.saturating_add(o.checkers);
        self.treasury = self.treasury.saturating_add(o.treasury);
    }
}

/// A tallied device's new record fields after the close.
pub(crate) struct DeviceClose {
    pub(crate) device: Address,
    pub(crate) pool_tokens: Amount,
    pub(crate) reputation_ppm: u32,
    pub(crate) stake_reward: u64,
    /// Marketable, and its reputation (so its rank) moves.
    pub(crate) reranked: bool,
}

/// Everything an epoch close writes, computed (and every sum checked) before anything is
/// written: the writes themselves cannot fail, so a close is all or nothing without an undo
/// journal for a million records.
struct ClosePlan {
    globals: cairn_primitives::Globals,
    /// Accounts paid, sorted, with their new balances.
    accounts: Vec<(Address, Payout, Amount)>,
    devices: Vec<DeviceClose>,
    /// Marketable devices whose rank changes.
    reranked: usize,
    record: EpochRecord,
}

impl Ledger {
    /// The epoch a block time falls in.
    pub fn epoch_of(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.params.genesis_time_ms) / self.params.epoch_ms
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
        let plan = self.plan_close(old, new)?;
        self.write_close(old, plan);
        Ok(())
    }

    /// Computes the close of epoch `old` (read-only).
    fn plan_close(&self, old: u64, new: u64) -> Result<ClosePlan> {
        let p = &self.params;
        let g = &self.state.globals;
        let mut minted = emission_between(p, old, new);
        if p.net_emission && old >= p.emission_epochs {
            minted = minted
                .checked_add(g.epoch_burned)
                .ok_or(TxError::Overflow("net emission"))?;
        }
        // Never cross the cap.
        let room = p.supply_cap.checked_sub(g.supply).unwrap_or(Amount::ZERO);
        let minted = minted.min(room).base();
        let share = |bps: u32| floor_share(minted, u128::from(bps), 10_000);
        let cap_pool = share(p.rewards.capacity_bps);
        let work_pool = share(p.rewards.work_bps);
        let stake_pool = share(p.rewards.stakers_bps);
        let check_pool = share(p.rewards.checkers_bps);

        // Weights, from every device with a tally (address order).
        struct Weights {
            device: Address,
            owner: Address,
            capacity: u128,
            work: u128,
            stake: u128,
            reputation_ppm: u32,
            reranked: bool,
            pool_tokens: Amount,
        }
        let tallied = self.state.tallied_devices();
        let weights: Vec<Weights> = tallied
            .par_iter()
            .map(|&(a, d)| {
                let votes = u64::from(d.attest_pass) + u64::from(d.attest_fail);
                let passed = d.attest_pass > d.attest_fail;
                let verified = d.status == DeviceStatus::Active && passed;
                let mut w = Weights {
                    device: *a,
                    owner: d.owner,
                    capacity: 0,
                    work: u128::from(d.work),
                    stake: 0,
                    reputation_ppm: next_reputation(d.reputation_ppm, votes, passed),
                    reranked: false,
                    pool_tokens: d.pool.tokens,
                };
                w.reranked = w.reputation_ppm != d.reputation_ppm && is_marketable(d);
                if verified {
                    let (weight, units) = match p.classes.get(usize::from(d.class)) {
                        Some(c) if c.kind == ClassKind::Gpu => {
                            (c.reward_weight, u64::from(d.spec.gpu_count))
                        }
                        Some(c) => (c.reward_weight, u64::from(d.spec.cpu_cores)),
                        None => (0, 0),
                    };
                    let uptime = d.uptime_ppm_sum / votes.max(1);
                    w.capacity = u128::from(weight) * u128::from(units) * u128::from(uptime);
                    w.stake = u128::from(d.pool.tokens.base());
                }
                w
            })
            .collect();
        let checkers: Vec<(Address, u128)> = self
            .state
            .checkers
            .iter()
            .filter(|(_, t)| t.epoch == old && t.results > 0)
            .map(|(a, t)| (*a, u128::from(t.results)))
            .collect();

        let cap_total: u128 = weights.iter().map(|w| w.capacity).sum();
        let work_total: u128 = weights.iter().map(|w| w.work).sum();
        let stake_total: u128 = weights.iter().map(|w| w.stake).sum();
        let check_total: u128 = checkers.iter().map(|x| x.1).sum();

        let mut paid = Payout::default();
        let mut paid_stake = 0u64;
        let mut rewarded = 0u64;
        let mut pays: HashMap<Address, Payout> = HashMap::new();
        let mut reranked = 0;
        let shares: Vec<(Payout, u64)> = weights
            .par_iter()
            .map(|w| {
                let pay = Payout {
                    capacity: floor_share(cap_pool, w.capacity, cap_total),
                    work: floor_share(work_pool, w.work, work_total),
                    ..Payout::default()
                };
                (pay, floor_share(stake_pool, w.stake, stake_total))
            })
            .collect();
        let mut devices = Vec::with_capacity(weights.len());
        for (w, (pay, stake_reward)) in weights.iter().zip(shares) {
            if w.capacity > 0 || w.work > 0 {
                rewarded += 1;
            }
            if pay.capacity > 0 || pay.work > 0 {
                paid.add(&pay);
                pays.entry(w.owner).or_default().add(&pay);
            }
            paid_stake += stake_reward;
            reranked += usize::from(w.reranked);
            devices.push(DeviceClose {
                device: w.device,
                pool_tokens: w
                    .pool_tokens
                    .checked_add(Amount::from_base(stake_reward))
                    .ok_or(TxError::Overflow("pool"))?,
                reputation_ppm: w.reputation_ppm,
                stake_reward,
                reranked: w.reranked,
            });
        }
        for (c, w) in &checkers {
            let pay = Payout {
                checkers: floor_share(check_pool, *w, check_total),
                ..Payout::default()
            };
            paid.add(&pay);
            pays.entry(*c).or_default().add(&pay);
        }
        let paid_total = paid
            .total()
            .and_then(|t| t.checked_add(paid_stake))
            .ok_or(TxError::Overflow("epoch split"))?;
        let treasury = minted
            .checked_sub(paid_total)
            .ok_or(TxError::Overflow("epoch split"))?;
        pays.entry(p.treasury).or_default().treasury = treasury;

        // One entry per account, in address order, with its new balance.
        let mut accounts: Vec<(Address, Payout, Amount)> = pays
            .into_iter()
            .map(|(who, pay)| (who, pay, Amount::ZERO))
            .collect();
        accounts.sort_unstable_by_key(|x| x.0);
        accounts.retain(|(_, pay, _)| pay.total() != Some(0));
        for (who, pay, balance) in &mut accounts {
            let total = pay.total().ok_or(TxError::Overflow("payout"))?;
            *balance = self
                .state
                .accounts
                .get(who)
                .map_or(Amount::ZERO, |a| a.balance)
                .checked_add(Amount::from_base(total))
                .ok_or(TxError::Overflow("balance"))?;
        }

        let mut globals = g.clone();
        globals.supply = g
            .supply
            .checked_add(Amount::from_base(minted))
            .ok_or(TxError::Overflow("supply"))?;
        globals.minted = g
            .minted
            .checked_add(Amount::from_base(minted))
            .ok_or(TxError::Overflow("minted"))?;
        globals.staked = g
            .staked
            .checked_add(Amount::from_base(paid_stake))
            .ok_or(TxError::Overflow("staked"))?;
        globals.epoch_burned = Amount::ZERO;
        globals.epoch = new;
        let record = EpochRecord {
            epoch: old,
            closed_at_height: self.cx.height,
            minted: Amount::from_base(minted),
            burned: g.epoch_burned,
            capacity: Amount::from_base(paid.capacity),
            work: Amount::from_base(paid.work),
            stakers: Amount::from_base(paid_stake),
            checkers: Amount::from_base(paid.checkers),
            treasury: Amount::from_base(treasury),
            devices_rewarded: rewarded,
        };
        Ok(ClosePlan {
            globals,
            accounts,
            devices,
            reranked,
            record,
        })
    }

    /// Writes a planned close. Cannot fail.
    fn write_close(&mut self, old: u64, plan: ClosePlan) {
        self.state.set_globals(plan.globals);
        for (who, pay, balance) in &plan.accounts {
            self.state.set_balance_in_place(*who, *balance);
            if pay.capacity > 0 || pay.work > 0 || pay.checkers > 0 {
                self.emit(Event::Reward {
                    account: *who,
                    epoch: old,
                    capacity: Amount::from_base(pay.capacity),
                    work: Amount::from_base(pay.work),
                    checkers: Amount::from_base(pay.checkers),
                });
            }
        }
        self.cx.events.reserve(plan.devices.len());
        for d in &plan.devices {
            if d.stake_reward > 0 {
                self.emit(Event::StakingReward {
                    device: d.device,
                    epoch: old,
                    amount: Amount::from_base(d.stake_reward),
                });
            }
        }
        // Re-ranking most of the market one device at a time costs more than rebuilding it.
        let rebuild = plan.reranked > self.state.market.len() / 8;
        self.state.close_devices(&plan.devices, !rebuild);
        if rebuild {
            self.state.rebuild_market();
        }
        self.state.set_epoch(old, plan.record.clone());
        self.emit(Event::EpochClosed {
            record: plan.record,
        });
    }
}

/// Reputation after an epoch's verdict: a passing device gains a share of its gap to 100%, a
/// failing one loses a share of what it has; no votes, no change.
fn next_reputation(rep: u32, votes: u64, passed: bool) -> u32 {
    if votes == 0 {
        return rep;
    }
    let rep = u64::from(rep).min(1_000_000);
    let rep = if passed {
        rep + (1_000_000 - rep) * REPUTATION_GAIN_PPM / 1_000_000
    } else {
        rep - rep * REPUTATION_LOSS_PPM / 1_000_000
    };
    u32::try_from(rep).unwrap_or(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::Market;
    use crate::testing;
    use cairn_primitives::{Device, DeviceSpec, sha256};

    /// `n` attested, passing devices; the first `moving` start at half reputation (so an epoch
    /// close moves their rank), the rest at the top (a pass leaves them where they are).
    fn fleet(n: u64, moving: u64) -> (cairn_primitives::Genesis, Ledger) {
        let checker = Address([0xcc; 32]);
        let mut genesis = testing::genesis(&[]);
        genesis.checkers = vec![checker];
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
                attest_pass: 1,
                uptime_ppm_sum: 990_000,
                voters: vec![checker],
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
    fn close_keeps_the_market_and_the_root_true_on_both_paths() {
        // 3 of 100 reranked: one device at a time; 90 of 100: the market is rebuilt.
        for moving in [3, 90] {
            let (genesis, mut ledger) = fleet(100, moving);
            let ts = testing::TEST_GENESIS_MS + ledger.params().epoch_ms + 1;
            // The closing block also reprices device 0: its record is written twice.
            let dev0 = Address(sha256(&[b"dev", &0u64.to_be_bytes()]).0);
            let reprice = testing::tx(
                &operator(),
                0,
                cairn_primitives::TxBody::UpdateDevice {
                    device: dev0,
                    price_per_hour: Some(777),
                    available: None,
                },
                &genesis.chain_id,
            );
            let block = ledger.build_block(ts, vec![reprice]);
            let outcome = ledger.apply(&block).expect("close");
            assert_eq!(outcome.results[0].error, None);
            assert_eq!(ledger.device(&dev0).map(|d| d.price_per_hour), Some(777));
            let rewarded = outcome.events.iter().any(|(_, e)| {
                matches!(e, Event::EpochClosed { record } if record.devices_rewarded == 100)
            });
            assert!(rewarded, "every device is paid");
            let rebuilt = Market::build(
                ledger
                    .state
                    .devices
                    .iter()
                    .filter(|(_, d)| is_marketable(d)),
            );
            assert_eq!(ledger.state.market, rebuilt, "moving {moving}");
            assert!(ledger.state.tallied.is_empty());
            assert!(ledger.state.devices.values().all(|d| d.voters.is_empty()));
            let moved = ledger
                .state
                .devices
                .values()
                .filter(|d| d.reputation_ppm == 550_000)
                .count();
            assert_eq!(moved as u64, moving);
            // The root the close left equals a root rebuilt from its records.
            let again = Ledger::from_records(&genesis, ledger.records()).expect("reload");
            assert_eq!(again.state_root(), ledger.state_root());
        }
    }
}
