//! `cairn worker …`: the provider's agent: `register` this machine's CPU device, `run` the
//! daemon that serves its leases (crate `cairn-worker`), and `probe`, which runs the
//! proof-of-physical-work protocol against this machine as a checker would.

use crate::client_cmd::{NodeOpt, Signer};
use anyhow::{Result, bail};
use cairn_primitives::PayUnits;
use cairn_worker::{
    default_socket, offer, probe, probe_failure, probe_lines, register_offer, serve, worker_dir,
};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `cairn worker …`.
#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(subcommand)]
    command: WorkerCommand,
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Register this machine as devices: its CPU, and each NVIDIA GPU whose model the class
    /// catalog knows (found through NVML, else nvidia-smi). Each device gets its own key (0600,
    /// in the worker's data dir); the class's stake is bonded from the owner's account and
    /// possession of the device key proven. Says why when no GPU is offered.
    Register {
        #[command(flatten)]
        node: NodeOpt,
        #[command(flatten)]
        owner: Signer,
        /// The CPU device's price per hour (credits under `bme`, base tokens under `direct`).
        #[arg(long, default_value = "36000")]
        price: u64,
        /// Each GPU device's price per hour.
        #[arg(long, default_value = "720000")]
        gpu_price: u64,
        /// Region label customers can filter on.
        #[arg(long, default_value = "local")]
        region: String,
        /// Worker data dir (device keys, lease journal, job dirs).
        #[arg(long, env = "CAIRN_WORKER_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// The daemon: run the jobs this machine's devices are leased for, report on them, upload
    /// their output; SIGTERM or Ctrl-C drains (running jobs get --drain-secs to finish).
    Run {
        #[command(flatten)]
        node: NodeOpt,
        /// Worker data dir (device keys, lease journal, job dirs).
        #[arg(long, env = "CAIRN_WORKER_DIR")]
        data_dir: Option<PathBuf>,
        /// Seconds between heartbeat reports on running leases.
        #[arg(long, default_value = "5")]
        heartbeat_secs: u64,
        /// Seconds running jobs get to finish on shutdown.
        #[arg(long, default_value = "30")]
        drain_secs: u64,
        /// Memory limit per job, MiB.
        #[arg(long, default_value = "1024")]
        memory_mib: u64,
        /// Output limit per job, bytes.
        #[arg(long, default_value = "1048576")]
        log_bytes: u64,
        /// The Docker Engine API socket (Docker, or `podman system service`) for jobs with
        /// an image. Default: DOCKER_HOST when it is unix://…, else /var/run/docker.sock.
        #[arg(long)]
        docker_socket: Option<PathBuf>,
        /// Run bare commands in this image through the container engine instead of the
        /// sandbox (namespaces set up by this binary).
        #[arg(long)]
        bare_image: Option<String>,
        /// Refuse jobs that ask for the network (their leases fail, saying why).
        #[arg(long)]
        no_network: bool,
    },
    /// Detect this machine's hardware and run the compute, memory and audit phases of the
    /// challenge against it; report the class it can claim and which classes it would pass.
    Probe {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Sets `flag` at the first Ctrl-C or SIGTERM.
fn wait_for_signal(flag: Arc<AtomicBool>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("worker: cannot watch for Ctrl-C; stop it with SIGKILL");
        return;
    };
    rt.block_on(cairn_node::termination());
    eprintln!("worker: stopping; running jobs are drained");
    flag.store(true, Ordering::SeqCst);
}

pub(crate) fn run(a: WorkerArgs) -> Result<()> {
    let json = match a.command {
        WorkerCommand::Probe { json } => json,
        WorkerCommand::Register {
            node,
            owner,
            price,
            gpu_price,
            region,
            data_dir,
        } => {
            let dir = worker_dir(data_dir);
            let offer = offer(&dir)?;
            let owner_key = crate::client_cmd::keys(owner.keys_dir.clone()).load(&owner.key)?;
            let client = node.client();
            let (price, gpu_price) = (PayUnits(price), PayUnits(gpu_price));
            for line in register_offer(&client, &owner_key, &offer, price, gpu_price, &region)? {
                println!("{line}");
            }
            return Ok(());
        }
        WorkerCommand::Run {
            node,
            data_dir,
            heartbeat_secs,
            drain_secs,
            memory_mib,
            log_bytes,
            docker_socket,
            bare_image,
            no_network,
        } => {
            let dir = worker_dir(data_dir);
            let shutdown = Arc::new(AtomicBool::new(false));
            let flag = shutdown.clone();
            std::thread::spawn(move || wait_for_signal(flag));
            eprintln!("worker: serving against {}", node.url);
            return Ok(serve(
                &node.url,
                &dir,
                None,
                &docker_socket.unwrap_or_else(default_socket),
                |c| {
                    c.bare_image = bare_image;
                    c.allow_network = !no_network;
                    c.heartbeat = Duration::from_secs(heartbeat_secs.max(1));
                    c.drain = Duration::from_secs(drain_secs);
                    c.limits.memory_mib = memory_mib;
                    c.limits.log_bytes = log_bytes;
                },
                shutdown,
            )?);
        }
    };
    let report = probe(json)?;
    if json {
        println!("{report}");
    } else {
        for line in probe_lines(&report) {
            println!("{line}");
        }
    }
    if let Some(why) = probe_failure(&report) {
        bail!(why);
    }
    Ok(())
}
