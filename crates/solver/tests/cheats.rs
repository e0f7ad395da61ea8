//! The honest CPU solver passes; each way of cheating is caught, by the phase that should
//! catch it.

use cairn_popw::{
    Answer, Challenge, Fault, Opening, Params, audit_requests, check_answer, check_audit,
    check_walk, fraud_proof_of, freivalds, row_digest, table_challenge, verify_fraud_proof,
    walk_with,
};
use cairn_primitives::{DeviceClass, Keypair};
use cairn_solver::{CpuSolver, Inputs, Prover, Solver, self_challenge};
use std::time::{Duration, Instant};

const CHAIN: &str = "cairn-test";

/// Tests that time real work against a deadline take turns, with each other and with those
/// of other test binaries (cargo nextest runs binaries side by side): on a 2-core machine
/// each would measure the other. An exclusive lock on one file in the temporary directory,
/// held until the returned file is dropped (docs/ARCHITECTURE.md, "Timed tests").
fn timed() -> std::fs::File {
    let path = std::env::temp_dir().join("cairn-timed-tests.lock");
    let file = std::fs::File::create(&path).expect("the timed tests' lock file");
    file.lock().expect("the timed tests' lock");
    file
}

/// Small, fast parameters: every row audited over every column.
fn small() -> Params {
    Params {
        n: 64,
        tables: 2,
        walk_chains: 4,
        walk_steps: 64,
        walk_rows: 4,
        audit_rows: 128,
        walk_checks: 8,
        audit_cols: 64,
        rounds: 16,
        compute_deadline: Duration::from_secs(30),
        walk_deadline: Duration::from_secs(30),
    }
}

/// A class of the built-in catalog.
fn class(name: &str) -> DeviceClass {
    DeviceClass::default_catalog()
        .into_iter()
        .find(|c| c.name == name)
        .expect("class in the catalog")
}

fn key() -> Keypair {
    Keypair::from_seed([7; 32])
}

/// What a device claims each table's result is.
type Tables = Vec<(Challenge, Vec<i32>)>;

/// The checker's whole verdict on a prover built from `tables`, as if it took `elapsed`.
fn judge(params: &Params, nonce: [u8; 32], tables: Tables, elapsed: Duration) -> Result<(), Fault> {
    let prover = Prover::from_values(nonce, params.clone(), tables).unwrap();
    let answer = prover.answer(&key(), CHAIN);
    check_answer(CHAIN, &key().public_key(), &nonce, params, &answer, elapsed)?;
    let walk_nonce = [9; 32];
    let digests = prover.walk(&walk_nonce).unwrap();
    check_walk(params, &digests, Duration::ZERO)?;
    audit(params, &prover, &answer, &walk_nonce, &digests)
}

fn audit(
    params: &Params,
    prover: &Prover,
    answer: &Answer,
    walk_nonce: &[u8; 32],
    digests: &[u64],
) -> Result<(), Fault> {
    let seed = [3; 32];
    let openings: Vec<Opening> = audit_requests(params, &seed, walk_nonce, &answer.roots, digests)
        .into_iter()
        .map(|(t, r, _)| prover.open(t, r).unwrap())
        .collect();
    check_audit(params, answer, walk_nonce, digests, &seed, &openings)
}

fn honest_tables(params: &Params, nonce: &[u8; 32]) -> Tables {
    (0..params.tables)
        .map(|k| {
            let c = table_challenge(nonce, k, params.n).unwrap();
            let v = CpuSolver.solve(&c).unwrap();
            (c, v)
        })
        .collect()
}

/// Table `k` of `tables` after `f` changed its values (the prover commits to them as they are).
fn tampered(mut tables: Tables, k: usize, f: impl FnOnce(&mut Vec<i32>, usize)) -> Tables {
    let n = tables[k].0.n as usize;
    f(&mut tables[k].1, n);
    tables
}

#[test]
fn the_honest_cpu_solver_passes() {
    let _turn = timed();
    let p = small();
    let nonce = [1; 32];
    assert_eq!(
        judge(
            &p,
            nonce,
            honest_tables(&p, &nonce),
            Duration::from_millis(1)
        ),
        Ok(())
    );
    // And the whole protocol at the CPU class's own size, timed for real.
    let cpu = class("CPU");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let params = Params::for_class(&cpu, cores, 2048);
    assert_eq!(params.tables, cores.saturating_mul(4).min(1024));
    let r = self_challenge(&CpuSolver, params.clone(), [2; 32], |_, _| {}).unwrap();
    assert_eq!(r.verdict, Ok(()), "{r:?}");
    // The cores its time shows: at least one for an answer within the deadline, never more
    // than claimed, whatever the machine's speed.
    let measured = cairn_popw::measured_cores(&cpu, &params, r.solve, cores);
    assert!((1..=cores).contains(&u32::from(measured)), "{measured}");
}

#[test]
fn an_honest_walk_passes_when_checks_draw_the_same_step_twice() {
    // Eight walk checks over two steps: the draws must repeat.
    let p = Params {
        walk_chains: 1,
        walk_steps: 2,
        walk_checks: 8,
        ..small()
    };
    let nonce = [5; 32];
    assert_eq!(
        judge(&p, nonce, honest_tables(&p, &nonce), Duration::ZERO),
        Ok(())
    );
}

#[test]
fn one_wrong_entry_is_caught_and_becomes_a_fraud_proof_anyone_can_check() {
    let p = small();
    let nonce = [1; 32];
    let tables = tampered(honest_tables(&p, &nonce), 1, |v, n| v[37 * n + 11] += 1);
    assert_eq!(
        judge(&p, nonce, tables.clone(), Duration::ZERO),
        Err(Fault::WrongRow {
            table: 1,
            row: 37,
            col: 11
        })
    );
    // The checker's side: the opening it was sent, the signed answer, and the entry the audit
    // located make a proof the ledger checks in O(n), with nothing else.
    let prover = Prover::from_values(nonce, p.clone(), tables).unwrap();
    let answer = prover.answer(&key(), CHAIN);
    let opening = prover.open(1, 37).unwrap();
    let device = key().address();
    let proof = fraud_proof_of(device, &answer, &opening, 11).unwrap();
    assert_eq!(
        verify_fraud_proof(CHAIN, &key().public_key(), &proof),
        Ok(())
    );
    // A proof naming a right entry of the same row proves nothing.
    let right = fraud_proof_of(device, &answer, &opening, 12).unwrap();
    assert_eq!(
        verify_fraud_proof(CHAIN, &key().public_key(), &right),
        Err(cairn_popw::FraudError::EntryCorrect)
    );
}

#[test]
fn skipping_a_fraction_of_rows_is_caught() {
    let p = small();
    let nonce = [1; 32];
    // The last quarter of every table's rows left at zero.
    let mut tables = honest_tables(&p, &nonce);
    for k in 0..tables.len() {
        tables = tampered(tables, k, |v, n| v[n * n * 3 / 4..].fill(0));
    }
    assert!(matches!(
        judge(&p, nonce, tables, Duration::ZERO),
        Err(Fault::WrongRow { .. })
    ));
}

#[test]
fn an_answer_for_another_nonce_is_caught() {
    let p = small();
    let nonce = [1; 32];
    // Tables computed for nonce [2; 32], committed and signed as the answer to [1; 32].
    let other = honest_tables(&p, &[2; 32]);
    let relabeled: Tables = other
        .into_iter()
        .enumerate()
        .map(|(k, (_, v))| (table_challenge(&nonce, k as u32, p.n).unwrap(), v))
        .collect();
    assert!(matches!(
        judge(&p, nonce, relabeled, Duration::ZERO),
        Err(Fault::WrongRow { .. })
    ));
    // Or answered under the other nonce outright.
    let prover = Prover::from_values([2; 32], p.clone(), honest_tables(&p, &[2; 32])).unwrap();
    let answer = prover.answer(&key(), CHAIN);
    assert_eq!(
        check_answer(
            CHAIN,
            &key().public_key(),
            &nonce,
            &p,
            &answer,
            Duration::ZERO
        ),
        Err(Fault::WrongNonce)
    );
}

#[test]
fn an_answer_without_the_shuffle_is_caught() {
    let p = small();
    let nonce = [1; 32];
    let tables: Tables = (0..p.tables)
        .map(|k| {
            let c = table_challenge(&nonce, k, p.n).unwrap();
            let n = p.n as usize;
            // A·B with A's rows in their natural order.
            let mut inp = Inputs::of(&c);
            inp.a = c.a_matrix();
            let v = cairn_solver::product(&inp);
            assert_eq!(v.len(), n * n);
            (c, v)
        })
        .collect();
    assert!(matches!(
        judge(&p, nonce, tables, Duration::ZERO),
        Err(Fault::WrongRow { .. })
    ));
}

#[test]
fn an_answer_after_the_deadline_is_caught() {
    let p = small();
    let nonce = [1; 32];
    let late = p.compute_deadline + Duration::from_millis(1);
    assert!(matches!(
        judge(&p, nonce, honest_tables(&p, &nonce), late),
        Err(Fault::Late {
            phase: "compute",
            ..
        })
    ));
}

#[test]
fn claiming_a_faster_class_than_the_machine_is_caught() {
    let _turn = timed();
    // This machine's cores claimed as an RTX 3050: the smallest GPU challenge is far more
    // work than a CPU finishes by that class's deadline. The checker stops waiting at the
    // deadline; one table of it already takes longer.
    let gpu = class("RTX-3050");
    let claimed = Params::for_class(&gpu, 1, 0);
    let one_table = Params {
        tables: 1,
        n: 4096,
        ..claimed.clone()
    };
    let start = Instant::now();
    let c = table_challenge(&[1; 32], 0, one_table.n).unwrap();
    let _ = CpuSolver.solve(&c).unwrap();
    // One 4096² table is 1/64 of one 16384² table; the class must finish `tables` of those.
    let projected = start.elapsed().as_secs_f64() * 64.0 * f64::from(claimed.tables);
    assert!(
        projected > claimed.compute_deadline.as_secs_f64() * 10.0,
        "a CPU would finish an RTX 3050's challenge in {projected:.1} s; its deadline is {:?}",
        claimed.compute_deadline
    );
    // And the CPU class claiming 64 times this machine's cores misses its deadline: its
    // tables grow with the claim (four per core) while the deadline stays that of 0.1 of the
    // class's per-core rate. Eight of its tables, computed for real under an eighth of the
    // deadline (less the network allowance), are already late.
    let cpu = class("CPU");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let claimed = Params::for_class(&cpu, cores * 64, 16_384);
    assert_eq!(claimed.tables, (cores * 256).min(1024));
    let share = f64::from(claimed.tables) / 8.0;
    let eight = Params::for_class(&cpu, 2, 16_384);
    assert_eq!(eight.tables, 8);
    let params = Params {
        compute_deadline: cairn_popw::NETWORK_ALLOWANCE
            + (claimed.compute_deadline - cairn_popw::NETWORK_ALLOWANCE).div_f64(share),
        ..eight
    };
    let r = self_challenge(&CpuSolver, params, [2; 32], |_, _| {}).unwrap();
    assert!(
        matches!(
            r.verdict,
            Err(Fault::Late {
                phase: "compute",
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn tables_not_retained_are_caught() {
    let _turn = timed();
    // The CPU class's real size (n = 2048), one table: a cheater who keeps only the inputs
    // must recompute each run the walk reads (16 rows of n² multiply-adds) and misses the
    // memory deadline.
    let cpu = class("CPU");
    let p = Params {
        tables: 1,
        ..Params::for_class(&cpu, 1, 2048)
    };
    let nonce = [1; 32];
    let c = table_challenge(&nonce, 0, p.n).unwrap();
    let inputs = Inputs::of(&c);
    let values = cairn_solver::product(&inputs);
    let prover = Prover::from_values(nonce, p.clone(), vec![(c, values.clone())]).unwrap();
    let roots = [prover.tables[0].root];
    let walk_nonce = [9; 32];
    let n = p.n as usize;
    let len = n * p.walk_rows as usize;
    let start = Instant::now();
    let recompute = |_: u32, first: u32| {
        // The checker stops waiting at the deadline; so does the cheater.
        if start.elapsed() > p.walk_deadline {
            return 0;
        }
        let run: Vec<i32> = (first..first + p.walk_rows)
            .flat_map(|r| {
                let a = &inputs.a[r as usize * n..(r as usize + 1) * n];
                inputs
                    .bt
                    .chunks(n)
                    .map(|b| {
                        a.iter()
                            .zip(b)
                            .map(|(x, y)| i32::from(*x) * i32::from(*y))
                            .sum::<i32>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        row_digest(&run)
    };
    let digests = walk_with(&p, &walk_nonce, &roots, recompute);
    let elapsed = start.elapsed();
    assert!(
        matches!(
            check_walk(&p, &digests, elapsed),
            Err(Fault::Late {
                phase: "memory",
                ..
            })
        ),
        "recomputing rows took {elapsed:?}; the deadline is {:?}",
        p.walk_deadline
    );
    // The honest walk over the retained table is well inside it.
    let start = Instant::now();
    let honest = prover.walk(&walk_nonce).unwrap();
    assert_eq!(check_walk(&p, &honest, start.elapsed()), Ok(()));
    let reference = walk_with(&p, &walk_nonce, &roots, |_, first| {
        let first = first as usize * n;
        row_digest(&values[first..first + len])
    });
    assert_eq!(honest, reference);
    let honest_prefix = digests.iter().take_while(|d| **d != 0).count();
    assert!(honest_prefix > 0);
    assert_eq!(
        honest[..honest_prefix],
        digests[..honest_prefix],
        "same rows, same digests: only time tells them apart"
    );
    // A walk over tables that were not kept, with made-up digests, fails the audit.
    let answer = prover.answer(&key(), CHAIN);
    let forged: Vec<u64> = honest.iter().map(|d| d ^ 1).collect();
    assert!(matches!(
        audit(&p, &prover, &answer, &walk_nonce, &forged),
        Err(Fault::WalkDigest(_))
    ));
}

#[test]
fn freivalds_false_accepts_stay_within_the_bound() {
    // One wrong entry, one opened row, one round with a fresh 0/1 vector each trial: the
    // wrong row passes exactly when the vector skips the wrong column, at most ½ of the time.
    let n = 16;
    let c = table_challenge(&[4; 32], 0, n).unwrap();
    let mut row = c.result_row(5);
    row[3] += 1;
    let o = Opening {
        table: 0,
        row: 5,
        values: row,
        path: vec![],
    };
    for rounds in [1u32, 2, 3] {
        let trials = 4_000;
        let accepted = (0..trials)
            .filter(|i| {
                let mut seed = [0u8; 32];
                seed[..8]
                    .copy_from_slice(&(*i as u64 + 1_000_000 * u64::from(rounds)).to_le_bytes());
                freivalds(&c, &[&o], n, rounds, &seed).is_ok()
            })
            .count();
        let rate = accepted as f64 / f64::from(trials);
        let bound = 0.5f64.powi(rounds as i32);
        // Three standard deviations of a binomial at the bound.
        let slack = 3.0 * (bound * (1.0 - bound) / f64::from(trials)).sqrt();
        assert!(
            rate <= bound + slack,
            "{rounds} rounds: {rate} accepted, bound {bound}"
        );
        assert!(rate > 0.0, "the test must be able to see false accepts");
    }
}
