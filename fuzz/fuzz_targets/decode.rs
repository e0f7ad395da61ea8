//! Decoding arbitrary bytes as any wire or ledger type never panics, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]
use cairn_primitives::wire::{Copying, DecodeExt, Encode};
use cairn_primitives::{Block, SignedTx, StateKey, StateValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTx::decode(Copying(data)) {
        assert_eq!(tx.encode().as_ref(), data);
    }
    if let Ok(b) = Block::decode(Copying(data)) {
        assert_eq!(b.encode().as_ref(), data);
    }
    if let Some(key) = StateKey::from_bytes(data) {
        assert_eq!(key.to_bytes(), data);
    }
    for key in [StateKey::Globals, StateKey::Device(Default::default()), StateKey::Deployment(0)] {
        let _ = StateValue::decode_value(&key, data);
    }
});
