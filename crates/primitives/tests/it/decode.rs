//! Bounded random-bytes decoding: never a panic, only errors. (The cargo-fuzz targets in
//! `fuzz/` explore the same decoders with coverage guidance.)

use cairn_primitives::wire::{Copying, DecodeExt, Encode};
use cairn_primitives::{Block, SignedTx, StateKey, StateValue};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(tx) = SignedTx::decode(Copying(&bytes)) {
            // Whatever decodes re-encodes to the same bytes: the encoding is canonical.
            prop_assert_eq!(tx.encode().to_vec(), bytes.clone());
        }
        let _ = Block::decode(Copying(&bytes));
        for key in [StateKey::Globals, StateKey::Lease(1), StateKey::Account(Default::default())] {
            if let Ok(v) = StateValue::decode_value(&key, &bytes) {
                prop_assert_eq!(v.encode_value(), bytes.clone());
            }
        }
        if let Some(key) = StateKey::from_bytes(&bytes) {
            prop_assert_eq!(key.to_bytes(), bytes.clone());
        }
    }

    #[test]
    fn mutated_transactions_never_panic(flip in 0usize..400, bit in 0u8..8) {
        let k = cairn_primitives::Keypair::from_seed([1; 32]);
        let tx = cairn_ledger_free_tx(&k);
        let mut bytes = tx.encode().to_vec();
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(t) = SignedTx::decode(Copying(&bytes)) {
            // A flipped bit anywhere in a decodable transaction breaks its signature.
            prop_assert!(!t.verify("c") || t == tx);
        }
    }
}

fn cairn_ledger_free_tx(k: &cairn_primitives::Keypair) -> SignedTx {
    cairn_primitives::Tx {
        sender: k.public_key(),
        nonce: 3,
        fee: cairn_primitives::Amount::from_base(1000),
        body: cairn_primitives::TxBody::Transfer {
            to: cairn_primitives::Address([9; 32]),
            amount: cairn_primitives::Amount::from_base(5),
        },
    }
    .sign(k, "c")
}

#[test]
fn oversized_lengths_are_refused_before_allocation() {
    // A block claiming 2^32 transactions: refused by the bound, not by running out of memory.
    let mut bytes = cairn_primitives::Block::build(
        1,
        Default::default(),
        0,
        Default::default(),
        0,
        Default::default(),
        vec![],
    )
    .encode()
    .to_vec();
    bytes.truncate(bytes.len() - 1);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Block::decode(Copying(&bytes)).is_err());
}

proptest! {
    /// Addresses order as their bytes do (the ledger's maps, the state root's keys and the
    /// API's paging rely on it), also when they share a prefix of whole words.
    #[test]
    fn addresses_order_as_their_bytes(
        a in prop::array::uniform32(any::<u8>()),
        b in prop::array::uniform32(any::<u8>()),
        shared in 0usize..=32,
    ) {
        let mut b = b;
        b[..shared].copy_from_slice(&a[..shared]);
        let (x, y) = (cairn_primitives::Address(a), cairn_primitives::Address(b));
        prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        prop_assert_eq!(x.partial_cmp(&y), Some(a.cmp(&b)));
    }
}
