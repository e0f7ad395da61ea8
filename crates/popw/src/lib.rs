//! Proof of physical work (docs/design.md §4), the protocol both sides agree on and the
//! checker's verification: the compute challenge's matrices, its result commitment, the
//! memory walk, the audit, and fraud proofs that anyone can check in O(n). The ledger runs
//! fraud-proof verification in consensus, so this crate is pure: no `unsafe`, no GPU, no
//! clock (callers measure time), and checked arithmetic. The device side (the CPU and CUDA
//! solvers, the prover) is the `cairn-solver` crate.
//!
//! A challenge is a 32-byte nonce and a dimension `n` (a power of two). Both sides derive
//! int8 matrices `A` and `B` from the nonce with counter-mode ChaCha20 streams, so nothing
//! large is shipped and any element can be regenerated alone (`B` is stored column-major, so a
//! column is one contiguous run of the stream). The device answers `C = P·A·B` with int32
//! accumulation, where `P` is a nonce-derived row shuffle (`row r` of `C` uses row
//! `π(r) = (a·r + b) mod n` of `A`), commits to `C` with a Merkle tree over its rows, and signs
//! `(nonce, n, root)`.
//!
//! ```
//! use cairn_popw::{Challenge, row_leaf};
//! let c = Challenge::new([7; 32], 16).unwrap();
//! let row = c.result_row(3);
//! assert_eq!(row.len(), 16);
//! assert_eq!(row[5], c.entry(3, 5));
//! let _leaf = row_leaf(3, &row);
//! ```
#![deny(missing_docs)]
// The ledger runs this crate's verification in consensus: no panics, no unchecked arithmetic
// (lighthouse's consensus lints), outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod fraud;
mod matrix;
mod protocol;
mod verify;

pub use fraud::{
    FraudError, answer_message, fraud_proof, fraud_proof_of, merkle_path, sign_answer,
    verify_fraud_proof,
};
pub use matrix::{
    CHUNK_TAG, Challenge, ChallengeError, LEAF_CHUNK, MAX_N, ROW_TAG, chunk_digests,
    leaf_over_chunks, row_leaf, rows_root,
};
pub use protocol::{
    Answer, CPU_COUNTED_FRACTION, CPU_N, CPU_REQUIRED_FRACTION, CPU_TABLES_PER_CORE, GPU_N,
    GPU_REQUIRED_FRACTION, MAX_CPU_TABLES, NETWORK_ALLOWANCE, Opening, Params, WALK_MIN_BYTES,
    measured_cores, row_digest, table_challenge, table_nonce, walk_chain, walk_positions,
    walk_starts, walk_with,
};
pub use verify::{Fault, audit_requests, check_answer, check_audit, check_walk, freivalds};
