//! A checker's audit at a class's full size, built without solving the whole challenge: what
//! `cairn bench popw` times against docs/design.md §6's bar (< 50 ms of CPU per audit).

use crate::prover::Table;
use cairn_popw::{
    Answer, ChallengeError, Fault, Opening, Params, audit_requests, check_audit, chunk_digests,
    leaf_over_chunks, merkle_path, row_digest, row_leaf, sign_answer, table_challenge, walk_with,
};
use cairn_primitives::{Keypair, sha256};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// An answer, a walk and the openings an audit asks for, all consistent: the checker's whole
/// audit runs on it as on a device's.
pub struct AuditCase {
    /// The parameters audited.
    pub params: Params,
    answer: Answer,
    walk_nonce: [u8; 32],
    digests: Vec<u64>,
    audit_seed: [u8; 32],
    openings: Vec<Opening>,
}

impl AuditCase {
    /// The audit of an answer to `params` under a nonce from `seed`. Computing every table
    /// at a GPU class's size would take a CPU hours, so the committed tables hold the true
    /// product in exactly the rows the audit samples at random (each computed for real: a
    /// pass over its table's `B`, 256 MiB of ChaCha20 at n = 16,384) and zeros in every other
    /// row. The walk over those tables is real, and the walk steps the audit checks read
    /// whatever they land on. The audit's work is what an honest answer costs: the same
    /// openings, paths, walk digests and column checks. `progress(done, total)` per table.
    pub fn build(
        params: &Params,
        seed: [u8; 32],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, ChallengeError> {
        let params = params.clone();
        let nonce = sha256(&[b"cairn/popw/bench-nonce", &seed]).0;
        let audit_seed = sha256(&[b"cairn/popw/bench-audit", &seed]).0;
        let walk_nonce = sha256(&[b"cairn/popw/bench-walk", &seed]).0;
        let n = params.n as usize;
        // The rows the audit samples at random: drawn from the audit seed alone.
        let mut sampled: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (t, r, _) in audit_requests(&params, &audit_seed, &walk_nonce, &[], &[]) {
            sampled.entry(t).or_default().push(r);
        }
        let total = sampled.len();
        let mut rows: BTreeMap<(u32, u32), Vec<i32>> = BTreeMap::new();
        for (done, (t, wanted)) in sampled.iter().enumerate() {
            let c = table_challenge(&nonce, *t, params.n)?;
            let bt = c.b_matrix_t();
            for r in wanted {
                let a = c.a_row(c.shuffled_row(*r));
                let row = bt
                    .par_chunks(n)
                    .map(|b| a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)))
                    .map(Iterator::sum)
                    .collect();
                rows.insert((*t, *r), row);
            }
            progress(done + 1, total);
        }
        let zero_row = vec![0i32; n];
        let zero_chunks = chunk_digests(&zero_row);
        let tables: Vec<Table> = (0..params.tables)
            .into_par_iter()
            .map(|t| {
                let c = table_challenge(&nonce, t, params.n)?;
                let leaves = (0..params.n)
                    .map(|r| match rows.get(&(t, r)) {
                        Some(v) => row_leaf(r, v),
                        None => leaf_over_chunks(r, &zero_chunks),
                    })
                    .collect();
                Ok(Table::from_leaves(c, leaves))
            })
            .collect::<Result<_, ChallengeError>>()?;
        let row_of = |t: u32, r: u32| rows.get(&(t, r)).unwrap_or(&zero_row);
        let roots: Vec<_> = tables.iter().map(|t| t.root).collect();
        let digests = walk_with(&params, &walk_nonce, &roots, |t, first| {
            if rows
                .range((t, first)..(t, first + params.walk_rows))
                .next()
                .is_none()
            {
                return 0; // a run of zero rows
            }
            let run: Vec<i32> = (first..first + params.walk_rows)
                .flat_map(|r| row_of(t, r).iter().copied())
                .collect();
            row_digest(&run)
        });
        let mut openings: Vec<Opening> =
            audit_requests(&params, &audit_seed, &walk_nonce, &roots, &digests)
                .into_iter()
                .map(|(t, r, _)| Opening {
                    table: t,
                    row: r,
                    values: row_of(t, r).clone(),
                    path: merkle_path(tables[t as usize].leaves(), r as usize),
                })
                .collect();
        openings.sort_by_key(|o| (o.table, o.row));
        openings.dedup_by_key(|o| (o.table, o.row));
        let key = Keypair::from_seed(seed);
        let signatures = tables
            .iter()
            .map(|t| {
                sign_answer(
                    &key,
                    "cairn-bench",
                    &t.challenge.nonce,
                    t.challenge.n,
                    &t.root,
                )
            })
            .collect();
        Ok(Self {
            answer: Answer {
                nonce,
                n: params.n,
                roots,
                signatures,
            },
            params,
            walk_nonce,
            digests,
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
            &self.walk_nonce,
            &self.digests,
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
    fn the_case_passes_its_audit_and_a_wrong_entry_or_walk_fails_it() {
        let params = Params {
            n: 256,
            tables: 6,
            walk_chains: 4,
            walk_steps: 50,
            walk_rows: 4,
            audit_rows: 10,
            walk_checks: 3,
            audit_cols: 64,
            rounds: 8,
            compute_deadline: Duration::from_secs(1),
            walk_deadline: Duration::from_secs(1),
        };
        let case = AuditCase::build(&params, [1; 32], |_, _| {}).unwrap();
        assert!(case.rows() >= 10 + 3 * 4 - 4, "{}", case.rows());
        assert_eq!(case.check(), Ok(()));
        // The sampled rows are the product.
        let c = |t| table_challenge(&case.answer.nonce, t, params.n).unwrap();
        assert!(
            case.openings
                .iter()
                .filter(|o| o.values.iter().any(|v| *v != 0))
                .all(|o| o.values == c(o.table).result_row(o.row))
        );
        // A wrong digest for a checked step is caught; so is a walk of the wrong length.
        let mut bad = AuditCase::build(&params, [1; 32], |_, _| {}).unwrap();
        for d in &mut bad.digests {
            *d ^= 1;
        }
        assert!(bad.check().is_err());
        let mut short = AuditCase::build(&params, [1; 32], |_, _| {}).unwrap();
        short.digests.pop();
        assert_eq!(
            cairn_popw::check_walk(&params, &short.digests, Duration::ZERO),
            Err(Fault::WalkLength {
                got: 199,
                want: 200
            })
        );
    }
}
