//! Balances and supply: debits, credits, burns, and the transfer transaction.

use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, Amount};

impl Ledger {
    /// Moves `amount` from `sender` to `to`.
    pub(crate) fn transfer(&mut self, sender: Address, to: &Address, amount: Amount) -> Result<()> {
        if amount == Amount::ZERO {
            return Err(TxError::ZeroAmount);
        }
        self.debit(&sender, amount)?;
        self.credit(to, amount)?;
        self.emit(Event::Transfer {
            from: sender,
            to: *to,
            amount,
        });
        Ok(())
    }

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
}
