use cairn_ledger::{Event, testing};
use cairn_primitives::{AttestEntry, DeviceSpec, Keypair, TxBody, sha256};
use cairn_store::{Chain, Reward};

fn key(tag: &str) -> Keypair {
    Keypair::from_seed(sha256(&[tag.as_bytes()]).0)
}

/// An epoch that pays an attested device's owner, its stake pool and its checker is recorded
/// per address, in the block's commit, and survives a reopen.
#[test]
fn epoch_rewards_are_indexed_by_address_and_survive_reopen() {
    let (owner, device, checker) = (key("owner"), key("device"), key("checker"));
    let mut g = testing::genesis(&[
        (owner.address(), 1_000_000_000_000_000),
        (checker.address(), 1_000_000_000),
    ]);
    g.checkers = vec![checker.address()];
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Chain::open(dir.path(), Some(&g)).unwrap();
    let spec = DeviceSpec {
        cpu_cores: 8,
        ram_mib: 8192,
        ..DeviceSpec::default()
    };
    let register = testing::register(
        &owner.address(),
        &device,
        "CPU",
        spec,
        "eu-west",
        100,
        &g.chain_id,
    );
    let attest = TxBody::Attest {
        epoch: 0,
        entries: vec![AttestEntry {
            device: device.address(),
            passed: true,
            uptime_ppm: 1_000_000,
        }],
    };
    let t0 = g.genesis_time_ms;
    for (ts, txs) in [
        (
            t0 + 1_000,
            vec![testing::tx(&owner, 0, register, &g.chain_id)],
        ),
        (
            t0 + 2_000,
            vec![testing::tx(&checker, 0, attest, &g.chain_id)],
        ),
    ] {
        let b = chain.ledger().build_block(ts, txs);
        let o = chain.commit(&b).unwrap();
        assert!(
            o.results.iter().all(|r| r.error.is_none()),
            "{:?}",
            o.results
        );
    }
    // The first block past the 60 s boundary closes epoch 0.
    let b = chain.ledger().build_block(t0 + 61_000, vec![]);
    let o = chain.commit(&b).unwrap();
    let mut paid_owner = 0;
    let mut paid_pool = 0;
    for (_, e) in &o.events {
        match e {
            Event::Reward {
                account, capacity, ..
            } if *account == owner.address() => paid_owner += capacity.base(),
            Event::StakingReward {
                device: d, amount, ..
            } if *d == device.address() => paid_pool += amount.base(),
            _ => {}
        }
    }
    assert!(
        paid_owner > 0 && paid_pool > 0,
        "the epoch paid: {:?}",
        o.events
    );
    drop(chain);
    let chain = Chain::open(dir.path(), None).unwrap();
    let r = chain.rewards(&owner.address(), None, 10).unwrap();
    assert_eq!(
        r,
        vec![Reward {
            epoch: 0,
            capacity: paid_owner,
            ..Reward::default()
        }]
    );
    let r = chain.rewards(&device.address(), None, 10).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].staking, paid_pool);
    let r = chain.rewards(&checker.address(), None, 10).unwrap();
    assert!(r[0].checkers > 0);
    // Paging: nothing before epoch 0; an address never paid has nothing.
    assert!(
        chain
            .rewards(&owner.address(), Some(0), 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        chain
            .rewards(&key("nobody").address(), None, 10)
            .unwrap()
            .is_empty()
    );
}
