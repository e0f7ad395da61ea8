//! Store integration tests.

/// SIGKILL a committing child process at random moments; every reopen equals a replay.
mod crash;
/// Per-address epoch rewards, written with the block that paid them.
mod rewards;
