//! Devnet's demo oracle and worker, each on its own thread, each stopped through the devnet's
//! one shutdown path.

use cairn_client::Client;
use cairn_primitives::{Amount, Keypair, PayUnits, TxBody};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A stop signal a thread can sleep on: [`Stop::sleep`] returns early once [`Stop::stop`] is
/// called.
#[derive(Clone)]
pub(crate) struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    pub(crate) fn new() -> Self {
        Self(Arc::new((Mutex::new(false), Condvar::new())))
    }

    /// Wakes every sleeper, now and later.
    pub(crate) fn stop(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Sleeps `d`, or less if stopped; returns whether it was stopped.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let (flag, cv) = &*self.0;
        let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = cv
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }
}

/// What devnet's CPU device asks per hour, in payment units (credits: $0.36 an hour).
const CPU_PRICE: u64 = 36_000;
/// What each of devnet's GPU devices asks per hour ($7.20 an hour).
const GPU_PRICE: u64 = 720_000;

/// How often devnet's demo oracle resubmits its price (the genesis default refuses prices
/// older than ten minutes).
const ORACLE_EVERY: Duration = Duration::from_secs(120);

/// Devnet's demo price oracle: submits `micro_usd` over the API, as an oracle operator would,
/// every [`ORACLE_EVERY`], so that `cairn credits buy` works, until `stop`. Gives up if the
/// chain does not list its key as an oracle (a devnet created before it had one).
pub(crate) fn spawn_oracle(url: &str, key: Keypair, micro_usd: u64, stop: Stop) -> JoinHandle<()> {
    let client = Client::new(url);
    std::thread::spawn(move || {
        let submit = || -> Result<(), cairn_client::Error> {
            let body = TxBody::SubmitPrice {
                micro_usd_per_token: micro_usd,
            };
            let h = client.sign_and_submit(&key, None, body)?;
            client.wait_final(&h, Duration::from_secs(30))?;
            Ok(())
        };
        let mut announced = false;
        loop {
            let pause = match submit() {
                Ok(()) => {
                    if !announced {
                        eprintln!(
                            "demo oracle: token price ${}.{:06} submitted (again every {} s)",
                            micro_usd / 1_000_000,
                            micro_usd % 1_000_000,
                            ORACLE_EVERY.as_secs()
                        );
                        announced = true;
                    }
                    ORACLE_EVERY
                }
                Err(cairn_client::Error::Api { code, .. }) if code == "not_oracle" => {
                    eprintln!(
                        "demo oracle: this devnet's genesis names no oracle key, so credits cannot be bought; `cairn devnet --reset` starts a devnet that has one"
                    );
                    return;
                }
                Err(e @ cairn_client::Error::Api { .. }) => {
                    eprintln!(
                        "demo oracle: {e}; trying again in {} s",
                        ORACLE_EVERY.as_secs()
                    );
                    ORACLE_EVERY
                }
                // The API is not up yet: try again shortly.
                Err(e) => {
                    tracing::debug!("demo oracle: {e}; retrying");
                    Duration::from_secs(1)
                }
            };
            if stop.sleep(pause) {
                return;
            }
        }
    })
}

/// Sleeps `d` in short steps, or less once `stop` is set; returns whether it was set.
fn nap(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    stop.load(Ordering::SeqCst)
}

/// Waits (up to two minutes) until the checkers verify `device`, saying so; or says why not.
fn wait_verified(client: &Client, device: &cairn_primitives::Address, stop: &AtomicBool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(d) = client.get(&format!("/v1/devices/{device}")) {
            let v = &d["verification"];
            if v["status"] == "verified" {
                // A CPU-class device: the cores its answers' times showed, which matching
                // and rewards count (docs/checkers.md, "Measured cores").
                let cores = match (v["cores"].as_u64(), d["spec"]["cpu_cores"].as_u64()) {
                    (Some(n), Some(claimed)) => format!(" ({n} of {claimed} cores counted)"),
                    _ => String::new(),
                };
                eprintln!(
                    "worker: device {} verified by its checkers in round {}{cores}: ready for `cairn deploy`",
                    device.short(),
                    v["round"]
                );
                return;
            }
        }
        if nap(stop, Duration::from_millis(250)) {
            return;
        }
    }
    eprintln!(
        "worker: device {} is not verified after two minutes (see `cairn checker status` and the checkers' lines above); buying credits anyway",
        device.short()
    );
}

/// Devnet's worker: registers this machine's devices for `owner` (carol), serves them
/// (leases, and its checkers' rounds) until `stop`, then drains; once the CPU device is
/// verified, buys `customer` (alice) some credits (so that `cairn deploy` works from then
/// on).
pub(crate) fn spawn_worker(
    url: &str,
    docker_socket: PathBuf,
    dir: PathBuf,
    keys_dir: PathBuf,
    owner: Keypair,
    customer: Keypair,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let client = Client::new(&url);
        let offer = match cairn_worker::offer(&dir) {
            Ok(o) => o,
            Err(e) => return eprintln!("worker: {e}"),
        };
        let start = Instant::now();
        loop {
            match cairn_worker::register_offer(
                &client,
                &owner,
                &offer,
                PayUnits(CPU_PRICE),
                PayUnits(GPU_PRICE),
                "local",
            ) {
                Ok(lines) => {
                    eprintln!("worker: this machine's devices, owned by carol:");
                    for line in lines {
                        eprintln!("worker:   {line}");
                    }
                    break;
                }
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    return eprintln!("worker: could not register the devices: {e}");
                }
                Err(_) => {
                    if nap(&stop, Duration::from_millis(500)) {
                        return;
                    }
                }
            }
        }
        // Once the CPU device is verified (its first round comes seconds after it
        // registered, once serving has connected it to its checkers), credits for alice: from
        // then on `cairn deploy` works.
        let cpu = offer.devices.first().map(|d| d.key.address());
        let ready_stop = stop.clone();
        let ready_client = Client::new(&url);
        std::thread::spawn(move || {
            let client = ready_client;
            let stop = ready_stop;
            if let Some(cpu) = cpu {
                wait_verified(&client, &cpu, &stop);
            }
            let start = Instant::now();
            // Credits for alice, once there is a price (the demo oracle submits it at start).
            let has_credits = client
                .account(&customer.address(), false)
                .is_ok_and(|a| a["credits"].as_u64().unwrap_or(0) > 0);
            while !has_credits && start.elapsed() < Duration::from_secs(60) {
                // Ten tokens (9 decimals, the devnet genesis's).
                let body = TxBody::BuyCredits {
                    amount: Amount::from_base(10_000_000_000),
                };
                let bought = client
                    .sign_and_submit(&customer, None, body)
                    .and_then(|h| client.wait_final(&h, Duration::from_secs(30)));
                match bought {
                    Ok(v) if v["status"] == "final" => {
                        eprintln!(
                            "worker: bought alice 10 tokens' worth of credits to deploy with"
                        );
                        break;
                    }
                    _ => {
                        if nap(&stop, Duration::from_secs(1)) {
                            return;
                        }
                    }
                }
            }
        });
        if let Err(e) = cairn_worker::serve(
            &url,
            &dir,
            Some(&keys_dir),
            &docker_socket,
            |c| {
                c.heartbeat = Duration::from_secs(3);
            },
            stop,
        ) {
            eprintln!("worker: stopped: {e}");
        }
    })
}
