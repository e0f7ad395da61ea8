//! The device side of proof of physical work: solvers that compute a challenge's tables (on
//! every CPU core, or on a CUDA GPU through cudarc, loaded at run time so that building needs
//! no toolkit), the prover that keeps them and answers the walk and the audit, and the whole
//! protocol run against oneself (`cairn worker probe`). The protocol and the checker's side
//! are the pure `cairn-popw` crate; this one holds the `unsafe` GPU code and is compiled at
//! full optimization even in tests, whose deadlines time it.
//!
//! ```
//! use cairn_popw::{Params, check_walk};
//! use cairn_solver::{CpuSolver, Prover};
//! use std::time::Duration;
//! let params = Params {
//!     n: 16, tables: 1, walk_chains: 2, walk_steps: 3, walk_rows: 4, audit_rows: 2,
//!     walk_checks: 1, audit_cols: 16, rounds: 4,
//!     compute_deadline: Duration::from_secs(60), walk_deadline: Duration::from_secs(60),
//! };
//! let prover = Prover::solve(&CpuSolver, [7; 32], params.clone(), |_, _| {}).unwrap();
//! let digests = prover.walk(&[8; 32]).unwrap();
//! assert!(check_walk(&params, &digests, Duration::ZERO).is_ok());
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

mod audit_case;
mod cuda;
mod prover;
mod solve;

pub use audit_case::AuditCase;
pub use cuda::{CudaSolver, KERNEL_SOURCE, compile_kernels, cuda_unavailable};
pub use prover::{HostTables, Prover, Retained, SelfReport, Table, self_challenge};
pub use solve::{CpuSolver, Inputs, SolveError, Solver, cpu_kernel_peak, product};
