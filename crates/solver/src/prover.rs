//! The device side of the challenge protocol (`cairn_popw`'s module docs tell both sides): the
//! tables' commitments, where the tables are kept, the prover that answers each phase, and
//! the whole protocol run against oneself (`cairn worker probe`).

use crate::solve::{SolveError, Solver};
use cairn_popw::{
    Answer, Challenge, Opening, Params, merkle_path, row_digest, row_leaf, sign_answer,
    table_challenge, walk_chain, walk_starts,
};
use cairn_primitives::{Hash, Keypair, merkle_root, sha256};
use rayon::prelude::*;
use std::time::Duration;

/// That a walk under `params` can run over `tables` tables of dimension `n` (what a device
/// kept): same shape, and runs of `walk_rows` rows that divide a table.
pub(crate) fn check_walk_over(params: &Params, n: u32, tables: usize) -> Result<(), SolveError> {
    if params.n != n
        || params.tables as usize != tables
        || params.walk_rows == 0
        || !n.is_multiple_of(params.walk_rows)
    {
        return Err(SolveError::Device(format!(
            "a walk over {} tables of {}² in runs of {} rows asked of {tables} tables of {n}²",
            params.tables, params.n, params.walk_rows
        )));
    }
    Ok(())
}

/// One computed table's commitment, kept on the host whatever computed the table (the
/// audit's Merkle paths come from its leaves).
pub struct Table {
    /// Its challenge.
    pub challenge: Challenge,
    leaves: Vec<Hash>,
    /// The Merkle root over its rows.
    pub root: Hash,
}

impl Table {
    /// Commits to `values` (what the device claims `challenge`'s result is, row-major),
    /// hashing its rows on every core.
    pub fn commit(challenge: Challenge, values: &[i32]) -> Self {
        let n = challenge.n as usize;
        let leaves: Vec<Hash> = values
            .par_chunks(n)
            .enumerate()
            .map(|(r, row)| row_leaf(r as u32, row))
            .collect();
        Self::from_leaves(challenge, leaves)
    }

    /// The commitment to row leaves a device computed itself.
    pub fn from_leaves(challenge: Challenge, leaves: Vec<Hash>) -> Self {
        let root = merkle_root(&leaves);
        Self {
            challenge,
            leaves,
            root,
        }
    }

    /// Its rows' leaves.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }
}

/// Where a device keeps the tables it computed (host memory for the CPU solver, GPU memory
/// for the CUDA one): what the memory phase walks and the audit opens rows of.
pub trait Retained: Send + Sync {
    /// Row `row` of table `table`.
    fn row(&self, table: u32, row: u32) -> Result<Vec<i32>, SolveError>;
    /// The memory walk's digests, chain after chain, each chain from its start in `starts`
    /// (see [`walk_with`]).
    fn walk(&self, params: &Params, starts: &[u64]) -> Result<Vec<u64>, SolveError>;
}

/// Tables kept in host memory, row-major.
pub struct HostTables {
    n: usize,
    values: Vec<Vec<i32>>,
}

impl HostTables {
    /// Tables of dimension `n`; every one must hold `n²` values.
    pub fn new(n: u32, values: Vec<Vec<i32>>) -> Result<Self, SolveError> {
        let n = n as usize;
        if let Some(k) = values.iter().position(|v| v.len() != n * n) {
            return Err(SolveError::Device(format!(
                "table {k} has {} values; a table of dimension {n} has {}",
                values[k].len(),
                n * n
            )));
        }
        Ok(Self { n, values })
    }

    fn slice(&self, table: u32, row: u32) -> Option<&[i32]> {
        let r = row as usize;
        if r >= self.n {
            return None;
        }
        Some(&self.values.get(table as usize)?[r * self.n..(r + 1) * self.n])
    }
}

impl Retained for HostTables {
    fn row(&self, table: u32, row: u32) -> Result<Vec<i32>, SolveError> {
        self.slice(table, row)
            .map(<[i32]>::to_vec)
            .ok_or(SolveError::NoSuchRow { table, row })
    }

    fn walk(&self, params: &Params, starts: &[u64]) -> Result<Vec<u64>, SolveError> {
        check_walk_over(params, self.n as u32, self.values.len())?;
        let len = self.n * params.walk_rows as usize;
        let steps = params.walk_steps as usize;
        let mut out = vec![0u64; starts.len() * steps];
        out.par_chunks_mut(steps.max(1))
            .zip(starts)
            .for_each(|(digests, start)| {
                let mut i = 0;
                walk_chain(params, *start, steps, |t, r| {
                    let first = r as usize * self.n;
                    let d = row_digest(&self.values[t as usize][first..first + len]);
                    digests[i] = d;
                    i += 1;
                    d
                });
            });
        Ok(out)
    }
}

/// The device side: its tables' commitments, and the tables themselves where it keeps them.
pub struct Prover {
    /// The nonce answered.
    pub nonce: [u8; 32],
    /// The parameters.
    pub params: Params,
    /// The tables' commitments.
    pub tables: Vec<Table>,
    memory: Box<dyn Retained>,
}

impl Prover {
    /// Computes every table with `solver`, which keeps them where it computed them;
    /// `progress(done, total)` after each.
    pub fn solve(
        solver: &dyn Solver,
        nonce: [u8; 32],
        params: Params,
        mut progress: impl FnMut(u32, u32),
    ) -> Result<Self, SolveError> {
        let challenges = (0..params.tables)
            .map(|k| table_challenge(&nonce, k, params.n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SolveError::Device(e.to_string()))?;
        let (tables, memory) = solver.compute(challenges, &mut progress)?;
        Ok(Self {
            nonce,
            params,
            tables,
            memory,
        })
    }

    /// A prover whose tables hold `values` (what it claims each challenge's result is, in
    /// host memory), committed as given: an honest answer, or a cheat's, built by hand.
    pub fn from_values(
        nonce: [u8; 32],
        params: Params,
        values: Vec<(Challenge, Vec<i32>)>,
    ) -> Result<Self, SolveError> {
        let tables = values
            .iter()
            .map(|(c, v)| Table::commit(c.clone(), v))
            .collect();
        let memory = HostTables::new(params.n, values.into_iter().map(|(_, v)| v).collect())?;
        Ok(Self {
            nonce,
            params,
            tables,
            memory: Box::new(memory),
        })
    }

    /// The signed answer.
    pub fn answer(&self, key: &Keypair, chain_id: &str) -> Answer {
        Answer {
            nonce: self.nonce,
            n: self.params.n,
            roots: self.roots(),
            signatures: self
                .tables
                .iter()
                .map(|t| sign_answer(key, chain_id, &t.challenge.nonce, t.challenge.n, &t.root))
                .collect(),
        }
    }

    fn roots(&self) -> Vec<Hash> {
        self.tables.iter().map(|t| t.root).collect()
    }

    /// The memory walk over the retained tables.
    pub fn walk(&self, walk_nonce: &[u8; 32]) -> Result<Vec<u64>, SolveError> {
        let starts = walk_starts(&self.params, walk_nonce, &self.roots());
        let digests = self.memory.walk(&self.params, &starts)?;
        if digests.len() != self.params.walk_len() {
            return Err(SolveError::Device(format!(
                "the walk returned {} digests; {} were asked",
                digests.len(),
                self.params.walk_len()
            )));
        }
        Ok(digests)
    }

    /// Opens row `row` of table `table`.
    pub fn open(&self, table: u32, row: u32) -> Result<Opening, SolveError> {
        let t = self
            .tables
            .get(table as usize)
            .filter(|t| row < t.challenge.n)
            .ok_or(SolveError::NoSuchRow { table, row })?;
        Ok(Opening {
            table,
            row,
            values: self.memory.row(table, row)?,
            path: merkle_path(&t.leaves, row as usize),
        })
    }
}

/// What running the whole protocol against oneself found (`cairn worker probe`).
#[derive(Debug)]
pub struct SelfReport {
    /// The solver used.
    pub solver: String,
    /// The parameters.
    pub params: Params,
    /// Compute phase: nonce to signed answer.
    pub solve: Duration,
    /// Achieved int8 ops/s in the compute phase.
    pub ops_per_sec: f64,
    /// Memory phase.
    pub walk: Duration,
    /// The checker's audit (openings, digests, Freivalds).
    pub audit: Duration,
    /// The checker's verdict.
    pub verdict: Result<(), cairn_popw::Fault>,
}

/// Runs the protocol against this machine as a checker would: a throwaway device key, fresh
/// nonces from `seed`, the solver prepared (as a device is before a nonce arrives), each phase
/// timed, then the audit. `progress(done, total)` per table.
pub fn self_challenge(
    solver: &dyn Solver,
    params: Params,
    seed: [u8; 32],
    progress: impl FnMut(u32, u32),
) -> Result<SelfReport, SolveError> {
    use std::time::Instant;
    let key = Keypair::from_seed(sha256(&[b"cairn/popw/probe-key", &seed]).0);
    let chain = "cairn-probe";
    let nonce = sha256(&[b"cairn/popw/probe-nonce", &seed]).0;
    solver.prepare(&params)?;
    let start = Instant::now();
    let prover = Prover::solve(solver, nonce, params.clone(), progress)?;
    let answer = prover.answer(&key, chain);
    let solve = start.elapsed();
    let mut verdict =
        cairn_popw::check_answer(chain, &key.public_key(), &nonce, &params, &answer, solve);
    let walk_nonce = sha256(&[b"cairn/popw/probe-walk", &seed]).0;
    let start = Instant::now();
    let digests = prover.walk(&walk_nonce)?;
    let walk = start.elapsed();
    if verdict.is_ok() {
        verdict = cairn_popw::check_walk(&params, &digests, walk);
    }
    let audit_seed = sha256(&[b"cairn/popw/probe-audit", &seed]).0;
    let openings: Vec<Opening> =
        cairn_popw::audit_requests(&params, &audit_seed, &walk_nonce, &answer.roots, &digests)
            .into_iter()
            .map(|(t, r, _)| prover.open(t, r))
            .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let audited = cairn_popw::check_audit(
        &params,
        &answer,
        &walk_nonce,
        &digests,
        &audit_seed,
        &openings,
    );
    let audit = start.elapsed();
    if verdict.is_ok() {
        verdict = audited;
    }
    Ok(SelfReport {
        solver: solver.name(),
        ops_per_sec: params.ops() / solve.as_secs_f64().max(1e-9),
        params,
        solve,
        walk,
        audit,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_nonce_gives_the_same_roots_and_walk_on_every_run_and_version() {
        let p = Params {
            n: 64,
            tables: 2,
            walk_chains: 3,
            walk_steps: 10,
            walk_rows: 4,
            audit_rows: 4,
            walk_checks: 2,
            audit_cols: 64,
            rounds: 8,
            compute_deadline: Duration::from_secs(1),
            walk_deadline: Duration::from_secs(1),
        };
        let run = || {
            let prover = Prover::solve(&crate::CpuSolver, [7; 32], p.clone(), |_, _| {}).unwrap();
            let roots: Vec<String> = prover.tables.iter().map(|t| t.root.to_string()).collect();
            (roots, prover.walk(&[8; 32]).unwrap())
        };
        let (roots, walk) = run();
        assert_eq!((roots.clone(), walk.clone()), run());
        // Pinned: a checker and a device on different builds must agree on both. A change
        // here is a change of the protocol.
        assert_eq!(roots, GOLDEN_ROOTS);
        assert_eq!(walk[..3], GOLDEN_WALK);
    }

    const GOLDEN_ROOTS: [&str; 2] = [
        "961a664281d2190298bac6d67a3826230606e57b5e18d042db440ed7ddce433b",
        "7dc2fd3d8c59bd6e68e43a1b3e739e6872c615f7602e29ffd9a05727abbe5f82",
    ];
    const GOLDEN_WALK: [u64; 3] = [
        6682042445150743573,
        10228719998766302947,
        640186653221801511,
    ];

    #[test]
    fn a_walk_of_another_shape_than_the_kept_tables_is_refused_saying_so() {
        let kept = HostTables::new(64, vec![vec![1; 64 * 64]; 2]).unwrap();
        let p = |n, tables, walk_rows| Params {
            n,
            tables,
            walk_chains: 2,
            walk_steps: 3,
            walk_rows,
            audit_rows: 1,
            walk_checks: 1,
            audit_cols: 8,
            rounds: 1,
            compute_deadline: Duration::from_secs(1),
            walk_deadline: Duration::from_secs(1),
        };
        assert_eq!(kept.walk(&p(64, 2, 4), &[1, 2]).unwrap().len(), 6);
        for bad in [p(128, 2, 4), p(64, 3, 4), p(64, 2, 0), p(64, 2, 3)] {
            let err = kept.walk(&bad, &[1, 2]).unwrap_err().to_string();
            assert!(err.contains("asked of 2 tables of 64²"), "{err}");
        }
        // Tables of the wrong size are refused when kept.
        let err = HostTables::new(64, vec![vec![0; 10]])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("table 0 has 10 values"), "{err}");
    }
}
