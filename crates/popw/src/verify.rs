//! The checker side: pure functions over what the device sent and what the checker measured.

use crate::fraud::answer_message;
use crate::matrix::{Challenge, dot};
use crate::protocol::{
    Answer, Opening, Params, position, row_digest, table_challenge, walk_positions,
};
use cairn_primitives::{Hash, PublicKey, namespace, sha256, verify_signature};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a device fails a challenge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fault {
    /// The answer is for another nonce.
    #[error("the answer is for another nonce")]
    WrongNonce,
    /// The answer has the wrong dimension or number of tables.
    #[error(
        "the answer has {got} tables of dimension {n}; the challenge asked for {want} of {want_n}"
    )]
    WrongShape {
        /// Tables answered.
        got: usize,
        /// Dimension answered.
        n: u32,
        /// Tables asked.
        want: u32,
        /// Dimension asked.
        want_n: u32,
    },
    /// A table's root is not signed by the device.
    #[error("table {0}'s root is not signed by the device")]
    BadSignature(u32),
    /// A phase ended after its deadline.
    #[error("the {phase} phase took {elapsed:?}; its deadline is {deadline:?}")]
    Late {
        /// "compute" or "memory".
        phase: &'static str,
        /// Measured.
        elapsed: Duration,
        /// Allowed.
        deadline: Duration,
    },
    /// The walk has the wrong number of steps.
    #[error("the memory walk has {got} steps; {want} were asked")]
    WalkLength {
        /// Steps returned.
        got: usize,
        /// Steps asked (all chains).
        want: usize,
    },
    /// A requested row was not opened.
    #[error("row {row} of table {table} was not opened")]
    MissingOpening {
        /// Table.
        table: u32,
        /// Row.
        row: u32,
    },
    /// An opened row is not under its table's root.
    #[error("row {row} of table {table} is not under the signed root")]
    BadOpening {
        /// Table.
        table: u32,
        /// Row.
        row: u32,
    },
    /// A walk step's digest does not match the rows opened for it.
    #[error("walk step {0} does not match the rows it read")]
    WalkDigest(usize),
    /// An opened row is not the product: entry `col` differs from the true dot product
    /// (found by Freivalds' check and then located exactly, or computed exactly). With the
    /// opening and the signed root that is a fraud proof ([`crate::fraud_proof_of`]).
    #[error("entry ({row}, {col}) of table {table} is not the product")]
    WrongRow {
        /// Table.
        table: u32,
        /// Row.
        row: u32,
        /// The wrong entry's column.
        col: u32,
    },
    /// The challenge parameters are malformed.
    #[error("{0}")]
    Challenge(#[from] crate::ChallengeError),
}

/// Checks the signed answer: nonce, shape, every signature, and the compute deadline against
/// the time the checker measured from sending the nonce to receiving the answer.
pub fn check_answer(
    chain_id: &str,
    device: &PublicKey,
    nonce: &[u8; 32],
    params: &Params,
    answer: &Answer,
    elapsed: Duration,
) -> Result<(), Fault> {
    if answer.nonce != *nonce {
        return Err(Fault::WrongNonce);
    }
    if answer.n != params.n
        || answer.roots.len() != params.tables as usize
        || answer.signatures.len() != params.tables as usize
    {
        return Err(Fault::WrongShape {
            got: answer.roots.len(),
            n: answer.n,
            want: params.tables,
            want_n: params.n,
        });
    }
    let ns = namespace("popw-answer", chain_id);
    for (k, (root, sig)) in answer.roots.iter().zip(&answer.signatures).enumerate() {
        let c = table_challenge(nonce, k as u32, params.n)?;
        if !verify_signature(device, &ns, &answer_message(&c.nonce, c.n, root), sig) {
            return Err(Fault::BadSignature(k as u32));
        }
    }
    on_time("compute", elapsed, params.compute_deadline)
}

fn on_time(phase: &'static str, elapsed: Duration, deadline: Duration) -> Result<(), Fault> {
    if elapsed > deadline {
        return Err(Fault::Late {
            phase,
            elapsed,
            deadline,
        });
    }
    Ok(())
}

/// Checks the walk's length and deadline.
pub fn check_walk(params: &Params, digests: &[u64], elapsed: Duration) -> Result<(), Fault> {
    if digests.len() != params.walk_len() {
        return Err(Fault::WalkLength {
            got: digests.len(),
            want: params.walk_len(),
        });
    }
    on_time("memory", elapsed, params.walk_deadline)
}

fn draw(seed: &[u8; 32], tag: &[u8], i: u64) -> u64 {
    let h = sha256(&[b"cairn/popw/audit", seed, tag, &i.to_be_bytes()]).0;
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// What the checker asks the device to open, from its own fresh `audit_seed` (drawn after
/// the walk): `audit_rows` random rows, then the rows of `walk_checks` distinct random walk
/// steps (each step's `walk_rows` rows, as `(table, row, Some(step))`, step counted over all
/// chains).
pub fn audit_requests(
    params: &Params,
    audit_seed: &[u8; 32],
    walk_nonce: &[u8; 32],
    roots: &[Hash],
    digests: &[u64],
) -> Vec<(u32, u32, Option<usize>)> {
    let mut out = Vec::new();
    let all = u64::from(params.tables).saturating_mul(u64::from(params.n));
    if u64::from(params.audit_rows) >= all {
        // As many openings as rows: open every row once.
        for t in 0..params.tables {
            out.extend((0..params.n).map(|r| (t, r, None)));
        }
    } else {
        for i in 0..u64::from(params.audit_rows) {
            let (t, r) = position(params, draw(audit_seed, b"row", i));
            out.push((t, r, None));
        }
    }
    let positions = walk_positions(params, walk_nonce, roots, digests);
    // Distinct steps (a step's rows are checked as one run), as many as there are.
    let checks = (params.walk_checks as usize).min(positions.len());
    let mut steps = std::collections::BTreeSet::new();
    let mut i = 0u64;
    while steps.len() < checks {
        let step = draw(audit_seed, b"walk", i)
            .checked_rem(positions.len() as u64)
            .unwrap_or(0) as usize; // `checks` ≥ 1, so there are positions
        i = i.wrapping_add(1);
        if steps.insert(step)
            && let Some(&(t, first)) = positions.get(step)
        {
            let last = first.saturating_add(params.walk_rows);
            out.extend((first..last).map(|r| (t, r, Some(step))));
        }
    }
    out
}

/// Checks the opened rows: each under its signed root; each checked walk step's digest over
/// the rows it read; and each random row the product on `params.audit_cols` random columns of
/// its table (Freivalds' algorithm with `params.rounds` random 0/1 vectors, or the entries
/// computed exactly where a table has one or two rows opened and that costs less). A walked
/// row is checked against its root and its step's digest only: that the walk read what the
/// device committed to is what the memory phase needs, and whether committed rows are the
/// product is what the random rows sample. Runs on every core; the tables are independent.
pub fn check_audit(
    params: &Params,
    answer: &Answer,
    walk_nonce: &[u8; 32],
    digests: &[u64],
    audit_seed: &[u8; 32],
    openings: &[Opening],
) -> Result<(), Fault> {
    let requests = audit_requests(params, audit_seed, walk_nonce, &answer.roots, digests);
    let mut by_table: BTreeMap<u32, Vec<&Opening>> = BTreeMap::new();
    let mut runs: BTreeMap<usize, Vec<&Opening>> = BTreeMap::new();
    let mut checked = std::collections::BTreeSet::new();
    for (table, row, step) in requests {
        let o = openings
            .iter()
            .find(|o| o.table == table && o.row == row)
            .ok_or(Fault::MissingOpening { table, row })?;
        let root = answer
            .roots
            .get(table as usize)
            .ok_or(Fault::BadOpening { table, row })?;
        if checked.insert((table, row))
            && (o.values.len() != params.n as usize
                || !crate::fraud::path_leads_to(&o.values, row, &o.path, root))
        {
            return Err(Fault::BadOpening { table, row });
        }
        match step {
            Some(step) => runs.entry(step).or_default().push(o),
            None => by_table.entry(table).or_default().push(o),
        }
    }
    for (step, rows) in runs {
        let run: Vec<i32> = rows.iter().flat_map(|o| o.values.iter().copied()).collect();
        if digests.get(step) != Some(&row_digest(&run)) {
            return Err(Fault::WalkDigest(step));
        }
    }
    by_table
        .into_par_iter()
        .map(|(table, rows)| {
            let c = table_challenge(&answer.nonce, table, params.n)?;
            let seed = sha256(&[audit_seed, &table.to_be_bytes()]).0;
            check_rows(&c, &rows, params.audit_cols, params.rounds, &seed)
        })
        .collect::<Result<Vec<()>, Fault>>()?;
    Ok(())
}

/// The columns a table's check covers: `cols` distinct columns drawn from `seed` (all when
/// `cols ≥ n`), ascending.
fn pick_columns(n: u32, cols: u32, seed: &[u8; 32]) -> Vec<u32> {
    if cols >= n {
        return (0..n).collect();
    }
    let mut picked = std::collections::BTreeSet::new();
    let mut i = 0u64;
    while picked.len() < cols as usize {
        // n > cols ≥ 0, so n ≥ 1.
        picked.insert(draw(seed, b"col", i).checked_rem(u64::from(n)).unwrap_or(0) as u32);
        i = i.wrapping_add(1);
    }
    picked.into_iter().collect()
}

/// `B`'s columns `cols`, one after another (each `n` values).
fn columns(c: &Challenge, cols: &[u32]) -> Vec<i8> {
    let mut out = Vec::with_capacity(cols.len().saturating_mul(c.n as usize));
    for j in cols {
        out.extend_from_slice(&c.b_col(*j));
    }
    out
}

/// Checks the opened rows of one table on a random subset `S` of `cols` columns: Freivalds'
/// algorithm over `S` when several rows share the table (`rounds` 0/1 vectors, one pass over
/// `B_S` each, shared by all the rows), or each entry of `S` computed exactly when that costs
/// less (one or two rows: at n = 16,384 an audit's rows mostly fall in different tables).
/// Either way generating `B_S` (|S|·n bytes of ChaCha20) is most of the work, which is why
/// `cols` is the knob that keeps an audit within its CPU budget.
fn check_rows(
    c: &Challenge,
    rows: &[&Opening],
    cols: u32,
    rounds: u32,
    seed: &[u8; 32],
) -> Result<(), Fault> {
    let s = u64::from(cols.min(c.n));
    let (k, r) = (u64::from(rounds), rows.len() as u64);
    // Multiply-adds per value of a column: exact r·|S|; Freivalds k·(|S|/2 + r).
    let exact = r.saturating_mul(s);
    let freivalds_cost = k.saturating_mul((s / 2).saturating_add(r));
    if exact > freivalds_cost {
        return freivalds(c, rows, cols, rounds, seed);
    }
    let picked = pick_columns(c.n, cols, seed);
    let n = c.n as usize;
    let b = columns(c, &picked);
    for o in rows {
        let a = c.a_row(c.shuffled_row(o.row));
        for (j, bj) in picked.iter().zip(b.chunks_exact(n)) {
            if o.values.get(*j as usize) != Some(&dot(&a, bj)) {
                return Err(Fault::WrongRow {
                    table: o.table,
                    row: o.row,
                    col: *j,
                });
            }
        }
    }
    Ok(())
}

/// Freivalds' check of opened rows of `c`'s result over a random column subset `S` of `cols`
/// columns: for each of `rounds` random 0/1 vectors `x` over `S`, each row's `Σ x_j·C[r][j]`
/// must equal `A[π(r)]·(B_S·x)`. A wrong entry in `S` passes a round with probability at most
/// ½.
pub fn freivalds(
    c: &Challenge,
    rows: &[&Opening],
    cols: u32,
    rounds: u32,
    seed: &[u8; 32],
) -> Result<(), Fault> {
    let n = c.n as usize;
    let picked = pick_columns(c.n, cols, seed);
    let b = columns(c, &picked);
    let a: Vec<Vec<i8>> = rows
        .iter()
        .map(|o| c.a_row(c.shuffled_row(o.row)))
        .collect();
    let mut y = vec![0i32; n];
    for round in 0..rounds {
        let x: Vec<bool> = (0..picked.len())
            .map(|i| draw(seed, b"x", (u64::from(round) << 32) | i as u64) & 1 == 1)
            .collect();
        // y = B_S · x, a block of y at a time so that it stays in L1 while the columns pass.
        y.fill(0);
        const BLOCK: usize = 2048;
        for (k0, yb) in (0..n).step_by(BLOCK).zip(y.chunks_mut(BLOCK)) {
            for (bc, _) in b.chunks_exact(n).zip(&x).filter(|(_, x)| **x) {
                for (yk, bk) in yb.iter_mut().zip(bc.get(k0..).unwrap_or_default()) {
                    *yk = yk.wrapping_add(i32::from(*bk));
                }
            }
        }
        for (o, ar) in rows.iter().zip(&a) {
            let lhs: i64 = picked
                .iter()
                .zip(&x)
                .filter(|(_, x)| **x)
                .map(|(j, _)| o.values.get(*j as usize).map_or(0, |v| i64::from(*v)))
                .sum();
            let rhs: i64 = ar
                .iter()
                .zip(&y)
                .map(|(a, y)| i64::from(*a).wrapping_mul(i64::from(*y)))
                .sum();
            if lhs != rhs {
                // Some entry of S under x differs (the entries are below 2³¹ in size, so the
                // sums are exact): find it, one dot product per column.
                let col = picked
                    .iter()
                    .zip(b.chunks_exact(n))
                    .find(|(j, bj)| o.values.get(**j as usize) != Some(&dot(ar, bj)))
                    .map_or(0, |(j, _)| *j);
                return Err(Fault::WrongRow {
                    table: o.table,
                    row: o.row,
                    col,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_row_is_checked_exactly_on_its_columns() {
        let c = Challenge::new([3; 32], 64).unwrap();
        let right = Opening {
            table: 0,
            row: 9,
            values: c.result_row(9),
            path: vec![],
        };
        // One row, every column: the exact path (1·64 ≤ 8·(32 + 1)).
        assert_eq!(check_rows(&c, &[&right], 64, 8, &[1; 32]), Ok(()));
        for j in [0usize, 17, 63] {
            let mut wrong = right.clone();
            wrong.values[j] += 1;
            assert_eq!(
                check_rows(&c, &[&wrong], 64, 8, &[1; 32]),
                Err(Fault::WrongRow {
                    table: 0,
                    row: 9,
                    col: j as u32
                })
            );
        }
        // Eight rows share the table: Freivalds (8·64 > 8·(32 + 8)), same verdicts.
        let rows: Vec<Opening> = (0..8)
            .map(|r| Opening {
                table: 0,
                row: r,
                values: c.result_row(r),
                path: vec![],
            })
            .collect();
        let mut refs: Vec<&Opening> = rows.iter().collect();
        assert_eq!(check_rows(&c, &refs, 64, 8, &[1; 32]), Ok(()));
        let mut wrong = rows[5].clone();
        wrong.values[40] -= 1;
        refs[5] = &wrong;
        // Freivalds finds the row; the column is then located exactly.
        assert_eq!(
            check_rows(&c, &refs, 64, 8, &[1; 32]),
            Err(Fault::WrongRow {
                table: 0,
                row: 5,
                col: 40
            })
        );
    }
}
