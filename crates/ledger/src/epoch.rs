//! Closing an epoch: mint the schedule's emission, split it into pools, pay out.
//!
//! Rounding rule, named once: every share is `floor(pool · weight / total)`
//! ([`crate::tokenomics::floor_share`]), so the shares of a pool never add up to more than the
//! pool; whatever the floors leave, and every pool that has nobody to pay, goes to the
//! treasury. Each epoch therefore adds up exactly: minted = paid + treasury.

use crate::events::Event;
use crate::tokenomics::{emission_between, floor_share};
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, Amount, ClassKind, DeviceStatus, EpochRecord};
use std::collections::BTreeMap;

/// Share of the gap to 100% a passing device gains each epoch, and share of its reputation a
/// failing one loses (both in parts of 1,000,000).
const REPUTATION_GAIN_PPM: u64 = 100_000;
const REPUTATION_LOSS_PPM: u64 = 200_000;

#[derive(Default)]
struct Payout {
    capacity: u64,
    work: u64,
    checkers: u64,
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
        // The billing period ends with the epoch: pay every running lease up to now.
        let active: Vec<u64> = self.state.lease_ends.iter().map(|(_, id)| *id).collect();
        for id in active {
            self.settle_lease(id, ts)?;
        }
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
        let cap_pool = share(p.rewards.capacity_bps);
        let work_pool = share(p.rewards.work_bps);
        let stake_pool = share(p.rewards.stakers_bps);
        let check_pool = share(p.rewards.checkers_bps);

        // Weights.
        let tallied: Vec<Address> = self.state.tallied.iter().copied().collect();
        let mut cap_w: Vec<(Address, Address, u128)> = Vec::new();
        let mut work_w: Vec<(Address, Address, u128)> = Vec::new();
        let mut stake_w: Vec<(Address, u128)> = Vec::new();
        for a in &tallied {
            let Some(d) = self.state.devices.get(a) else {
                continue;
            };
            let votes = u64::from(d.attest_pass) + u64::from(d.attest_fail);
            let verified = d.status == DeviceStatus::Active && d.attest_pass > d.attest_fail;
            if verified {
                let class = p.classes.get(usize::from(d.class));
                let (weight, units) = match class {
                    Some(c) if c.kind == ClassKind::Gpu => {
                        (c.reward_weight, u64::from(d.spec.gpu_count))
                    }
                    Some(c) => (c.reward_weight, u64::from(d.spec.cpu_cores)),
                    None => (0, 0),
                };
                let uptime = d.uptime_ppm_sum / votes.max(1);
                let w = u128::from(weight) * u128::from(units) * u128::from(uptime);
                if w > 0 {
                    cap_w.push((*a, d.owner, w));
                }
                if d.pool.tokens > Amount::ZERO {
                    stake_w.push((*a, u128::from(d.pool.tokens.base())));
                }
            }
            if d.work > 0 {
                work_w.push((*a, d.owner, u128::from(d.work)));
            }
        }
        let checkers: Vec<(Address, u128)> = self
            .state
            .checkers
            .iter()
            .filter(|(_, t)| t.epoch == old && t.results > 0)
            .map(|(a, t)| (*a, u128::from(t.results)))
            .collect();

        let mut payouts: BTreeMap<Address, Payout> = BTreeMap::new();
        let mut paid_cap = 0u64;
        let mut rewarded = std::collections::BTreeSet::new();
        let total: u128 = cap_w.iter().map(|x| x.2).sum();
        for (dev, owner, w) in &cap_w {
            let s = floor_share(cap_pool, *w, total);
            payouts.entry(*owner).or_default().capacity += s;
            paid_cap += s;
            rewarded.insert(*dev);
        }
        let mut paid_work = 0u64;
        let total: u128 = work_w.iter().map(|x| x.2).sum();
        for (dev, owner, w) in &work_w {
            let s = floor_share(work_pool, *w, total);
            payouts.entry(*owner).or_default().work += s;
            paid_work += s;
            rewarded.insert(*dev);
        }
        let mut paid_check = 0u64;
        let total: u128 = checkers.iter().map(|x| x.1).sum();
        for (c, w) in &checkers {
            let s = floor_share(check_pool, *w, total);
            payouts.entry(*c).or_default().checkers += s;
            paid_check += s;
        }
        let mut paid_stake = 0u64;
        let total: u128 = stake_w.iter().map(|x| x.1).sum();
        let mut stake_rewards = Vec::with_capacity(stake_w.len());
        for (dev, w) in &stake_w {
            let s = floor_share(stake_pool, *w, total);
            if s > 0 {
                stake_rewards.push((*dev, s));
                paid_stake += s;
            }
        }
        let paid = paid_cap + paid_work + paid_check + paid_stake;
        let treasury = minted
            .checked_sub(paid)
            .ok_or(TxError::Overflow("epoch split"))?;

        // Mint and pay.
        let mut g = self.state.globals.clone();
        g.supply = g
            .supply
            .checked_add(Amount::from_base(minted))
            .ok_or(TxError::Overflow("supply"))?;
        g.minted = g
            .minted
            .checked_add(Amount::from_base(minted))
            .ok_or(TxError::Overflow("minted"))?;
        let burned = g.epoch_burned;
        g.epoch_burned = Amount::ZERO;
        g.epoch = new;
        self.state.set_globals(g);
        for (who, pay) in &payouts {
            let sum = pay.capacity + pay.work + pay.checkers;
            self.credit(who, Amount::from_base(sum))?;
            self.emit(Event::Reward {
                account: *who,
                epoch: old,
                capacity: Amount::from_base(pay.capacity),
                work: Amount::from_base(pay.work),
                checkers: Amount::from_base(pay.checkers),
            });
        }
        for (dev, s) in &stake_rewards {
            if let Some(mut d) = self.state.devices.get(dev).cloned() {
                d.pool.tokens = d
                    .pool
                    .tokens
                    .checked_add(Amount::from_base(*s))
                    .ok_or(TxError::Overflow("pool"))?;
                self.state.set_device(*dev, d);
            }
            self.emit(Event::StakingReward {
                device: *dev,
                epoch: old,
                amount: Amount::from_base(*s),
            });
        }
        if paid_stake > 0 {
            let mut g = self.state.globals.clone();
            g.staked = g
                .staked
                .checked_add(Amount::from_base(paid_stake))
                .ok_or(TxError::Overflow("staked"))?;
            self.state.set_globals(g);
        }
        let treasury_addr = p.treasury;
        self.credit(&treasury_addr, Amount::from_base(treasury))?;

        // Reputation moves with the verdict; tallies start over.
        for a in &tallied {
            let Some(mut d) = self.state.devices.get(a).cloned() else {
                continue;
            };
            let votes = u64::from(d.attest_pass) + u64::from(d.attest_fail);
            if votes > 0 {
                let rep = u64::from(d.reputation_ppm);
                let rep = if d.attest_pass > d.attest_fail {
                    rep + (1_000_000 - rep.min(1_000_000)) * REPUTATION_GAIN_PPM / 1_000_000
                } else {
                    rep - rep * REPUTATION_LOSS_PPM / 1_000_000
                };
                d.reputation_ppm = u32::try_from(rep.min(1_000_000)).unwrap_or(1_000_000);
            }
            d.attest_pass = 0;
            d.attest_fail = 0;
            d.uptime_ppm_sum = 0;
            d.work = 0;
            d.voters.clear();
            self.state.set_device(*a, d);
        }
        let record = EpochRecord {
            epoch: old,
            closed_at_height: self.cx.height,
            minted: Amount::from_base(minted),
            burned,
            capacity: Amount::from_base(paid_cap),
            work: Amount::from_base(paid_work),
            stakers: Amount::from_base(paid_stake),
            checkers: Amount::from_base(paid_check),
            treasury: Amount::from_base(treasury),
            devices_rewarded: rewarded.len() as u64,
        };
        self.state.set_epoch(old, record.clone());
        self.emit(Event::EpochClosed { record });
        Ok(())
    }
}
