//! Applying blocks of arbitrary (decoded) transactions never panics, keeps the supply
//! identity, and a rejected block changes nothing.
#![no_main]
use cairn_ledger::{Ledger, testing};
use cairn_primitives::wire::{Copying, DecodeExt};
use cairn_primitives::{Keypair, SignedTx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys: Vec<Keypair> = (0..4).map(|i| Keypair::from_seed([i; 32])).collect();
    let funded: Vec<_> = keys.iter().map(|k| (k.address(), 1_000_000_000_000)).collect();
    let genesis = testing::genesis(&funded);
    let mut ledger = Ledger::from_genesis(&genesis).unwrap();
    for chunk in data.chunks(600) {
        let mut txs = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let n = (rest[0] as usize).min(rest.len() - 1) + 1;
            let (head, tail) = rest.split_at(n);
            rest = tail;
            if let Ok(tx) = SignedTx::decode(Copying(&head[1..])) {
                // Re-sign with a known key so that the body, not the signature, is exercised.
                let k = &keys[head[0] as usize % keys.len()];
                let mut t = tx.tx;
                t.sender = k.public_key();
                txs.push(t.sign(k, &genesis.chain_id));
            }
        }
        let ts = ledger.globals().last_timestamp_ms + u64::from(chunk[0]) * 1_000;
        let root = ledger.state_root();
        let block = ledger.build_block(ts, txs);
        if ledger.apply(&block).is_err() {
            assert_eq!(ledger.state_root(), root);
        }
        let g = ledger.globals();
        assert_eq!(ledger.holdings(), u128::from(g.supply.base()));
    }
});
