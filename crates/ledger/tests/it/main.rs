//! Ledger integration tests.

/// Property tests over random transaction sequences: supply, determinism, replay, atomicity.
mod props;
/// The emission schedule sums to its budget and never crosses the cap.
mod emission;
/// Matching agrees with a brute-force reference; all-or-nothing; no double booking.
mod matching;
/// Deployments, billing, refunds, staking, epochs and fraud proofs, end to end on the ledger.
mod flows;
/// Shared fixtures.
mod fixture;
