//! Deployments: quoting, matching, opening, extending and closing.

use crate::events::Event;
use crate::tokenomics::ceil_mul_div;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{
    Address, ClassId, ClassKind, Deployment, DeploymentStatus, Lease, LeaseState, OpenDeployment,
    PayUnits, Usage, sha256,
};

/// Most candidate devices one deployment may scan before matching gives up.
pub const MAX_MATCH_SCAN: usize = 100_000;
/// Most replicas in one deployment.
pub const MAX_REPLICAS: u16 = 64;
/// Longest deployment.
pub const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;

impl Ledger {
    /// The owner closes a deployment: its active leases end, paid to their last report.
    pub(crate) fn close_deployment(&mut self, sender: Address, deployment: u64) -> Result<()> {
        let dep = self.state.deployment_of(deployment)?;
        if dep.owner != sender {
            return Err(TxError::NotDeploymentOwner { deployment, sender });
        }
        if dep.status != DeploymentStatus::Open {
            return Err(TxError::DeploymentNotOpen(deployment));
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
        let mut dep = self.state.deployment_of(deployment)?;
        dep.status = DeploymentStatus::Closed;
        self.state.set_deployment(deployment, dep);
        self.emit(Event::DeploymentClosed { deployment });
        Ok(())
    }

    pub(crate) fn open_deployment(&mut self, sender: Address, o: &OpenDeployment) -> Result<()> {
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
            .try_fold(PayUnits::ZERO, |t, (_, _, d)| t.checked_add(*d))
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
            let id = first_lease
                .checked_add(i as u64)
                .ok_or(TxError::Overflow("lease id"))?;
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
                    paid: PayUnits::ZERO,
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
                paid: PayUnits::ZERO,
                refunded: PayUnits::ZERO,
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

    pub(crate) fn extend_deployment(
        &mut self,
        sender: Address,
        id: u64,
        extra_secs: u64,
    ) -> Result<()> {
        let mut dep = self.state.deployment_of(id)?;
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
        let mut total = PayUnits::ZERO;
        for lid in &dep.leases {
            let Some(l) = self.state.leases.get(lid) else {
                continue;
            };
            if l.state != LeaseState::Active {
                continue;
            }
            let add = PayUnits(
                ceil_mul_div(l.price_per_hour.0, extra_secs, 3600)
                    .ok_or(TxError::Overflow("deposit"))?,
            );
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
    pub fn quote(
        &self,
        o: &OpenDeployment,
        seed: Address,
    ) -> Result<Vec<(Address, PayUnits, PayUnits)>> {
        if o.replicas == 0 || o.replicas > MAX_REPLICAS {
            return Err(TxError::BadReplicas { max: MAX_REPLICAS });
        }
        if o.duration_secs == 0 || o.duration_secs > MAX_DURATION_SECS {
            return Err(TxError::BadDuration {
                max_secs: MAX_DURATION_SECS,
            });
        }
        if o.max_price_per_hour == PayUnits::ZERO {
            return Err(TxError::ZeroPrice);
        }
        let picked = self.match_deployment(o, seed)?;
        // Deposits: each lease holds its full price for the full duration, rounded up.
        picked
            .into_iter()
            .map(|a| {
                let price = self
                    .state
                    .devices
                    .get(&a)
                    .map_or(PayUnits::ZERO, |d| d.price_per_hour);
                let dep = PayUnits(
                    ceil_mul_div(price.0, o.duration_secs, 3600)
                        .ok_or(TxError::Overflow("deposit"))?,
                );
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
        // A verification lapses after the genesis number of epochs without a passing round.
        let epoch = self.state.globals.epoch;
        let lapse = self.params.checking.verified_epochs;
        let kinds = &self.state.class_weights;
        let (picked, scanned) = self.state.market.pick(
            &classes,
            o.region.as_ref(),
            o.max_price_per_hour,
            usize::from(o.replicas),
            seed,
            MAX_MATCH_SCAN,
            |a| {
                devices.get(a).is_some_and(|d| {
                    d.standing
                        .last_pass_epoch
                        .is_some_and(|e| e.saturating_add(lapse) >= epoch)
                        && d.spec.gpu_count >= r.gpu_count
                        && d.spec.vram_mib >= r.min_vram_mib
                        && crate::state::counted_cores(d, kinds) >= r.cpu_cores
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

    pub(crate) fn candidate_classes(&self, o: &OpenDeployment) -> Result<Vec<ClassId>> {
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
}
