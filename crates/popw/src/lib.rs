//! Proof of physical work (docs/design.md §4): the compute challenge's matrices, its result
//! commitment, and fraud proofs that anyone can check in O(n).
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
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

mod bench;
mod cuda;
mod fraud;
mod matrix;
mod protocol;
mod solve;
mod verify;

pub use bench::AuditCase;
pub use cuda::{CudaSolver, KERNEL_SOURCE, compile_kernels, cuda_unavailable};
pub use fraud::{
    FraudError, answer_message, fraud_proof, merkle_path, sign_answer, verify_fraud_proof,
};
pub use matrix::{Challenge, ChallengeError, LEAF_CHUNK, MAX_N, row_leaf, rows_root};
pub use protocol::{
    Answer, CPU_N, CPU_REQUIRED_FRACTION, GPU_N, GPU_REQUIRED_FRACTION, HostTables,
    NETWORK_ALLOWANCE, Opening, Params, Prover, Retained, SelfReport, Table, WALK_MIN_BYTES,
    row_digest, self_challenge, table_challenge, walk_positions, walk_with,
};
pub use solve::{CpuSolver, Inputs, SolveError, Solver, cpu_kernel_peak, product};
pub use verify::{Fault, audit_requests, check_answer, check_audit, check_walk, freivalds};
