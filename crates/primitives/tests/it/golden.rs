//! Every wire and ledger type's encoding, pinned in `golden.txt`. Run with `CAIRN_BLESS=1` to
//! rewrite the file after a deliberate format change (and say why in the commit).

use cairn_primitives::wire::Encode;
use cairn_primitives::*;

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let k = Keypair::from_seed([1; 32]);
    let d = Keypair::from_seed([2; 32]);
    let a = Address([3; 32]);
    fn s<const N: usize>(x: &str) -> BoundedString<N> {
        BoundedString::new(x).unwrap()
    }
    let spec = DeviceSpec {
        gpu_count: 1,
        vram_mib: 24_576,
        cpu_cores: 16,
        ram_mib: 65_536,
    };
    let od = OpenDeployment {
        resources: Resources {
            classes: vec![s("RTX-4090")],
            min_vram_mib: 1,
            gpu_count: 1,
            cpu_cores: 2,
            ram_mib: 3,
        },
        replicas: 2,
        region: Some(s("eu-west")),
        duration_secs: 3600,
        max_price_per_hour: cairn_primitives::PayUnits(500),
        job: JobSpec {
            image: Some(s("busybox")),
            command: vec![s("echo"), s("hi")],
            env: vec![(s("K"), s("V"))],
            network: true,
        },
    };
    let bodies = vec![
        (
            "transfer",
            TxBody::Transfer {
                to: a,
                amount: Amount::from_base(5),
            },
        ),
        (
            "buy_credits",
            TxBody::BuyCredits {
                amount: Amount::from_base(6),
            },
        ),
        (
            "submit_price",
            TxBody::SubmitPrice {
                micro_usd_per_token: 7,
            },
        ),
        (
            "register_device",
            TxBody::RegisterDevice(RegisterDevice {
                device_key: d.public_key(),
                class: s("RTX-4090"),
                spec: spec.clone(),
                region: s("eu-west"),
                price_per_hour: cairn_primitives::PayUnits(100),
                pop: d.sign(b"ns", b"msg"),
            }),
        ),
        (
            "update_device",
            TxBody::UpdateDevice {
                device: a,
                price_per_hour: Some(cairn_primitives::PayUnits(9)),
                available: Some(false),
            },
        ),
        ("retire_device", TxBody::RetireDevice { device: a }),
        (
            "delegate",
            TxBody::Delegate {
                device: a,
                amount: Amount::from_base(10),
            },
        ),
        (
            "undelegate",
            TxBody::Undelegate {
                device: a,
                shares: 11,
            },
        ),
        ("open_deployment", TxBody::OpenDeployment(od.clone())),
        (
            "close_deployment",
            TxBody::CloseDeployment { deployment: 12 },
        ),
        (
            "extend_deployment",
            TxBody::ExtendDeployment {
                deployment: 12,
                extra_secs: 3600,
            },
        ),
        (
            "lease_report",
            TxBody::LeaseReport {
                lease: 13,
                kind: LeaseReportKind::Failed { reason: s("oom") },
                usage: Usage {
                    cpu_ms: 1,
                    gpu_ms: 2,
                    max_rss_mib: 3,
                    log_bytes: 4,
                },
            },
        ),
        (
            "post_results",
            TxBody::PostResults(PostResults {
                round: 14,
                first: 2,
                count: 5,
                codes: pack_codes(&[
                    ResultCode::Pass,
                    ResultCode::Fail,
                    ResultCode::NoAnswer,
                    ResultCode::NotChecked,
                    ResultCode::Pass,
                ]),
                uptime: vec![200, 199, 0, 255, 100],
                cores: vec![2, 0, 0, 0, 16],
            }),
        ),
        (
            "register_checker",
            TxBody::RegisterChecker {
                endpoint: s("checker.example:7100"),
                stake: Amount::from_base(1_000),
            },
        ),
        ("retire_checker", TxBody::RetireChecker),
        (
            "dispute_result",
            TxBody::DisputeResult {
                checker: Address([4; 32]),
                device: a,
                round: 15,
            },
        ),
        (
            "back_result",
            TxBody::BackResult {
                device: a,
                round: 15,
                receipt: Receipt::sign(
                    &d,
                    "cairn-golden",
                    &ReceiptFor {
                        checker: Address([4; 32]),
                        round: 15,
                        nonce: device_nonce(&Hash([5; 32]), &a),
                    },
                    Hash([6; 32]),
                    Hash([7; 32]),
                    Hash([8; 32]),
                ),
            },
        ),
        (
            "submit_fraud_proof",
            TxBody::SubmitFraudProof(FraudProof {
                device: a,
                nonce: Hash([4; 32]),
                n: 2,
                root: Hash([5; 32]),
                device_signature: d.sign(b"ns", b"x"),
                row: 1,
                values: vec![-1, 2],
                path: vec![Hash([6; 32])],
                col: 0,
            }),
        ),
        (
            "settle_rewards",
            TxBody::SettleRewards {
                devices: vec![a, Address([9; 32])],
            },
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = bodies
        .into_iter()
        .map(|(n, body)| {
            let tx = Tx {
                sender: k.public_key(),
                nonce: 1,
                fee: Amount::from_base(1000),
                body,
            }
            .sign(&k, "cairn-golden");
            (n, tx.encode().to_vec())
        })
        .collect();
    let block = Block::build(
        1,
        Hash([7; 32]),
        0,
        Hash([8; 32]),
        1_700_000_000_000,
        a,
        vec![],
    );
    out.push(("block", block.encode().to_vec()));
    out.push((
        "account",
        Account {
            balance: Amount::from_base(1),
            nonce: 2,
            credits: Credits(3),
        }
        .encode()
        .to_vec(),
    ));
    let device = Device {
        owner: a,
        class: 6,
        spec,
        region: s("eu-west"),
        price_per_hour: cairn_primitives::PayUnits(100),
        status: DeviceStatus::Active,
        available: true,
        reputation_ppm: 500_000,
        pool: StakePool {
            tokens: Amount::from_base(10),
            shares: 10,
        },
        required_stake: Amount::from_base(10),
        lease: Some(3),
        registered_ms: 4,
        tally_epoch: 6,
        tally_verdict: Verdict::Pass,
        tally_uptime: 199,
        work: 5,
        standing: Standing {
            status: CheckStatus::Verified,
            registered_height: 7,
            last_pass_epoch: Some(6),
            jailed_until_epoch: 0,
            fails: 0,
            round: 9,
            votes: {
                let mut v = Votes::default();
                v.push(Vote {
                    member: 4,
                    code: ResultCode::Pass,
                    uptime: 200,
                    cores: 3,
                });
                v
            },
            verdict: Verdict::Pending,
            lease_ended_ms: 10,
            cores: 3,
        },
    };
    out.push(("device", device.encode().to_vec()));
    let lease = Lease {
        deployment: 1,
        device: a,
        price_per_hour: cairn_primitives::PayUnits(2),
        start_ms: 3,
        end_ms: 4,
        settled_ms: 5,
        paid: cairn_primitives::PayUnits(6),
        deposit: cairn_primitives::PayUnits(7),
        state: LeaseState::Active,
        started: true,
        exit_code: Some(-1),
        usage: Usage::default(),
        last_seen_ms: 8,
        reason: Some(BoundedString::new("killed").unwrap()),
    };
    out.push(("lease", lease.encode().to_vec()));
    let dep = Deployment {
        owner: a,
        request: od,
        created_ms: 1,
        status: DeploymentStatus::Open,
        leases: vec![1, 2],
        deposit: cairn_primitives::PayUnits(3),
        paid: cairn_primitives::PayUnits(4),
        refunded: cairn_primitives::PayUnits(5),
    };
    out.push(("deployment", dep.encode().to_vec()));
    out.push(("globals", Globals::default().encode().to_vec()));
    out.push((
        "epoch_record",
        EpochRecord {
            epoch: 1,
            closed_at_height: 2,
            minted: Amount::from_base(3),
            burned: Amount::from_base(4),
            capacity: Amount::from_base(5),
            work: Amount::from_base(6),
            stakers: Amount::from_base(7),
            checkers: Amount::from_base(8),
            treasury: Amount::from_base(9),
            devices_rewarded: 10,
            capacity_pool: Amount::from_base(16),
            work_pool: Amount::from_base(17),
            stakers_pool: Amount::from_base(18),
            capacity_weight: 11 << 64,
            work_weight: 12,
            stake_weight: 13,
            unsettled: 14,
            unpaid: Amount::from_base(15),
        }
        .encode()
        .to_vec(),
    ));
    out.push((
        "checker",
        Checker {
            endpoint: s("127.0.0.1:7100"),
            stake: Amount::from_base(1),
            status: CheckerStatus::Jailed,
            since_epoch: 2,
            jailed_until_epoch: 3,
            strikes: 4,
            tally_epoch: 5,
            agreed: 6,
            posted: 7,
        }
        .encode()
        .to_vec(),
    ));
    out.push((
        "committee",
        Committee {
            seed: Hash([1; 32]),
            start_height: 2,
            members: vec![Member {
                checker: a,
                stake: Amount::from_base(3),
            }],
        }
        .encode()
        .to_vec(),
    ));
    out.push((
        "round",
        Round {
            epoch: 1,
            ts_ms: 2,
            seed: Hash([3; 32]),
            join: true,
            since_height: 4,
        }
        .encode()
        .to_vec(),
    ));
    out.push((
        "dispute",
        Dispute {
            by: a,
            opened_ms: 5,
        }
        .encode()
        .to_vec(),
    ));
    out.push((
        "unbonding",
        Unbonding {
            owner: a,
            amount: Amount::from_base(1),
            release_ms: 2,
        }
        .encode()
        .to_vec(),
    ));
    out
}

/// The first samples are signed transactions, one per kind.
const TX_SAMPLES: usize = 17;

#[test]
fn encodings_match_golden_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden.txt");
    let actual: String = samples()
        .into_iter()
        .map(|(n, b)| format!("{n} {}\n", hex::encode(b)))
        .collect();
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).expect("golden.txt exists (CAIRN_BLESS=1 writes it)");
    for (a, e) in actual.lines().zip(expected.lines()) {
        assert_eq!(
            a, e,
            "encoding changed; if deliberate, rerun with CAIRN_BLESS=1"
        );
    }
    assert_eq!(actual.lines().count(), expected.lines().count());
}

#[test]
fn every_golden_sample_decodes_back() {
    use cairn_primitives::wire::{Copying, DecodeExt};
    for (name, bytes) in samples().into_iter().take(TX_SAMPLES) {
        let tx = SignedTx::decode(Copying(&bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tx.encode().to_vec(), bytes, "{name}");
        assert!(tx.verify("cairn-golden"), "{name}");
    }
}
