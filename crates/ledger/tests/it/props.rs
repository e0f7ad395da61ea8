use crate::fixture::{TOKEN, World};
use cairn_ledger::testing;
use cairn_ledger::{Event, Ledger, Settlement, TxError};
use cairn_primitives::Address;
use cairn_primitives::{
    Amount, BoundedString, JobSpec, OpenDeployment, PaymentModel, Resources, SignedTx, StateKey,
    TxBody,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

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
    /// Checker `.0` posts a result (0-3: not checked, pass, fail, no answer) for device `.1`
    /// in the latest round.
    /// Checker, device, result code, and the cores measured (sent with a pass).
    Results(usize, usize, u8, u8),
    /// Checkers `.0` and the next one both post code `.2` for device `.1` in the latest round
    /// (two transactions): enough to decide it.
    Quorum(usize, usize, u8),
    /// User `.0` disputes checker `.1`'s result for device `.2` in the latest round.
    Dispute(usize, usize, usize),
    /// Checker `.0` backs its result for device `.1` with the device's receipt (a forged
    /// one, signed by another key, when `.2`).
    Back(usize, usize, bool),
    /// User `.0` registers as a checker with a stake of `.1` whole tokens.
    RegisterChecker(usize, u64),
    /// Checker `.0` retires.
    RetireChecker(usize),
    Settle(usize, Vec<usize>),
    WrongNonce(usize),
    Overflow(usize),
    /// User `.0` proves device `.1` signed a wrong answer (a real lie when `.2`, else a
    /// proof of a right entry, which must fail).
    Slash(usize, usize, bool),
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
        (0..3usize, 0..4usize, 0..4u8, 1..12u8)
            .prop_map(|(c, d, code, n)| Op::Results(c, d, code, n)),
        (0..3usize, 0..2usize, 1..2u8, 1..12u8)
            .prop_map(|(c, d, code, n)| Op::Results(c, d, code, n)),
        (0..3usize, 0..2usize, 1..4u8, 1..12u8)
            .prop_map(|(c, d, code, n)| Op::Results(c, d, code, n)),
        (0..3usize, 0..4usize, 1..4u8).prop_map(|(c, d, code)| Op::Quorum(c, d, code)),
        (0..4usize, 0..3usize, 0..4usize).prop_map(|(u, c, d)| Op::Dispute(u, c, d)),
        (0..3usize, 0..4usize, any::<bool>()).prop_map(|(c, d, forged)| Op::Back(c, d, forged)),
        (0..4usize, 500..3_000u64).prop_map(|(u, s)| Op::RegisterChecker(u, s)),
        (0..3usize).prop_map(Op::RetireChecker),
        (0..4usize, prop::collection::vec(0..4usize, 0..4)).prop_map(|(a, d)| Op::Settle(a, d)),
        (0..4usize).prop_map(Op::WrongNonce),
        (0..4usize).prop_map(Op::Overflow),
        (0..4usize, 0..4usize, any::<bool>()).prop_map(|(a, d, lie)| Op::Slash(a, d, lie)),
    ]
}

/// `op` as a transaction for a block at time `ts`.
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
                max_price_per_hour: cairn_primitives::PayUnits(400),
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
        Op::Results(c, d, code, cores) => {
            let k = w.checkers[*c].clone();
            let round = w.ledger.globals().last_round;
            let code = cairn_primitives::ResultCode::from_bits(*code);
            // Every device here is of the CPU class: a pass names the cores measured, which
            // may be more or fewer than it claims.
            let n = if code == cairn_primitives::ResultCode::Pass {
                *cores
            } else {
                0
            };
            let found = [(w.devices[*d].address(), code, n)];
            let body = testing::measured(&w.ledger, &k.address(), round, &found);
            w.tx(&k, body)
        }
        Op::Quorum(..) => unreachable!("expanded by block_txs"),
        Op::Dispute(a, c, d) => w.tx(
            &u(*a),
            TxBody::DisputeResult {
                checker: w.checkers[*c].address(),
                device: w.devices[*d].address(),
                round: w.ledger.globals().last_round,
            },
        ),
        Op::Back(c, d, forged) => {
            let checker = w.checkers[*c].address();
            let device = w.devices[*d].address();
            let round = w.ledger.globals().last_round;
            let seed = w.ledger.round(round).map(|r| r.seed).unwrap_or_default();
            let what = cairn_primitives::ReceiptFor {
                checker,
                round,
                nonce: cairn_primitives::device_nonce(&seed, &device),
            };
            let signer = if *forged { &w.users[0] } else { &w.devices[*d] };
            let h = cairn_primitives::Hash([7; 32]);
            let receipt = cairn_primitives::Receipt::sign(signer, &chain, &what, h, h, h);
            w.tx(
                &w.checkers[*c].clone(),
                TxBody::BackResult {
                    device,
                    round,
                    receipt,
                },
            )
        }
        Op::RegisterChecker(a, stake) => w.tx(
            &u(*a),
            TxBody::RegisterChecker {
                endpoint: BoundedString::new("127.0.0.1:7200").unwrap(),
                stake: Amount::from_base(stake * TOKEN),
            },
        ),
        Op::RetireChecker(c) => w.tx(&w.checkers[*c].clone(), TxBody::RetireChecker),
        Op::Settle(a, devices) => w.tx(
            &u(*a),
            TxBody::SettleRewards {
                devices: devices.iter().map(|d| w.devices[*d].address()).collect(),
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
        Op::Slash(a, d, lie) => {
            use cairn_popw::{Challenge, fraud_proof, rows_root, sign_answer};
            let dev = &w.devices[*d];
            let nonce = [0x51; 32];
            let c = Challenge::new(nonce, 8).expect("an 8×8 challenge");
            let mut rows: Vec<Vec<i32>> = (0..8).map(|r| c.result_row(r)).collect();
            if *lie {
                rows[3][5] = rows[3][5].wrapping_add(1);
            }
            let sig = sign_answer(dev, &chain, &nonce, 8, &rows_root(&rows));
            w.tx(
                &u(*a),
                TxBody::SubmitFraudProof(fraud_proof(dev.address(), nonce, &rows, sig, 3, 5)),
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
    let mut bumps: std::collections::BTreeMap<cairn_primitives::Address, u64> = Default::default();
    let ops = ops.iter().flat_map(|op| match op {
        Op::Quorum(c, d, code) => vec![
            Op::Results(*c, *d, *code, (*c as u8) % 5 + 1),
            Op::Results((c + 1) % 3, *d, *code, (*c as u8) % 7 + 2),
        ],
        o => vec![o.clone()],
    });
    for op in &ops.collect::<Vec<_>>() {
        let t = to_tx(w, op);
        let sender = t.tx.sender_address();
        let bump = bumps.entry(sender).or_default();
        let mut tx = t.tx.clone();
        if !matches!(op, Op::WrongNonce(_)) {
            tx.nonce += *bump;
        }
        *bump += 1;
        let key = std::iter::once(&w.oracle)
            .chain(w.checkers.iter())
            .chain(w.users.iter())
            .chain(w.devices.iter())
            .find(|k| k.address() == sender)
            .unwrap();
        out.push(tx.sign(key, &w.genesis.chain_id));
    }
    out
}

/// Per (address, epoch): capacity and work paid to an owner, or (stake, 0) to a device pool.
type Paid = BTreeMap<(Address, u64), (u64, u64)>;

/// What each device is owed by a closed epoch, with its owner.
fn owed(w: &World) -> BTreeMap<Address, (Address, Settlement)> {
    w.devices
        .iter()
        .filter_map(|k| {
            let a = k.address();
            let s = w.ledger.pending_settlement(&a)?;
            Some((a, (w.ledger.device(&a)?.owner, s)))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_blocks(
        model in prop_oneof![Just(PaymentModel::Bme), Just(PaymentModel::Direct)],
        blocks in prop::collection::vec((prop::collection::vec(op(), 0..8), prop_oneof![0..2_000u64, 0..90_000u64]), 1..10),
    ) {
        // Rounds at the genesis rate (a few per epoch): whether a block starts one depends
        // on its seed and the time since its parent.
        // Short windows, so that disputes run out, and a slash from the second failed round.
        let mut w = World::with(model, |g| {
            g.checking.rounds_per_epoch = 4;
            g.checking.join_delay_secs = 0;
            g.checking.dispute_secs = 30;
            g.checking.slash_after_fails = 1;
            g.checking.checker_jail_strikes = 1;
        });
        let mut twin = Ledger::from_genesis(&w.genesis).unwrap();
        // Two verified devices from the start (so results, epoch rewards and their settlement
        // happen in most cases); the other two only if a random registration brings them.
        for (i, cores) in [(0, 4), (1, 8)] {
            let t = to_tx(&w, &Op::Register(i, i, cores, 100));
            let block = w.ledger.build_block(w.now() + 1, vec![t]);
            prop_assert_eq!(w.ledger.apply(&block).unwrap().results[0].error.clone(), None);
            twin.apply(&block).unwrap();
            // The next block starts a join round; two checkers pass the device in it.
            let round = w.ledger.globals().height + 1;
            let txs: Vec<SignedTx> = w.checkers[..2]
                .iter()
                .map(|k| {
                    let pass = [(w.devices[i].address(), cairn_primitives::ResultCode::Pass)];
                    w.tx(k, w.results(&k.address(), round, &pass))
                })
                .collect();
            let block = w.ledger.build_block(w.now() + 1, txs);
            let o = w.ledger.apply(&block).unwrap();
            prop_assert!(o.results.iter().all(|r| r.error.is_none()), "{:?}", o.results);
            twin.apply(&block).unwrap();
        }
        let mut applied: Vec<SignedTx> = Vec::new();
        for (ops, advance) in &blocks {
            let ts = w.now() + advance;
            let txs = block_txs(&w, ops);
            let block = w.ledger.build_block(ts, txs.clone());
            let owed_before = owed(&w);
            let closed_before = w.ledger.globals().epoch;
            let o = w.ledger.apply(&block).unwrap();
            // Determinism: a ledger built separately from the same genesis and fed the same
            // blocks reaches the same root, block after block, with the same results.
            let t = twin.apply(&block).unwrap();
            prop_assert_eq!(t.state_root, o.state_root);
            prop_assert_eq!(&t.results, &o.results);
            prop_assert_eq!(&t.changes, &o.changes);
            // What a device was shown as owed by an earlier epoch is exactly what it is paid
            // when it settles, and does not move until then. A device written in this block
            // was settled first, and may already be owed by an epoch that closed after that.
            let mut to_owners: Paid = BTreeMap::new();
            let mut to_pools: Paid = BTreeMap::new();
            for (dev, (owner, s)) in &owed_before {
                match w.ledger.pending_settlement(dev) {
                    Some(now) if now.epoch == s.epoch => {
                        prop_assert_eq!(now, *s, "owed to {} moved", dev)
                    }
                    later => {
                        prop_assert!(later.is_none_or(|l| l.epoch > s.epoch), "{:?}", later);
                        let e = to_owners.entry((*owner, s.epoch)).or_default();
                        *e = (e.0 + s.capacity.base(), e.1 + s.work.base());
                        to_pools.entry((*dev, s.epoch)).or_default().0 += s.stake.base();
                    }
                }
            }
            to_owners.retain(|_, v| *v != (0, 0));
            to_pools.retain(|_, v| *v != (0, 0));
            let (mut owners_paid, mut pools_paid): (Paid, Paid) = Default::default();
            for (_, e) in &o.events {
                match e {
                    Event::Reward { account, epoch, capacity, work, .. } if *epoch < closed_before => {
                        let x = owners_paid.entry((*account, *epoch)).or_default();
                        *x = (x.0 + capacity.base(), x.1 + work.base());
                    }
                    Event::StakingReward { device, epoch, amount } if *epoch < closed_before => {
                        pools_paid.entry((*device, *epoch)).or_default().0 += amount.base();
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(owners_paid, to_owners);
            prop_assert_eq!(pools_paid, to_pools);
            w.check_supply();
            prop_assert_eq!(w.ledger.check_invariants(), Ok(()));
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
        // The block itself may start a (join) round: its record and the globals.
        let keys: Vec<_> = o
            .changes
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k != &StateKey::Round(o.height).to_bytes())
            .collect();
        prop_assert_eq!(keys, vec![StateKey::Globals.to_bytes()]);
        w.check_supply();
    }
}
