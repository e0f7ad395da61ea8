//! Builders for tests, benchmarks and examples: a genesis and signed transactions.

use cairn_primitives::{
    Address, Amount, BoundedString, DeviceClass, DeviceSpec, Emission, Fees, Genesis,
    GenesisAccount, Keypair, Oracle, PaymentModel, RegisterDevice, RewardSplit, SignedTx, Staking,
    Token, Tx, TxBody, device_pop_message, namespace,
};

/// Genesis time used by tests: 2023-11-14T22:13:20Z.
pub const TEST_GENESIS_MS: u64 = 1_700_000_000_000;
/// The minimum fee in tests.
pub const TEST_FEE: u64 = 1_000;

/// A test genesis: chain `cairn-test`, `bme` payments, 60-second epochs, the built-in catalog,
/// accounts funded with the given base units; the treasury is address `[0xee; 32]`.
pub fn genesis(accounts: &[(Address, u64)]) -> Genesis {
    Genesis {
        chain_id: "cairn-test".into(),
        genesis_time_ms: TEST_GENESIS_MS,
        payment_model: PaymentModel::Bme,
        epoch_secs: 60,
        lease_timeout_secs: 120,
        token: Token {
            symbol: "CAIRN".into(),
            decimals: 9,
            supply_cap: "800000000".into(),
        },
        emission: Emission {
            budget: "300000000".into(),
            epochs: 20 * 365 * 24 * 60,
            decay_per_epoch: "0.999999767639771000".into(),
            net_emission: false,
        },
        fees: Fees {
            min_fee: "0.000001".into(),
            protocol_fee_bps: 500,
        },
        rewards: RewardSplit {
            capacity_bps: 4000,
            work_bps: 3000,
            stakers_bps: 1500,
            checkers_bps: 500,
            treasury_bps: 1000,
        },
        treasury: Address([0xee; 32]),
        staking: Staking {
            min_stake: "100".into(),
            unbonding_secs: 120,
            slash_bps: 5000,
        },
        oracle: Oracle {
            keys: vec![],
            max_age_secs: 600,
        },
        validators: vec![],
        checkers: vec![],
        accounts: accounts
            .iter()
            .map(|(a, b)| GenesisAccount {
                address: *a,
                balance: Amount::from_base(*b).display(9),
            })
            .collect(),
        classes: DeviceClass::default_catalog(),
    }
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
        price_per_hour,
        pop,
    })
}

/// An active, available, unleased device record with `stake` bonded, for states built from
/// records (benchmarks and matching tests: registering a million devices through signed
/// transactions would measure signing, not the ledger).
pub fn device_record(
    owner: Address,
    class: cairn_primitives::ClassId,
    spec: DeviceSpec,
    region: &str,
    price_per_hour: u64,
    reputation_ppm: u32,
    stake: u64,
) -> cairn_primitives::Device {
    cairn_primitives::Device {
        owner,
        class,
        spec,
        region: BoundedString::new(region).unwrap_or_default(),
        price_per_hour,
        status: cairn_primitives::DeviceStatus::Active,
        available: true,
        reputation_ppm,
        pool: cairn_primitives::StakePool {
            tokens: Amount::from_base(stake),
            shares: stake,
        },
        required_stake: Amount::from_base(stake),
        lease: None,
        registered_ms: TEST_GENESIS_MS,
        tally_epoch: 0,
        attest_pass: 0,
        attest_fail: 0,
        uptime_ppm_sum: 0,
        work: 0,
        voters: Vec::new(),
    }
}

/// The stored records of a state holding `devices` (each bonded by its owner alone: one
/// delegation of `pool.shares`) and `accounts`, with a `Globals` record whose supply and stake
/// add up, at [`TEST_GENESIS_MS`]. Feed them to [`crate::Ledger::from_records`].
pub fn fleet_records(
    devices: impl IntoIterator<Item = (Address, cairn_primitives::Device)>,
    accounts: &[(Address, Amount)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    use cairn_primitives::{Account, Delegation, Globals, StateKey, StateValue};
    let mut records = Vec::new();
    let mut staked = 0u64;
    for (addr, d) in devices {
        staked = staked.saturating_add(d.pool.tokens.base());
        records.push((
            StateKey::Delegation(addr, d.owner).to_bytes(),
            StateValue::Delegation(Delegation {
                shares: d.pool.shares,
            })
            .encode_value(),
        ));
        records.push((
            StateKey::Device(addr).to_bytes(),
            StateValue::Device(d).encode_value(),
        ));
    }
    let mut supply = staked;
    for (a, balance) in accounts {
        supply = supply.saturating_add(balance.base());
        records.push((
            StateKey::Account(*a).to_bytes(),
            StateValue::Account(Account {
                balance: *balance,
                ..Account::default()
            })
            .encode_value(),
        ));
    }
    let g = Globals {
        supply: Amount::from_base(supply),
        staked: Amount::from_base(staked),
        last_timestamp_ms: TEST_GENESIS_MS,
        ..Globals::default()
    };
    records.push((
        StateKey::Globals.to_bytes(),
        StateValue::Globals(g).encode_value(),
    ));
    records
}
