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
/// named, at their positions in its list for the round's epoch, `not checked` for the rest;
/// uptime 100 % for each; a CPU-class pass measured at the cores claimed.
pub fn results(
    ledger: &crate::Ledger,
    checker: &Address,
    round: u64,
    codes: &[(Address, cairn_primitives::ResultCode)],
) -> TxBody {
    let claimed = |d: &Address| {
        let cpu = ledger.device(d).filter(|d| {
            ledger
                .params()
                .classes
                .get(usize::from(d.class))
                .is_some_and(|c| c.kind == cairn_primitives::ClassKind::Cpu)
        });
        cpu.map_or(0, |d| u8::try_from(d.spec.cpu_cores).unwrap_or(u8::MAX))
    };
    let found: Vec<_> = codes
        .iter()
        .map(|(d, c)| {
            let pass = *c == cairn_primitives::ResultCode::Pass;
            (*d, *c, if pass { claimed(d) } else { 0 })
        })
        .collect();
    measured(ledger, checker, round, &found)
}

/// As [`results`], with each device's measured cores given (0 for none).
pub fn measured(
    ledger: &crate::Ledger,
    checker: &Address,
    round: u64,
    found: &[(Address, cairn_primitives::ResultCode, u8)],
) -> TxBody {
    use cairn_primitives::ResultCode;
    let epoch = ledger
        .round(round)
        .map_or(ledger.globals().epoch, |r| r.epoch);
    let list = ledger.devices_of(checker, epoch, 0, usize::MAX);
    let mut all = vec![ResultCode::NotChecked; list.len().max(1)];
    let mut cores = vec![0u8; all.len()];
    for (d, c, n) in found {
        if let Some(i) = list.iter().position(|x| x == d)
            && let (Some(slot), Some(m)) = (all.get_mut(i), cores.get_mut(i))
        {
            *slot = *c;
            *m = *n;
        }
    }
    if cores.iter().all(|n| *n == 0) {
        cores.clear();
    }
    TxBody::PostResults(cairn_primitives::PostResults {
        round,
        first: 0,
        count: u32::try_from(all.len()).unwrap_or(u32::MAX),
        codes: cairn_primitives::pack_codes(&all),
        uptime: vec![200; all.len()],
        cores,
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
