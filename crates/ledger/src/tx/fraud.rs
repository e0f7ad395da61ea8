//! Fraud proofs: a wrong row of a signed proof-of-work answer slashes the device, and each
//! checker that passed that answer takes a strike.

use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{Address, ClassKind, Device, DeviceStatus, ResultCode, device_nonce};

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
        let passed = self.passes_convicted(&p.device, &d, &p.nonce.0);
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
        for checker in passed {
            self.penalize_checker(&checker)?;
        }
        Ok(())
    }

    /// The checkers that passed the answer a fraud proof for `table_nonce` convicts: those
    /// whose result for the device's latest round is a pass, when the proof's table is one of
    /// that round's challenge for this device (nonce = H(round seed, device), then one nonce
    /// per table of its class's challenge). An answer of an older round convicts the device
    /// only: its round's results are no longer kept.
    fn passes_convicted(
        &self,
        address: &Address,
        d: &Device,
        table_nonce: &[u8; 32],
    ) -> Vec<Address> {
        let Some(round) = self.state.rounds.get(&d.standing.round) else {
            return Vec::new();
        };
        let Some(class) = self.params.classes.get(usize::from(d.class)) else {
            return Vec::new();
        };
        let units = match class.kind {
            ClassKind::Gpu => u32::from(d.spec.gpu_count),
            ClassKind::Cpu => d.spec.cpu_cores,
        };
        let tables = cairn_popw::Params::for_class(class, units, d.spec.ram_mib).tables;
        let nonce = device_nonce(&round.seed, address);
        if !(0..tables).any(|k| cairn_popw::table_nonce(&nonce, k) == *table_nonce) {
            return Vec::new();
        }
        let Some(committee) = self.state.committee_of(round.epoch) else {
            return Vec::new();
        };
        d.standing
            .votes
            .as_slice()
            .iter()
            .filter(|v| v.code == ResultCode::Pass)
            .filter_map(|v| committee.members.get(usize::from(v.member)))
            .map(|m| m.checker)
            .collect()
    }
}
