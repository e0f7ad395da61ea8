use crate::fixture::{TOKEN, World, genesis_ms};
use cairn_ledger::{Event, TxError};
use cairn_primitives::{
    Amount, BoundedString, DeploymentStatus, JobSpec, LeaseState, OpenDeployment, PaymentModel,
    Resources, ResultCode, StateKey, TxBody,
};

fn open(replicas: u16, secs: u64, max: u64) -> TxBody {
    TxBody::OpenDeployment(OpenDeployment {
        resources: Resources {
            classes: vec![BoundedString::new("CPU").unwrap()],
            ..Resources::default()
        },
        replicas,
        region: None,
        duration_secs: secs,
        max_price_per_hour: cairn_primitives::PayUnits(max),
        job: JobSpec {
            image: None,
            command: vec![
                BoundedString::new("echo").unwrap(),
                BoundedString::new("hi").unwrap(),
            ],
            env: vec![],
            network: false,
        },
    })
}

#[test]
fn bme_deployment_is_escrowed_consumed_and_refunded_pro_rata() {
    let mut w = World::new(PaymentModel::Bme);
    w.register_cpu(0, 0, 4, 3600);
    let customer = w.users[1].clone();
    // No price yet: buying credits is refused with a clear error.
    assert!(matches!(
        w.run(
            &customer,
            TxBody::BuyCredits {
                amount: Amount::from_base(TOKEN)
            }
        ),
        Some(TxError::StalePrice { .. })
    ));
    let oracle = w.oracle.clone();
    assert_eq!(
        w.run(
            &oracle,
            TxBody::SubmitPrice {
                micro_usd_per_token: 2_000_000
            }
        ),
        None
    );
    // 10 tokens at $2 = $20 = 2,000,000 credits.
    assert_eq!(
        w.run(
            &customer,
            TxBody::BuyCredits {
                amount: Amount::from_base(10 * TOKEN)
            }
        ),
        None
    );
    assert_eq!(w.ledger.account(&customer.address()).credits.0, 2_000_000);
    // Not enough capacity: clear error, nothing escrowed.
    assert!(matches!(
        w.run(&customer, open(2, 3600, 5000)),
        Some(TxError::NotEnoughCapacity {
            wanted: 2,
            found: 1,
            ..
        })
    ));
    assert_eq!(w.ledger.account(&customer.address()).credits.0, 2_000_000);
    // One replica for an hour at 3600/h: deposit 3600 credits.
    assert_eq!(w.run(&customer, open(1, 3600, 5000)), None);
    assert_eq!(
        w.ledger.account(&customer.address()).credits.0,
        2_000_000 - 3600
    );
    let device = w.devices[0].address();
    assert!(
        !w.ledger.is_marketable(&device),
        "a leased device leaves the market"
    );
    // Booking it twice is impossible.
    assert!(matches!(
        w.run(&customer, open(1, 60, 5000)),
        Some(TxError::NotEnoughCapacity { .. })
    ));
    // 30 minutes later the customer closes: half is paid, half comes back.
    let lease = w.ledger.deployment(0).unwrap().leases[0];
    let start = w.ledger.lease(lease).unwrap().start_ms;
    let t = w.tx(&customer, TxBody::CloseDeployment { deployment: 0 });
    let advance = start + 1_800_000 - w.now();
    let o = w.block(advance, vec![t]);
    assert_eq!(o.results[0].error, None);
    let l = w.ledger.lease(lease).unwrap();
    assert_eq!(l.state, LeaseState::Closed);
    assert_eq!(l.paid, cairn_primitives::PayUnits(1800));
    let dep = w.ledger.deployment(0).unwrap();
    assert_eq!(dep.status, DeploymentStatus::Closed);
    assert_eq!(dep.paid.0 + dep.refunded.0, dep.deposit.0);
    assert_eq!(
        w.ledger.account(&customer.address()).credits.0,
        2_000_000 - 1800
    );
    assert_eq!(w.ledger.globals().escrow, cairn_primitives::PayUnits(0));
    assert!(w.ledger.is_marketable(&device));
    // Closing again is refused.
    assert!(matches!(
        w.run(&customer, TxBody::CloseDeployment { deployment: 0 }),
        Some(TxError::DeploymentNotOpen(0))
    ));
    w.check_supply();
}

#[test]
fn direct_payment_pays_the_provider_and_burns_the_fee() {
    let mut w = World::new(PaymentModel::Direct);
    w.register_cpu(0, 0, 2, 1_000_000);
    let provider = w.users[0].address();
    let customer = w.users[1].clone();
    let before = w.ledger.account(&provider).balance.base();
    assert_eq!(w.run(&customer, open(1, 60, 2_000_000)), None);
    // The lease runs out after 60 s: 1,000,000/h for a minute = 16,666 (floor); 5% burned.
    let o = w.block(61_000, vec![]);
    assert!(o.events.iter().any(|(_, e)| matches!(
        e,
        Event::LeaseEnded {
            state: LeaseState::Expired,
            ..
        }
    )));
    let paid = 16_666u64;
    let fee = (paid * 500).div_ceil(10_000);
    assert_eq!(
        w.ledger.account(&provider).balance.base(),
        before + paid - fee
    );
    // The minute also closed epoch 0, whose work pool owes the provider for serving: paid
    // when the device is next settled.
    let device = w.devices[0].address();
    let pending = w.ledger.pending_settlement(&device).expect("work owed");
    assert!(pending.work > Amount::ZERO, "{pending:?}");
    let anyone = w.users[2].clone();
    assert_eq!(
        w.run(
            &anyone,
            TxBody::SettleRewards {
                devices: vec![device]
            }
        ),
        None
    );
    assert_eq!(
        w.ledger.account(&provider).balance.base(),
        before + paid - fee + pending.capacity.base() + pending.work.base()
    );
    assert_eq!(w.ledger.pending_settlement(&device), None);
    let dep = w.ledger.deployment(0).unwrap();
    assert_eq!(dep.paid, cairn_primitives::PayUnits(paid));
    assert_eq!(dep.paid.0 + dep.refunded.0, dep.deposit.0);
    w.check_supply();
}

#[test]
fn lease_reports_come_from_the_device_key_only() {
    let mut w = World::new(PaymentModel::Direct);
    w.register_cpu(0, 0, 2, 100);
    let customer = w.users[1].clone();
    assert_eq!(w.run(&customer, open(1, 600, 1000)), None);
    let lease = w.ledger.deployment(0).unwrap().leases[0];
    let report = |code| TxBody::LeaseReport {
        lease,
        kind: cairn_primitives::LeaseReportKind::Finished { exit_code: code },
        usage: Default::default(),
    };
    let other = w.devices[1].clone();
    assert!(matches!(
        w.run(&other, report(0)),
        Some(TxError::NotLeaseDevice { .. })
    ));
    let dev = w.devices[0].clone();
    // The device holds no tokens: its owner pays the report's fee.
    assert_eq!(w.run(&dev, report(3)), None);
    assert_eq!(w.ledger.lease(lease).unwrap().exit_code, Some(3));
    assert!(matches!(
        w.run(&dev, report(0)),
        Some(TxError::LeaseNotActive(_))
    ));
    assert_eq!(w.ledger.lease(lease).unwrap().reason, None);
    // A failed lease keeps the reason its device gave, for the customer to read.
    assert_eq!(w.run(&customer, open(1, 600, 1000)), None);
    let second = w.ledger.deployment(1).unwrap().leases[0];
    let why = cairn_primitives::BoundedString::new("its output passed the log limit").unwrap();
    let failed = TxBody::LeaseReport {
        lease: second,
        kind: cairn_primitives::LeaseReportKind::Failed {
            reason: why.clone(),
        },
        usage: Default::default(),
    };
    assert_eq!(w.run(&dev, failed), None);
    let l = w.ledger.lease(second).unwrap();
    assert_eq!((l.state, l.reason.clone()), (LeaseState::Failed, Some(why)));
    w.check_supply();
}

/// Every minted token of the epoch is in its record at every moment: paid to devices so
/// far, to checkers, to the treasury, or still held for devices not yet settled.
fn assert_adds_up(r: &cairn_primitives::EpochRecord) {
    let sum: u64 = [
        r.capacity, r.work, r.stakers, r.checkers, r.treasury, r.unpaid,
    ]
    .iter()
    .map(|a| a.base())
    .sum();
    assert_eq!(
        sum,
        r.minted.base(),
        "every minted token is accounted for: {r:?}"
    );
}

#[test]
fn epoch_pays_verified_devices_stakers_checkers_and_treasury_exactly() {
    let mut w = World::new(PaymentModel::Bme);
    w.register_cpu(0, 0, 8, 100);
    w.register_cpu(1, 1, 4, 100);
    let checker = w.checker.clone();
    let (dev0, dev1) = (w.devices[0].address(), w.devices[1].address());
    // Both were verified when registered; device 1 then fails a round (two of its three
    // checkers say so): jailed, and its epoch's tally is a fail.
    let o = w.check(&[dev1], &[0, 1], ResultCode::Fail);
    assert!(
        o.results.iter().all(|r| r.error.is_none()),
        "{:?}",
        o.results
    );
    let d1 = w.ledger.device(&dev1).unwrap();
    assert_eq!(d1.standing.status, cairn_primitives::CheckStatus::Jailed);
    // One result per checker per device per round.
    let round = w.ledger.globals().last_round;
    let again = w.results(&checker.address(), round, &[(dev1, ResultCode::Fail)]);
    assert_eq!(w.run(&checker, again), Some(TxError::DuplicateResult(dev1)));
    let owner0 = w.users[0].address();
    let before = w.ledger.account(&owner0).balance;
    let pool0 = w.ledger.device(&dev0).unwrap().pool.tokens;
    let o = w.block(genesis_ms() + 60_000 - w.now(), vec![]);
    let rec = o
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::EpochClosed { record } => Some(record.clone()),
            _ => None,
        })
        .expect("epoch closed");
    assert!(rec.minted > Amount::ZERO);
    assert_adds_up(&rec);
    // Only the passing device earns capacity and stake; nobody served work, so that pool went
    // to the treasury at the close. The checker is paid at the close; the devices are owed.
    assert_eq!(rec.devices_rewarded, 1);
    assert!(rec.checkers > Amount::ZERO);
    assert_eq!(rec.work_pool, Amount::ZERO);
    assert!(rec.capacity_pool > Amount::ZERO && rec.stakers_pool > Amount::ZERO);
    assert_eq!(rec.unsettled, 2);
    assert_eq!(
        rec.unpaid.base(),
        rec.capacity_pool.base() + rec.stakers_pool.base()
    );
    assert_eq!(w.ledger.account(&owner0).balance, before);
    assert_eq!(w.ledger.device(&dev0).unwrap().reputation_ppm, 500_000);
    // What each device is owed: the lone verified device takes both pools (less a floor).
    let p0 = w.ledger.pending_settlement(&dev0).expect("dev0 owed");
    let p1 = w
        .ledger
        .pending_settlement(&dev1)
        .expect("dev1 settles too");
    assert!(p0.capacity.base() + 1 >= rec.capacity_pool.base(), "{p0:?}");
    assert!(p0.stake.base() + 1 >= rec.stakers_pool.base(), "{p0:?}");
    assert_eq!(
        (p1.capacity, p1.work, p1.stake),
        (Amount::ZERO, Amount::ZERO, Amount::ZERO)
    );
    assert!(p0.reputation_ppm > 500_000 && p1.reputation_ppm < 500_000);

    // Bad settlements are refused and change nothing.
    let anyone = w.users[2].clone();
    let settle = |devices| TxBody::SettleRewards { devices };
    assert_eq!(
        w.run(&anyone, settle(vec![])),
        Some(TxError::NothingToSettle)
    );
    assert_eq!(
        w.run(&anyone, settle(vec![dev0, dev0])),
        Some(TxError::DuplicateDevice(dev0))
    );
    let stranger = w.devices[3].address();
    assert_eq!(
        w.run(&anyone, settle(vec![dev0, stranger])),
        Some(TxError::UnknownDevice(stranger))
    );
    assert_eq!(w.ledger.pending_settlement(&dev0), Some(p0));
    // Device 0 settles through anyone's SettleRewards; device 1 through its own next
    // transaction (the owner reprices it).
    let o = w.block(1, vec![w.tx(&anyone, settle(vec![dev0]))]);
    assert_eq!(o.results[0].error, None);
    assert!(o.events.iter().any(|(_, e)| matches!(
        e,
        Event::Reward { account, epoch: 0, capacity, .. } if *account == owner0 && *capacity == p0.capacity
    )));
    assert_eq!(
        w.ledger.account(&owner0).balance,
        before.checked_add(p0.capacity).unwrap()
    );
    let d0 = w.ledger.device(&dev0).unwrap();
    assert_eq!(d0.pool.tokens, pool0.checked_add(p0.stake).unwrap());
    assert_eq!(d0.reputation_ppm, p0.reputation_ppm);
    assert_eq!(
        (d0.tally_verdict, d0.tally_epoch),
        (cairn_primitives::Verdict::Pending, 1)
    );
    assert_eq!(
        w.run(&anyone, settle(vec![dev0])),
        Some(TxError::NothingToSettle)
    );
    let mid = w.ledger.epoch(0).unwrap().clone();
    assert_eq!(mid.unsettled, 1);
    assert_adds_up(&mid);
    let owner1 = w.users[1].clone();
    let reprice = TxBody::UpdateDevice {
        device: dev1,
        price_per_hour: Some(cairn_primitives::PayUnits(150)),
        available: None,
    };
    assert_eq!(w.run(&owner1, reprice), None);
    let d1 = w.ledger.device(&dev1).unwrap();
    assert_eq!(d1.reputation_ppm, p1.reputation_ppm);
    assert_eq!(d1.price_per_hour, cairn_primitives::PayUnits(150));
    // Every device settled: what the floors left went to the treasury.
    let done = w.ledger.epoch(0).unwrap();
    assert_eq!((done.unsettled, done.unpaid), (0, Amount::ZERO));
    assert_eq!(done.capacity, p0.capacity);
    assert_eq!(done.stakers, p0.stake);
    assert_eq!(
        done.treasury.base(),
        rec.treasury.base() + rec.unpaid.base() - p0.capacity.base() - p0.stake.base()
    );
    assert_adds_up(done);
    w.ledger.check_invariants().unwrap();
    w.check_supply();
}

#[test]
fn retiring_unbonds_after_the_period() {
    let mut w = World::new(PaymentModel::Bme);
    w.register_cpu(0, 0, 2, 100);
    let owner = w.users[0].clone();
    let dev = w.devices[0].address();
    let bonded = w.ledger.device(&dev).unwrap().pool.tokens;
    assert_eq!(bonded.base(), 2 * 100 * TOKEN / 100);
    // The owner cannot pull the bond below the class minimum while active.
    assert!(matches!(
        w.run(
            &owner,
            TxBody::Undelegate {
                device: dev,
                shares: 1
            }
        ),
        Some(TxError::StakeBelowMinimum)
    ));
    let before = w.ledger.account(&owner.address()).balance;
    assert_eq!(w.run(&owner, TxBody::RetireDevice { device: dev }), None);
    assert_eq!(w.ledger.globals().unbonding, bonded);
    w.block(60_000, vec![]);
    assert_eq!(w.ledger.globals().unbonding, bonded, "still unbonding");
    w.block(61_000, vec![]);
    assert_eq!(w.ledger.globals().unbonding, Amount::ZERO);
    let fee = Amount::from_base(cairn_ledger::testing::TEST_FEE);
    assert_eq!(
        w.ledger.account(&owner.address()).balance,
        before
            .checked_add(bonded)
            .unwrap()
            .checked_sub(fee)
            .unwrap()
    );
    w.check_supply();
}

#[test]
fn registration_needs_the_device_keys_proof_of_possession() {
    let mut w = World::new(PaymentModel::Bme);
    let owner = w.users[0].clone();
    // The device key signed a different owner: refused.
    let body = cairn_ledger::testing::register(
        &w.users[1].address(),
        &w.devices[0],
        "CPU",
        cairn_primitives::DeviceSpec {
            gpu_count: 0,
            vram_mib: 0,
            cpu_cores: 2,
            ram_mib: 1,
        },
        "eu",
        10,
        &w.genesis.chain_id,
    );
    assert_eq!(w.run(&owner, body), Some(TxError::BadProofOfPossession));
    // A GPU class with the wrong memory: refused with the reason.
    let body = cairn_ledger::testing::register(
        &owner.address(),
        &w.devices[0],
        "H100-SXM",
        cairn_primitives::DeviceSpec {
            gpu_count: 1,
            vram_mib: 24_000,
            cpu_cores: 2,
            ram_mib: 1,
        },
        "eu",
        10,
        &w.genesis.chain_id,
    );
    assert!(matches!(
        w.run(&owner, body),
        Some(TxError::SpecMismatch { .. })
    ));
    assert!(matches!(
        w.run(
            &owner,
            TxBody::RetireDevice {
                device: w.devices[0].address()
            }
        ),
        Some(TxError::UnknownDevice(_))
    ));
}

#[test]
fn a_fraud_proof_slashes_the_device() {
    use cairn_popw::{Challenge, fraud_proof, rows_root, sign_answer};
    let mut w = World::new(PaymentModel::Bme);
    w.register_cpu(0, 0, 2, 100);
    let dev = w.devices[0].clone();
    let c = Challenge::new([4; 32], 8).unwrap();
    let mut rows: Vec<Vec<i32>> = (0..8).map(|r| c.result_row(r)).collect();
    rows[2][1] += 1; // The lie.
    let sig = sign_answer(&dev, &w.genesis.chain_id, &[4; 32], 8, &rows_root(&rows));
    let proof = fraud_proof(dev.address(), [4; 32], &rows, sig, 2, 1);
    let mut honest = proof.clone();
    honest.col = 0;
    let reporter = w.users[2].clone();
    // A proof of an entry that is right proves nothing, and says so.
    assert_eq!(
        w.run(&reporter, TxBody::SubmitFraudProof(honest)),
        Some(TxError::BadFraudProof(cairn_popw::FraudError::EntryCorrect))
    );
    let pool = w.ledger.device(&dev.address()).unwrap().pool.tokens;
    assert_eq!(w.run(&reporter, TxBody::SubmitFraudProof(proof)), None);
    let d = w.ledger.device(&dev.address()).unwrap();
    assert_eq!(d.status, cairn_primitives::DeviceStatus::Slashed);
    assert_eq!(d.pool.tokens.base(), pool.base() / 2);
    w.check_supply();
}

#[test]
fn state_proofs_verify_without_the_ledger() {
    let mut w = World::new(PaymentModel::Bme);
    w.register_cpu(0, 0, 2, 100);
    let root = w.ledger.state_root();
    let key = StateKey::Account(w.users[0].address());
    let p = w.ledger.prove(&key);
    p.verify(&root).unwrap();
    let acct: cairn_primitives::Account = {
        use cairn_primitives::wire::DecodeExt;
        cairn_primitives::Account::decode(cairn_primitives::wire::Copying(
            p.value.as_ref().unwrap(),
        ))
        .unwrap()
    };
    assert_eq!(acct, w.ledger.account(&w.users[0].address()));
    // A forged balance fails.
    let mut forged = p.clone();
    let mut v = forged.value.clone().unwrap();
    v[7] ^= 1;
    forged.value = Some(v);
    assert!(forged.verify(&root).is_err());
    // Absence: an address nobody has used.
    let none = w
        .ledger
        .prove(&StateKey::Account(cairn_primitives::Address([0x42; 32])));
    assert_eq!(none.value, None);
    none.verify(&root).unwrap();
}

fn report(lease: u64, kind: cairn_primitives::LeaseReportKind) -> TxBody {
    TxBody::LeaseReport {
        lease,
        kind,
        usage: cairn_primitives::Usage::default(),
    }
}

#[test]
fn a_silent_device_s_lease_times_out_paid_up_to_its_last_report() {
    use cairn_primitives::LeaseReportKind;
    let mut w = World::with(PaymentModel::Direct, |g| g.lease_timeout_secs = 120);
    w.register_cpu(0, 0, 2, 3_600_000);
    let customer = w.users[1].clone();
    let device = w.devices[0].clone();
    let before = w.ledger.account(&customer.address()).balance.base();
    assert_eq!(w.run(&customer, open(1, 3600, 3_600_000)), None);
    let lease = w.ledger.deployment(0).unwrap().leases[0];
    let start = w.ledger.lease(lease).unwrap().start_ms;
    // The device reports for a minute, then its worker dies.
    let t = w.tx(&device, report(lease, LeaseReportKind::Started));
    w.block(10_000, vec![t]);
    let t = w.tx(&device, report(lease, LeaseReportKind::Running));
    w.block(50_000, vec![t]);
    let seen = w.ledger.lease(lease).unwrap().last_seen_ms;
    assert_eq!(seen, start + 60_000);
    // Just inside the timeout nothing happens; past it the lease ends.
    w.block(119_000, vec![]);
    assert_eq!(w.ledger.lease(lease).unwrap().state, LeaseState::Active);
    let o = w.block(2_000, vec![]);
    assert!(o.events.iter().any(|(_, e)| matches!(
        e,
        Event::LeaseEnded {
            state: LeaseState::TimedOut,
            ..
        }
    )));
    let l = w.ledger.lease(lease).unwrap();
    assert_eq!(l.state, LeaseState::TimedOut);
    // Paid for the minute it showed it served (3,600,000 per hour → 60,000), not the silence.
    assert_eq!(l.paid, cairn_primitives::PayUnits(60_000));
    let dep = w.ledger.deployment(0).unwrap();
    assert_eq!(dep.status, DeploymentStatus::Finished);
    assert_eq!(dep.paid.0 + dep.refunded.0, dep.deposit.0);
    assert_eq!(w.ledger.globals().escrow, cairn_primitives::PayUnits(0));
    assert!(w.ledger.is_marketable(&device.address()));
    let fees = w.ledger.account(&customer.address()).nonce * w.ledger.params().min_fee.base();
    assert_eq!(
        w.ledger.account(&customer.address()).balance.base(),
        before - 60_000 - fees
    );
    // A late report from the restarted worker changes nothing.
    assert!(matches!(
        w.run(
            &device,
            report(lease, LeaseReportKind::Finished { exit_code: 0 })
        ),
        Some(TxError::LeaseNotActive(_))
    ));
    w.check_supply();
}

/// A job that never started (its sandbox could not be set up, its program could not be
/// executed) is the provider's failure: the customer pays nothing for it, however long the
/// device took to say so. A job that started and then failed is paid for its time.
#[test]
fn a_lease_that_failed_before_its_job_started_costs_nothing() {
    use cairn_primitives::LeaseReportKind;
    let mut w = World::new(PaymentModel::Direct);
    w.register_cpu(0, 0, 2, 3_600_000);
    let customer = w.users[1].clone();
    let device = w.devices[0].clone();
    let why = cairn_primitives::BoundedString::new("cannot run `nosuchcmd`").unwrap();
    let failed = |lease| {
        report(
            lease,
            LeaseReportKind::Failed {
                reason: why.clone(),
            },
        )
    };
    assert_eq!(w.run(&customer, open(1, 3600, 3_600_000)), None);
    let lease = w.ledger.deployment(0).unwrap().leases[0];
    let t = w.tx(&device, failed(lease));
    w.block(30_000, vec![t]);
    let l = w.ledger.lease(lease).unwrap();
    assert_eq!((l.state, l.paid.0), (LeaseState::Failed, 0));
    let dep = w.ledger.deployment(0).unwrap();
    assert_eq!((dep.paid.0, dep.refunded), (0, dep.deposit));
    // Started, then failed 30 s later: those 30 s are paid (3,600,000 per hour → 30,000).
    assert_eq!(w.run(&customer, open(1, 3600, 3_600_000)), None);
    let second = w.ledger.deployment(1).unwrap().leases[0];
    let t = w.tx(&device, report(second, LeaseReportKind::Started));
    w.block(0, vec![t]);
    let t = w.tx(&device, failed(second));
    w.block(30_000, vec![t]);
    let l = w.ledger.lease(second).unwrap();
    assert_eq!(l.state, LeaseState::Failed);
    assert!(l.paid >= cairn_primitives::PayUnits(30_000), "{}", l.paid);
    w.check_supply();
}

#[test]
fn extending_a_deployment_escrows_more_and_moves_its_end() {
    let mut w = World::new(PaymentModel::Direct);
    w.register_cpu(0, 0, 2, 3_600_000);
    let customer = w.users[1].clone();
    let stranger = w.users[2].clone();
    assert_eq!(w.run(&customer, open(1, 60, 3_600_000)), None);
    let lease = w.ledger.deployment(0).unwrap().leases[0];
    let end = w.ledger.lease(lease).unwrap().end_ms;
    let extend = |secs| TxBody::ExtendDeployment {
        deployment: 0,
        extra_secs: secs,
    };
    assert!(matches!(
        w.run(&stranger, extend(60)),
        Some(TxError::NotDeploymentOwner { .. })
    ));
    assert!(matches!(
        w.run(&customer, extend(0)),
        Some(TxError::BadDuration { .. })
    ));
    assert!(matches!(
        w.run(&customer, extend(u64::MAX)),
        Some(TxError::BadDuration { .. })
    ));
    let escrow = w.ledger.globals().escrow;
    assert_eq!(w.run(&customer, extend(120)), None);
    // 120 s more at 3,600,000 per hour: 120,000 escrowed.
    assert_eq!(w.ledger.globals().escrow.0, escrow.0 + 120_000);
    let l = w.ledger.lease(lease).unwrap();
    assert_eq!(l.end_ms, end + 120_000);
    assert_eq!(l.deposit, cairn_primitives::PayUnits(60_000 + 120_000));
    assert_eq!(w.ledger.deployment(0).unwrap().request.duration_secs, 180);
    // It runs to the new end, not the old one.
    w.block(end + 1_000 - w.now(), vec![]);
    assert_eq!(w.ledger.lease(lease).unwrap().state, LeaseState::Active);
    w.block(120_000, vec![]);
    let l = w.ledger.lease(lease).unwrap();
    assert_eq!(l.state, LeaseState::Expired);
    assert_eq!(l.paid, cairn_primitives::PayUnits(180_000));
    let dep = w.ledger.deployment(0).unwrap();
    assert_eq!(dep.paid.0 + dep.refunded.0, dep.deposit.0);
    assert_eq!(w.ledger.globals().escrow, cairn_primitives::PayUnits(0));
    assert!(matches!(
        w.run(&customer, extend(60)),
        Some(TxError::DeploymentNotOpen(0))
    ));
    w.check_supply();
}
