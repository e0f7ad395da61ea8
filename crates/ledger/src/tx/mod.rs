//! One file per family of transactions, each an `impl Ledger` block with what its
//! transactions do: the dispatch is [`crate::block`]'s `apply_tx`.

mod checkers;
mod credits;
mod deployments;
mod devices;
mod fraud;
mod leases;
mod rounds;
mod staking;
mod transfer;

pub use deployments::{MAX_DURATION_SECS, MAX_MATCH_SCAN, MAX_REPLICAS};
pub use rounds::{NO_UPTIME, decide};
