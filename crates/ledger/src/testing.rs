//! Builders for tests: a genesis and signed transactions (and, re-exported, the synthetic
//! state builders).

use cairn_primitives::{
    Address, Amount, BoundedString, DeviceSpec, Genesis, GenesisAccount, Keypair, RegisterDevice,
    SignedTx, Tx, TxBody, device_pop_message, namespace,
};

/// Genesis time used by tests: 2023-11-14T22:13:20Z.
pub const TEST_GENESIS_MS: u64 = 1_700_000_000_000;
/// The minimum fee in tests.
pub const TEST_FEE: u64 = 1_000;

/// A test genesis: chain `cairn-test`, `bme` payments, 60-second epochs, the built-in catalog,
/// accounts funded with the given base units; the treasury is address `[0xee; 32]`.
pub fn genesis(accounts: &[(Address, u64)]) -> Genesis {
    let mut g = Genesis::production("cairn-test", 60, TEST_GENESIS_MS);
    // Pinned rather than computed, so that the emission figures tests expect never move.
    g.emission.decay_per_epoch = "0.999999767639771000".into();
    g.treasury = Address([0xee; 32]);
    g.accounts = accounts
        .iter()
        .map(|(a, b)| GenesisAccount {
            address: *a,
            balance: Amount::from_base(*b).display(9),
        })
        .collect();
    g
}

/// A checker staked at genesis with the least stake the production genesis allows.
pub fn genesis_checker(address: Address) -> cairn_primitives::GenesisChecker {
    cairn_primitives::GenesisChecker {
        address,
        endpoint: "127.0.0.1:7100".into(),
        stake: "1000".into(),
    }
}

/// A `PostResults` from `checker` for the round started at `round`: `codes` for the devices
/// named, at their positions in its list for the round's epoch, `not checked` for the rest; uptime 100 %
/// for each.
pub fn results(
    ledger: &crate::Ledger,
    checker: &Address,
    round: u64,
    codes: &[(Address, cairn_primitives::ResultCode)],
) -> TxBody {
    use cairn_primitives::ResultCode;
    let epoch = ledger
        .round(round)
        .map_or(ledger.globals().epoch, |r| r.epoch);
    let list = ledger.devices_of(checker, epoch, 0, usize::MAX);
    let mut all = vec![ResultCode::NotChecked; list.len().max(1)];
    for (d, c) in codes {
        if let Some(i) = list.iter().position(|x| x == d)
            && let Some(slot) = all.get_mut(i)
        {
            *slot = *c;
        }
    }
    TxBody::PostResults(cairn_primitives::PostResults {
        round,
        first: 0,
        count: u32::try_from(all.len()).unwrap_or(u32::MAX),
        codes: cairn_primitives::pack_codes(&all),
        uptime: vec![200; all.len()],
    })
}

/// A signed transaction with the test fee.
pub fn tx(key: &Keypair, nonce: u64, body: TxBody, chain_id: &str) -> SignedTx {
    Tx {
        sender: key.public_key(),
        nonce,
        fee: Amount::from_base(TEST_FEE),
        body,
    }
    .sign(key, chain_id)
}

/// A `RegisterDevice` body for `device`, owned by `owner`, with the proof of possession.
pub fn register(
    owner: &Address,
    device: &Keypair,
    class: &str,
    spec: DeviceSpec,
    region: &str,
    price_per_hour: u64,
    chain_id: &str,
) -> TxBody {
    let pop = device.sign(
        &namespace("device-pop", chain_id),
        &device_pop_message(owner),
    );
    TxBody::RegisterDevice(RegisterDevice {
        device_key: device.public_key(),
        class: BoundedString::new(class).unwrap_or_default(),
        spec,
        region: BoundedString::new(region).unwrap_or_default(),
        price_per_hour: cairn_primitives::PayUnits(price_per_hour),
        pop,
    })
}

pub use crate::synthetic::{device_record, fleet_records};
