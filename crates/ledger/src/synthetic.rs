//! States built from records rather than from signed transactions: what benchmarks and load
//! tests start from (registering a million devices through signed transactions would measure
//! signing, not the ledger). Feed [`fleet_records`] to [`crate::Ledger::from_records`] with a
//! genesis that starts no later than [`SYNTHETIC_TIME_MS`].

use cairn_primitives::{Address, Amount, BoundedString, DeviceSpec, PayUnits};

/// When a synthetic state's devices registered and its last block was: 2023-11-14T22:13:20Z.
pub const SYNTHETIC_TIME_MS: u64 = 1_700_000_000_000;

/// An active, available, unleased device record with `stake` bonded, verified in epoch 0
/// (registered at height 0, before any round), for states built from
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
    // A CPU-class spec has no GPU: its pass counted the cores it claims.
    let cores = if spec.gpu_count == 0 {
        spec.cpu_cores
    } else {
        0
    };
    cairn_primitives::Device {
        owner,
        class,
        spec,
        region: BoundedString::new(region).unwrap_or_default(),
        price_per_hour: PayUnits(price_per_hour),
        status: cairn_primitives::DeviceStatus::Active,
        available: true,
        reputation_ppm,
        pool: cairn_primitives::StakePool {
            tokens: Amount::from_base(stake),
            shares: stake,
        },
        required_stake: Amount::from_base(stake),
        lease: None,
        registered_ms: SYNTHETIC_TIME_MS,
        tally_epoch: 0,
        tally_verdict: cairn_primitives::Verdict::Pending,
        tally_uptime: 0,
        work: 0,
        standing: cairn_primitives::Standing {
            status: cairn_primitives::CheckStatus::Verified,
            last_pass_epoch: Some(0),
            cores,
            ..cairn_primitives::Standing::new(0)
        },
    }
}

/// The stored records of a state holding `devices` (each bonded by its owner alone: one
/// delegation of `pool.shares`) and `accounts`, with a `Globals` record whose supply and stake
/// add up, at [`SYNTHETIC_TIME_MS`]. Feed them to [`crate::Ledger::from_records`].
pub fn fleet_records(
    devices: impl IntoIterator<Item = (Address, cairn_primitives::Device)>,
    accounts: &[(Address, Amount)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    checked_fleet_records(devices, accounts, &[], None)
}

/// [`fleet_records`] with `checkers` (address, stake) staked and forming epoch 0's committee
/// (seed: SHA-256 of "synthetic"), and, when `round` is given, a regular round started at
/// that height (after every device registered) in epoch 0.
pub fn checked_fleet_records(
    devices: impl IntoIterator<Item = (Address, cairn_primitives::Device)>,
    accounts: &[(Address, Amount)],
    checkers: &[(Address, Amount)],
    round: Option<u64>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    use cairn_primitives::{Account, Delegation, Globals, StateKey, StateValue};
    let mut records = Vec::new();
    let mut staked = 0u64;
    if !checkers.is_empty() {
        let seed = cairn_primitives::sha256(&[b"synthetic"]);
        for (a, stake) in checkers {
            staked = staked.saturating_add(stake.base());
            records.push((
                StateKey::Checker(*a).to_bytes(),
                StateValue::Checker(cairn_primitives::Checker {
                    endpoint: BoundedString::new("127.0.0.1:7660").unwrap_or_default(),
                    stake: *stake,
                    status: cairn_primitives::CheckerStatus::Active,
                    since_epoch: 0,
                    jailed_until_epoch: 0,
                    strikes: 0,
                    tally_epoch: 0,
                    agreed: 0,
                    posted: 0,
                })
                .encode_value(),
            ));
        }
        let mut members: Vec<cairn_primitives::Member> = checkers
            .iter()
            .map(|(a, stake)| cairn_primitives::Member {
                checker: *a,
                stake: *stake,
            })
            .collect();
        members.sort_by_key(|m| m.checker);
        records.push((
            StateKey::Committee(0).to_bytes(),
            StateValue::Committee(cairn_primitives::Committee {
                seed,
                start_height: 0,
                members,
            })
            .encode_value(),
        ));
        if let Some(h) = round {
            records.push((
                StateKey::Round(h).to_bytes(),
                StateValue::Round(cairn_primitives::Round {
                    epoch: 0,
                    ts_ms: SYNTHETIC_TIME_MS,
                    seed: cairn_primitives::sha256(&[b"synthetic round"]),
                    join: false,
                    since_height: 0,
                })
                .encode_value(),
            ));
        }
    }
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
        last_timestamp_ms: SYNTHETIC_TIME_MS,
        height: round.unwrap_or(0),
        last_round: round.unwrap_or(0),
        ..Globals::default()
    };
    records.push((
        StateKey::Globals.to_bytes(),
        StateValue::Globals(g).encode_value(),
    ));
    records
}
