use cairn_ledger::testing;
use cairn_primitives::{Amount, Keypair, TxBody, sha256};
use cairn_store::{Chain, replay};
use rand::{RngExt as _, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "CAIRN_CRASH_CHILD_DIR";

fn key(i: usize) -> Keypair {
    Keypair::from_seed(sha256(&[b"crash", &(i as u64).to_be_bytes()]).0)
}

fn genesis() -> cairn_primitives::Genesis {
    let funded: Vec<_> = (0..16)
        .map(|i| (key(i).address(), 1_000_000_000_000))
        .collect();
    testing::genesis(&funded)
}

/// The child: commits blocks of transfers forever, printing each committed height after the
/// commit returned (that is the acknowledgement the parent holds it to). Not a test of its
/// own: `sigkill_at_random_moments_loses_nothing` runs it with `--ignored`.
#[test]
#[ignore = "child process of sigkill_at_random_moments_loses_nothing"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("spawned by the SIGKILL test");
    let g = genesis();
    let mut chain = Chain::open(&dir, Some(&g)).unwrap();
    let keys: Vec<Keypair> = (0..16).map(key).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(chain.height());
    loop {
        let mut txs = Vec::new();
        let mut nonces: Vec<u64> = keys
            .iter()
            .map(|k| chain.ledger().account(&k.address()).nonce)
            .collect();
        for _ in 0..50 {
            let from = rng.random_range(0..16);
            let to = rng.random_range(0..16);
            txs.push(testing::tx(
                &keys[from],
                nonces[from],
                TxBody::Transfer {
                    to: keys[to].address(),
                    amount: Amount::from_base(rng.random_range(1..1000)),
                },
                &g.chain_id,
            ));
            nonces[from] += 1;
        }
        let ts = chain.ledger().globals().last_timestamp_ms + 7_000;
        let block = chain.ledger().build_block(ts, txs);
        let o = chain.commit(&block).unwrap();
        println!("committed {} {}", o.height, o.state_root);
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut acked = 0u64;
    let kills = 20;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("committed ") {
                    let h: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                    let _ = tx.send(h);
                }
            }
        });
        // Let it commit a random number of blocks, then kill it mid-whatever it is doing.
        let target = rng.random_range(1..6);
        let wait = Duration::from_millis(rng.random_range(0..40));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < target && Instant::now() < deadline {
            if let Ok(h) = rx.recv_timeout(Duration::from_millis(100)) {
                acked = acked.max(h);
                seen += 1;
            }
        }
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(h) = rx.try_recv() {
            acked = acked.max(h);
        }
        // Reopen: at least every acknowledged block is there, and the state equals a replay.
        let chain = Chain::open(dir.path(), None).unwrap();
        assert!(
            chain.height() >= acked,
            "round {round}: reopened at {} but {acked} was acknowledged",
            chain.height()
        );
        let root = chain.ledger().state_root();
        drop(chain);
        let report = replay(dir.path(), |_, _| {}).unwrap();
        assert_eq!(
            report.state_root, root,
            "round {round}: reopen differs from replay"
        );
    }
    assert!(
        acked >= kills as u64,
        "the child committed too little to test anything"
    );
}

#[test]
fn reopen_refuses_another_genesis_and_a_new_dir_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Chain::open(dir.path(), None),
        Err(cairn_store::Error::NoGenesis(_))
    ));
    let g = genesis();
    drop(Chain::open(dir.path(), Some(&g)).unwrap());
    let mut other = g.clone();
    other.chain_id = "other".into();
    assert!(matches!(
        Chain::open(dir.path(), Some(&other)),
        Err(cairn_store::Error::GenesisMismatch { .. })
    ));
}

#[test]
fn a_refused_block_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let mut chain = Chain::open(dir.path(), Some(&g)).unwrap();
    let b = chain.ledger().build_block(g.genesis_time_ms + 1, vec![]);
    chain.commit(&b).unwrap();
    // Same block again: wrong height.
    assert!(matches!(
        chain.commit(&b),
        Err(cairn_store::Error::Block(_))
    ));
    let mut bad = chain.ledger().build_block(g.genesis_time_ms + 2, vec![]);
    bad.header.state_root = cairn_primitives::Hash([1; 32]);
    assert!(chain.commit(&bad).is_err());
    assert_eq!(chain.height(), 1);
    let root = chain.ledger().state_root();
    drop(chain);
    let reopened = Chain::open(dir.path(), None).unwrap();
    assert_eq!(reopened.height(), 1);
    assert_eq!(reopened.ledger().state_root(), root);
    let (h, i, code) = {
        let t = testing::tx(
            &key(0),
            0,
            TxBody::Transfer {
                to: key(1).address(),
                amount: Amount::from_base(1),
            },
            &g.chain_id,
        );
        let hash = t.hash();
        drop(reopened);
        let mut c = Chain::open(dir.path(), None).unwrap();
        let b = c.ledger().build_block(g.genesis_time_ms + 3, vec![t]);
        c.commit(&b).unwrap();
        c.tx_status(&hash).unwrap().unwrap()
    };
    assert_eq!((h, i, code), (2, 0, None));
}
