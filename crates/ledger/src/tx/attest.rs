//! Attestations: checkers' verdicts on devices, per epoch.

use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::Address;

impl Ledger {
    pub(crate) fn attest(
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
}
