//! Fraud proofs: a wrong row of a signed proof-of-work answer slashes the device.

use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, DeviceStatus};

impl Ledger {
    pub(crate) fn fraud_proof(
        &mut self,
        sender: Address,
        p: &cairn_primitives::FraudProof,
    ) -> Result<()> {
        let mut d = self.settled_device(&p.device)?;
        if d.status == DeviceStatus::Slashed {
            return Err(TxError::DeviceNotActive(p.device));
        }
        // A key that is not a curve point signed nothing (registration checked a signature by
        // it, so this does not happen).
        let key = p
            .device
            .public_key()
            .ok_or(TxError::BadFraudProof(cairn_popw::FraudError::BadSignature))?;
        cairn_popw::verify_fraud_proof(&self.params.chain_id, &key, p)
            .map_err(TxError::BadFraudProof)?;
        // Slash: burn a share of the whole pool (owner and delegators alike); the reporter gets
        // nothing from the burn, so a provider cannot profit from reporting itself.
        let slash = d
            .pool
            .tokens
            .mul_div_floor(u64::from(self.params.slash_bps), 10_000)
            .ok_or(TxError::Overflow("slash"))?;
        d.pool.tokens = d
            .pool
            .tokens
            .checked_sub(slash)
            .ok_or(TxError::Overflow("slash"))?;
        d.status = DeviceStatus::Slashed;
        d.reputation_ppm = 0;
        self.state.set_device(p.device, d);
        self.sub_staked(slash)?;
        self.burn_supply(slash)?;
        self.emit(Event::Slashed {
            device: p.device,
            amount: slash,
            reporter: sender,
        });
        Ok(())
    }
}
