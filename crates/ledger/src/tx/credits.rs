//! Compute credits: the oracle price, buying credits (burn-and-mint), and paying for
//! leases in credits or, under the direct model, in tokens.

use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, Amount, Credits, OraclePrice, PayUnits, PaymentModel};

/// One credit is $0.00001: ten micro-dollars.
pub(crate) const MICRO_USD_PER_CREDIT: u128 = 10;

impl Ledger {
    /// An oracle's token price, in millionths of a USD.
    pub(crate) fn submit_price(&mut self, sender: Address, micro_usd_per_token: u64) -> Result<()> {
        if !self.params.oracle_keys.contains(&sender) {
            return Err(TxError::NotOracle(sender));
        }
        if micro_usd_per_token == 0 {
            return Err(TxError::ZeroPrice);
        }
        self.state.set_oracle(
            sender,
            OraclePrice {
                micro_usd_per_token,
                at_ms: self.cx.ts,
            },
        );
        self.emit(Event::PriceSubmitted {
            oracle: sender,
            micro_usd_per_token,
        });
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
        fresh.get(fresh.len().saturating_sub(1) / 2).copied()
    }

    pub(crate) fn buy_credits(&mut self, sender: Address, amount: Amount) -> Result<()> {
        if amount == Amount::ZERO {
            return Err(TxError::ZeroAmount);
        }
        let price = self.oracle_price(self.cx.ts).ok_or(TxError::StalePrice {
            max_age_secs: self.params.oracle_max_age_ms / 1000,
        })?;
        // credits = tokens · (µUSD/token) / (µUSD/credit), tokens = base / 10^decimals.
        let scale = 10u128
            .checked_pow(u32::from(self.params.decimals))
            .and_then(|s| s.checked_mul(MICRO_USD_PER_CREDIT))
            .ok_or(TxError::Overflow("credit price scale"))?;
        let credits = u128::from(amount.base())
            .checked_mul(u128::from(price))
            .and_then(|v| v.checked_div(scale))
            .ok_or(TxError::Overflow("credits"))?;
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

    /// Takes a deposit in the payment model's unit: credits under `bme`, tokens under `direct`.
    /// Takes `units` from `who`: credits under `bme`, tokens under `direct`.
    pub(crate) fn take_payment(&mut self, who: &Address, units: PayUnits) -> Result<()> {
        match self.params.payment_model {
            PaymentModel::Direct => self.debit(who, units.as_tokens()),
            PaymentModel::Bme => {
                let mut a = self.state.account(who);
                a.credits = a.credits.checked_sub(units.as_credits()).ok_or(
                    TxError::InsufficientCredits {
                        account: *who,
                        need: units.0,
                        have: a.credits.0,
                    },
                )?;
                self.state.set_account(*who, a);
                let mut g = self.state.globals.clone();
                g.credits_outstanding = g
                    .credits_outstanding
                    .checked_sub(units.as_credits().0)
                    .ok_or(TxError::Overflow("credits"))?;
                self.state.set_globals(g);
                Ok(())
            }
        }
    }

    /// Gives back escrowed units to the customer.
    /// Returns `units` to `who` out of escrow: credits under `bme`, tokens under `direct`.
    pub(crate) fn refund(&mut self, who: &Address, units: PayUnits) -> Result<()> {
        if units == PayUnits::ZERO {
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
                .checked_add(units.as_credits().0)
                .ok_or(TxError::Overflow("credits"))?;
        }
        self.state.set_globals(g);
        match self.params.payment_model {
            PaymentModel::Direct => self.credit(who, units.as_tokens()),
            PaymentModel::Bme => {
                let mut a = self.state.account(who);
                a.credits = a
                    .credits
                    .checked_add(units.as_credits())
                    .ok_or(TxError::Overflow("credits"))?;
                self.state.set_account(*who, a);
                Ok(())
            }
        }
    }
}
