//! Ordering with commonware's simplex consensus; see [`engine`] for the shape.

pub mod app;
pub mod block;
pub mod engine;

pub use app::{App, Invalid, Scheme, check_shape};
pub use block::ChainBlock;
pub use engine::{Channels, Config, Running, Timing, start};

/// The signature domain of consensus messages on chain `chain_id`.
pub fn namespace(chain_id: &str) -> Vec<u8> {
    let mut ns = b"cairn-consensus/".to_vec();
    ns.extend_from_slice(chain_id.as_bytes());
    ns
}
