//! The ledger's block as commonware's consensus and marshal see it.

use bytes::BufMut;
use cairn_primitives::{Block, Hash};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, Read, Write};
use commonware_consensus::types::Height;
use commonware_consensus::{BoundedBlock, Heightable};
use commonware_cryptography::{Digestible, sha256::Digest};

/// A ledger block under consensus. Its digest is the block hash (SHA-256 of the encoded
/// header), except at height 0: the genesis anchor is a pseudo-block whose digest is the zero
/// hash, which is what the ledger's first block names as its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock(pub Block);

/// The consensus digest of a ledger hash.
pub fn digest_of(h: &Hash) -> Digest {
    Digest(h.0)
}

/// The ledger hash of a consensus digest.
pub fn hash_of(d: &Digest) -> Hash {
    Hash(d.0)
}

impl ChainBlock {
    /// The pseudo-block consensus starts from: height 0, digest zero, the genesis state root.
    pub fn genesis(genesis_root: Hash, genesis_time_ms: u64) -> Self {
        Self(Block::build(
            0,
            Hash::default(),
            0,
            genesis_root,
            genesis_time_ms,
            Default::default(),
            Vec::new(),
        ))
    }
}

impl Write for ChainBlock {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.write(buf);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.0.encode_size()
    }
}

impl Read for ChainBlock {
    /// The most bytes a block may encode to.
    type Cfg = usize;

    fn read_cfg(buf: &mut impl Buf, max: &usize) -> Result<Self, CodecError> {
        let b = Block::read_cfg(buf, &())?;
        if b.encode_size() > *max {
            return Err(CodecError::Invalid(
                "ChainBlock",
                "block exceeds the size limit",
            ));
        }
        Ok(Self(b))
    }
}

impl Digestible for ChainBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        if self.0.header.height == 0 {
            return digest_of(&Hash::default());
        }
        digest_of(&self.0.hash())
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.0.header.height)
    }
}

impl commonware_consensus::Block for ChainBlock {
    fn parent(&self) -> Digest {
        digest_of(&self.0.header.parent)
    }
}

impl BoundedBlock for ChainBlock {
    fn max_encode_size(max: &usize) -> usize {
        *max
    }
}
