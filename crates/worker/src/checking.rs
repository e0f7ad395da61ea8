//! The worker's side of checking: each of this machine's registered devices dials each of
//! its assigned checkers (never the other way round, so a device behind NAT is checked too),
//! holds the connection, sends signed heartbeats, and answers rounds (docs/checkers.md).
//!
//! Each solver (the CPU, each CUDA GPU) has one prover thread, its **lane**: a lane does one
//! computation at a time, so two rounds never overlap on it, and two devices that map to the
//! same solver are computed one after another when both are due, which is the point (one GPU
//! cannot answer for many; this machine's GPUs answer side by side, each on its own lane). A
//! device tells a checker it is ready to walk only when its lane is idle and no other walk runs
//! on it, so a walk is timed on a free solver. A GPU device is answered only with a usable CUDA
//! GPU; otherwise it stays silent, and its checkers record no answer.

use cairn_checker::link::{self, Ctx, LinkSender};
use cairn_checker::wire::{Heartbeat, ToChecker, ToDevice, roots_digest, transcript_digest};
use cairn_client::Client;
use cairn_popw::{Answer, Opening, Params};
use cairn_primitives::{
    Address, ClassKind, DeviceClass, Hash, Keypair, Receipt, ReceiptFor, device_nonce,
};
use cairn_solver::{CpuSolver, Prover, Solver};
use commonware_runtime::{Clock as _, Runner as _, Spawner as _, Supervisor as _};
use futures::StreamExt as _;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use futures::stream::FusedStream as _;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One device this worker proves.
pub struct ProvingDevice {
    /// Its key.
    pub key: Keypair,
    /// The CUDA ordinal of its GPU (none: the CPU device).
    pub gpu: Option<usize>,
}

/// What the chain says of one device.
#[derive(Clone)]
struct DeviceView {
    params: Option<Params>,
    leased: bool,
    checkers: Vec<(Address, String)>,
}

#[derive(Default)]
struct ChainView {
    chain_id: String,
    epoch: u64,
    rounds: BTreeMap<u64, Hash>,
    devices: BTreeMap<Address, DeviceView>,
}

enum Job {
    Compute {
        device: Address,
        round: u64,
        nonce: [u8; 32],
        params: Params,
        reply: oneshot::Sender<Result<Answer, String>>,
    },
    Walk {
        device: Address,
        round: u64,
        nonce: [u8; 32],
        reply: oneshot::Sender<Result<Vec<u64>, String>>,
    },
    Open {
        device: Address,
        round: u64,
        rows: Vec<(u32, u32)>,
        reply: oneshot::Sender<Result<Vec<Opening>, String>>,
    },
}

/// A solver's lane: its prover thread's queue, how many jobs wait or run on it, and its walk
/// lock.
#[derive(Clone)]
struct Lane {
    jobs: std::sync::mpsc::Sender<Job>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    walk_lock: Arc<futures::lock::Mutex<()>>,
}

impl Lane {
    fn send(&self, job: Job) -> Result<(), String> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.jobs.send(job).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            "the prover stopped".to_string()
        })
    }
}

/// Starts the checking link for `devices` against the node at `node`; it stops when `stop`
/// is set. CPU devices are proved with [`CpuSolver`].
pub fn spawn(node: &str, devices: Vec<ProvingDevice>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    spawn_with(node, devices, stop, Arc::new(CpuSolver))
}

/// As [`spawn`], proving CPU devices with `cpu` (another CPU implementation; the tests use
/// one that answers a wrong entry, to see the checkers convict it).
pub fn spawn_with(
    node: &str,
    devices: Vec<ProvingDevice>,
    stop: Arc<AtomicBool>,
    cpu: Arc<dyn Solver>,
) -> JoinHandle<()> {
    let node = node.to_string();
    std::thread::Builder::new()
        .name("checking".into())
        .spawn(move || run(&node, devices, &stop, &cpu))
        .unwrap_or_else(|e| panic!("spawning the checking thread: {e}"))
}

fn run(node: &str, devices: Vec<ProvingDevice>, stop: &Arc<AtomicBool>, cpu: &Arc<dyn Solver>) {
    let view = Arc::new(Mutex::new(ChainView::default()));
    let keys: BTreeMap<Address, Keypair> = devices
        .iter()
        .map(|d| (d.key.address(), d.key.clone()))
        .collect();
    let gpus: BTreeMap<Address, Option<usize>> =
        devices.iter().map(|d| (d.key.address(), d.gpu)).collect();
    // One lane per solver: the CPU, and each GPU ordinal.
    let mut lanes: BTreeMap<Option<usize>, Lane> = BTreeMap::new();
    let mut provers = Vec::new();
    for solver in gpus
        .values()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        lanes.insert(
            solver,
            Lane {
                jobs: tx,
                pending: pending.clone(),
                walk_lock: Arc::new(futures::lock::Mutex::new(())),
            },
        );
        let keys = keys.clone();
        let view = view.clone();
        let cpu = cpu.clone();
        provers.push(
            std::thread::Builder::new()
                .name("prover".into())
                .spawn(move || prove(rx, &keys, solver, &*cpu, &pending, &view)),
        );
    }
    let follower = {
        let view = view.clone();
        let stop = stop.clone();
        let node = node.to_string();
        let addrs: Vec<Address> = keys.keys().copied().collect();
        std::thread::Builder::new()
            .name("checking-chain".into())
            .spawn(move || follow(&node, &addrs, &view, &stop))
    };
    // Connections are quiet between rounds: liveness is the heartbeats' business (the
    // checker closes a silent connection, and this side reconnects), not the socket's.
    let cfg = commonware_runtime::tokio::Config::new()
        .with_worker_threads(2)
        .with_read_write_timeout(Duration::from_secs(3600));
    let runner = commonware_runtime::tokio::Runner::new(cfg);
    let stop_link = stop.clone();
    runner.start(|ctx| async move {
        let mut running: BTreeMap<(Address, Address), Arc<AtomicBool>> = BTreeMap::new();
        while !stop_link.load(Ordering::Relaxed) {
            let wanted: Vec<(Address, Address, String)> = {
                let v = view.lock().unwrap_or_else(|e| e.into_inner());
                v.devices
                    .iter()
                    .flat_map(|(d, dv)| dv.checkers.iter().map(|(c, e)| (*d, *c, e.clone())))
                    .collect()
            };
            running.retain(|pair, alive| {
                let keep = alive.load(Ordering::Relaxed)
                    && wanted.iter().any(|(d, c, _)| (*d, *c) == *pair);
                if !keep {
                    alive.store(false, Ordering::Relaxed);
                }
                keep
            });
            for (device, checker, endpoint) in wanted {
                if running.contains_key(&(device, checker)) {
                    continue;
                }
                let Some(key) = keys.get(&device).cloned() else {
                    continue;
                };
                let Some(lane) = gpus.get(&device).and_then(|g| lanes.get(g)).cloned() else {
                    continue;
                };
                let alive = Arc::new(AtomicBool::new(true));
                running.insert((device, checker), alive.clone());
                let conn = Conn {
                    key,
                    checker,
                    endpoint,
                    view: view.clone(),
                    lane,
                    alive,
                };
                ctx.child("device").spawn(move |ctx| conn.run(ctx));
            }
            ctx.sleep(Duration::from_secs(1)).await;
        }
        for alive in running.values() {
            alive.store(false, Ordering::Relaxed);
        }
    });
    if let Ok(f) = follower {
        let _ = f.join();
    }

    for p in provers.into_iter().flatten() {
        let _ = p.join();
    }
}

/// Follows the chain for the link: the epoch, recent rounds' seeds, and for each device its
/// class, lease and checkers with their endpoints.
fn follow(node: &str, devices: &[Address], view: &Mutex<ChainView>, stop: &AtomicBool) {
    let client = Client::new(node);
    let mut classes: Vec<DeviceClass> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let step = (|| -> Result<(), cairn_client::Error> {
            let (chain_id, _) = client.chain()?;
            let status = client.status()?;
            if classes.is_empty() {
                classes = serde_json::from_value(client.get("/v1/classes")?["classes"].clone())
                    .map_err(|e| cairn_client::Error::Protocol(e.to_string()))?;
            }
            let committee = client.get("/v1/committee")?;
            let endpoints: BTreeMap<Address, String> = committee["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    Some((
                        m["checker"].as_str()?.parse().ok()?,
                        m["endpoint"].as_str()?.to_string(),
                    ))
                })
                .collect();
            // Every round since the last one seen (two may start between polls).
            let after = view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rounds
                .last_key_value()
                .map_or(0, |(h, _)| *h);
            let rounds = client
                .get(&format!("/v1/rounds?after={after}&limit=100"))
                .ok();
            let mut seen = BTreeMap::new();
            for a in devices {
                let Ok(d) = client.get(&format!("/v1/devices/{a}")) else {
                    continue;
                };
                if d["status"] != "active" {
                    continue;
                }
                let class = classes.iter().find(|c| d["class"] == c.name.as_str());
                let units = |k: &str| d["spec"][k].as_u64().unwrap_or(0) as u32;
                let params = class.map(|c| match c.kind {
                    ClassKind::Gpu => Params::for_class(c, units("gpu_count"), 0),
                    ClassKind::Cpu => Params::for_class(
                        c,
                        units("cpu_cores"),
                        d["spec"]["ram_mib"].as_u64().unwrap_or(0),
                    ),
                });
                let checkers = d["verification"]["checkers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str()?.parse::<Address>().ok())
                    .filter_map(|c| Some((c, endpoints.get(&c)?.clone())))
                    .collect();
                seen.insert(
                    *a,
                    DeviceView {
                        params,
                        leased: !d["lease"].is_null(),
                        checkers,
                    },
                );
            }
            let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
            v.chain_id = chain_id;
            v.epoch = status["epoch"].as_u64().unwrap_or(0);
            v.devices = seen;
            for r in rounds
                .iter()
                .flat_map(|r| r["rounds"].as_array().into_iter().flatten())
            {
                if let (Some(h), Some(seed)) = (
                    r["height"].as_u64(),
                    r["seed"].as_str().and_then(|s| s.parse::<Hash>().ok()),
                ) {
                    v.rounds.insert(h, seed);
                }
            }
            while v.rounds.len() > 64 {
                v.rounds.pop_first();
            }
            Ok(())
        })();
        if let Err(e) = step {
            tracing::debug!("checking: {e}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A lane's prover thread: one computation at a time on its solver (`None`: the CPU; else a
/// CUDA ordinal, `cpu` then), the latest round's tables kept per device.
fn prove(
    jobs: std::sync::mpsc::Receiver<Job>,
    keys: &BTreeMap<Address, Keypair>,
    solver: Option<usize>,
    cpu: &dyn Solver,
    pending: &std::sync::atomic::AtomicUsize,
    view: &Mutex<ChainView>,
) {
    let mut kept: BTreeMap<Address, (u64, Prover)> = BTreeMap::new();
    let mut cuda: Option<Box<dyn Solver>> = None;
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Compute {
                device,
                round,
                nonce,
                params,
                reply,
            } => {
                let chain_id = view
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .chain_id
                    .clone();
                let out = match keys.get(&device) {
                    None => Err("unknown device".to_string()),
                    Some(key) => match kept.get(&device) {
                        Some((r, p)) if *r == round => Ok(p.answer(key, &chain_id)),
                        _ => {
                            kept.remove(&device);
                            let solved = gpu_solver(solver, &mut cuda).and_then(|s| {
                                let s: &dyn Solver = s.unwrap_or(cpu);
                                s.prepare(&params).map_err(|e| e.to_string())?;
                                Prover::solve(s, nonce, params, |_, _| {})
                                    .map_err(|e| e.to_string())
                            });
                            solved.map(|p| {
                                let a = p.answer(key, &chain_id);
                                kept.insert(device, (round, p));
                                a
                            })
                        }
                    },
                };
                let _ = reply.send(out);
            }
            Job::Walk {
                device,
                round,
                nonce,
                reply,
            } => {
                let out = match kept.get(&device) {
                    Some((r, p)) if *r == round => p.walk(&nonce).map_err(|e| e.to_string()),
                    _ => Err("no tables kept for this round".into()),
                };
                let _ = reply.send(out);
            }
            Job::Open {
                device,
                round,
                rows,
                reply,
            } => {
                let out = match kept.get(&device) {
                    Some((r, p)) if *r == round => rows
                        .iter()
                        .map(|(t, r)| p.open(*t, *r).map_err(|e| e.to_string()))
                        .collect(),
                    _ => Err("no tables kept for this round".into()),
                };
                let _ = reply.send(out);
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The lane's CUDA solver (`None` for the CPU lane), created on first use.
fn gpu_solver(
    ordinal: Option<usize>,
    cuda: &mut Option<Box<dyn Solver>>,
) -> Result<Option<&dyn Solver>, String> {
    let Some(ordinal) = ordinal else {
        return Ok(None);
    };
    if let Some(why) = cairn_solver::cuda_unavailable() {
        return Err(format!("no usable GPU ({why})"));
    }
    if cuda.is_none() {
        let s = cairn_solver::CudaSolver::new(ordinal).map_err(|e| e.to_string())?;
        *cuda = Some(Box::new(s));
    }
    Ok(cuda.as_deref())
}

/// One device's connection to one checker.
struct Conn {
    key: Keypair,
    checker: Address,
    endpoint: String,
    view: Arc<Mutex<ChainView>>,
    lane: Lane,
    alive: Arc<AtomicBool>,
}

impl Conn {
    async fn run(self, ctx: Ctx) {
        let result = self.session(&ctx).await;
        if let Err(e) = result {
            tracing::info!(
                "device {} ↔ checker {}: {e}",
                self.key.address().short(),
                self.checker.short()
            );
            // Try again soon (the supervisor starts a new connection once this one is gone).
            ctx.sleep(Duration::from_secs(1)).await;
        }
        self.alive.store(false, Ordering::Relaxed);
    }

    async fn session(&self, ctx: &Ctx) -> Result<(), String> {
        let addr = match self.endpoint.parse() {
            Ok(a) => a,
            Err(_) => link::resolve(&self.endpoint).map_err(|e| e.to_string())?,
        };
        let chain_id = self
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .chain_id
            .clone();
        let (mut tx, rx) = link::dial(ctx, &self.key, &chain_id, &self.checker, addr)
            .await
            .map_err(|e| e.to_string())?;
        let (msgs_tx, mut msgs) = mpsc::unbounded::<ToDevice>();
        ctx.child("reader").spawn(move |_| async move {
            let mut rx = rx;
            loop {
                match link::recv::<ToDevice>(&mut rx).await {
                    Ok(m) => {
                        if msgs_tx.unbounded_send(m).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("checking: {e}");
                        return;
                    }
                }
            }
        });
        let hello = next(ctx, &mut msgs, Instant::now() + Duration::from_secs(10)).await;
        let Some(ToDevice::Hello {
            nonce,
            heartbeat_ms,
            ..
        }) = hello
        else {
            return Err("no hello from the checker".into());
        };
        let every = Duration::from_millis(heartbeat_ms.clamp(1_000, 3_600_000));
        let mut seq = 0u64;
        let mut beat_at = Instant::now();
        while self.alive.load(Ordering::Relaxed) {
            if Instant::now() >= beat_at {
                let epoch = self.view.lock().unwrap_or_else(|e| e.into_inner()).epoch;
                seq = seq.saturating_add(1);
                let hb = Heartbeat::sign(&self.key, &chain_id, &self.checker, epoch, seq, nonce);
                link::send(&mut tx, &ToChecker::Heartbeat(hb))
                    .await
                    .map_err(|e| e.to_string())?;
                beat_at = Instant::now() + every;
            }
            let until = beat_at.min(Instant::now() + Duration::from_secs(1));
            match next(ctx, &mut msgs, until).await {
                Some(ToDevice::Round { height, seed }) => {
                    self.answer_round(ctx, &chain_id, &mut tx, &mut msgs, height, seed)
                        .await?;
                }
                Some(ToDevice::Done {
                    round,
                    code,
                    reason,
                }) => {
                    tracing::info!(
                        "device {}: round {round}: checker {} says {code:?} ({})",
                        self.key.address().short(),
                        self.checker.short(),
                        reason.as_str()
                    );
                }
                Some(ToDevice::Refused { reason }) => {
                    return Err(format!("refused: {}", reason.as_str()));
                }
                Some(_) => {}
                None => {
                    if msgs.is_terminated() {
                        return Err("the checker closed the connection".into());
                    }
                }
            }
        }
        Ok(())
    }

    /// A round: compute (or say busy), then walk when ready, then open, then the receipt.
    async fn answer_round(
        &self,
        ctx: &Ctx,
        chain_id: &str,
        tx: &mut LinkSender,
        msgs: &mut mpsc::UnboundedReceiver<ToDevice>,
        height: u64,
        seed: Hash,
    ) -> Result<(), String> {
        let device = self.key.address();
        // The seed must be the chain's: a checker cannot make the device answer a nonce of
        // its choosing. The chain thread may not have seen the round yet: wait a little.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (known, dv) = loop {
            let (known, dv) = {
                let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
                (
                    v.rounds.get(&height).copied(),
                    v.devices.get(&device).cloned(),
                )
            };
            if known.is_some() || Instant::now() >= deadline {
                break (known, dv);
            }
            ctx.sleep(Duration::from_millis(100)).await;
        };
        if known != Some(seed) {
            tracing::warn!(
                "checker {} sent round {height} with a seed the chain does not have",
                self.checker
            );
            return Ok(());
        }
        let Some(dv) = dv else { return Ok(()) };
        if dv.leased {
            return link::send(tx, &ToChecker::Busy { round: height })
                .await
                .map_err(|e| e.to_string());
        }
        let Some(params) = dv.params else {
            return Ok(());
        };
        let nonce = device_nonce(&seed, &device);
        let (reply, rx) = oneshot::channel();
        let job = Job::Compute {
            device,
            round: height,
            nonce,
            params,
            reply,
        };
        self.lane.send(job)?;
        let answer = match rx.await {
            Ok(Ok(a)) => a,
            Ok(Err(why)) => {
                // No answer is what the checker records: say why here.
                eprintln!(
                    "worker: device {} cannot answer round {height}: {why}",
                    device.short()
                );
                return Ok(());
            }
            Err(_) => return Err("the prover stopped".into()),
        };
        link::send(
            tx,
            &ToChecker::Answer {
                round: height,
                answer: answer.clone(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        // Ready only once the lane is idle and no other walk runs on it: the walk is timed by
        // its checker from its nonce, on a free solver.
        let guard = self.lane.walk_lock.lock().await;
        while self.lane.pending.load(Ordering::SeqCst) > 0 {
            ctx.sleep(Duration::from_millis(20)).await;
        }
        link::send(tx, &ToChecker::Ready { round: height })
            .await
            .map_err(|e| e.to_string())?;
        let walk_nonce = match next_matching(ctx, msgs, Duration::from_secs(30), |m| match m {
            ToDevice::WalkNonce { round, nonce } if round == height => Some(nonce),
            _ => None,
        })
        .await
        {
            Some(n) => n,
            None => return Ok(()),
        };
        let (reply, rx) = oneshot::channel();
        self.lane.send(Job::Walk {
            device,
            round: height,
            nonce: walk_nonce,
            reply,
        })?;
        let digests = match rx.await {
            Ok(Ok(d)) => d,
            _ => return Ok(()),
        };
        link::send(
            tx,
            &ToChecker::Walk {
                round: height,
                digests: digests.clone(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        drop(guard);
        let rows = match next_matching(ctx, msgs, Duration::from_secs(30), |m| match m {
            ToDevice::Audit { round, rows } if round == height => Some(rows),
            _ => None,
        })
        .await
        {
            Some(r) => r,
            None => return Ok(()),
        };
        let (reply, rx) = oneshot::channel();
        self.lane.send(Job::Open {
            device,
            round: height,
            rows,
            reply,
        })?;
        let openings = match rx.await {
            Ok(Ok(o)) => o,
            _ => return Ok(()),
        };
        let receipt = Receipt::sign(
            &self.key,
            chain_id,
            &ReceiptFor {
                checker: self.checker,
                round: height,
                nonce,
            },
            roots_digest(&answer.roots),
            Hash(walk_nonce),
            transcript_digest(&digests, &openings),
        );
        link::send(
            tx,
            &ToChecker::Openings {
                round: height,
                openings,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        link::send(
            tx,
            &ToChecker::Receipt {
                round: height,
                receipt,
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// The next message before `until` (`None`: none came, or the connection is gone).
async fn next(
    ctx: &Ctx,
    msgs: &mut mpsc::UnboundedReceiver<ToDevice>,
    until: Instant,
) -> Option<ToDevice> {
    let left = until.saturating_duration_since(Instant::now());
    let sleep = Box::pin(ctx.sleep(left));
    match select(msgs.next(), sleep).await {
        Either::Left((m, _)) => m,
        Either::Right(_) => None,
    }
}

/// The next message `want` accepts within `wait` (others are dropped).
async fn next_matching<T>(
    ctx: &Ctx,
    msgs: &mut mpsc::UnboundedReceiver<ToDevice>,
    wait: Duration,
    mut want: impl FnMut(ToDevice) -> Option<T>,
) -> Option<T> {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let m = next(ctx, msgs, until).await?;
        if let Some(t) = want(m) {
            return Some(t);
        }
    }
    None
}
