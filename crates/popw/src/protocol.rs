//! The challenge protocol, both sides (DESIGN §4).
//!
//! 1. **Compute.** The checker sends a nonce. The device derives `tables` challenges from it
//!    (table `k` has its own nonce, so its own `A`, `B` and row shuffle), computes every
//!    `C_k = P_k·A_k·B_k`, commits to each with a Merkle root over its rows, and signs each
//!    `(nonce_k, n, root_k)` (the message a fraud proof needs). It must answer within
//!    [`Params::compute_deadline`]: the work at a fixed fraction of its class's reference
//!    int8 rate, plus a network allowance.
//! 2. **Memory.** The checker then sends a walk nonce. The device walks `walk_steps` rows of
//!    its retained tables, each position chosen by the digest of the row before it (so the
//!    steps are sequential and unpredictable), and returns every step's digest within
//!    [`Params::walk_deadline`]. Reading a retained row costs `4n` bytes; a device that did
//!    not keep its tables (they are sized to the claimed memory) must recompute each row, `n²`
//!    multiply-adds and a pass over all of `B`, at least ~10× too slow.
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
/// What the network and scheduling may add to each timed phase.
pub const NETWORK_ALLOWANCE: Duration = Duration::from_millis(500);

/// A challenge's size and deadlines.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Dimension of each table.
    pub n: u32,
    /// Tables computed and retained.
    pub tables: u32,
    /// Sequential steps of the memory walk.
    pub walk_steps: u32,
    /// Rows opened at random for the audit (besides walked rows).
    pub audit_rows: u32,
    /// Walked rows opened to check their digests.
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
        // Long enough that the steps, not the network allowance, set the deadline. A CPU
        // recomputing rows on two AVX2 cores needs ~0.17 ms a step at n = 2048: 2.8 s for
        // 16,384 steps against a 0.7 s deadline. A GPU that kept only `B` (a quarter of the
        // tables' size) recomputes a row as a pass over it, 256 MiB, ~56 µs at an H200's
        // 4.8 TB/s: 65,536 steps take it 3.7 s against 1.2 s, so it cannot drop more than
        // about a quarter of its tables (16,384 steps would let it drop two thirds).
        let walk_steps = match class.kind {
            ClassKind::Gpu => 65_536,
            ClassKind::Cpu => 16_384,
        };
        // The audit's cost is mostly regenerating `B`'s columns it checks, |S|·n bytes of
        // ChaCha20 per audited table: 1,024 columns of a CPU table (8 tables of 2,048) but 64
        // of a GPU table (16,384 long, and the 40 audited rows fall in ~33 different tables),
        // so that an audit stays under 50 ms of CPU. 64 columns still catch a row with 1 % of
        // its entries wrong with probability 1 − 0.99⁶⁴ ≈ 47 %, and 40 such rows ≈ 100 %.
        let audit_cols = match class.kind {
            ClassKind::Gpu => 64,
            ClassKind::Cpu => 1_024,
        };
        // A row read at a quarter of the claimed bandwidth, plus 10 µs per dependent step.
        let row_bytes = 4.0 * f64::from(n);
        let step = row_bytes / (class.mem_bandwidth_gbps.max(1.0) * 1e9) * 4.0 + 10e-6;
        let walk = Duration::from_secs_f64(step * f64::from(walk_steps)) + NETWORK_ALLOWANCE;
        Self {
            n,
            tables,
            walk_steps,
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
    /// The memory walk's digests: `params.walk_steps` rows read one after another from the
    /// chain's `start` (see [`walk_with`]).
    fn walk(&self, params: &Params, start: u64) -> Result<Vec<u64>, SolveError>;
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

    fn walk(&self, params: &Params, start: u64) -> Result<Vec<u64>, SolveError> {
        let mut out = Vec::with_capacity(params.walk_steps as usize);
        let mut missing = None;
        chain(params, start, params.walk_steps as usize, |_, t, r| {
            let d = match self.slice(t, r) {
                Some(row) => row_digest(row),
                None => {
                    missing.get_or_insert(SolveError::NoSuchRow { table: t, row: r });
                    0
                }
            };
            out.push(d);
            d
        });
        match missing {
            Some(e) => Err(e),
            None => Ok(out),
        }
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
        let start = walk_start(walk_nonce, &self.roots());
        self.memory.walk(&self.params, start)
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

/// The digest of one row in the walk: `Σ v_j · (2j+1)·φ` modulo 2⁶⁴, which vectorizes (a
/// walk step costs one pass over the row).
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

/// Where the walk's chain starts: the walk nonce and every root, hashed.
pub(crate) fn walk_start(walk_nonce: &[u8; 32], roots: &[Hash]) -> u64 {
    let mut parts: Vec<&[u8]> = vec![b"cairn/popw/walk", walk_nonce];
    parts.extend(roots.iter().map(|r| r.0.as_slice()));
    let h = sha256(&parts).0;
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// The (table, row) a 64-bit draw names: the high half picks the table, the low half the row.
pub(crate) fn position(p: &Params, s: u64) -> (u32, u32) {
    (
        ((s >> 32) % u64::from(p.tables.max(1))) as u32,
        ((s & 0xffff_ffff) % u64::from(p.n)) as u32,
    )
}

/// The walk's chain: `steps` positions from `start`, each chosen from the one before and the
/// digest `digest(step, table, row)` gives for it.
fn chain(
    params: &Params,
    start: u64,
    steps: usize,
    mut digest: impl FnMut(usize, u32, u32) -> u64,
) {
    let mut s = start;
    for i in 0..steps {
        let (t, r) = position(params, s);
        s = splitmix(s ^ digest(i, t, r));
    }
}

/// Walks `params.walk_steps` rows, reading each through `digest(table, row)`: what a device
/// runs (over retained tables) and what a cheater would have to run by recomputing rows.
pub fn walk_with(
    params: &Params,
    walk_nonce: &[u8; 32],
    roots: &[Hash],
    mut digest: impl FnMut(u32, u32) -> u64,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(params.walk_steps as usize);
    chain(
        params,
        walk_start(walk_nonce, roots),
        params.walk_steps as usize,
        |_, t, r| {
            let d = digest(t, r);
            out.push(d);
            d
        },
    );
    out
}

/// The (table, row) each walk step read, recomputed from the digests alone.
pub fn walk_positions(
    params: &Params,
    walk_nonce: &[u8; 32],
    roots: &[Hash],
    digests: &[u64],
) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(digests.len());
    chain(
        params,
        walk_start(walk_nonce, roots),
        digests.len(),
        |i, t, r| {
            out.push((t, r));
            digests[i]
        },
    );
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
