//! Four validators under commonware's deterministic runtime and simulated network: the
//! whole consensus stack (simplex, marshal, execution into each validator's own redb store)
//! with real signatures, journals and backfill. Only the network and the clock are simulated.

use cairn_ledger::testing;
use cairn_node::consensus::{self, Channels, engine::channel};
use cairn_node::{Node, ProducerSettings};
use cairn_primitives::{Address, Amount, Genesis, Keypair, SignedTx, TxBody, Validator};
use commonware_codec::{DecodeExt as _, Encode as _};
use commonware_consensus::simplex::types::{Finalize, Notarize, Proposal, Vote};
use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::sha256::Digest;
use commonware_p2p::simulated::{self, Link, Oracle};
use commonware_p2p::{Receiver as _, Recipients, Sender as _};
use commonware_runtime::{
    Clock, Handle, Quota, Runner as _, Spawner, Supervisor as _, deterministic,
};
use commonware_utils::{NZU32, NZUsize, probability};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use tempfile::TempDir;

type Ctx = deterministic::Context;

const VALIDATORS: usize = 4;
const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(2),
    success_rate: probability!(1.0),
};
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));

struct Net {
    oracle: Oracle<PublicKey, Ctx>,
    keys: Vec<Keypair>,
    genesis: Genesis,
    dirs: Vec<TempDir>,
    users: Vec<Keypair>,
}

fn validator_key(i: usize) -> Keypair {
    Keypair::from_seed([0x40 + i as u8; 32])
}

async fn network(context: &Ctx) -> Net {
    network_with(context, LINK, None).await
}

/// The validators' network over `link`; a fresh genesis and data directories, or those of an
/// earlier run (`previous`) restarting from its disks.
async fn network_with(context: &Ctx, link: Link, previous: Option<(Genesis, Vec<TempDir>)>) -> Net {
    let keys: Vec<Keypair> = (0..VALIDATORS).map(validator_key).collect();
    let users: Vec<Keypair> = (0..4u8)
        .map(|i| Keypair::from_seed([0x70 + i; 32]))
        .collect();
    let funded: Vec<(Address, u64)> = users
        .iter()
        .map(|k| (k.address(), 1_000_000_000_000))
        .collect();
    let (genesis, dirs) = previous.unwrap_or_else(|| {
        let mut genesis = testing::genesis(&funded);
        genesis.genesis_time_ms = context
            .current()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        genesis.validators = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                key: k.address(),
                p2p: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect();
        let dirs = (0..VALIDATORS)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        (genesis, dirs)
    });
    let (net, oracle) = simulated::Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: 1 << 20,
            max_peers_per_set: NZUsize!(VALIDATORS),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        keys.iter().map(Keypair::public_key),
    )
    .await;
    net.start();
    for a in &keys {
        for b in &keys {
            if a.address() != b.address() {
                oracle
                    .add_link(a.public_key(), b.public_key(), link.clone())
                    .await
                    .expect("link");
            }
        }
    }
    Net {
        oracle,
        keys,
        genesis,
        dirs,
        users,
    }
}

fn settings() -> ProducerSettings {
    ProducerSettings {
        idle_interval: Duration::from_millis(200),
        max_block_bytes: 1 << 19,
        ..ProducerSettings::default()
    }
}

async fn channels(
    oracle: &Oracle<PublicKey, Ctx>,
    key: &PublicKey,
) -> Channels<simulated::Sender<PublicKey, Ctx>, simulated::Receiver<PublicKey>> {
    let control = oracle.control(key.clone());
    let mut reg = Vec::new();
    for ch in [
        channel::VOTES,
        channel::CERTIFICATES,
        channel::RESOLVER,
        channel::BLOCKS,
        channel::BACKFILL,
    ] {
        reg.push(control.register(ch, QUOTA).await.expect("register"));
    }
    let mut it = reg.into_iter();
    let mut next = || it.next().expect("five channels");
    Channels {
        votes: next(),
        certificates: next(),
        resolver: next(),
        blocks: next(),
        backfill: next(),
    }
}

/// Opens validator `i`'s chain (retrying while a stopped instance still holds it) and runs
/// its consensus in a task of its own; aborting the task stops all of it.
async fn start(context: &Ctx, net: &Net, i: usize) -> (Arc<Node>, Handle<()>) {
    let key = &net.keys[i];
    let node = loop {
        match Node::open(
            net.dirs[i].path(),
            Some(&net.genesis),
            key.address(),
            settings(),
        ) {
            Ok(n) => break n,
            Err(e) if e.to_string().contains("already open") => {
                context.sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("open validator {i}: {e}"),
        }
    };
    let ch = channels(&net.oracle, &key.public_key()).await;
    let cfg = consensus::Config {
        namespace: consensus::namespace(&net.genesis.chain_id),
        participants: net.keys.iter().map(Keypair::public_key).collect(),
        signer: key.private_key().clone(),
        partition: format!("v{i}"),
        timing: consensus::Timing {
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_millis(1500),
            timeout_retry: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(1),
        },
    };
    let (peers, blocker) = (net.oracle.manager(), net.oracle.control(key.public_key()));
    let n = node.clone();
    let handle =
        context
            .child("validator")
            .with_attribute("index", i)
            .spawn(move |ctx| async move {
                let _running =
                    consensus::start(ctx.child("consensus"), cfg, n, ch, peers, blocker).await;
                futures::future::pending::<()>().await;
            });
    (node, handle)
}

/// Starts validators `range`.
async fn start_all(
    context: &Ctx,
    net: &Net,
    range: std::ops::Range<usize>,
) -> (Vec<Arc<Node>>, Vec<Handle<()>>) {
    let mut nodes = Vec::new();
    let mut handles = Vec::new();
    for i in range {
        let (n, h) = start(context, net, i).await;
        nodes.push(n);
        handles.push(h);
    }
    (nodes, handles)
}

fn transfers(net: &Net, from: usize, nonces: std::ops::Range<u64>) -> Vec<SignedTx> {
    nonces
        .map(|n| {
            testing::tx(
                &net.users[from],
                n,
                TxBody::Transfer {
                    to: net.users[(from + 1) % net.users.len()].address(),
                    amount: Amount::from_base(1_000 + n),
                },
                &net.genesis.chain_id,
            )
        })
        .collect()
}

/// Submits to every given node's mempool (a client may reach any of them; each takes its turn
/// as leader).
fn submit(nodes: &[&Arc<Node>], txs: &[SignedTx]) {
    for n in nodes {
        for r in n.submit(txs.to_vec()) {
            r.expect("admitted");
        }
    }
}

async fn wait_height(context: &Ctx, nodes: &[&Arc<Node>], height: u64) {
    while nodes.iter().any(|n| n.height() < height) {
        context.sleep(Duration::from_millis(50)).await;
    }
}

/// Every node executed the same blocks to the same roots, up to the lowest height among them.
fn assert_same_chain(nodes: &[&Arc<Node>]) -> u64 {
    let top = nodes.iter().map(|n| n.height()).min().expect("nodes");
    for h in 1..=top {
        let first = nodes[0].block(h).expect("read").expect("block").hash();
        let root = nodes[0].root_at(h).expect("root");
        for (i, n) in nodes.iter().enumerate().skip(1) {
            let b = n.block(h).expect("read").expect("block").hash();
            assert_eq!(
                b, first,
                "validator {i} finalized another block at height {h}"
            );
            assert_eq!(
                n.root_at(h),
                Some(root),
                "validator {i} has another root at {h}"
            );
        }
    }
    top
}

fn balance(node: &Node, who: &Keypair) -> Amount {
    node.with_ledger(|l| l.account(&who.address()).balance)
}

#[test]
fn four_validators_finalize_the_same_blocks() {
    deterministic::Runner::timed(Duration::from_secs(300)).start(|context| async move {
        let net = network(&context).await;
        let (nodes, handles) = start_all(&context, &net, 0..VALIDATORS).await;
        let all: Vec<&Arc<Node>> = nodes.iter().collect();
        let before = balance(&nodes[0], &net.users[1]);
        let txs = transfers(&net, 0, 0..50);
        submit(&all, &txs);
        // Every transaction lands exactly once, whichever leader took it.
        while nodes
            .iter()
            .any(|n| n.with_ledger(|l| l.account(&net.users[0].address()).nonce) < 50)
        {
            context.sleep(Duration::from_millis(50)).await;
        }
        // A few more views, so that every validator has led.
        let h = nodes.iter().map(|n| n.height()).max().unwrap_or(0);
        wait_height(&context, &all, h.max(8)).await;
        let top = assert_same_chain(&all);
        assert!(top >= 8, "finalized {top} blocks");
        let paid: u64 = (0..50).map(|n| 1_000 + n).sum();
        for n in &nodes {
            assert_eq!(
                balance(n, &net.users[1]).base(),
                before.base() + paid,
                "each transfer applied once"
            );
            assert!(n.halted().is_none());
        }
        // Proposers rotate: more than one validator's blocks are in the chain.
        let mut proposers = std::collections::BTreeSet::new();
        for h in 1..=top {
            proposers.insert(
                nodes[0]
                    .block(h)
                    .expect("read")
                    .expect("block")
                    .header
                    .proposer,
            );
        }
        assert!(proposers.len() > 1, "one proposer only: {proposers:?}");
        for h in handles {
            h.abort();
        }
    });
}

#[test]
fn one_validator_down_the_rest_finalize_and_it_catches_up() {
    deterministic::Runner::timed(Duration::from_secs(600)).start(|context| async move {
        let net = network(&context).await;
        let (nodes, mut handles) = start_all(&context, &net, 0..VALIDATORS).await;
        let mut nodes: Vec<Option<Arc<Node>>> = nodes.into_iter().map(Some).collect();
        {
            let all: Vec<&Arc<Node>> = nodes.iter().flatten().collect();
            wait_height(&context, &all, 3).await;
        }
        // Validator 3 goes down (a crash: its tasks stop where they are).
        handles.pop().expect("handle").abort();
        let down_at = nodes[3].take().expect("node").height();
        let live: Vec<&Arc<Node>> = nodes.iter().flatten().collect();
        let txs = transfers(&net, 1, 0..20);
        submit(&live, &txs);
        let target = live[0].height() + 10;
        wait_height(&context, &live, target).await;
        assert_same_chain(&live);
        // It restarts from its own disk and journals, and catches up through backfill.
        let (back, h3) = start(&context, &net, 3).await;
        assert!(back.height() >= down_at, "restart lost executed blocks");
        let goal = live.iter().map(|n| n.height()).max().unwrap_or(0);
        assert!(
            back.height() + 10 <= goal,
            "it was behind when it came back"
        );
        wait_height(&context, &[&back], goal).await;
        let mut all = live.clone();
        all.push(&back);
        assert_same_chain(&all);
        assert_eq!(
            balance(&back, &net.users[2]),
            balance(live[0], &net.users[2]),
            "the restarted validator executed the transfers it missed"
        );
        // And it takes part again: the chain keeps growing with all four.
        let next = goal + 5;
        wait_height(&context, &all, next).await;
        assert_same_chain(&all);
        h3.abort();
        for h in handles {
            h.abort();
        }
    });
}

/// Lossy links (a fifth of all messages dropped, jittery latency) and an unclean shutdown of
/// every validator at once (the runtime stops mid-flight: consensus journal writes not yet
/// synced are lost, as at a power cut), then a restart from each validator's disk: no block
/// executed before the crash is lost, each transfer applies exactly once, and the four go on
/// finalizing one chain over the same lossy links.
#[test]
fn lossy_links_and_an_unclean_shutdown_keep_one_chain() {
    const LOSSY: Link = Link {
        latency: Duration::from_millis(40),
        jitter: Duration::from_millis(30),
        success_rate: probability!(0.8),
    };
    let paid: u64 = (0..30).map(|n| 1_000 + n).sum();
    let runner = deterministic::Runner::timed(Duration::from_secs(900));
    let ((genesis, dirs, executed, before), checkpoint) =
        runner.start_and_recover(|context| async move {
            let net = network_with(&context, LOSSY, None).await;
            let (nodes, _handles) = start_all(&context, &net, 0..VALIDATORS).await;
            let all: Vec<&Arc<Node>> = nodes.iter().collect();
            let before = balance(&nodes[0], &net.users[1]);
            submit(&all, &transfers(&net, 0, 0..30));
            wait_height(&context, &all, 6).await;
            assert_same_chain(&all);
            let executed: Vec<u64> = nodes.iter().map(|n| n.height()).collect();
            // Returning ends the run with every task where it is: nothing is shut down.
            (net.genesis, net.dirs, executed, before)
        });
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let net = network_with(&context, LOSSY, Some((genesis, dirs))).await;
        let (nodes, handles) = start_all(&context, &net, 0..VALIDATORS).await;
        let all: Vec<&Arc<Node>> = nodes.iter().collect();
        for (i, n) in nodes.iter().enumerate() {
            assert!(
                n.height() >= executed[i],
                "validator {i} lost executed blocks: {} < {}",
                n.height(),
                executed[i]
            );
        }
        // The transfers were admitted before the crash; mempools are memory only, so the
        // client resubmits those not yet final (their nonces make that safe).
        let done = nodes[0].with_ledger(|l| l.account(&net.users[0].address()).nonce);
        submit(&all, &transfers(&net, 0, done..30));
        while nodes
            .iter()
            .any(|n| n.with_ledger(|l| l.account(&net.users[0].address()).nonce) < 30)
        {
            context.sleep(Duration::from_millis(50)).await;
        }
        let goal = nodes.iter().map(|n| n.height()).max().unwrap_or(0) + 5;
        wait_height(&context, &all, goal).await;
        assert_same_chain(&all);
        for n in &nodes {
            assert_eq!(
                balance(n, &net.users[1]).base(),
                before.base() + paid,
                "each transfer applied exactly once across the crash"
            );
            assert!(n.halted().is_none());
        }
        for h in handles {
            h.abort();
        }
    });
}

/// Validator 3 signs two conflicting votes for every vote it sees (a random digest and the
/// real one), notarize and finalize alike.
fn equivocate(context: &Ctx, net: &Net, sent: Arc<AtomicU64>) -> Handle<()> {
    let key = net.keys[3].clone();
    let oracle = net.oracle.clone();
    let namespace = consensus::namespace(&net.genesis.chain_id);
    let participants: Vec<PublicKey> = net.keys.iter().map(Keypair::public_key).collect();
    context.child("equivocator").spawn(move |ctx| async move {
        let (mut sender, mut receiver) = oracle
            .control(key.public_key())
            .register(channel::VOTES, QUOTA)
            .await
            .expect("register");
        let scheme = consensus::engine::scheme(&consensus::Config {
            namespace,
            participants,
            signer: key.private_key().clone(),
            partition: String::new(),
            timing: Default::default(),
        });
        let mut n = 0u64;
        while let Ok((_, msg)) = receiver.recv().await {
            let vote = match Vote::<consensus::Scheme, Digest>::decode(msg) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("equivocator: undecodable vote: {e}");
                    continue;
                }
            };
            n += 1;
            let mut fake = [0u8; 32];
            fake[..8].copy_from_slice(&n.to_be_bytes());
            let fake = Digest(fake);
            let pair = match vote {
                Vote::Notarize(v) => {
                    let p = v.proposal.clone();
                    let other = Proposal::new(p.round, p.parent, fake);
                    [
                        Vote::Notarize(Notarize::sign(&scheme, other).expect("sign")),
                        Vote::Notarize(Notarize::sign(&scheme, p).expect("sign")),
                    ]
                }
                Vote::Finalize(v) => {
                    let p = v.proposal.clone();
                    let other = Proposal::new(p.round, p.parent, fake);
                    [
                        Vote::Finalize(Finalize::sign(&scheme, other).expect("sign")),
                        Vote::Finalize(Finalize::sign(&scheme, p).expect("sign")),
                    ]
                }
                _ => continue,
            };
            for v in pair {
                sender.send(Recipients::All, v.encode(), true);
            }
            sent.fetch_add(1, Ordering::Relaxed);
            let _ = ctx.current();
        }
    })
}

#[test]
fn an_equivocating_validator_does_not_break_safety() {
    deterministic::Runner::timed(Duration::from_secs(600)).start(|context| async move {
        let net = network(&context).await;
        let (nodes, handles) = start_all(&context, &net, 0..3).await;
        let sent = Arc::new(AtomicU64::new(0));
        let byzantine = equivocate(&context, &net, sent.clone());
        let honest: Vec<&Arc<Node>> = nodes.iter().collect();
        let txs = transfers(&net, 2, 0..20);
        submit(&honest, &txs);
        wait_height(&context, &honest, 12).await;
        let top = assert_same_chain(&honest);
        assert!(top >= 12);
        for n in &nodes {
            assert_eq!(
                n.with_ledger(|l| l.account(&net.users[2].address()).nonce),
                20,
                "every transfer final once"
            );
        }
        assert!(
            sent.load(Ordering::Relaxed) >= 1,
            "the equivocator sent conflicting votes"
        );
        // The honest validators saw the conflicting signatures and cut it off.
        let blocked = net.oracle.blocked().await.expect("blocked list");
        let cheat = net.keys[3].public_key();
        let blockers: std::collections::BTreeSet<_> = blocked
            .iter()
            .filter(|(_, b)| *b == cheat)
            .map(|(a, _)| a.clone())
            .collect();
        assert_eq!(
            blockers.len(),
            3,
            "every honest validator blocked it: {blocked:?}"
        );
        byzantine.abort();
        for h in handles {
            h.abort();
        }
    });
}
