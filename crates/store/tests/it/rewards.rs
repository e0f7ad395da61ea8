use cairn_ledger::{Event, testing};
use cairn_primitives::{DeviceSpec, Keypair, ResultCode, TxBody, sha256};
use cairn_store::{Chain, Reward};

fn key(tag: &str) -> Keypair {
    Keypair::from_seed(sha256(&[tag.as_bytes()]).0)
}

/// An epoch's rewards are recorded per address as they are paid: the checker's at the close,
/// each device's (owner and stake pool) when it is settled, in whichever block that is; an
/// owner whose two devices settle in two blocks has their sum. It survives a reopen.
#[test]
fn epoch_rewards_are_indexed_by_address_and_survive_reopen() {
    let (owner, checker, anyone) = (key("owner"), key("checker"), key("anyone"));
    let devices = [key("device-a"), key("device-b")];
    let mut g = testing::genesis(&[
        (owner.address(), 1_000_000_000_000_000),
        (checker.address(), 1_000_000_000),
        (anyone.address(), 1_000_000_000),
    ]);
    g.checkers = vec![testing::genesis_checker(checker.address())];
    g.checking.join_delay_secs = 0;
    g.checking.min_round_gap_secs = 0;
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Chain::open(dir.path(), Some(&g)).unwrap();
    let spec = DeviceSpec {
        cpu_cores: 8,
        ram_mib: 8192,
        ..DeviceSpec::default()
    };
    let register = |n: u64, d: &Keypair| {
        let body = testing::register(
            &owner.address(),
            d,
            "CPU",
            spec.clone(),
            "eu-west",
            100,
            &g.chain_id,
        );
        testing::tx(&owner, n, body, &g.chain_id)
    };
    let settle = |n: u64, d: &Keypair| {
        let body = TxBody::SettleRewards {
            devices: vec![d.address()],
        };
        testing::tx(&anyone, n, body, &g.chain_id)
    };
    let t0 = g.genesis_time_ms;
    // The second block starts a join round for the devices the first registered, and the
    // lone checker passes both in it; the first block past the 60 s boundary closes epoch 0;
    // the next two settle one device each.
    let b = chain.ledger().build_block(
        t0 + 1_000,
        vec![register(0, &devices[0]), register(1, &devices[1])],
    );
    let mut events = chain.commit(&b).unwrap().events;
    let pass: Vec<_> = devices
        .iter()
        .map(|d| (d.address(), ResultCode::Pass))
        .collect();
    let results = testing::results(chain.ledger(), &checker.address(), 2, &pass);
    for (ts, txs) in [
        (
            t0 + 2_000,
            vec![testing::tx(&checker, 0, results, &g.chain_id)],
        ),
        (t0 + 61_000, vec![]),
        (t0 + 62_000, vec![settle(0, &devices[0])]),
        (t0 + 63_000, vec![settle(1, &devices[1])]),
    ] {
        let b = chain.ledger().build_block(ts, txs);
        let o = chain.commit(&b).unwrap();
        assert!(
            o.results.iter().all(|r| r.error.is_none()),
            "{:?}",
            o.results
        );
        events.extend(o.events);
    }
    let mut paid_owner = 0;
    let mut paid_pool = [0; 2];
    for (_, e) in &events {
        match e {
            Event::Reward {
                account, capacity, ..
            } if *account == owner.address() => paid_owner += capacity.base(),
            Event::StakingReward {
                device: d, amount, ..
            } => {
                let i = devices.iter().position(|x| x.address() == *d).unwrap();
                paid_pool[i] += amount.base();
            }
            _ => {}
        }
    }
    assert!(
        paid_owner > 0 && paid_pool.iter().all(|p| *p > 0),
        "the epoch paid: {events:?}"
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
    for (d, paid) in devices.iter().zip(paid_pool) {
        let r = chain.rewards(&d.address(), None, 10).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].staking, paid);
    }
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
