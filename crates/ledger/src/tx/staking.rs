//! Staking: stake pools per device, delegation, unbonding and its release.

use crate::events::Event;
use crate::tokenomics::floor_mul_div;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, Amount, Delegation, DeviceStatus, Unbonding};

impl Ledger {
    pub(crate) fn add_staked(&mut self, amount: Amount) -> Result<()> {
        let mut g = self.state.globals.clone();
        g.staked = g
            .staked
            .checked_add(amount)
            .ok_or(TxError::Overflow("staked"))?;
        self.state.set_globals(g);
        Ok(())
    }

    pub(crate) fn sub_staked(&mut self, amount: Amount) -> Result<()> {
        let mut g = self.state.globals.clone();
        g.staked = g
            .staked
            .checked_sub(amount)
            .ok_or(TxError::Overflow("staked"))?;
        self.state.set_globals(g);
        Ok(())
    }

    /// Redeems `shares` of `staker` in `device`'s pool into an unbonding entry.
    pub(crate) fn redeem(
        &mut self,
        device: &Address,
        staker: Address,
        shares: u64,
    ) -> Result<Amount> {
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
                shares: held
                    .checked_sub(shares)
                    .ok_or(TxError::Overflow("shares"))?,
            },
        );
        if out > Amount::ZERO {
            self.start_unbonding(staker, out)?;
        }
        Ok(out)
    }

    pub(crate) fn start_unbonding(&mut self, owner: Address, amount: Amount) -> Result<()> {
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

    pub(crate) fn release_unbonding(&mut self, ts: u64) -> Result<()> {
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

    pub(crate) fn delegate(
        &mut self,
        sender: Address,
        device: &Address,
        amount: Amount,
    ) -> Result<()> {
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

    pub(crate) fn undelegate(
        &mut self,
        sender: Address,
        device: &Address,
        shares: u64,
    ) -> Result<()> {
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
}
