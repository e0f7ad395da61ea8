use crate::fixture::{TOKEN, World};
use cairn_ledger::testing;
use cairn_ledger::{Ledger, TxError};
use cairn_primitives::{
    Amount, BoundedString, JobSpec, OpenDeployment, PaymentModel, Resources, SignedTx, StateKey,
    TxBody,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Transfer(usize, usize, u64),
    BuyCredits(usize, u64),
    Price(u64),
    Register(usize, usize, u32, u64),
    Delegate(usize, usize, u64),
    Undelegate(usize, usize, u64),
    Retire(usize, usize),
    Open(usize, u16, u64),
    Close(usize, u64),
    Extend(usize, u64, u64),
    Finish(usize, u64),
    Attest(Vec<(usize, bool)>),
    WrongNonce(usize),
    Overflow(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..4usize, 0..200_000 * TOKEN).prop_map(|(a, b, c)| Op::Transfer(a, b, c)),
        (0..4usize, 0..10_000 * TOKEN).prop_map(|(a, b)| Op::BuyCredits(a, b)),
        (0..3_000_000u64).prop_map(Op::Price),
        (0..4usize, 0..4usize, 1..16u32, 1..500u64)
            .prop_map(|(a, b, c, d)| Op::Register(a, b, c, d)),
        (0..4usize, 0..4usize, 0..1_000 * TOKEN).prop_map(|(a, b, c)| Op::Delegate(a, b, c)),
        (0..4usize, 0..4usize, 0..2_000 * TOKEN).prop_map(|(a, b, c)| Op::Undelegate(a, b, c)),
        (0..4usize, 0..4usize).prop_map(|(a, b)| Op::Retire(a, b)),
        (0..4usize, 1..4u16, 60..7_200u64).prop_map(|(a, b, c)| Op::Open(a, b, c)),
        (0..4usize, 0..6u64).prop_map(|(a, b)| Op::Close(a, b)),
        (0..4usize, 0..6u64, 0..7200u64).prop_map(|(a, b, s)| Op::Extend(a, b, s)),
        (0..4usize, 0..8u64).prop_map(|(a, b)| Op::Finish(a, b)),
        prop::collection::vec((0..4usize, any::<bool>()), 1..4).prop_map(Op::Attest),
        (0..4usize).prop_map(Op::WrongNonce),
        (0..4usize).prop_map(Op::Overflow),
    ]
}

fn to_tx(w: &World, op: &Op) -> SignedTx {
    let chain = w.genesis.chain_id.clone();
    let u = |i: usize| w.users[i].clone();
    match op {
        Op::Transfer(a, b, amt) => w.tx(
            &u(*a),
            TxBody::Transfer {
                to: w.users[*b].address(),
                amount: Amount::from_base(*amt),
            },
        ),
        Op::BuyCredits(a, amt) => w.tx(
            &u(*a),
            TxBody::BuyCredits {
                amount: Amount::from_base(*amt),
            },
        ),
        Op::Price(p) => w.tx(
            &w.oracle,
            TxBody::SubmitPrice {
                micro_usd_per_token: *p,
            },
        ),
        Op::Register(o, d, cores, price) => w.tx(
            &u(*o),
            testing::register(
                &w.users[*o].address(),
                &w.devices[*d],
                "CPU",
                cairn_primitives::DeviceSpec {
                    gpu_count: 0,
                    vram_mib: 0,
                    cpu_cores: *cores,
                    ram_mib: 4096,
                },
                "eu-west",
                *price,
                &chain,
            ),
        ),
        Op::Delegate(a, d, amt) => w.tx(
            &u(*a),
            TxBody::Delegate {
                device: w.devices[*d].address(),
                amount: Amount::from_base(*amt),
            },
        ),
        Op::Undelegate(a, d, shares) => w.tx(
            &u(*a),
            TxBody::Undelegate {
                device: w.devices[*d].address(),
                shares: *shares,
            },
        ),
        Op::Retire(a, d) => w.tx(
            &u(*a),
            TxBody::RetireDevice {
                device: w.devices[*d].address(),
            },
        ),
        Op::Open(a, replicas, secs) => w.tx(
            &u(*a),
            TxBody::OpenDeployment(OpenDeployment {
                resources: Resources {
                    classes: vec![BoundedString::new("CPU").unwrap()],
                    ..Resources::default()
                },
                replicas: *replicas,
                region: None,
                duration_secs: *secs,
                max_price_per_hour: 400,
                job: JobSpec {
                    image: None,
                    command: vec![BoundedString::new("true").unwrap()],
                    env: vec![],
                    network: false,
                },
            }),
        ),
        Op::Close(a, dep) => w.tx(&u(*a), TxBody::CloseDeployment { deployment: *dep }),
        Op::Extend(a, dep, secs) => w.tx(
            &u(*a),
            TxBody::ExtendDeployment {
                deployment: *dep,
                extra_secs: *secs,
            },
        ),
        Op::Finish(d, lease) => w.tx(
            &w.devices[*d],
            TxBody::LeaseReport {
                lease: *lease,
                kind: cairn_primitives::LeaseReportKind::Finished { exit_code: 0 },
                usage: Default::default(),
            },
        ),
        Op::Attest(entries) => w.tx(
            &w.checker,
            TxBody::Attest {
                epoch: w.ledger.globals().epoch,
                entries: entries
                    .iter()
                    .map(|(d, pass)| cairn_primitives::AttestEntry {
                        device: w.devices[*d].address(),
                        passed: *pass,
                        uptime_ppm: 900_000,
                    })
                    .collect(),
            },
        ),
        Op::WrongNonce(a) => {
            let k = u(*a);
            let n = w.ledger.account(&k.address()).nonce + 5;
            testing::tx(
                &k,
                n,
                TxBody::Transfer {
                    to: w.users[0].address(),
                    amount: Amount::from_base(1),
                },
                &chain,
            )
        }
        Op::Overflow(a) => w.tx(
            &u(*a),
            TxBody::Transfer {
                to: w.users[0].address(),
                amount: Amount::MAX,
            },
        ),
    }
}

/// Several transactions per block need consecutive nonces: sign each against a scratch copy
/// of the nonces.
fn block_txs(w: &World, ops: &[Op]) -> Vec<SignedTx> {
    let mut out = Vec::new();
    let mut bumps: std::collections::HashMap<cairn_primitives::Address, u64> = Default::default();
    for op in ops {
        let t = to_tx(w, op);
        let sender = t.tx.sender_address();
        let bump = bumps.entry(sender).or_default();
        let mut tx = t.tx.clone();
        if !matches!(op, Op::WrongNonce(_)) {
            tx.nonce += *bump;
        }
        *bump += 1;
        let key = std::iter::once(&w.oracle)
            .chain([&w.checker])
            .chain(w.users.iter())
            .chain(w.devices.iter())
            .find(|k| k.address() == sender)
            .unwrap();
        out.push(tx.sign(key, &w.genesis.chain_id));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_blocks(
        model in prop_oneof![Just(PaymentModel::Bme), Just(PaymentModel::Direct)],
        blocks in prop::collection::vec((prop::collection::vec(op(), 0..8), 0..90_000u64), 1..10),
    ) {
        let mut w = World::new(model);
        let mut twin = Ledger::from_genesis(&w.genesis).unwrap();
        let mut applied: Vec<SignedTx> = Vec::new();
        for (ops, advance) in &blocks {
            let txs = block_txs(&w, ops);
            let block = w.ledger.build_block(w.now() + advance, txs.clone());
            let o = w.ledger.apply(&block).unwrap();
            // Determinism: a second ledger fed the same block reaches the same root.
            let o2 = twin.apply(&block).unwrap();
            prop_assert_eq!(o.state_root, o2.state_root);
            w.check_supply();
            let credits: u64 = w.users.iter().map(|k| w.ledger.account(&k.address()).credits.0).sum();
            prop_assert_eq!(credits, w.ledger.globals().credits_outstanding);
            for (t, r) in txs.iter().zip(&o.results) {
                if r.error.is_none() {
                    applied.push(t.clone());
                }
            }
        }
        // A replayed transaction is rejected, and an invalid transaction changes nothing
        // but the block's own bookkeeping (height, hash, time).
        let mut txs: Vec<SignedTx> = applied.iter().rev().take(3).cloned().collect();
        txs.push(to_tx(&w, &Op::WrongNonce(1)));
        txs.push(to_tx(&w, &Op::Overflow(2)));
        let o = w.block(0, txs.clone());
        for r in &o.results {
            prop_assert!(r.error.is_some(), "replayed or invalid tx applied: {:?}", r);
        }
        for (r, _) in o.results.iter().zip(txs.iter()).take(o.results.len() - 2) {
            let is_nonce = matches!(r.error, Some(TxError::BadNonce { .. }));
            prop_assert!(is_nonce);
        }
        let keys: Vec<_> = o.changes.iter().map(|(k, _)| k.clone()).collect();
        prop_assert_eq!(keys, vec![StateKey::Globals.to_bytes()]);
        w.check_supply();
    }
}
