//! Cairn's checker: it holds authenticated connections from the devices assigned to it,
//! challenges each one due in a round with proof of physical work (its own random draws
//! for the walk and the audit), keeps the receipts devices sign as evidence, and posts each
//! round's results on chain (docs/checkers.md). The wire both sides speak is here too, so the
//! worker's side of the protocol uses the same messages and connection.
#![deny(missing_docs)]

mod daemon;
pub mod link;
mod settings;
pub mod wire;

pub use daemon::{CheckerError, Metrics, run};
pub use settings::{CheckerSettings, SettingsError};
