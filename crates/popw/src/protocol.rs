//! The challenge protocol, both sides (docs/design.md §4).
//!
//! 1. **Compute.** The checker sends a nonce. The device derives `tables` challenges from it
//!    (table `k` has its own nonce, so its own `A`, `B` and row shuffle), computes every
//!    `C_k = P_k·A_k·B_k`, commits to each with a Merkle root over its rows, and signs each
//!    `(nonce_k, n, root_k)` (the message a fraud proof needs). It must answer within
//!    [`Params::compute_deadline`]: the work at a fixed fraction of its class's reference
//!    int8 rate, plus a network allowance.
//! 2. **Memory.** The checker then sends a walk nonce. The device runs `walk_chains`
//!    independent chains of `walk_steps` steps over its retained tables. A step reads a run of
//!    `walk_rows` consecutive rows of one table, chosen by the digest of the step before it
//!    (so each chain is sequential and unpredictable), and every step's digest comes back
//!    within [`Params::walk_deadline`]. The chains together read twice the tables' size (at
//!    least 256 MiB), and the deadline is that many bytes at a quarter of the class's memory
//!    bandwidth plus the network allowance. Many chains let an honest GPU read at its memory's
//!    full bandwidth; the same bytes over PCIe (tables held in host memory) take 50–100×
//!    longer, and a device that did not keep its tables must recompute each run (`walk_rows`
//!    rows of `n²` multiply-adds each, a pass over all of `B`): both miss the deadline.
//! 3. **Audit.** The checker opens random rows, and some of the walked rows, against the
//!    roots, checks each walked row's digest, and checks the opened rows of each table on a
//!    random subset `S` of its columns: with Freivalds' algorithm (`rounds` independent 0/1
//!    vectors over `S`, one pass over `B_S` each, shared by the table's rows: a wrong entry in
//!    `S` passes a round with probability at most ½), or, where a table has only one or two
//!    rows opened and that costs less, by computing `S`'s entries exactly. Cost:
//!    `O(|S|·n)` per audited table, never `O(n³)`; regenerating `B_S` dominates it.
//!
//! Everything here is pure: the caller measures time and supplies randomness.

use crate::fraud::{merkle_path, sign_answer};
use crate::matrix::{Challenge, ChallengeError, row_leaf};
use crate::solve::{SolveError, Solver};
use cairn_primitives::{ClassKind, DeviceClass, Hash, Keypair, Signature, merkle_root, sha256};
use rayon::prelude::*;
use std::time::Duration;

/// Dimension of a GPU class's tables (1 GiB of int32 each).
pub const GPU_N: u32 = 16_384;
/// Dimension of the CPU class's tables (16 MiB each).
pub const CPU_N: u32 = 2_048;
/// Fraction of a GPU class's reference int8 rate a device must reach.
pub const GPU_REQUIRED_FRACTION: f64 = 0.4;
/// Fraction of the CPU class's reference rate (per core) a device must reach: autovectorized
/// int8 on AVX2 reaches about a quarter of the catalog's per-core peak.
pub const CPU_REQUIRED_FRACTION: f64 = 0.1;
/// The least the memory walk reads, whatever the claim.
pub const WALK_MIN_BYTES: u64 = 256 << 20;
/// What the network and scheduling may add to each timed phase.
pub const NETWORK_ALLOWANCE: Duration = Duration::from_millis(500);

/// A challenge's size and deadlines.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Dimension of each table.
    pub n: u32,
    /// Tables computed and retained.
    pub tables: u32,
    /// Independent chains of the memory walk.
    pub walk_chains: u32,
    /// Sequential steps of each chain.
    pub walk_steps: u32,
    /// Consecutive rows a walk step reads (a power of two dividing `n`).
    pub walk_rows: u32,
    /// Rows opened at random for the audit (besides walked rows).
    pub audit_rows: u32,
    /// Walk steps whose rows are opened to check their digests.
    pub walk_checks: u32,
    /// Columns each Freivalds check covers (all when ≥ n).
    pub audit_cols: u32,
    /// Freivalds rounds.
    pub rounds: u32,
    /// Time allowed from the nonce to the signed answer.
    pub compute_deadline: Duration,
    /// Time allowed from the walk nonce to the digests.
    pub walk_deadline: Duration,
}

impl Params {
    /// The challenge for a device claiming `class` with `units` of it (GPUs, or cores for a
    /// CPU class) and, for a CPU class, `ram_mib` of memory. Tables fill 90 % of the claimed
    /// VRAM (a GPU class) or one per 2 GiB of claimed RAM, at most 8 (the CPU class, scaled
    /// so that it finishes in seconds).
    pub fn for_class(class: &DeviceClass, units: u32, ram_mib: u64) -> Self {
        let units = units.max(1);
        let (n, tables, fraction) = match class.kind {
            ClassKind::Gpu => {
                let table_mib = (4 * u64::from(GPU_N) * u64::from(GPU_N)) >> 20;
                let mib = class.vram_mib * u64::from(units) * 9 / 10;
                let t = (mib / table_mib).clamp(1, 1024) as u32;
                (GPU_N, t, GPU_REQUIRED_FRACTION)
            }
            ClassKind::Cpu => {
                let t = (ram_mib / 2048).clamp(1, 8) as u32;
                (CPU_N, t, CPU_REQUIRED_FRACTION)
            }
        };
        let rate = class.int8_tops * 1e12 * f64::from(units) * fraction;
        let ops = ops(n, tables);
        let compute = Duration::from_secs_f64(ops / rate.max(1.0)) + NETWORK_ALLOWANCE;
        // The audit's cost is mostly regenerating `B`'s columns it checks, |S|·n bytes of
        // ChaCha20 per audited table: 1,024 columns of a CPU table (8 tables of 2,048) but 64
        // of a GPU table (16,384 long, and the 40 audited rows fall in ~33 different tables),
        // so that an audit stays under 50 ms of CPU. 64 columns still catch a row with 1 % of
        // its entries wrong with probability 1 − 0.99⁶⁴ ≈ 47 %, and 40 such rows ≈ 100 %.
        let audit_cols = match class.kind {
            ClassKind::Gpu => 64,
            ClassKind::Cpu => 1_024,
        };
        // The walk reads twice the tables (at least 256 MiB, so that for a small claim the
        // reading, not the network allowance, is what a cheater cannot fit in the deadline),
        // in runs of 8 rows of a GPU table (512 KiB) or 16 of a CPU table (128 KiB), over 1,024
        // chains on a GPU (enough blocks in flight to keep every memory channel busy) or 64 on
        // a CPU.
        let (chains, rows) = match class.kind {
            ClassKind::Gpu => (1_024u32, 8u32),
            ClassKind::Cpu => (64, 16),
        };
        let table_bytes = 4 * u64::from(n) * u64::from(n) * u64::from(tables);
        let run_bytes = 4 * u64::from(n) * u64::from(rows);
        let walk_bytes = (2 * table_bytes).max(WALK_MIN_BYTES);
        let steps = walk_bytes.div_ceil(run_bytes * u64::from(chains)) as u32;
        // Those bytes at a quarter of the claimed bandwidth, 10 µs per dependent step, and
        // the network allowance. H200: 252 GiB, 0.23 s + 5 ms + 0.5 s; honest at 80 % of
        // 4.8 TB/s ≈ 70 ms; over PCIe 5 (~50 GB/s) ≈ 5.4 s; recomputing runs from a kept `B`
        // (a 256 MiB pass per run of 8 rows, 516,096 runs) ≈ 29 s.
        let bandwidth = class.mem_bandwidth_gbps.max(1.0) * 1e9 * f64::from(units) / 4.0;
        let walk = Duration::from_secs_f64(
            (chains as u64 * u64::from(steps) * run_bytes) as f64 / bandwidth
                + f64::from(steps) * 10e-6,
        ) + NETWORK_ALLOWANCE;
        Self {
            n,
            tables,
            walk_chains: chains,
            walk_steps: steps,
            walk_rows: rows.min(n),
            audit_rows: 32,
            walk_checks: 8,
            audit_cols,
            rounds: 8,
            compute_deadline: compute,
            walk_deadline: walk,
        }
    }

    /// Multiply-adds × 2 for the compute phase.
    pub fn ops(&self) -> f64 {
        ops(self.n, self.tables)
    }

    /// Digests the memory walk returns.
    pub fn walk_len(&self) -> usize {
        self.walk_chains as usize * self.walk_steps as usize
    }

    /// Bytes the memory walk reads.
    pub fn walk_bytes(&self) -> u64 {
        self.walk_len() as u64 * 4 * u64::from(self.n) * u64::from(self.walk_rows)
    }

    /// That this walk can run over `tables` tables of dimension `n` (what a device kept):
    /// same shape, and runs of `walk_rows` rows that divide a table.
    pub(crate) fn check_walk_over(&self, n: u32, tables: usize) -> Result<(), SolveError> {
        if self.n != n
            || self.tables as usize != tables
            || self.walk_rows == 0
            || !n.is_multiple_of(self.walk_rows)
        {
            return Err(SolveError::Device(format!(
                "a walk over {} tables of {}² in runs of {} rows asked of {tables} tables of {n}²",
                self.tables, self.n, self.walk_rows
            )));
        }
        Ok(())
    }

    /// Bytes of result tables the device must retain.
    pub fn table_bytes(&self) -> u64 {
        4 * u64::from(self.n) * u64::from(self.n) * u64::from(self.tables)
    }
}

fn ops(n: u32, tables: u32) -> f64 {
    2.0 * f64::from(n).powi(3) * f64::from(tables)
}

/// Table `k`'s challenge under `nonce`.
pub fn table_challenge(nonce: &[u8; 32], k: u32, n: u32) -> Result<Challenge, ChallengeError> {
    Challenge::new(sha256(&[b"cairn/popw/table", nonce, &k.to_be_bytes()]).0, n)
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
        params.check_walk_over(self.n as u32, self.values.len())?;
        let len = self.n * params.walk_rows as usize;
        let steps = params.walk_steps as usize;
        let mut out = vec![0u64; starts.len() * steps];
        out.par_chunks_mut(steps.max(1))
            .zip(starts)
            .for_each(|(digests, start)| {
                let mut i = 0;
                chain(params, *start, steps, |t, r| {
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

/// A signed answer to the compute phase.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The nonce answered.
    pub nonce: [u8; 32],
    /// The dimension.
    pub n: u32,
    /// Each table's root.
    pub roots: Vec<Hash>,
    /// The device's signature on each `(nonce_k, n, root_k)`.
    pub signatures: Vec<Signature>,
}

/// One opened row.
#[derive(Clone, Debug)]
pub struct Opening {
    /// The table.
    pub table: u32,
    /// The row.
    pub row: u32,
    /// Its values.
    pub values: Vec<i32>,
    /// Its Merkle path to the table's root.
    pub path: Vec<Hash>,
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

/// The digest of one run of values in the walk (a step's `walk_rows` rows, one after
/// another): `Σ v_j · (2j+1)·φ` modulo 2⁶⁴, which vectorizes (a step costs one pass over its
/// rows).
pub fn row_digest(row: &[i32]) -> u64 {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
    row.iter()
        .enumerate()
        .map(|(j, v)| (*v as u64).wrapping_mul((2 * j as u64 + 1).wrapping_mul(PHI)))
        .fold(0u64, u64::wrapping_add)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where each chain of the walk starts: the walk nonce and every root, hashed, then hashed
/// with the chain's number.
pub(crate) fn walk_starts(params: &Params, walk_nonce: &[u8; 32], roots: &[Hash]) -> Vec<u64> {
    let mut parts: Vec<&[u8]> = vec![b"cairn/popw/walk", walk_nonce];
    parts.extend(roots.iter().map(|r| r.0.as_slice()));
    let base = sha256(&parts);
    (0..params.walk_chains)
        .map(|c| {
            let h = sha256(&[&base.0, &c.to_be_bytes()]).0;
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[..8]);
            u64::from_le_bytes(b)
        })
        .collect()
}

/// The (table, row) a 64-bit draw names: the high half picks the table, the low half the row.
pub(crate) fn position(p: &Params, s: u64) -> (u32, u32) {
    (
        ((s >> 32) % u64::from(p.tables.max(1))) as u32,
        ((s & 0xffff_ffff) % u64::from(p.n)) as u32,
    )
}

/// The (table, first row) of the run a walk state names: the high half picks the table, the
/// low half one of its `n / walk_rows` runs.
pub(crate) fn run_position(p: &Params, s: u64) -> (u32, u32) {
    let rows = p.walk_rows.max(1);
    let runs = u64::from((p.n / rows).max(1));
    (
        ((s >> 32) % u64::from(p.tables.max(1))) as u32,
        ((s & 0xffff_ffff) % runs) as u32 * rows,
    )
}

/// One chain: `steps` runs from `start`, each chosen from the state the one before left and
/// the digest `digest(table, first_row)` gives for it.
fn chain(params: &Params, start: u64, steps: usize, mut digest: impl FnMut(u32, u32) -> u64) {
    let mut s = start;
    for _ in 0..steps {
        let (t, r) = run_position(params, s);
        s = splitmix(s ^ digest(t, r));
    }
}

/// The whole walk, chain after chain, reading each run through `digest(table, first_row)`
/// (its `walk_rows` rows from `first_row` on): the reference a device's walk must equal, and
/// what a cheater would have to run by recomputing runs.
pub fn walk_with(
    params: &Params,
    walk_nonce: &[u8; 32],
    roots: &[Hash],
    mut digest: impl FnMut(u32, u32) -> u64,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(params.walk_len());
    for start in walk_starts(params, walk_nonce, roots) {
        chain(params, start, params.walk_steps as usize, |t, r| {
            let d = digest(t, r);
            out.push(d);
            d
        });
    }
    out
}

/// The (table, first row) each walk step read, chain after chain, recomputed from the
/// digests alone.
pub fn walk_positions(
    params: &Params,
    walk_nonce: &[u8; 32],
    roots: &[Hash],
    digests: &[u64],
) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(digests.len());
    let steps = params.walk_steps as usize;
    for (start, chunk) in walk_starts(params, walk_nonce, roots)
        .into_iter()
        .zip(digests.chunks(steps.max(1)))
    {
        let mut i = 0;
        chain(params, start, chunk.len(), |t, r| {
            out.push((t, r));
            i += 1;
            chunk[i - 1]
        });
    }
    out
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
    pub verdict: Result<(), crate::Fault>,
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
        crate::check_answer(chain, &key.public_key(), &nonce, &params, &answer, solve);
    let walk_nonce = sha256(&[b"cairn/popw/probe-walk", &seed]).0;
    let start = Instant::now();
    let digests = prover.walk(&walk_nonce)?;
    let walk = start.elapsed();
    if verdict.is_ok() {
        verdict = crate::check_walk(&params, &digests, walk);
    }
    let audit_seed = sha256(&[b"cairn/popw/probe-audit", &seed]).0;
    let openings: Vec<Opening> =
        crate::audit_requests(&params, &audit_seed, &walk_nonce, &answer.roots, &digests)
            .into_iter()
            .map(|(t, r, _)| prover.open(t, r))
            .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let audited = crate::check_audit(
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

    fn class(name: &str) -> DeviceClass {
        DeviceClass::default_catalog()
            .into_iter()
            .find(|c| c.name == name)
            .expect("class in the catalog")
    }

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

    #[test]
    fn the_walk_reads_twice_the_tables_and_host_memory_misses_its_deadline() {
        let h200 = Params::for_class(&class("H200"), 1, 0);
        assert_eq!(
            (h200.tables, h200.walk_chains, h200.walk_rows),
            (126, 1024, 8)
        );
        assert_eq!(h200.walk_steps, 504);
        assert_eq!(h200.walk_bytes(), 2 * h200.table_bytes());
        let deadline = h200.walk_deadline.as_secs_f64();
        assert!((0.72..0.74).contains(&deadline), "{deadline}");
        // The same bytes over PCIe 5 x16 at its 64 GB/s peak: seven times the deadline.
        let over_pcie = h200.walk_bytes() as f64 / 64e9;
        assert!(over_pcie > 5.0 * deadline, "{over_pcie} s vs {deadline} s");
        // Every class: the walk reads twice its tables (at least 256 MiB), give or take the
        // last step of each chain, in whole runs.
        for c in DeviceClass::default_catalog() {
            let p = Params::for_class(&c, 2, 8192);
            let need = (2 * p.table_bytes()).max(WALK_MIN_BYTES);
            let run = 4 * u64::from(p.n) * u64::from(p.walk_rows);
            assert!(p.walk_bytes() >= need, "{}", c.name);
            assert!(
                p.walk_bytes() < need + u64::from(p.walk_chains) * run,
                "{}",
                c.name
            );
            assert_eq!(p.n % p.walk_rows, 0, "{}", c.name);
        }
    }
}
