//! A checker's audit at a class's full size, built without solving the whole challenge: what
//! `cairn bench popw` times against DESIGN §6's bar (< 50 ms of CPU per audit).

use crate::fraud::sign_answer;
use crate::matrix::{ChallengeError, row_leaf};
use crate::protocol::{Answer, Opening, Params, Table, table_challenge};
use crate::verify::{Fault, audit_requests, check_audit};
use cairn_primitives::{Hash, Keypair, sha256};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// An honest answer's audit: the rows a checker asks to open, each computed for real, under
/// roots built from them.
pub struct AuditCase {
    /// The parameters audited (see [`AuditCase::build`]).
    pub params: Params,
    answer: Answer,
    audit_seed: [u8; 32],
    openings: Vec<Opening>,
}

const WALK_NONCE: [u8; 32] = [0; 32];

impl AuditCase {
    /// The audit of an answer to `params` under a nonce from `seed`. Each opened row is
    /// computed for real (a pass over its table's `B`: 256 MiB of ChaCha20 at n = 16,384), and
    /// every other row's leaf is a placeholder: the audit's work is exactly what an honest
    /// answer costs, without solving the whole challenge. A real walk at that size would need
    /// every table, so its `walk_checks` rows are drawn at random like the others
    /// (`audit_rows` grows by as many, `walk_checks` is zero): the same openings, paths and
    /// Freivalds checks, less one 64-bit compare each. `progress(done, total)` per table.
    pub fn build(
        params: &Params,
        seed: [u8; 32],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, ChallengeError> {
        let params = Params {
            audit_rows: params.audit_rows + params.walk_checks,
            walk_checks: 0,
            ..params.clone()
        };
        let nonce = sha256(&[b"cairn/popw/bench-nonce", &seed]).0;
        let audit_seed = sha256(&[b"cairn/popw/bench-audit", &seed]).0;
        let mut wanted: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (t, r, _) in audit_requests(&params, &audit_seed, &WALK_NONCE, &[], &[]) {
            wanted.entry(t).or_default().push(r);
        }
        let n = params.n as usize;
        let mut roots: Vec<Hash> = (0..params.tables)
            .map(|t| sha256(&[b"cairn/popw/bench-unaudited", &t.to_be_bytes()]))
            .collect();
        let mut openings = Vec::new();
        let key = Keypair::from_seed(seed);
        let mut signatures = Vec::with_capacity(params.tables as usize);
        let total = wanted.len();
        for (done, (t, mut rows)) in wanted.into_iter().enumerate() {
            rows.sort_unstable();
            rows.dedup();
            let c = table_challenge(&nonce, t, params.n)?;
            let bt = c.b_matrix_t();
            let values: BTreeMap<u32, Vec<i32>> = rows
                .iter()
                .map(|r| {
                    let a = c.a_row(c.shuffled_row(*r));
                    let row = bt
                        .par_chunks(n)
                        .map(|b| a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)))
                        .map(Iterator::sum)
                        .collect();
                    (*r, row)
                })
                .collect();
            let leaves: Vec<Hash> = (0..params.n)
                .map(|r| match values.get(&r) {
                    Some(v) => row_leaf(r, v),
                    None => sha256(&[b"cairn/popw/bench-row", &r.to_be_bytes()]),
                })
                .collect();
            let table = Table::from_leaves(c, leaves);
            roots[t as usize] = table.root;
            for (r, v) in values {
                openings.push(Opening {
                    table: t,
                    row: r,
                    values: v,
                    path: crate::fraud::merkle_path(table.leaves(), r as usize),
                });
            }
            progress(done + 1, total);
        }
        for (t, root) in roots.iter().enumerate() {
            let c = table_challenge(&nonce, t as u32, params.n)?;
            signatures.push(sign_answer(&key, "cairn-bench", &c.nonce, c.n, root));
        }
        Ok(Self {
            answer: Answer {
                nonce,
                n: params.n,
                roots,
                signatures,
            },
            params,
            audit_seed,
            openings,
        })
    }

    /// Rows opened.
    pub fn rows(&self) -> usize {
        self.openings.len()
    }

    /// Distinct tables the opened rows fall in.
    pub fn tables(&self) -> usize {
        let mut t: Vec<u32> = self.openings.iter().map(|o| o.table).collect();
        t.dedup();
        t.len()
    }

    /// The checker's audit of the openings, on rayon's current pool.
    pub fn check(&self) -> Result<(), Fault> {
        check_audit(
            &self.params,
            &self.answer,
            &WALK_NONCE,
            &[],
            &self.audit_seed,
            &self.openings,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_case_passes_its_audit_and_a_wrong_entry_fails_it() {
        let params = Params {
            n: 256,
            tables: 6,
            walk_steps: 100,
            audit_rows: 10,
            walk_checks: 3,
            audit_cols: 64,
            rounds: 8,
            compute_deadline: Duration::from_secs(1),
            walk_deadline: Duration::from_secs(1),
        };
        let mut case = AuditCase::build(&params, [1; 32], |_, _| {}).unwrap();
        assert_eq!(case.params.audit_rows, 13);
        assert!(case.rows() >= 10 && case.tables() <= 6);
        assert_eq!(case.check(), Ok(()));
        // Every opened row is the product; one entry off is caught.
        for o in &case.openings {
            let c = table_challenge(&case.answer.nonce, o.table, params.n).unwrap();
            assert_eq!(o.values, c.result_row(o.row));
        }
        case.openings[0].values[0] += 1;
        assert!(case.check().is_err());
    }
}
