//! Ledger integration tests.

/// Checkers, rounds, verdicts and disputes: bad input refused, verdicts' effects.
mod checking;
/// The emission schedule sums to its budget and never crosses the cap.
mod emission;
/// Shared fixtures.
mod fixture;
/// Deployments, billing, refunds, staking, epochs and fraud proofs, end to end on the ledger.
mod flows;
/// Matching agrees with a brute-force reference; all-or-nothing; no double booking.
mod matching;
/// Property tests over random transaction sequences: supply, determinism, replay, atomicity.
mod props;
