//! Devices: registration with proof of possession and bonded stake, updates, retirement.

use crate::events::Event;
use crate::state::is_marketable;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{
    Address, Amount, ClassId, ClassKind, Delegation, Device, DeviceStatus, PayUnits,
    RegisterDevice, StakePool, device_pop_message, namespace, verify_signature,
};

/// Reputation a new device starts with (ppm).
pub(crate) const INITIAL_REPUTATION_PPM: u32 = 500_000;

impl Ledger {
    /// The owner changes a device's price or availability.
    pub(crate) fn update_device(
        &mut self,
        sender: Address,
        device: &Address,
        price_per_hour: Option<PayUnits>,
        available: Option<bool>,
    ) -> Result<()> {
        let mut d = self.owned_device(&sender, device)?;
        if d.status != DeviceStatus::Active {
            return Err(TxError::DeviceNotActive(*device));
        }
        if price_per_hour.is_none() && available.is_none() {
            return Err(TxError::NothingToUpdate);
        }
        if let Some(p) = price_per_hour {
            if p == PayUnits::ZERO {
                return Err(TxError::ZeroPrice);
            }
            d.price_per_hour = p;
        }
        if let Some(a) = available {
            d.available = a;
        }
        self.state.set_device(*device, d);
        self.emit(Event::DeviceUpdated { device: *device });
        Ok(())
    }

    /// The sender's device, settled (see [`Ledger::settled_device`]).
    pub(crate) fn owned_device(&mut self, sender: &Address, device: &Address) -> Result<Device> {
        let owner = self
            .state
            .devices
            .get(device)
            .map(|d| d.owner)
            .ok_or(TxError::UnknownDevice(*device))?;
        if owner != *sender {
            return Err(TxError::NotDeviceOwner {
                device: *device,
                sender: *sender,
            });
        }
        self.settled_device(device)
    }

    /// The stake a device of `class` with `spec` must bond.
    pub fn required_stake(&self, class: ClassId, units: u64) -> Option<Amount> {
        let c = self.params.classes.get(usize::from(class))?;
        let per_unit = self
            .params
            .min_stake
            .mul_div_floor(u64::from(c.stake_multiplier_pct), 100)?;
        Amount::from_base(per_unit.base().checked_mul(units)?).into()
    }

    pub(crate) fn register_device(&mut self, sender: Address, r: &RegisterDevice) -> Result<()> {
        let device = Address::of(&r.device_key);
        if self.state.devices.contains_key(&device) {
            return Err(TxError::DeviceExists(device));
        }
        let (class_id, class) = self
            .params
            .class_by_name(r.class.as_str())
            .ok_or_else(|| TxError::UnknownClass(r.class.to_string()))?;
        let class = class.clone();
        let mismatch = |why: &'static str| TxError::SpecMismatch {
            class: class.name.clone(),
            why,
        };
        let units = match class.kind {
            ClassKind::Gpu => {
                if r.spec.gpu_count == 0 || r.spec.gpu_count > 16 {
                    return Err(mismatch("a GPU device has 1-16 GPUs"));
                }
                if r.spec.vram_mib > class.vram_mib
                    || r.spec.vram_mib < (class.vram_mib / 10).saturating_mul(9)
                {
                    return Err(mismatch(
                        "memory per GPU must be within 90-100% of the class's",
                    ));
                }
                u64::from(r.spec.gpu_count)
            }
            ClassKind::Cpu => {
                if r.spec.gpu_count != 0 {
                    return Err(mismatch("a CPU device has no GPUs"));
                }
                if r.spec.cpu_cores == 0 || r.spec.cpu_cores > 4096 {
                    return Err(mismatch("a CPU device has 1-4096 cores"));
                }
                u64::from(r.spec.cpu_cores)
            }
        };
        let region = r.region.as_str();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TxError::BadRegion);
        }
        if r.price_per_hour == PayUnits::ZERO {
            return Err(TxError::ZeroPrice);
        }
        if !verify_signature(
            &r.device_key,
            &namespace("device-pop", &self.params.chain_id),
            &device_pop_message(&sender),
            &r.pop,
        ) {
            return Err(TxError::BadProofOfPossession);
        }
        let stake = self
            .required_stake(class_id, units)
            .ok_or(TxError::Overflow("stake"))?;
        self.debit(&sender, stake)?;
        self.add_staked(stake)?;
        self.state.set_delegation(
            device,
            sender,
            Delegation {
                shares: stake.base(),
            },
        );
        self.state.set_device(
            device,
            Device {
                owner: sender,
                class: class_id,
                spec: r.spec.clone(),
                region: r.region.clone(),
                price_per_hour: r.price_per_hour,
                status: DeviceStatus::Active,
                available: true,
                reputation_ppm: INITIAL_REPUTATION_PPM,
                pool: StakePool {
                    tokens: stake,
                    shares: stake.base(),
                },
                required_stake: stake,
                lease: None,
                registered_ms: self.cx.ts,
                tally_epoch: self.state.globals.epoch,
                tally_verdict: cairn_primitives::Verdict::Pending,
                tally_uptime: 0,
                work: 0,
                standing: cairn_primitives::Standing::new(self.cx.height),
            },
        );
        let mut g = self.state.globals.clone();
        g.last_registration = self.cx.height;
        g.last_registration_ms = self.cx.ts;
        self.state.set_globals(g);
        self.emit(Event::DeviceRegistered {
            device,
            owner: sender,
            class: class.name,
            stake,
        });
        Ok(())
    }

    pub(crate) fn retire_device(&mut self, sender: Address, device: &Address) -> Result<()> {
        let mut d = self.owned_device(&sender, device)?;
        if d.status != DeviceStatus::Active {
            return Err(TxError::DeviceNotActive(*device));
        }
        if d.lease.is_some() {
            return Err(TxError::DeviceBusy(*device));
        }
        d.status = DeviceStatus::Retired;
        self.state.set_device(*device, d);
        let shares = self
            .state
            .delegations
            .get(&(*device, sender))
            .map_or(0, |x| x.shares);
        let unbonding = if shares > 0 {
            self.redeem(device, sender, shares)?
        } else {
            Amount::ZERO
        };
        self.emit(Event::DeviceRetired {
            device: *device,
            unbonding,
        });
        Ok(())
    }

    /// Whether a device can currently be matched.
    pub fn is_marketable(&self, device: &Address) -> bool {
        self.state.devices.get(device).is_some_and(is_marketable)
    }
}
