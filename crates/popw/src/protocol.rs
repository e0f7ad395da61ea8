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
//! Everything here is pure: the caller measures time and supplies randomness. The device
//! side (solving, keeping tables, opening rows) is the `cairn-solver` crate.

use crate::matrix::{Challenge, ChallengeError};
use cairn_primitives::{ClassKind, DeviceClass, Hash, Signature, sha256};
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
/// Fraction of the CPU class's per-core reference rate that counts as one core when a
/// checker measures an answer ([`measured_cores`]): 25 GOP/s. The CPU solver did 25.4–34.5
/// GOP/s per core on this project's 2-core reference machine across sessions (`cairn worker
/// probe`), so its two cores count as two, and a claim of three counts two unless it starts
/// early (docs/checkers.md, "Measured cores").
pub const CPU_COUNTED_FRACTION: f64 = 0.25;
/// Tables the CPU challenge holds per claimed core: about 2.7 s of work per core at the
/// counted rate, long enough that a head start of a poll interval (docs/checkers.md,
/// "Measured cores") changes the figure by a few per cent.
pub const CPU_TABLES_PER_CORE: u32 = 4;
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
    /// VRAM (a GPU class); for the CPU class, [`CPU_TABLES_PER_CORE`] per claimed core (or
    /// one per 2 GiB of claimed RAM, up to 8, if that is more), at most [`MAX_CPU_TABLES`]:
    /// seconds of work, which the checker times to measure the cores ([`measured_cores`]).
    ///
    /// Sizes saturate rather than overflow: a claim so large that they would is far past any
    /// deadline it could meet, and the tables' count is clamped anyway.
    pub fn for_class(class: &DeviceClass, units: u32, ram_mib: u64) -> Self {
        let units = units.max(1);
        let (n, tables, fraction) = match class.kind {
            ClassKind::Gpu => {
                const TABLE_MIB: u64 = (4 * GPU_N as u64 * GPU_N as u64) >> 20;
                let mib = (class.vram_mib.saturating_mul(u64::from(units)) / 10).saturating_mul(9);
                let t = (mib / TABLE_MIB).clamp(1, 1024) as u32;
                (GPU_N, t, GPU_REQUIRED_FRACTION)
            }
            ClassKind::Cpu => {
                // The work grows with the claimed cores (it is what the measured figure
                // times) and, up to 8 tables, with the claimed RAM.
                let by_ram = (ram_mib / 2048).min(8) as u32;
                let t = units
                    .saturating_mul(CPU_TABLES_PER_CORE)
                    .max(by_ram)
                    .clamp(1, MAX_CPU_TABLES);
                (CPU_N, t, CPU_REQUIRED_FRACTION)
            }
        };
        let rate = class.int8_tops * 1e12 * f64::from(units) * fraction;
        let ops = ops(n, tables);
        let compute =
            Duration::from_secs_f64(ops / rate.max(1.0)).saturating_add(NETWORK_ALLOWANCE);
        // The audit's cost is mostly regenerating `B`'s columns it checks, |S|·n bytes of
        // ChaCha20 per audited table: 1,024 columns of a CPU table (8 tables of 2,048) but 64
        // of a GPU table (16,384 long, and the 40 audited rows fall in ~33 different tables),
        // so that an audit stays under 50 ms of CPU. 64 columns still catch a row with 1 % of
        // its entries wrong with probability 1 − 0.99⁶⁴ ≈ 47 %, and 40 such rows ≈ 100 %.
        // A CPU challenge of more than 8 tables (a claim of 3 cores or more) spreads the
        // 32 audited rows over more tables: fewer columns each keep the audit's cost at that
        // of 8 tables of 1,024 (at least 256 of a row's 2,048 columns are still checked).
        let audit_cols = match class.kind {
            ClassKind::Gpu => 64,
            ClassKind::Cpu => (8 * 1_024u32)
                .checked_div(tables.clamp(8, 32))
                .unwrap_or(1_024),
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
        let table_bytes = table_bytes(n, tables);
        let run_bytes = table_bytes_rows(n, rows);
        let walk_bytes = table_bytes.saturating_mul(2).max(WALK_MIN_BYTES);
        let steps = walk_bytes.div_ceil(run_bytes.saturating_mul(u64::from(chains))) as u32;
        // Those bytes at a quarter of the claimed bandwidth, 10 µs per dependent step, and
        // the network allowance. H200: 252 GiB, 0.23 s + 5 ms + 0.5 s; honest at 80 % of
        // 4.8 TB/s ≈ 70 ms; over PCIe 5 (~50 GB/s) ≈ 5.4 s; recomputing runs from a kept `B`
        // (a 256 MiB pass per run of 8 rows, 516,096 runs) ≈ 29 s.
        let bandwidth = class.mem_bandwidth_gbps.max(1.0) * 1e9 * f64::from(units) / 4.0;
        let walk = Duration::from_secs_f64(
            (u64::from(chains)
                .saturating_mul(u64::from(steps))
                .saturating_mul(run_bytes)) as f64
                / bandwidth
                + f64::from(steps) * 10e-6,
        )
        .saturating_add(NETWORK_ALLOWANCE);
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
        (self.walk_chains as usize).saturating_mul(self.walk_steps as usize)
    }

    /// Bytes the memory walk reads.
    pub fn walk_bytes(&self) -> u64 {
        (self.walk_len() as u64).saturating_mul(table_bytes_rows(self.n, self.walk_rows))
    }

    /// Bytes of result tables the device must retain.
    pub fn table_bytes(&self) -> u64 {
        table_bytes(self.n, self.tables)
    }
}

/// Most tables of a CPU challenge: 256 claimed cores (16 GiB of tables). A larger claim's
/// figure is still measured, over a shorter computation.
pub const MAX_CPU_TABLES: u32 = 1_024;

/// The cores a CPU-class answer's time shows: the challenge's work over `elapsed` (from the
/// checker's `Round` to the signed answer), in units of [`CPU_COUNTED_FRACTION`] of the
/// class's per-core reference rate, rounded down, at most `claimed` and 255; at least 1 for
/// an answer within the deadline (the deadline already asks for 0.1 of the rate per core).
pub fn measured_cores(class: &DeviceClass, params: &Params, elapsed: Duration, claimed: u32) -> u8 {
    let per_core = class.int8_tops * 1e12 * CPU_COUNTED_FRACTION;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let cores = (params.ops() / secs / per_core.max(1.0)).floor();
    // A float-to-int `as` saturates (NaN becomes 0), then the bounds apply.
    (cores as u32).min(claimed).clamp(1, 255) as u8
}

/// Bytes of `tables` int32 tables of dimension `n`.
fn table_bytes(n: u32, tables: u32) -> u64 {
    table_bytes_rows(n, n).saturating_mul(u64::from(tables))
}

/// Bytes of `rows` int32 rows of dimension `n` (a `u32` product times 4 fits a `u64`).
fn table_bytes_rows(n: u32, rows: u32) -> u64 {
    u64::from(n).wrapping_mul(u64::from(rows)).wrapping_mul(4)
}

fn ops(n: u32, tables: u32) -> f64 {
    2.0 * f64::from(n).powi(3) * f64::from(tables)
}

/// Table `k`'s challenge under `nonce`.
pub fn table_challenge(nonce: &[u8; 32], k: u32, n: u32) -> Result<Challenge, ChallengeError> {
    Challenge::new(table_nonce(nonce, k), n)
}

/// Table `k`'s own nonce under the device's `nonce` (what the device signs with its root).
pub fn table_nonce(nonce: &[u8; 32], k: u32) -> [u8; 32] {
    sha256(&[b"cairn/popw/table", nonce, &k.to_be_bytes()]).0
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

/// The digest of one run of values in the walk (a step's `walk_rows` rows, one after
/// another): `Σ v_j · (2j+1)·φ` modulo 2⁶⁴, which vectorizes (a step costs one pass over its
/// rows).
pub fn row_digest(row: &[i32]) -> u64 {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
    row.iter()
        .enumerate()
        .map(|(j, v)| {
            let odd = (j as u64).wrapping_mul(2).wrapping_add(1);
            (*v as u64).wrapping_mul(odd.wrapping_mul(PHI))
        })
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
pub fn walk_starts(params: &Params, walk_nonce: &[u8; 32], roots: &[Hash]) -> Vec<u64> {
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
    (pick(s >> 32, p.tables), pick(s & 0xffff_ffff, p.n))
}

/// `x mod m` (0 where `m` is 0: no parameters a checker derives have an empty range).
fn pick(x: u64, m: u32) -> u32 {
    x.checked_rem(u64::from(m)).unwrap_or(0) as u32
}

/// The (table, first row) of the run a walk state names: the high half picks the table, the
/// low half one of its `n / walk_rows` runs.
pub(crate) fn run_position(p: &Params, s: u64) -> (u32, u32) {
    let rows = p.walk_rows.max(1);
    let run = pick(s & 0xffff_ffff, p.n.checked_div(rows).unwrap_or(0));
    // run < n / rows, so run · rows < n.
    (pick(s >> 32, p.tables), run.wrapping_mul(rows))
}

/// One chain: `steps` runs from `start`, each chosen from the state the one before left and
/// the digest `digest(table, first_row)` gives for it.
pub fn walk_chain(
    params: &Params,
    start: u64,
    steps: usize,
    mut digest: impl FnMut(u32, u32) -> u64,
) {
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
        walk_chain(params, start, params.walk_steps as usize, |t, r| {
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
        // The chain runs one step per digest, so it never asks past the last.
        let mut digests = chunk.iter().copied();
        walk_chain(params, start, chunk.len(), |t, r| {
            out.push((t, r));
            digests.next().unwrap_or(0)
        });
    }
    out
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
    fn the_cpu_challenge_grows_with_the_cores_and_its_time_shows_them() {
        let cpu = class("CPU");
        let tables = |cores, ram| Params::for_class(&cpu, cores, ram).tables;
        assert_eq!(tables(1, 1024), 4);
        assert_eq!(tables(1, 32_768), 8);
        assert_eq!(tables(16, 1024), 64);
        assert_eq!(tables(4096, 1 << 20), MAX_CPU_TABLES);
        // The deadline asks 0.1 of the per-core rate for any claim: about 7.4 s.
        let p = Params::for_class(&cpu, 16, 1024);
        let d = p.compute_deadline.as_secs_f64();
        assert!((7.3..7.5).contains(&d), "{d}");
        // 64 tables of 17.2 GOP each: 1.1 TOP. At 25 GOP/s per core (the counted rate), 16
        // cores take 2.75 s.
        let at =
            |secs: f64, claimed| measured_cores(&cpu, &p, Duration::from_secs_f64(secs), claimed);
        assert_eq!(at(2.74, 16), 16);
        assert_eq!(at(2.76, 16), 15);
        // Two such cores take eight times as long: they count as two, whatever the claim.
        assert_eq!(at(2.74 * 8.0, 16), 2);
        // Never more than claimed, never less than one for an answer that arrived at all.
        assert_eq!(at(0.01, 16), 16);
        assert_eq!(at(1e6, 16), 1);
        assert_eq!(at(0.0, 300), 255);
        // The audit's columns shrink as the tables spread the audited rows: 8 tables × 1,024.
        assert_eq!(Params::for_class(&cpu, 2, 1024).audit_cols, 1_024);
        assert_eq!(Params::for_class(&cpu, 4, 1024).audit_cols, 512);
        assert_eq!(Params::for_class(&cpu, 64, 1024).audit_cols, 256);
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
