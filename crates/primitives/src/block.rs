//! Blocks: a header that chains to its parent and commits to the transactions.

use crate::codec::vec_cfg;
use crate::{Address, Hash, SignedTx, merkle_root, sha256};
use commonware_codec::Encode;

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 100_000;

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Height: the genesis state is height 0, the first block is 1.
    pub height: u64,
    /// Hash of the parent header (zero for the first block).
    pub parent: Hash,
    /// Proposer's clock, milliseconds since the Unix epoch; never before the parent's.
    pub timestamp_ms: u64,
    /// The proposing validator.
    pub proposer: Address,
    /// The height whose resulting state `state_root` names: the last block the proposer had
    /// executed, at most the parent's height. With consensus, a block is ordered before it is
    /// executed, so a proposer may build on a parent it has not executed yet; it then anchors
    /// an earlier, finalized height, and every replica checks the root it recorded there.
    pub state_height: u64,
    /// The state root after block `state_height` (the genesis state when 0).
    pub state_root: Hash,
    /// Merkle root of the transaction hashes.
    pub tx_root: Hash,
}
codec_struct!(Header {
    height: (),
    parent: (),
    timestamp_ms: (),
    proposer: (),
    state_height: (),
    state_root: (),
    tx_root: (),
});

impl Header {
    /// The block's id: SHA-256 of the encoded header.
    pub fn hash(&self) -> Hash {
        sha256(&[&self.encode()])
    }
}

/// A block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// The transactions, applied in order.
    pub txs: Vec<SignedTx>,
}
codec_struct!(Block {
    header: (),
    txs: vec_cfg::<()>(MAX_BLOCK_TXS),
});

impl Block {
    /// Builds a block on a parent, computing the transaction root.
    pub fn build(
        height: u64,
        parent: Hash,
        state_height: u64,
        state_root: Hash,
        timestamp_ms: u64,
        proposer: Address,
        txs: Vec<SignedTx>,
    ) -> Self {
        let tx_root = Self::tx_root_of(&txs);
        Self {
            header: Header {
                height,
                parent,
                timestamp_ms,
                proposer,
                state_height,
                state_root,
                tx_root,
            },
            txs,
        }
    }

    /// The Merkle root over the hashes of `txs`.
    pub fn tx_root_of(txs: &[SignedTx]) -> Hash {
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        merkle_root(&hashes)
    }

    /// The block's id.
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }
}
