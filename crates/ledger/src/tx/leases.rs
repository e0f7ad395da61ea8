//! Leases: settlement up to the last report, reports from the device key, expiry and
//! time-outs, and ending a lease with its refund.

use crate::events::Event;
use crate::tokenomics::{ceil_mul_div, floor_mul_div};
use crate::{Ledger, Result, TxError};
use cairn_primitives::{
    Address, Amount, DeploymentStatus, LeaseReportKind, LeaseState, PayUnits, PaymentModel, Usage,
};

pub(crate) const HOUR_MS: u64 = 3_600_000;

impl Ledger {
    /// Pays a lease for the time served up to `until` (capped at its end): credits consumed
    /// under `bme`, tokens to the provider less the burned protocol fee under `direct`. The
    /// amount due is computed from the start each time, so rounding never drifts, and never
    /// exceeds the deposit, so nothing is paid twice.
    pub(crate) fn settle_lease(&mut self, id: u64, until: u64) -> Result<()> {
        let mut l = self.state.lease_of(id)?;
        let until = until.min(l.end_ms).max(l.settled_ms);
        let served = until.saturating_sub(l.start_ms);
        let due = PayUnits(
            floor_mul_div(l.price_per_hour.0, served, HOUR_MS)
                .ok_or(TxError::Overflow("lease pay"))?,
        )
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
        if delta == PayUnits::ZERO {
            return Ok(());
        }
        let mut g = self.state.globals.clone();
        g.escrow = g
            .escrow
            .checked_sub(delta)
            .ok_or(TxError::Overflow("escrow"))?;
        self.state.set_globals(g);
        let mut d = self.settled_device(&device)?;
        // Work served, in payment units: the device's weight in the epoch's work pool.
        d.work = d
            .work
            .checked_add(delta.0)
            .ok_or(TxError::Overflow("work"))?;
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
            // The provider is paid in tokens; the protocol fee comes out of them, burned.
            let pay = delta.as_tokens().base();
            let fee = ceil_mul_div(pay, u64::from(self.params.protocol_fee_bps), 10_000)
                .ok_or(TxError::Overflow("protocol fee"))?
                .min(pay);
            self.credit(&owner, Amount::from_base(pay.saturating_sub(fee)))?; // fee ≤ pay
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
    pub(crate) fn end_lease_served(
        &mut self,
        id: u64,
        state: LeaseState,
        exit_code: Option<i32>,
        served_until: u64,
    ) -> Result<()> {
        self.settle_lease(id, served_until)?;
        let mut l = self.state.lease_of(id)?;
        if l.state != LeaseState::Active {
            return Err(TxError::LeaseNotActive(id));
        }
        let refund = l.deposit.saturating_sub(l.paid);
        l.state = state;
        l.exit_code = exit_code;
        l.deposit = l.paid;
        let (device, deployment, paid) = (l.device, l.deployment, l.paid);
        self.state.set_lease(id, l);
        let mut dep = self.state.deployment_of(deployment)?;
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
                d.standing.lease_ended_ms = self.cx.ts;
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

    pub(crate) fn expire_leases(&mut self, ts: u64) -> Result<()> {
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
    pub(crate) fn time_out_leases(&mut self, ts: u64) -> Result<()> {
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

    pub(crate) fn lease_report(
        &mut self,
        sender: Address,
        lease: u64,
        kind: &LeaseReportKind,
        usage: &Usage,
    ) -> Result<()> {
        let mut l = self.state.lease_of(lease)?;
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
}
