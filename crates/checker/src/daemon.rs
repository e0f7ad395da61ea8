//! The checker daemon.
//!
//! Two halves. A chain thread (blocking HTTP to the node) follows the chain: the epoch, this
//! checker's devices in assignment order, every round it has not handed out yet (one of the
//! epoch before is run against that epoch's list); it hands each new round to the link half, journals the results that come back before posting them, posts them, and backs
//! disputed results with the receipts kept on disk. The link half (a commonware tokio
//! runtime) accepts devices' connections and runs each round against each due device, with
//! this checker's own random draws; heartbeats are counted all the while.

use crate::link::{self, Ctx, LinkReceiver, LinkSender};
use crate::settings::CheckerSettings;
use crate::wire::{self, ToChecker, ToDevice, reason, roots_digest, transcript_digest};
use cairn_client::Client;
use cairn_popw::{Answer, Params};
use cairn_primitives::{
    Address, DeviceClass, Hash, Keypair, PostResults, PublicKey, Receipt, ReceiptFor, ResultCode,
    TxBody, UPTIME_STEPS, device_nonce, pack_codes,
};
use commonware_runtime::{
    Clock as _, Listener as _, Network as _, Runner as _, Spawner as _, Supervisor as _,
};
use futures::StreamExt as _;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the time limits add to a device's deadlines for the network and scheduling.
const GRACE: Duration = Duration::from_secs(2);
/// How long a device may take to be free to walk (it walks for one checker at a time).
const READY_WAIT: Duration = Duration::from_secs(60);
/// How long openings and the receipt may take.
const REPLY_WAIT: Duration = Duration::from_secs(30);
/// A round found later than this after it started (the checker was down or behind) is not
/// run: its seed has been public for long enough that a device could have prepared.
const LATE_ROUND: Duration = Duration::from_secs(60);

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node refused or could not be reached at start.
    #[error(transparent)]
    Node(#[from] cairn_client::Error),
    /// The data directory could not be written.
    #[error("data directory {0}: {1}")]
    Data(PathBuf, std::io::Error),
}

/// Counters, served as Prometheus text.
#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    rounds: AtomicU64,
    pass: AtomicU64,
    fail: AtomicU64,
    no_answer: AtomicU64,
    not_checked: AtomicU64,
    heartbeats: AtomicU64,
    refused_messages: AtomicU64,
    results_posted: AtomicU64,
    post_errors: AtomicU64,
    disputes_backed: AtomicU64,
    fraud_proofs: AtomicU64,
    fraud_proofs_posted: AtomicU64,
}

impl Metrics {
    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let c = |name: &str, help: &str, v: &AtomicU64| {
            format!(
                "# HELP cairn_checker_{name} {help}\n# TYPE cairn_checker_{name} counter\ncairn_checker_{name} {}\n",
                v.load(Ordering::Relaxed)
            )
        };
        [
            c(
                "connections",
                "Device connections accepted.",
                &self.connections,
            ),
            c("rounds", "Rounds run.", &self.rounds),
            c("pass", "Results: pass.", &self.pass),
            c("fail", "Results: fail.", &self.fail),
            c("no_answer", "Results: no answer.", &self.no_answer),
            c("not_checked", "Results: not checked.", &self.not_checked),
            c("heartbeats", "Valid heartbeats received.", &self.heartbeats),
            c(
                "refused_messages",
                "Messages refused (malformed, replayed, unsigned, out of turn).",
                &self.refused_messages,
            ),
            c(
                "results_posted",
                "PostResults transactions final.",
                &self.results_posted,
            ),
            c(
                "fraud_proofs",
                "Fraud proofs built from wrong entries found by audits.",
                &self.fraud_proofs,
            ),
            c(
                "fraud_proofs_posted",
                "SubmitFraudProof transactions final.",
                &self.fraud_proofs_posted,
            ),
            c(
                "post_errors",
                "PostResults attempts that failed.",
                &self.post_errors,
            ),
            c(
                "disputes_backed",
                "Disputed results backed with a receipt.",
                &self.disputes_backed,
            ),
        ]
        .concat()
    }
}

/// A device's heartbeats this epoch and the one before (a round of the epoch before may
/// still be posted).
#[derive(Clone, Default)]
struct Beats {
    epoch: u64,
    count: u64,
    before: u64,
}

impl Beats {
    /// Heartbeats counted in `epoch`.
    fn of(&self, epoch: u64) -> u64 {
        if self.epoch == epoch {
            self.count
        } else if self.epoch == epoch.saturating_add(1) {
            self.before
        } else {
            0
        }
    }
}

/// What the chain thread tells the link half.
struct RoundOrder {
    height: u64,
    seed: Hash,
    /// Due devices, their challenge, and whether not being connected is excused (their first
    /// round, or a round of an epoch that closed before it was handed out: the device may
    /// have moved on to its new epoch's checkers).
    due: Vec<(Address, Task, bool)>,
}

/// A due device's challenge: its size and deadlines and, for a CPU class, the class and the
/// cores claimed, to measure the cores its answer's time shows.
#[derive(Clone)]
struct Task {
    params: Params,
    cpu: Option<(DeviceClass, u32)>,
}

/// What a round found for one device: its result, the cores measured (a CPU-class pass; 0
/// otherwise), and why.
type Found = (ResultCode, u8, String);

/// A round's height and each due device's result with the cores measured.
type RoundResults = (u64, Vec<(Address, ResultCode, u8)>);

/// One device's part of a round, handed to its connection.
struct DeviceJob {
    height: u64,
    seed: Hash,
    task: Task,
    done: oneshot::Sender<Found>,
}

struct Shared {
    key: Keypair,
    me: Address,
    chain_id: String,
    evidence: PathBuf,
    /// Transactions to post (results, fraud proofs), one file each, until final.
    pending: PathBuf,
    /// Devices assigned to this checker this epoch: only they may connect.
    admitted: Mutex<BTreeSet<Address>>,
    /// Keys refused since the last refresh: a device registered since then is admitted as
    /// soon as the list is read again (at the next poll, not the next periodic refresh).
    knocked: AtomicBool,
    conns: Mutex<BTreeMap<Address, mpsc::UnboundedSender<DeviceJob>>>,
    beats: Mutex<BTreeMap<Address, Beats>>,
    epoch: AtomicU64,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn count(&self, code: ResultCode) {
        let m = &self.metrics;
        let c = match code {
            ResultCode::Pass => &m.pass,
            ResultCode::Fail => &m.fail,
            ResultCode::NoAnswer => &m.no_answer,
            ResultCode::NotChecked => &m.not_checked,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a checker until `stop` is set: accepts devices on `settings.listen`, follows the node
/// at `settings.node`. `metrics` is filled as it goes (the caller may serve it).
pub fn run(
    settings: &CheckerSettings,
    key: Keypair,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<(), CheckerError> {
    let client = Client::new(&settings.node);
    let (chain_id, _) = client.chain()?;
    let evidence = settings.data_dir.join("evidence");
    let pending = settings.data_dir.join("pending");
    for d in [&evidence, &pending] {
        std::fs::create_dir_all(d).map_err(|e| CheckerError::Data(d.clone(), e))?;
    }
    let shared = Arc::new(Shared {
        me: key.address(),
        key,
        chain_id,
        evidence,
        pending: pending.clone(),
        admitted: Mutex::new(BTreeSet::new()),
        knocked: AtomicBool::new(false),
        conns: Mutex::new(BTreeMap::new()),
        beats: Mutex::new(BTreeMap::new()),
        epoch: AtomicU64::new(0),
        heartbeat: settings.heartbeat,
        metrics,
    });
    let listener =
        std::net::TcpListener::bind(settings.listen).map_err(|e| CheckerError::Listen {
            addr: settings.listen.to_string(),
            reason: e.to_string(),
        })?;
    let listen_addr = listener.local_addr().map_err(|e| CheckerError::Listen {
        addr: settings.listen.to_string(),
        reason: e.to_string(),
    })?;
    // The runtime binds its own listener: free the port first (bound above to report a taken
    // port as an error before anything starts).
    drop(listener);
    let (orders_tx, orders_rx) = mpsc::unbounded::<RoundOrder>();
    let (results_tx, results_rx) = std::sync::mpsc::channel::<RoundResults>();
    let chain = {
        let shared = shared.clone();
        let stop = stop.clone();
        let settings = settings.clone();
        let pending = pending.clone();
        std::thread::Builder::new()
            .name("checker-chain".into())
            .spawn(move || follow_chain(&settings, &shared, &pending, orders_tx, results_rx, &stop))
            .map_err(|e| CheckerError::Data(PathBuf::from("checker-chain thread"), e))?
    };
    // Posting waits for each transaction to be final: on its own thread, so that a slow
    // commit never delays handing out the next round.
    let poster = {
        let shared = shared.clone();
        let stop = stop.clone();
        let settings = settings.clone();
        std::thread::Builder::new()
            .name("checker-post".into())
            .spawn(move || post_loop(&settings, &shared, &pending, &stop))
            .map_err(|e| CheckerError::Data(PathBuf::from("checker-post thread"), e))?
    };
    eprintln!(
        "checker {}: listening on {listen_addr} for its devices, following {}",
        shared.me, settings.node
    );
    // Connections are quiet between heartbeats (a minute by default): liveness is the
    // heartbeats' business, not the socket's read timeout.
    let cfg = commonware_runtime::tokio::Config::new()
        .with_worker_threads(2)
        .with_read_write_timeout(Duration::from_secs(3600));
    let runner = commonware_runtime::tokio::Runner::new(cfg);
    let link_stop = stop.clone();
    let result = runner.start(|ctx| async move {
        let listener = match ctx.bind(listen_addr).await {
            Ok(l) => l,
            Err(e) => {
                return Err(CheckerError::Listen {
                    addr: listen_addr.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let accept_shared = shared.clone();
        ctx.child("accept")
            .spawn(move |ctx| accept_loop(ctx, listener, accept_shared));
        ctx.child("rounds")
            .spawn(move |_| coordinate(orders_rx, shared, results_tx));
        while !link_stop.load(Ordering::Relaxed) {
            ctx.sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = chain.join();
    let _ = poster.join();
    result
}

/// The posting thread: posts journaled results, then backs open disputes, each poll.
fn post_loop(settings: &CheckerSettings, shared: &Shared, pending: &Path, stop: &AtomicBool) {
    let client = Client::new(&settings.node);
    while !stop.load(Ordering::Relaxed) {
        post_pending(&client, shared, pending, stop);
        match client.get(&format!("/v1/checkers/{}", shared.me)) {
            Ok(me) => back_disputes(&client, shared, &me),
            Err(e) => tracing::info!("checker: {e}"),
        }
        std::thread::sleep(settings.poll);
    }
}

async fn accept_loop(
    ctx: Ctx,
    mut listener: commonware_runtime::ListenerOf<Ctx>,
    shared: Arc<Shared>,
) {
    loop {
        let (addr, sink, stream) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                ctx.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        ctx.child("conn").spawn(move |ctx| async move {
            let admit_shared = shared.clone();
            let admit = move |k: &PublicKey| {
                let a = Address::of(k);
                let ok = admit_shared
                    .admitted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&a);
                if !ok {
                    admit_shared.knocked.store(true, Ordering::Relaxed);
                }
                ok
            };
            match link::accept(&ctx, &shared.key, &shared.chain_id, sink, stream, admit).await {
                Ok((k, tx, rx)) => {
                    shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
                    serve_device(ctx, shared, k, tx, rx).await;
                }
                Err(e) => tracing::debug!("connection from {addr} refused: {e}"),
            }
        });
    }
}

/// One device's connection: heartbeats, and the rounds the coordinator hands it.
async fn serve_device(
    ctx: Ctx,
    shared: Arc<Shared>,
    key: PublicKey,
    mut tx: LinkSender,
    rx: LinkReceiver,
) {
    let device = Address::of(&key);
    let nonce: [u8; 32] = rand::random();
    let epoch = shared.epoch.load(Ordering::Relaxed);
    let heartbeat_ms = shared.heartbeat.as_millis() as u64;
    let hello = ToDevice::Hello {
        epoch,
        nonce,
        heartbeat_ms,
    };
    if link::send(&mut tx, &hello).await.is_err() {
        return;
    }
    let (jobs_tx, mut jobs) = mpsc::unbounded::<DeviceJob>();
    shared
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(device, jobs_tx);
    // A reader task turns the connection into a channel, so that waiting for a message can be
    // raced against a deadline without losing half a message.
    // A malformed message comes through as its reason: the connection is then refused.
    let (msgs_tx, mut msgs) = mpsc::unbounded::<Result<ToChecker, String>>();
    ctx.child("reader").spawn(move |_| async move {
        let mut rx = rx;
        loop {
            match link::recv::<ToChecker>(&mut rx).await {
                Ok(m) => {
                    if msgs_tx.unbounded_send(Ok(m)).is_err() {
                        return;
                    }
                }
                Err(link::LinkError::Malformed(e)) => {
                    let _ = msgs_tx.unbounded_send(Err(format!("malformed message: {e}")));
                    return;
                }
                Err(e) => {
                    tracing::debug!("device {device}: {e}; closing");
                    return;
                }
            }
        }
    });
    let mut hb = HeartbeatCheck {
        device,
        key: key.clone(),
        nonce,
        last_seq: None,
    };
    // A device silent for three heartbeat intervals is gone: close, and let it reconnect.
    let idle = shared.heartbeat.saturating_mul(3);
    let mut heard = Instant::now();
    loop {
        let wait = Box::pin(ctx.sleep(idle.saturating_sub(heard.elapsed())));
        let next = match select(select(jobs.next(), msgs.next()), wait).await {
            Either::Left((next, _)) => next,
            Either::Right(_) => {
                let why = reason("no heartbeat for three intervals");
                let _ = link::send(&mut tx, &ToDevice::Refused { reason: why }).await;
                break;
            }
        };
        match next {
            Either::Left((Some(job), _)) => {
                let mut cores = 0;
                let (code, why) = run_round(
                    &ctx, &shared, &key, &mut hb, &mut tx, &mut msgs, &job, &mut cores,
                )
                .await;
                let cores = if code == ResultCode::Pass { cores } else { 0 };
                let done = ToDevice::Done {
                    round: job.height,
                    code,
                    reason: reason(&why),
                };
                let _ = job.done.send((code, cores, why));
                if link::send(&mut tx, &done).await.is_err() {
                    break;
                }
            }
            Either::Right((Some(m), _)) => match m.and_then(|m| hb.take(&shared, m)) {
                Ok(Taken::Counted) => heard = Instant::now(),
                // An answer after its round's deadline: late, ignored.
                Ok(Taken::Other(m)) => {
                    shared
                        .metrics
                        .refused_messages
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!("device {device}: {} out of turn; ignored", m.kind());
                }
                Err(why) => {
                    shared
                        .metrics
                        .refused_messages
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!("device {device}: refused: {why}; closing");
                    let refused = ToDevice::Refused {
                        reason: reason(&why),
                    };
                    let _ = link::send(&mut tx, &refused).await;
                    break;
                }
            },
            Either::Left((None, _)) | Either::Right((None, _)) => break,
        }
    }
    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    if conns.get(&device).is_some_and(|s| s.is_closed()) {
        conns.remove(&device);
    }
}

/// Checks heartbeats on one connection: signed by the device for this checker, this epoch
/// and this connection's nonce, with a sequence number that only goes up.
struct HeartbeatCheck {
    device: Address,
    key: PublicKey,
    nonce: [u8; 32],
    last_seq: Option<u64>,
}

impl HeartbeatCheck {
    /// Counts `m` if it is a valid heartbeat; a message that decoded to something else is
    /// handed back; a heartbeat that is not valid is refused, with the reason (the caller
    /// closes the connection: the device reconnects with a new nonce).
    fn take(&mut self, shared: &Shared, m: ToChecker) -> Result<Taken, String> {
        let h = match m {
            ToChecker::Heartbeat(h) => h,
            other => return Ok(Taken::Other(other)),
        };
        // The device's view of the epoch may lag or lead this checker's by one (each follows
        // the chain on its own; with short epochs they often differ at a boundary): a
        // heartbeat for the epoch before or after still counts, for this one.
        let epoch = shared.epoch.load(Ordering::Relaxed);
        if h.nonce != self.nonce {
            return Err("heartbeat bound to another connection's nonce".into());
        }
        if h.epoch.abs_diff(epoch) > 1 {
            return Err(format!(
                "heartbeat for epoch {}, this checker is in epoch {epoch}",
                h.epoch
            ));
        }
        if let Some(last) = self.last_seq
            && h.seq <= last
        {
            return Err(format!(
                "heartbeat replayed: sequence {} after {last}",
                h.seq
            ));
        }
        if !h.verify(&self.key, &shared.chain_id, &shared.me) {
            return Err("heartbeat signature does not verify for the device's key".into());
        }
        self.last_seq = Some(h.seq);
        let mut beats = shared.beats.lock().unwrap_or_else(|e| e.into_inner());
        let b = beats.entry(self.device).or_default();
        if b.epoch != epoch {
            let before = if b.epoch.saturating_add(1) == epoch {
                b.count
            } else {
                0
            };
            *b = Beats {
                epoch,
                count: 0,
                before,
            };
        }
        b.count = b.count.saturating_add(1);
        shared.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
        Ok(Taken::Counted)
    }
}

/// What [`HeartbeatCheck::take`] made of a message.
enum Taken {
    /// A valid heartbeat, counted.
    Counted,
    /// Not a heartbeat.
    Other(ToChecker),
}

/// Waits for the next message that `want` accepts, until `until`; heartbeats on the way are
/// counted. `None`: the deadline passed or the connection closed.
async fn wait_for<T>(
    ctx: &Ctx,
    shared: &Shared,
    hb: &mut HeartbeatCheck,
    msgs: &mut mpsc::UnboundedReceiver<Result<ToChecker, String>>,
    until: Instant,
    mut want: impl FnMut(ToChecker) -> Option<T>,
) -> Option<T> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let sleep = Box::pin(ctx.sleep(left));
        match select(msgs.next(), sleep).await {
            Either::Left((Some(Ok(m)), _)) => {
                // A bad heartbeat in the middle of a round is counted and logged; the round
                // goes on (its own messages decide it).
                let m = match hb.take(shared, m) {
                    Ok(Taken::Counted) => continue,
                    Ok(Taken::Other(m)) => m,
                    Err(why) => {
                        shared
                            .metrics
                            .refused_messages
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!("device {}: refused: {why}", hb.device);
                        continue;
                    }
                };
                let kind = m.kind();
                if let Some(t) = want(m) {
                    return Some(t);
                }
                shared
                    .metrics
                    .refused_messages
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("device {}: {kind} out of turn; ignored", hb.device);
            }
            // Malformed (the reader has stopped), closed, or the deadline.
            _ => return None,
        }
    }
}

/// One round against one device: compute, walk, audit, receipt. For a CPU class, `cores`
/// is set to what the answer's time shows.
#[allow(clippy::too_many_arguments)] // The connection's halves and state, each needed.
async fn run_round(
    ctx: &Ctx,
    shared: &Shared,
    key: &PublicKey,
    hb: &mut HeartbeatCheck,
    tx: &mut LinkSender,
    msgs: &mut mpsc::UnboundedReceiver<Result<ToChecker, String>>,
    job: &DeviceJob,
    cores: &mut u8,
) -> (ResultCode, String) {
    let h = job.height;
    let device = Address::of(key);
    let p = &job.task.params;
    let nonce = device_nonce(&job.seed, &device);
    if link::send(
        tx,
        &ToDevice::Round {
            height: h,
            seed: job.seed,
        },
    )
    .await
    .is_err()
    {
        return (ResultCode::NoAnswer, "the connection closed".into());
    }
    let t0 = Instant::now();
    let answer = wait_for(
        ctx,
        shared,
        hb,
        msgs,
        t0 + p.compute_deadline + GRACE,
        |m| match m {
            ToChecker::Answer { round, answer } if round == h => Some(Some(answer)),
            ToChecker::Busy { round } if round == h => Some(None),
            _ => None,
        },
    )
    .await;
    let answer: Answer = match answer {
        None => return (ResultCode::NoAnswer, "no answer before the deadline".into()),
        Some(None) => return (ResultCode::NotChecked, "serving a lease".into()),
        Some(Some(a)) => a,
    };
    let elapsed = t0.elapsed();
    if let Err(f) = cairn_popw::check_answer(&shared.chain_id, key, &nonce, p, &answer, elapsed) {
        return (ResultCode::Fail, format!("answer: {f}"));
    }
    if let Some((class, claimed)) = &job.task.cpu {
        *cores = cairn_popw::measured_cores(class, p, elapsed, *claimed);
    }
    let ready = wait_for(
        ctx,
        shared,
        hb,
        msgs,
        Instant::now() + READY_WAIT,
        |m| match m {
            ToChecker::Ready { round } if round == h => Some(()),
            _ => None,
        },
    )
    .await;
    if ready.is_none() {
        return (ResultCode::NoAnswer, "never ready to walk".into());
    }
    let walk_nonce: [u8; 32] = rand::random();
    if link::send(
        tx,
        &ToDevice::WalkNonce {
            round: h,
            nonce: walk_nonce,
        },
    )
    .await
    .is_err()
    {
        return (ResultCode::NoAnswer, "the connection closed".into());
    }
    let t1 = Instant::now();
    let digests = wait_for(
        ctx,
        shared,
        hb,
        msgs,
        t1 + p.walk_deadline + GRACE,
        |m| match m {
            ToChecker::Walk { round, digests } if round == h => Some(digests),
            _ => None,
        },
    )
    .await;
    let Some(digests) = digests else {
        return (ResultCode::Fail, "no walk before the deadline".into());
    };
    if let Err(f) = cairn_popw::check_walk(p, &digests, t1.elapsed()) {
        return (ResultCode::Fail, format!("walk: {f}"));
    }
    let audit_seed: [u8; 32] = rand::random();
    let rows: Vec<(u32, u32)> =
        cairn_popw::audit_requests(p, &audit_seed, &walk_nonce, &answer.roots, &digests)
            .into_iter()
            .map(|(t, r, _)| (t, r))
            .collect();
    if link::send(tx, &ToDevice::Audit { round: h, rows })
        .await
        .is_err()
    {
        return (
            ResultCode::Fail,
            "the connection closed during the audit".into(),
        );
    }
    let openings = wait_for(
        ctx,
        shared,
        hb,
        msgs,
        Instant::now() + REPLY_WAIT,
        |m| match m {
            ToChecker::Openings { round, openings } if round == h => Some(openings),
            _ => None,
        },
    )
    .await;
    let Some(openings) = openings else {
        return (ResultCode::Fail, "no openings".into());
    };
    let audit = {
        let (p, answer, digests, openings) =
            (p.clone(), answer.clone(), digests.clone(), openings.clone());
        // The audit is CPU work (< 50 ms): keep it off the connection's other messages.
        move || cairn_popw::check_audit(&p, &answer, &walk_nonce, &digests, &audit_seed, &openings)
    };
    if let Err(f) = audit() {
        // A wrong entry in a row under a signed root is a fraud proof anyone can check: the
        // device is slashed, and whoever passed this answer takes a strike.
        if let cairn_popw::Fault::WrongRow { table, row, col } = f
            && let Some(proof) = openings
                .iter()
                .find(|o| o.table == table && o.row == row)
                .and_then(|o| cairn_popw::fraud_proof_of(device, &answer, o, col))
        {
            shared.metrics.fraud_proofs.fetch_add(1, Ordering::Relaxed);
            journal_fraud(&shared.pending, h, proof);
        }
        return (ResultCode::Fail, format!("audit: {f}"));
    }
    let receipt = wait_for(
        ctx,
        shared,
        hb,
        msgs,
        Instant::now() + REPLY_WAIT,
        |m| match m {
            ToChecker::Receipt { round, receipt } if round == h => Some(receipt),
            _ => None,
        },
    )
    .await;
    let Some(receipt) = receipt else {
        return (ResultCode::Fail, "no receipt".into());
    };
    let what = ReceiptFor {
        checker: shared.me,
        round: h,
        nonce,
    };
    let matches = receipt.roots == roots_digest(&answer.roots)
        && receipt.walk_nonce == Hash(walk_nonce)
        && receipt.transcript == transcript_digest(&digests, &openings)
        && receipt.verify(key, &shared.chain_id, &what);
    if !matches {
        return (
            ResultCode::Fail,
            "the receipt does not match the exchange".into(),
        );
    }
    if let Err(e) = store_receipt(&shared.evidence, h, &device, &receipt) {
        // Without the receipt this result could not be backed on dispute: do not post it.
        return (
            ResultCode::NotChecked,
            format!("could not keep the receipt: {e}"),
        );
    }
    (ResultCode::Pass, "passed".into())
}

fn receipt_path(dir: &Path, round: u64, device: &Address) -> PathBuf {
    dir.join(round.to_string()).join(device.to_string())
}

fn store_receipt(dir: &Path, round: u64, device: &Address, r: &Receipt) -> std::io::Result<()> {
    use commonware_codec::Encode;
    let path = receipt_path(dir, round, device);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, r.encode())?;
    std::fs::rename(tmp, path)
}

fn load_receipt(dir: &Path, round: u64, device: &Address) -> Option<Receipt> {
    let bytes = std::fs::read(receipt_path(dir, round, device)).ok()?;
    wire::decode(&bytes).ok()
}

/// Hands each round to the due devices' connections, waits for their results, and passes
/// them to the chain thread. Rounds run one after another.
async fn coordinate(
    mut orders: mpsc::UnboundedReceiver<RoundOrder>,
    shared: Arc<Shared>,
    results: std::sync::mpsc::Sender<RoundResults>,
) {
    while let Some(order) = orders.next().await {
        shared.metrics.rounds.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Vec::new();
        let mut out = Vec::new();
        for (device, task, excused) in order.due {
            let conn = shared
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&device)
                .cloned();
            let (done, rx) = oneshot::channel();
            let job = DeviceJob {
                height: order.height,
                seed: order.seed,
                task,
                done,
            };
            match conn {
                Some(c) if c.unbounded_send(job).is_ok() => waiting.push((device, rx)),
                // A device that never connected is not punished for its first round (it stays
                // unverified), nor one for a round of an epoch already over. After that,
                // silence is no answer.
                _ if excused => out.push((
                    device,
                    (
                        ResultCode::NotChecked,
                        0,
                        "not connected (excused: its first round, or its epoch is over)".into(),
                    ),
                )),
                _ => out.push((
                    device,
                    (ResultCode::NoAnswer, 0, "not connected".to_string()),
                )),
            }
        }
        for (device, rx) in waiting {
            let found =
                rx.await
                    .unwrap_or((ResultCode::NoAnswer, 0, "the connection closed".into()));
            out.push((device, found));
        }
        let mut summary: BTreeMap<&str, usize> = BTreeMap::new();
        for (device, (code, cores, why)) in &out {
            let why = if *cores > 0 {
                format!("{why}, {cores} cores counted")
            } else {
                why.clone()
            };
            shared.count(*code);
            tracing::info!("round {}: device {device}: {code:?} ({why})", order.height);
            let k = match code {
                ResultCode::Pass => "pass",
                ResultCode::Fail => "fail",
                ResultCode::NoAnswer => "no answer",
                ResultCode::NotChecked => "not checked",
            };
            *summary.entry(k).or_default() += 1;
            if *code != ResultCode::Pass {
                eprintln!(
                    "checker {}: round {}: device {}: {why}",
                    shared.me.short(),
                    order.height,
                    device.short()
                );
            }
        }
        let line: Vec<String> = summary.iter().map(|(k, v)| format!("{v} {k}")).collect();
        eprintln!(
            "checker {}: round {}: {}",
            shared.me.short(),
            order.height,
            if line.is_empty() {
                "no device due".to_string()
            } else {
                line.join(", ")
            }
        );
        let codes = out.into_iter().map(|(d, (c, n, _))| (d, c, n)).collect();
        if results.send((order.height, codes)).is_err() {
            return;
        }
    }
}

/// What the chain thread knows of one assigned device.
#[derive(Clone)]
struct Assigned {
    address: Address,
    active: bool,
    class: String,
    gpu_count: u32,
    cpu_cores: u32,
    ram_mib: u64,
    registered_height: u64,
    round: u64,
    leased: bool,
    lease_ended_ms: u64,
    registered_ms: u64,
}

impl Assigned {
    fn from_json(v: &Value) -> Option<Self> {
        let ver = &v["verification"];
        Some(Self {
            address: v["address"].as_str()?.parse().ok()?,
            active: v["status"] == "active",
            class: v["class"].as_str()?.to_string(),
            gpu_count: u32::try_from(v["spec"]["gpu_count"].as_u64()?).ok()?,
            cpu_cores: u32::try_from(v["spec"]["cpu_cores"].as_u64()?).ok()?,
            ram_mib: v["spec"]["ram_mib"].as_u64()?,
            registered_height: ver["registered_height"].as_u64()?,
            round: ver["round"].as_u64()?,
            leased: !v["lease"].is_null(),
            lease_ended_ms: ver["lease_ended_ms"].as_u64()?,
            registered_ms: v["registered_ms"].as_u64()?,
        })
    }

    /// Whether the device is due in the round at `height` (the ledger refuses a result for
    /// one that is not; `not checked` is always accepted).
    fn due(&self, round: &RoundInfo) -> bool {
        if !self.active || self.registered_height >= round.height || self.leased {
            return false;
        }
        if self.lease_ended_ms >= round.ts_ms {
            return false;
        }
        if round.join {
            let earlier = self.round != 0 && self.round != round.height;
            return self.registered_height >= round.since_height && !earlier;
        }
        true
    }

    fn task(&self, classes: &[DeviceClass]) -> Option<Task> {
        let class = classes.iter().find(|c| c.name == self.class)?;
        let (units, cpu) = match class.kind {
            cairn_primitives::ClassKind::Gpu => (self.gpu_count, None),
            cairn_primitives::ClassKind::Cpu => {
                (self.cpu_cores, Some((class.clone(), self.cpu_cores)))
            }
        };
        Some(Task {
            params: Params::for_class(class, units, self.ram_mib),
            cpu,
        })
    }
}

#[derive(Clone)]
struct RoundInfo {
    height: u64,
    epoch: u64,
    ts_ms: u64,
    seed: Hash,
    join: bool,
    since_height: u64,
}

impl RoundInfo {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            height: v["height"].as_u64()?,
            epoch: v["epoch"].as_u64()?,
            ts_ms: v["ts_ms"].as_u64()?,
            seed: v["seed"].as_str()?.parse().ok()?,
            join: v["join"].as_bool()?,
            since_height: v["since_height"].as_u64()?,
        })
    }
}

/// The devices assigned to `me` in `epoch` (the open one or the one before), in assignment
/// order.
fn assigned(
    client: &Client,
    me: &Address,
    epoch: u64,
) -> Result<(u64, Vec<Assigned>), cairn_client::Error> {
    let mut out = Vec::new();
    let mut first = 0u64;
    loop {
        let v = client.get(&format!(
            "/v1/checkers/{me}/devices?epoch={epoch}&first={first}&limit=1000"
        ))?;
        let epoch = v["epoch"].as_u64().unwrap_or(0);
        for d in v["devices"].as_array().into_iter().flatten() {
            out.push(Assigned::from_json(d).ok_or_else(|| {
                cairn_client::Error::Protocol(format!("device record without its fields: {d}"))
            })?);
        }
        match v["next"].as_u64() {
            Some(n) => first = n,
            None => return Ok((epoch, out)),
        }
    }
}

/// The chain thread: follows epochs, the assignment and rounds; posts results; backs disputes.
fn follow_chain(
    settings: &CheckerSettings,
    shared: &Shared,
    pending: &Path,
    orders: mpsc::UnboundedSender<RoundOrder>,
    results: std::sync::mpsc::Receiver<RoundResults>,
    stop: &AtomicBool,
) {
    let client = Client::new(&settings.node);
    let started_ms = now_ms();
    let mut classes: Vec<DeviceClass> = Vec::new();
    let mut list: Vec<Assigned> = Vec::new();
    let mut list_epoch = u64::MAX;
    let mut list_at = Instant::now() - Duration::from_secs(3600);
    let mut dispatched = 0u64;
    // Rounds handed out: their epoch and the checker's list for it at the time.
    let mut handed: BTreeMap<u64, (u64, Vec<Assigned>)> = BTreeMap::new();
    let mut timing = (0u64, 1u64); // (genesis ms, epoch ms)
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let step = (|| -> Result<(), cairn_client::Error> {
            let status = client.status()?;
            let epoch = status["epoch"].as_u64().unwrap_or(0);
            timing = (
                status["genesis_time_ms"].as_u64().unwrap_or(0),
                status["epoch_ms"].as_u64().unwrap_or(1).max(1),
            );
            shared.epoch.store(epoch, Ordering::Relaxed);
            if classes.is_empty() {
                classes = serde_json::from_value(client.get("/v1/classes")?["classes"].clone())
                    .map_err(|e| cairn_client::Error::Protocol(e.to_string()))?;
            }
            let knocked = shared.knocked.swap(false, Ordering::Relaxed);
            if epoch != list_epoch || knocked || list_at.elapsed() > settings.refresh {
                let (e, l) = assigned(&client, &shared.me, epoch)?;
                list = l;
                list_epoch = e;
                list_at = Instant::now();
                *shared.admitted.lock().unwrap_or_else(|e| e.into_inner()) =
                    list.iter().map(|d| d.address).collect();
                // Membership changes only with the epoch (or a registration or retirement,
                // seen at the next refresh): read with the list, not at every poll.
                let me = client.get(&format!("/v1/checkers/{}", shared.me))?;
                let in_committee = me["in_committee"].as_bool().unwrap_or(false);
                if !in_committee && !warned {
                    eprintln!(
                        "checker {}: not in this epoch's committee (status {}); it checks from epoch {}",
                        shared.me.short(),
                        me["status"],
                        me["since_epoch"]
                    );
                    warned = true;
                }
                if in_committee {
                    warned = false;
                }
            }
            // Every kept round not handed out yet, oldest first: one that started just before
            // the epoch closed is answered against its own epoch's list (the ledger takes it in
            // the next epoch too), and two rounds between polls are both handed out.
            let v = client.get(&format!("/v1/rounds?after={dispatched}&limit=100"))?;
            for r in v["rounds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(RoundInfo::from_json)
            {
                dispatched = dispatched.max(r.height);
                let age = now_ms().saturating_sub(r.ts_ms);
                if age > LATE_ROUND.as_millis() as u64 {
                    // Handed out this late, a round's seed has been public long enough for a
                    // device to prepare its answer: it is not run (its devices get no result
                    // from this checker for it).
                    eprintln!(
                        "checker {}: round {} started {} s ago; skipped",
                        shared.me.short(),
                        r.height,
                        age / 1000
                    );
                    continue;
                }
                // Read the list now, so that devices registered before the round are in it.
                let (e, l) = assigned(&client, &shared.me, r.epoch)?;
                if e != r.epoch || l.is_empty() {
                    continue;
                }
                if e == epoch {
                    list = l.clone();
                    list_epoch = e;
                    list_at = Instant::now();
                    *shared.admitted.lock().unwrap_or_else(|e| e.into_inner()) =
                        list.iter().map(|d| d.address).collect();
                }
                let due: Vec<(Address, Task, bool)> = l
                    .iter()
                    .filter(|d| d.due(&r))
                    .filter_map(|d| {
                        let excused = d.round == 0 || r.epoch < epoch;
                        Some((d.address, d.task(&classes)?, excused))
                    })
                    .collect();
                handed.insert(r.height, (r.epoch, l));
                let _ = orders.unbounded_send(RoundOrder {
                    height: r.height,
                    seed: r.seed,
                    due,
                });
            }
            // Results that came back: journal them, then post.
            while let Ok((height, codes)) = results.try_recv() {
                let Some((epoch, order)) = handed.remove(&height) else {
                    continue;
                };
                let posts = compose(shared, &order, &codes, epoch, timing, started_ms, height);
                journal(pending, height, &posts);
            }
            Ok(())
        })();
        if let Err(e) = step {
            tracing::info!("checker: {e}");
        }
        std::thread::sleep(settings.poll);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `PostResults` bodies for a round: one code per position of the list as it was when
/// the round was handed out (chunks of at most `MAX_RESULTS`), with each device's uptime.
fn compose(
    shared: &Shared,
    order: &[Assigned],
    codes: &[(Address, ResultCode, u8)],
    epoch: u64,
    (genesis_ms, epoch_ms): (u64, u64),
    started_ms: u64,
    height: u64,
) -> Vec<PostResults> {
    let by: BTreeMap<Address, (ResultCode, u8)> =
        codes.iter().map(|(d, c, n)| (*d, (*c, *n))).collect();
    let registered: BTreeMap<Address, u64> =
        order.iter().map(|d| (d.address, d.registered_ms)).collect();
    let epoch_start = genesis_ms.saturating_add(epoch.saturating_mul(epoch_ms));
    let now = now_ms();
    let beats = shared
        .beats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let interval = (shared.heartbeat.as_millis() as u64).max(1);
    let uptime = |d: &Address| -> u8 {
        // Heartbeats seen over those expected since this epoch began (or this checker
        // started, or the device registered, whichever is latest).
        let since = epoch_start
            .max(started_ms)
            .max(registered.get(d).copied().unwrap_or(0));
        let until = now.min(epoch_start.saturating_add(epoch_ms));
        let expected = (until.saturating_sub(since) / interval).max(1);
        let got = beats.get(d).map_or(0, |b| b.of(epoch));
        let steps =
            (got.saturating_mul(u64::from(UPTIME_STEPS)) / expected).min(u64::from(UPTIME_STEPS));
        steps as u8
    };
    let mut out = Vec::new();
    let order: Vec<Address> = order.iter().map(|d| d.address).collect();
    for (chunk_no, chunk) in order.chunks(cairn_primitives::MAX_RESULTS).enumerate() {
        let first = chunk_no * cairn_primitives::MAX_RESULTS;
        let found: Vec<(ResultCode, u8)> = chunk
            .iter()
            .map(|d| by.get(d).copied().unwrap_or((ResultCode::NotChecked, 0)))
            .collect();
        let codes: Vec<ResultCode> = found.iter().map(|(c, _)| *c).collect();
        // One byte per device when any is a CPU-class pass; else none.
        let cores: Vec<u8> = if found.iter().any(|(_, n)| *n > 0) {
            found.iter().map(|(_, n)| *n).collect()
        } else {
            Vec::new()
        };
        if codes.iter().all(|c| *c == ResultCode::NotChecked) {
            continue;
        }
        out.push(PostResults {
            round: height,
            first: first as u32,
            count: chunk.len() as u32,
            codes: pack_codes(&codes),
            uptime: chunk.iter().map(uptime).collect(),
            cores,
        });
    }
    out
}

fn journal(dir: &Path, height: u64, posts: &[PostResults]) {
    use commonware_codec::Encode;
    for (i, p) in posts.iter().enumerate() {
        // Zero-padded, so that names sort by round (oldest posted first).
        let path = dir.join(format!("{height:020}-{i:04}.results"));
        let tmp = path.with_extension("tmp");
        let body = TxBody::PostResults(p.clone());
        if let Err(e) =
            std::fs::write(&tmp, body.encode()).and_then(|()| std::fs::rename(&tmp, &path))
        {
            eprintln!("checker: cannot journal the results of round {height}: {e}");
        }
    }
}

/// Journals a fraud proof found in round `height`, posted with that round's results.
fn journal_fraud(dir: &Path, height: u64, proof: cairn_primitives::FraudProof) {
    use commonware_codec::Encode;
    let path = dir.join(format!("{height:020}-fraud-{}.results", proof.device));
    let tmp = path.with_extension("tmp");
    let device = proof.device;
    let body = TxBody::SubmitFraudProof(proof);
    match std::fs::write(&tmp, body.encode()).and_then(|()| std::fs::rename(&tmp, &path)) {
        Ok(()) => eprintln!(
            "checker: round {height}: device {device} answered a wrong entry; fraud proof journaled"
        ),
        Err(e) => eprintln!("checker: cannot journal the fraud proof against {device}: {e}"),
    }
}

/// The journaled transactions, oldest round first.
fn journaled(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "results"))
        .collect();
    files.sort();
    files
}

/// Posts every journaled result, oldest first; a result the chain no longer takes (its epoch
/// ended) is dropped, saying so.
fn post_pending(client: &Client, shared: &Shared, dir: &Path, stop: &AtomicBool) {
    for path in journaled(dir) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(body) = wire::decode::<TxBody>(&bytes) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let what = match &body {
            TxBody::PostResults(p) => format!("results of round {}", p.round),
            TxBody::SubmitFraudProof(p) => format!("the fraud proof against {}", p.device),
            _ => "a transaction".to_string(),
        };
        let posted = match &body {
            TxBody::SubmitFraudProof(_) => &shared.metrics.fraud_proofs_posted,
            _ => &shared.metrics.results_posted,
        };
        let outcome = client
            .sign_and_submit(&shared.key, None, body)
            .and_then(|h| client.wait_final(&h, Duration::from_secs(30)));
        match outcome {
            Ok(v) if v["status"] == "final" => {
                posted.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
            }
            Ok(v) => {
                shared.metrics.post_errors.fetch_add(1, Ordering::Relaxed);
                let code = v["code"].as_str().unwrap_or("?").to_string();
                refused(shared, &what, &code, v["message"].as_str().unwrap_or(""));
                let _ = std::fs::remove_file(&path);
            }
            // Refused at admission for a reason that will not pass: dropped, saying why.
            Err(cairn_client::Error::Api {
                status,
                code,
                message,
            }) if !retry_admission(status, &code) => {
                shared.metrics.post_errors.fetch_add(1, Ordering::Relaxed);
                refused(shared, &what, &code, &message);
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                shared.metrics.post_errors.fetch_add(1, Ordering::Relaxed);
                tracing::info!("checker: posting {what}: {e}; will retry");
                return;
            }
        }
    }
}

/// Whether a transaction the node refused at admission may pass later: the node is busy, or
/// the sender's nonce or balance moves on by itself. Anything else (a round no longer taken,
/// a result already posted, a malformed post) will be refused again.
fn retry_admission(status: u16, code: &str) -> bool {
    status == 429 || status >= 500 || matches!(code, "bad_nonce" | "insufficient_balance")
}

fn refused(shared: &Shared, what: &str, code: &str, message: &str) {
    eprintln!(
        "checker {}: {what} refused: {code} ({message}){}",
        shared.me.short(),
        if code == "wrong_epoch" || code == "unknown_round" {
            "; its epoch is over; dropped"
        } else {
            "; dropped"
        }
    );
}

/// Answers each open dispute of this checker's results with the receipt it kept.
fn back_disputes(client: &Client, shared: &Shared, me: &Value) {
    for d in me["open_disputes"].as_array().into_iter().flatten() {
        let (Some(device), Some(round)) = (
            d["device"].as_str().and_then(|s| s.parse::<Address>().ok()),
            d["round"].as_u64(),
        ) else {
            continue;
        };
        let Some(receipt) = load_receipt(&shared.evidence, round, &device) else {
            eprintln!(
                "checker {}: result for {device} in round {round} is disputed and no receipt is kept",
                shared.me.short()
            );
            continue;
        };
        let body = TxBody::BackResult {
            device,
            round,
            receipt,
        };
        if let Ok(h) = client.sign_and_submit(&shared.key, None, body)
            && client
                .wait_final(&h, Duration::from_secs(30))
                .is_ok_and(|v| v["status"] == "final")
        {
            shared
                .metrics
                .disputes_backed
                .fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "checker {}: backed the disputed result for {device} in round {round}",
                shared.me.short()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Heartbeat;

    fn post(round: u64) -> PostResults {
        PostResults {
            round,
            first: 0,
            count: 1,
            codes: pack_codes(&[ResultCode::Pass]),
            uptime: vec![200],
            cores: vec![],
        }
    }

    /// Found when heights gained a digit: "100-0" sorted before "99-0", so the newer round
    /// was posted first and the older one then refused as stale.
    #[test]
    fn journaled_results_are_posted_oldest_round_first() {
        let dir = tempfile::tempdir().unwrap();
        for h in [100, 9, 99, 1_000] {
            journal(dir.path(), h, &[post(h), post(h)]);
        }
        let rounds: Vec<u64> = journaled(dir.path())
            .iter()
            .map(
                |p| match wire::decode::<TxBody>(&std::fs::read(p).unwrap()).unwrap() {
                    TxBody::PostResults(p) => p.round,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(rounds, [9, 9, 99, 99, 100, 100, 1_000, 1_000]);
    }

    /// Found in the devices API test (6 s epochs): a device whose view of the epoch led the
    /// checker's by one had its heartbeat refused and its connection closed at each epoch
    /// boundary, so it missed rounds.
    #[test]
    fn heartbeats_one_epoch_either_side_count_and_others_are_refused_with_the_reason() {
        let checker = Keypair::from_seed([1; 32]);
        let device = Keypair::from_seed([2; 32]);
        let shared = Shared {
            me: checker.address(),
            key: checker,
            chain_id: "test".into(),
            evidence: PathBuf::new(),
            pending: PathBuf::new(),
            admitted: Mutex::new(BTreeSet::new()),
            knocked: AtomicBool::new(false),
            conns: Mutex::new(BTreeMap::new()),
            beats: Mutex::new(BTreeMap::new()),
            epoch: AtomicU64::new(10),
            heartbeat: Duration::from_secs(60),
            metrics: Arc::default(),
        };
        let mut hb = HeartbeatCheck {
            device: device.address(),
            key: device.public_key(),
            nonce: [3; 32],
            last_seq: None,
        };
        let beat = |epoch, seq, nonce| {
            ToChecker::Heartbeat(Heartbeat::sign(
                &device, "test", &shared.me, epoch, seq, nonce,
            ))
        };
        for (seq, epoch) in [(1, 9), (2, 10), (3, 11)] {
            assert!(matches!(
                hb.take(&shared, beat(epoch, seq, [3; 32])),
                Ok(Taken::Counted)
            ));
        }
        for (m, says) in [
            (beat(12, 4, [3; 32]), "epoch 12"),
            (beat(8, 4, [3; 32]), "epoch 8"),
            (beat(10, 3, [3; 32]), "replayed"),
            (beat(10, 4, [4; 32]), "nonce"),
        ] {
            match hb.take(&shared, m) {
                Err(why) => assert!(why.contains(says), "{why}"),
                Ok(_) => panic!("{says}: taken"),
            }
        }
        assert_eq!(shared.beats.lock().unwrap()[&device.address()].count, 3);
    }

    #[test]
    fn heartbeats_of_the_epoch_before_are_kept_for_its_late_rounds() {
        let b = Beats {
            epoch: 7,
            count: 3,
            before: 5,
        };
        assert_eq!((b.of(7), b.of(6), b.of(5), b.of(8)), (3, 5, 0, 0));
    }
}
