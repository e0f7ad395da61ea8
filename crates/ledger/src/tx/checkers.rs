//! Checkers: registering and retiring them, each epoch's committee, disputes of their
//! results, and their penalties (docs/checkers.md).

use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{
    Address, Amount, BoundedString, Checker, CheckerStatus, Committee, Dispute, Member, Receipt,
    ReceiptFor, ResultCode, device_nonce,
};

/// Whether `s` is `host:port` with a port in 1-65535 and a non-empty host.
fn valid_endpoint(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && s.len() <= 128
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

impl Ledger {
    /// The genesis checkers and epoch 0's committee (at genesis: the stakes are minted into
    /// their bonds).
    pub(crate) fn genesis_checkers(&mut self) -> Result<()> {
        let checkers = self.params.checkers.clone();
        let mut staked = Amount::ZERO;
        for (address, endpoint, stake) in checkers {
            let endpoint = BoundedString::new(&endpoint).map_err(|_| TxError::BadEndpoint)?;
            self.state.set_checker(
                address,
                Checker {
                    endpoint,
                    stake,
                    status: CheckerStatus::Active,
                    since_epoch: 0,
                    jailed_until_epoch: 0,
                    strikes: 0,
                    tally_epoch: 0,
                    agreed: 0,
                    posted: 0,
                },
            );
            staked = staked
                .checked_add(stake)
                .ok_or(TxError::Overflow("checker stakes"))?;
        }
        if staked > Amount::ZERO {
            self.add_staked(staked)?;
        }
        let seed = crate::assign::round_seed(&self.params.genesis_hash);
        self.fix_committee(0, seed, 0);
        Ok(())
    }

    pub(crate) fn register_checker(
        &mut self,
        sender: Address,
        endpoint: &BoundedString<128>,
        stake: Amount,
    ) -> Result<()> {
        if self.state.checkers.contains_key(&sender) {
            return Err(TxError::CheckerExists(sender));
        }
        if !valid_endpoint(endpoint.as_str()) {
            return Err(TxError::BadEndpoint);
        }
        if stake < self.params.checking.min_stake {
            return Err(TxError::CheckerStakeBelowMinimum(
                self.params.checking.min_stake,
            ));
        }
        let serving = self
            .state
            .checkers
            .values()
            .filter(|c| c.status != CheckerStatus::Retired)
            .count();
        if serving >= cairn_primitives::MAX_COMMITTEE {
            return Err(TxError::TooManyCheckers(serving));
        }
        self.debit(&sender, stake)?;
        self.add_staked(stake)?;
        let since_epoch = self
            .state
            .globals
            .epoch
            .checked_add(1)
            .ok_or(TxError::Overflow("epoch"))?;
        self.state.set_checker(
            sender,
            Checker {
                endpoint: endpoint.clone(),
                stake,
                status: CheckerStatus::Active,
                since_epoch,
                jailed_until_epoch: 0,
                strikes: 0,
                tally_epoch: self.state.globals.epoch,
                agreed: 0,
                posted: 0,
            },
        );
        self.emit(Event::CheckerRegistered {
            checker: sender,
            stake,
            since_epoch,
        });
        Ok(())
    }

    pub(crate) fn retire_checker(&mut self, sender: Address) -> Result<()> {
        let mut c = self
            .state
            .checkers
            .get(&sender)
            .cloned()
            .ok_or(TxError::NotChecker(sender))?;
        if c.status == CheckerStatus::Retired {
            return Err(TxError::CheckerRetired(sender));
        }
        let stake = std::mem::take(&mut c.stake);
        c.status = CheckerStatus::Retired;
        self.state.set_checker(sender, c);
        if stake > Amount::ZERO {
            self.sub_staked(stake)?;
            self.start_unbonding(sender, stake)?;
        }
        self.emit(Event::CheckerRetired {
            checker: sender,
            unbonding: stake,
        });
        Ok(())
    }

    /// Fixes epoch `epoch`'s committee from the checkers eligible now (active since before
    /// it, or jailed with the jail over), drops the committees before the last one (results
    /// for the last epoch's rounds are still taken), and releases jailed checkers whose time
    /// is up.
    pub(crate) fn fix_committee(&mut self, epoch: u64, seed: cairn_primitives::Hash, start: u64) {
        let mut members = Vec::new();
        let mut released = Vec::new();
        for (a, c) in &self.state.checkers {
            let eligible = match c.status {
                CheckerStatus::Active => c.since_epoch <= epoch,
                CheckerStatus::Jailed => c.jailed_until_epoch <= epoch,
                CheckerStatus::Retired => false,
            };
            if eligible && c.stake > Amount::ZERO {
                members.push(Member {
                    checker: *a,
                    stake: c.stake,
                });
                if c.status == CheckerStatus::Jailed {
                    released.push(*a);
                }
            }
        }
        for a in released {
            if let Some(mut c) = self.state.checkers.get(&a).cloned() {
                c.status = CheckerStatus::Active;
                self.state.set_checker(a, c);
            }
        }
        // The committee of the epoch before stays: its rounds' results are taken in this one.
        let old: Vec<u64> = self
            .state
            .committees
            .range(..epoch.saturating_sub(1))
            .map(|(e, _)| *e)
            .collect();
        for e in old {
            self.state.set_committee(e, None);
        }
        self.state.set_committee(
            epoch,
            Some(Committee {
                seed,
                start_height: start,
                members,
            }),
        );
    }

    /// `DisputeResult`: asks `checker` to back its pass or fail for `device` in `round`.
    pub(crate) fn dispute_result(
        &mut self,
        sender: Address,
        checker: Address,
        device: Address,
        round: u64,
    ) -> Result<()> {
        let key = (checker, device, round);
        if self.state.disputes.contains_key(&key) {
            return Err(TxError::DisputeExists);
        }
        let d = self
            .state
            .devices
            .get(&device)
            .ok_or(TxError::UnknownDevice(device))?;
        let member = self.member_in_round(round, &checker);
        let disputable = d.standing.round == round
            && d.standing.votes.as_slice().iter().any(|v| {
                Some(v.member) == member && matches!(v.code, ResultCode::Pass | ResultCode::Fail)
            });
        if !disputable {
            return Err(TxError::NoSuchResult {
                checker,
                device,
                round,
            });
        }
        self.state.set_dispute(
            key,
            Some(Dispute {
                by: sender,
                opened_ms: self.cx.ts,
            }),
        );
        self.emit(Event::DisputeOpened {
            checker,
            device,
            round,
            by: sender,
        });
        Ok(())
    }

    /// `BackResult`: the checker shows the receipt the device signed for it in that round.
    pub(crate) fn back_result(
        &mut self,
        sender: Address,
        device: Address,
        round: u64,
        receipt: &Receipt,
    ) -> Result<()> {
        let key = (sender, device, round);
        if !self.state.disputes.contains_key(&key) {
            return Err(TxError::UnknownDispute(device));
        }
        let r = self
            .state
            .rounds
            .get(&round)
            .ok_or(TxError::UnknownRound(round))?;
        let what = ReceiptFor {
            checker: sender,
            round,
            nonce: device_nonce(&r.seed, &device),
        };
        let key_ok = device
            .public_key()
            .is_some_and(|k| receipt.verify(&k, &self.params.chain_id, &what));
        if !key_ok {
            return Err(TxError::BadReceipt);
        }
        self.state.set_dispute(key, None);
        self.emit(Event::ResultBacked {
            checker: sender,
            device,
            round,
        });
        Ok(())
    }

    /// Disputes whose window ended unanswered: each is a strike against its checker.
    pub(crate) fn expire_disputes(&mut self, ts: u64) -> Result<()> {
        let window = self.params.checking.dispute_ms;
        let due: Vec<(u64, Address, Address, u64)> = self
            .state
            .dispute_opened
            .iter()
            .take_while(|(opened, ..)| opened.saturating_add(window) <= ts)
            .copied()
            .collect();
        for (_, checker, device, round) in due {
            self.state.set_dispute((checker, device, round), None);
            self.penalize_checker(&checker)?;
        }
        Ok(())
    }

    /// A strike on evidence: the checker is jailed when its strikes reach the genesis limit,
    /// and each strike past it slashes its stake.
    pub(crate) fn penalize_checker(&mut self, checker: &Address) -> Result<()> {
        let Some(mut c) = self.state.checkers.get(checker).cloned() else {
            return Ok(());
        };
        let p = &self.params.checking;
        c.strikes = c.strikes.saturating_add(1);
        let mut jailed = false;
        let mut slashed = Amount::ZERO;
        if c.strikes >= p.checker_jail_strikes && c.status != CheckerStatus::Retired {
            c.status = CheckerStatus::Jailed;
            c.jailed_until_epoch = self
                .state
                .globals
                .epoch
                .saturating_add(1)
                .saturating_add(p.checker_jail_epochs);
            jailed = true;
        }
        if c.strikes > p.checker_jail_strikes {
            slashed = c
                .stake
                .mul_div_floor(u64::from(p.checker_slash_bps), 10_000)
                .ok_or(TxError::Overflow("checker slash"))?;
            c.stake = c
                .stake
                .checked_sub(slashed)
                .ok_or(TxError::Overflow("checker slash"))?;
        }
        let strikes = c.strikes;
        self.state.set_checker(*checker, c);
        if slashed > Amount::ZERO {
            self.sub_staked(slashed)?;
            self.burn_supply(slashed)?;
        }
        self.emit(Event::CheckerPenalized {
            checker: *checker,
            strikes,
            jailed,
            slashed,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_must_be_host_and_port() {
        for ok in ["127.0.0.1:7000", "checker.example:443", "[::1]:9"] {
            assert!(super::valid_endpoint(ok), "{ok}");
        }
        for bad in ["", "host", ":80", "host:0", "host:70000", "a b:1", "h:x"] {
            assert!(!super::valid_endpoint(bad), "{bad}");
        }
    }
}
