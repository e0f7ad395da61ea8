//! `cairn worker …`: the provider's agent: `register` this machine's CPU device, `run` the
//! daemon that serves its leases (crate `cairn-worker`), and `probe`, which runs the
//! proof-of-physical-work protocol against this machine as a checker would.

use crate::client_cmd::{NodeOpt, Signer, sign_and_submit};
use anyhow::{Context, Result, bail};
use cairn_keystore::Keystore;
use cairn_popw::{GPU_N, Params};
use cairn_primitives::{
    BoundedString, DeviceSpec, Keypair, RegisterDevice, TxBody, device_pop_message, namespace,
};
use cairn_primitives::{ClassKind, DeviceClass, gpu_class};
use cairn_solver::{
    CpuSolver, CudaSolver, Solver, cpu_kernel_peak, cuda_unavailable, self_challenge,
};
use cairn_worker::{
    Agent, AgentConfig, DockerRuntime, Gpu, GpuAccess, Hardware, ProcessRuntime, Runtime,
    default_socket,
};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// A progress bar on stderr: `label [####      ] done/total what`.
pub(crate) fn progress_bar(label: &str, done: u32, total: u32, what: &str) {
    let width = 30;
    let filled = (done as usize * width) / total.max(1) as usize;
    eprint!(
        "\r{label} [{}{}] {done}/{total} {what}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if done >= total {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

/// GPU 0 measured with the CUDA solver: the int8 GEMM rate at the GPU challenge's size beside
/// its class's peak, then the whole challenge of its class run against it as a checker would
/// (tables computed, hashed and kept in GPU memory, the walk there, the audit on this CPU).
/// `Err` says why the GPU was not measured (the CPU is probed either way).
pub(crate) fn probe_gpu(
    catalog: &[DeviceClass],
    hw: &Hardware,
    quiet: bool,
) -> Result<serde_json::Value, String> {
    let gpus = &hw.gpus;
    let Some(first) = gpus.first() else {
        return Err(hw
            .gpu_note()
            .unwrap_or_else(|| "no NVIDIA GPU found".into()));
    };
    let (model, mib) = (first.model.clone(), first.vram_mib);
    let class = gpu_class(catalog, &model, mib);
    if let Some(why) = cuda_unavailable() {
        return Err(format!(
            "{model} present but CUDA is unusable ({why}): probing the CPU only"
        ));
    }
    let solver = CudaSolver::new(0).map_err(|e| format!("{model}: {e}"))?;
    if !quiet {
        eprintln!("measuring {} at n = {GPU_N}…", solver.name());
    }
    let reps = 20;
    let (rate, _) = solver
        .gemm_rate(GPU_N, reps)
        .map_err(|e| format!("{model}: {e}"))?;
    let peak = class.map(|c| c.int8_tops * 1e12);
    let mut out = json!({
        "model": model, "vram_mib": mib, "gpus": gpus.len(),
        "class": class.map(|c| c.name.clone()),
        "solver": solver.name(), "n": GPU_N, "gemm_runs": reps,
        "int8_ops_per_sec": rate, "class_peak_ops_per_sec": peak,
        "fraction_of_peak": peak.map(|p| rate / p),
    });
    let Some(class) = class else {
        out["challenge"] = json!({"skipped": format!("the catalog has no class for {model}")});
        return Ok(out);
    };
    let params = Params::for_class(class, 1, 0);
    if !quiet {
        eprintln!(
            "claiming class {}: {} tables of {}², {:.0} TOP, {} MiB kept in GPU memory",
            class.name,
            params.tables,
            params.n,
            params.ops() / 1e12,
            params.table_bytes() >> 20
        );
    }
    let report = self_challenge(&solver, params.clone(), rand::random(), |done, total| {
        if !quiet {
            progress_bar("compute", done, total, "tables");
        }
    })
    .map_err(|e| format!("{model}: {e}"))?;
    out["challenge"] = json!({
        "claimed_class": class.name, "tables": params.tables, "n": params.n,
        "compute_secs": report.solve.as_secs_f64(),
        "compute_deadline_secs": params.compute_deadline.as_secs_f64(),
        "int8_ops_per_sec": report.ops_per_sec,
        "walk_secs": report.walk.as_secs_f64(), "walk_chains": params.walk_chains,
        "walk_steps": params.walk_steps, "walk_rows": params.walk_rows,
        "walk_bytes": params.walk_bytes(),
        "walk_deadline_secs": params.walk_deadline.as_secs_f64(),
        "audit_ms": report.audit.as_secs_f64() * 1e3,
        "verdict": match &report.verdict { Ok(()) => "pass".to_string(), Err(e) => format!("fail: {e}") },
    });
    Ok(out)
}

/// The GPU's figures as lines of text.
pub(crate) fn gpu_lines(g: &serde_json::Value) -> Vec<String> {
    let mut lines = vec![format!(
        "GPU {} ({} MiB, class {}): int8 GEMM {:.0} TOP/s at n = {GPU_N}{}",
        g["model"].as_str().unwrap_or("?"),
        g["vram_mib"],
        g["class"].as_str().unwrap_or("none in the catalog"),
        g["int8_ops_per_sec"].as_f64().unwrap_or(0.0) / 1e12,
        g["class_peak_ops_per_sec"]
            .as_f64()
            .map_or(String::new(), |p| format!(
                " = {:.0} % of the class's {:.0} TOP/s (bar ≥ 70 %)",
                100.0 * g["fraction_of_peak"].as_f64().unwrap_or(0.0),
                p / 1e12
            )),
    )];
    let c = &g["challenge"];
    if let Some(why) = c["skipped"].as_str() {
        lines.push(format!("GPU challenge skipped: {why}"));
    } else if c.is_object() {
        let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
        lines.push(format!(
            "GPU challenge ({} tables of {}²): compute {:.3} s (deadline {:.3} s, {:.0} TOP/s), \
             walk {:.1} ms reading {:.1} GiB (deadline {:.1} ms, {:.0} GB/s), audit {:.1} ms: {}",
            c["tables"],
            c["n"],
            f("compute_secs"),
            f("compute_deadline_secs"),
            f("int8_ops_per_sec") / 1e12,
            f("walk_secs") * 1e3,
            f("walk_bytes") / f64::from(1u32 << 30),
            f("walk_deadline_secs") * 1e3,
            f("walk_bytes") / f("walk_secs").max(1e-9) / 1e9,
            f("audit_ms"),
            c["verdict"].as_str().unwrap_or("?")
        ));
    }
    lines
}

/// The worker's data dir: `$CAIRN_HOME/worker`, else `$XDG_DATA_HOME/cairn/worker`, else
/// `~/.local/share/cairn/worker` (empty variables count as unset).
pub(crate) fn worker_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| cairn_keystore::data_home().join("worker"))
}

/// The CPU device's key in the worker's data dir (created on first use, 0600).
pub(crate) fn cpu_device_key(dir: &Path) -> Result<Keypair> {
    Ok(Keystore::at(dir.join("keys")).load_or_create("device-cpu")?)
}

/// A GPU's device key (one per GPU, named by its UUID; created on first use, 0600).
fn gpu_device_key(dir: &Path, gpu: &Gpu) -> Result<Keypair> {
    let name: String = gpu
        .uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(50)
        .collect();
    Ok(Keystore::at(dir.join("keys")).load_or_create(&format!("device-gpu-{name}"))?)
}

/// One device this machine offers.
pub(crate) struct Offered {
    /// What it is, for messages.
    label: String,
    key: Keypair,
    class: String,
    spec: DeviceSpec,
    /// The GPU access its leases' jobs get (none for the CPU device).
    gpus: Vec<GpuAccess>,
}

/// The devices this machine offers: its CPU, and each GPU whose model the catalog knows.
pub(crate) struct Offer {
    /// The CPU device first.
    pub(crate) devices: Vec<Offered>,
    /// Why GPUs are missing from the offer, if they are.
    pub(crate) gpu_note: Option<String>,
}

/// Discovers the hardware and loads (or creates) a device key for each device offered.
pub(crate) fn offer(dir: &Path) -> Result<Offer> {
    let catalog = DeviceClass::default_catalog();
    let hw = Hardware::discover(&catalog);
    let mut devices = vec![Offered {
        label: format!(
            "CPU ({}, {} cores, {} MiB RAM)",
            hw.cpu_model, hw.cores, hw.ram_mib
        ),
        key: cpu_device_key(dir)?,
        class: "CPU".to_string(),
        spec: DeviceSpec {
            gpu_count: 0,
            vram_mib: 0,
            cpu_cores: hw.cores,
            ram_mib: hw.ram_mib,
        },
        gpus: Vec::new(),
    }];
    for gpu in &hw.gpus {
        let Some(class) = &gpu.class else { continue };
        let class_vram = catalog
            .iter()
            .find(|c| &c.name == class)
            .map_or(gpu.vram_mib, |c| c.vram_mib);
        devices.push(Offered {
            label: format!(
                "GPU {} ({}, {}, {} MiB, driver {})",
                gpu.index, gpu.model, gpu.uuid, gpu.vram_mib, gpu.driver
            ),
            key: gpu_device_key(dir, gpu)?,
            class: class.clone(),
            spec: DeviceSpec {
                gpu_count: 1,
                // The driver reports a little less or more than the marketed size; the
                // ledger takes 90-100 % of the class's.
                vram_mib: gpu.vram_mib.min(class_vram),
                cpu_cores: 0,
                ram_mib: 0,
            },
            gpus: vec![gpu.access()],
        });
    }
    Ok(Offer {
        devices,
        gpu_note: hw.gpu_note(),
    })
}

/// Registers one device for `owner` unless the chain already has it; waits for finality.
/// Returns whether it registered now.
fn register_device(
    client: &cairn_client::Client,
    owner: &Keypair,
    device: &Keypair,
    class: &str,
    spec: DeviceSpec,
    price: u64,
    region: &str,
) -> Result<bool> {
    if client
        .get(&format!("/v1/devices/{}", device.address()))
        .is_ok()
    {
        return Ok(false);
    }
    let region = BoundedString::new(region).map_err(|e| anyhow::anyhow!("--region: {e}"))?;
    let class = BoundedString::new(class).map_err(|e| anyhow::anyhow!("class: {e}"))?;
    let hash = sign_and_submit(client, owner, None, |chain, owner| {
        let pop = device.sign(
            &namespace("device-pop", &chain.chain_id),
            &device_pop_message(owner),
        );
        Ok(TxBody::RegisterDevice(RegisterDevice {
            device_key: device.public_key(),
            class,
            spec,
            region,
            price_per_hour: price,
            pop,
        }))
    })?;
    let v = client.wait_final(&hash, Duration::from_secs(30))?;
    if v["status"] == "failed" {
        bail!(
            "registering the device failed: {}",
            v["code"].as_str().unwrap_or("?")
        );
    }
    Ok(true)
}

/// Registers every device of `offer` not yet on chain (the CPU at `price`, GPUs at
/// `gpu_price`); one line per device says what happened.
pub(crate) fn register_offer(
    client: &cairn_client::Client,
    owner: &Keypair,
    offer: &Offer,
    price: u64,
    gpu_price: u64,
    region: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for Offered {
        label,
        key,
        class,
        spec,
        gpus,
    } in &offer.devices
    {
        let p = if gpus.is_empty() { price } else { gpu_price };
        let fresh = register_device(client, owner, key, class, spec.clone(), p, region)
            .with_context(|| format!("registering {label}"))?;
        lines.push(format!(
            "{} {} as class {class}: {label}",
            if fresh {
                "registered"
            } else {
                "already registered"
            },
            key.address()
        ));
    }
    if let Some(note) = &offer.gpu_note {
        lines.push(note.clone());
    }
    Ok(lines)
}

/// Sets `flag` at the first Ctrl-C or SIGTERM.
fn wait_for_signal(flag: Arc<AtomicBool>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    });
    eprintln!("worker: stopping; running jobs are drained");
    flag.store(true, Ordering::SeqCst);
}

/// Runs the worker daemon for this machine's devices until `shutdown`: bare commands in the
/// sandbox (namespaces, set up by this binary), images through the Docker Engine API on
/// `docker_socket`.
pub(crate) fn run_agent(
    node: &str,
    dir: &Path,
    keys_dir: Option<&Path>,
    docker_socket: &Path,
    configure: impl FnOnce(&mut AgentConfig),
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    let offer = offer(dir)?;
    let mut cfg = AgentConfig::new(node, dir.to_path_buf());
    cfg.hidden.extend(keys_dir.map(Path::to_path_buf));
    configure(&mut cfg);
    let process = ProcessRuntime::default();
    if let Some(why) = process.unavailable() {
        eprintln!("worker: bare commands cannot run on this machine: {why}");
    }
    let worker_id = offer.devices[0].key.address().to_string();
    let container: Option<Arc<dyn Runtime>> =
        match DockerRuntime::connect(docker_socket, &worker_id) {
            Ok(d) => {
                eprintln!("worker: jobs with an image run on {}", d.engine());
                Some(Arc::new(d))
            }
            Err(e) => {
                eprintln!("worker: {e}; jobs with an image will be refused");
                None
            }
        };
    if let Some(note) = &offer.gpu_note {
        eprintln!("worker: {note}");
    }
    for d in &offer.devices {
        eprintln!("worker: serving device {} — {}", d.key.address(), d.label);
    }
    let devices = offer.devices.into_iter().map(|d| (d.key, d.gpus)).collect();
    let agent = Agent::new(cfg, devices, Arc::new(process), container)?;
    agent.run(shutdown)?;
    Ok(())
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
            return run_agent(
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
            );
        }
    };
    let catalog = DeviceClass::default_catalog();
    let cpu = catalog
        .iter()
        .find(|c| c.kind == ClassKind::Cpu)
        .context("the catalog has no CPU class")?;
    let hw = Hardware::discover(&catalog);
    let (cores, ram) = (hw.cores, hw.ram_mib);
    if !json {
        eprintln!("CPU {} — {cores} cores, {ram} MiB RAM", hw.cpu_model);
    }
    let gpu = probe_gpu(&catalog, &hw, json);
    let params = Params::for_class(cpu, cores, ram);
    let solver = CpuSolver;
    if !json {
        match &gpu {
            Ok(g) => {
                for line in gpu_lines(g) {
                    eprintln!("{line}");
                }
            }
            Err(why) => eprintln!("{why}"),
        }
        eprintln!(
            "claiming class {} × {cores} cores, {ram} MiB RAM: {} tables of {}², {:.1} GOP, {} MiB retained",
            cpu.name,
            params.tables,
            params.n,
            params.ops() / 1e9,
            params.table_bytes() >> 20
        );
        eprintln!("solver: {}", solver.name());
    }
    let seed: [u8; 32] = rand::random();
    let report = self_challenge(&solver, params.clone(), seed, |done, total| {
        if !json {
            progress_bar("compute", done, total, "tables");
        }
    })?;
    // The ceiling to compare with: the same kernel on data that stays in L1.
    let peak = cpu_kernel_peak(std::time::Duration::from_millis(500));
    // Would this machine meet each class's compute deadline at the rate it just achieved?
    let classes: Vec<_> = catalog
        .iter()
        .map(|c| {
            let units = if c.kind == ClassKind::Cpu { cores } else { 1 };
            let p = Params::for_class(c, units, ram);
            let projected = p.ops() / report.ops_per_sec;
            let deadline = p.compute_deadline.as_secs_f64();
            json!({"class": c.name, "projected_secs": projected, "deadline_secs": deadline,
                   "meets_deadline": projected <= deadline})
        })
        .collect();
    let verdict = match &report.verdict {
        Ok(()) => "pass".to_string(),
        Err(e) => format!("fail: {e}"),
    };
    if json {
        println!(
            "{}",
            json!({
                "gpu": match &gpu { Ok(g) => g.clone(), Err(why) => json!({"unavailable": why}) },
                "solver": report.solver, "claimed_class": cpu.name, "cores": cores,
                "ram_mib": ram, "n": params.n, "tables": params.tables,
                "compute_secs": report.solve.as_secs_f64(),
                "compute_deadline_secs": params.compute_deadline.as_secs_f64(),
                "int8_ops_per_sec": report.ops_per_sec,
                "kernel_peak_ops_per_sec": peak,
                "walk_secs": report.walk.as_secs_f64(),
                "walk_deadline_secs": params.walk_deadline.as_secs_f64(),
                "walk_bytes": params.walk_bytes(),
                "audit_ms": report.audit.as_secs_f64() * 1e3,
                "verdict": verdict, "classes": classes,
            })
        );
    } else {
        println!("claimed class   {} × {cores}", cpu.name);
        println!(
            "compute         {:.3} s (deadline {:.3} s), {:.1} GOP/s int8",
            report.solve.as_secs_f64(),
            params.compute_deadline.as_secs_f64(),
            report.ops_per_sec / 1e9
        );
        println!(
            "kernel peak     {:.1} GOP/s int8 (same kernel, data in L1: the ceiling) — {:.0} % of it",
            peak / 1e9,
            100.0 * report.ops_per_sec / peak.max(1.0)
        );
        println!(
            "memory walk     {:.1} ms (deadline {:.1} ms): {} chains × {} steps of {} rows, {} MiB \
             read at {:.1} GB/s",
            report.walk.as_secs_f64() * 1e3,
            params.walk_deadline.as_secs_f64() * 1e3,
            params.walk_chains,
            params.walk_steps,
            params.walk_rows,
            params.walk_bytes() >> 20,
            params.walk_bytes() as f64 / report.walk.as_secs_f64().max(1e-9) / 1e9
        );
        println!("audit           {:.1} ms", report.audit.as_secs_f64() * 1e3);
        println!("verdict         {verdict}");
        println!("per class (compute at the rate just measured):");
        for c in &classes {
            println!(
                "  {:<12} {:>10.3} s vs deadline {:>8.3} s  {}",
                c["class"].as_str().unwrap_or("?"),
                c["projected_secs"].as_f64().unwrap_or(0.0),
                c["deadline_secs"].as_f64().unwrap_or(0.0),
                if c["meets_deadline"] == true {
                    "would pass"
                } else {
                    "too slow"
                }
            );
        }
    }
    if report.verdict.is_err() {
        anyhow::bail!("this machine failed its own challenge: {verdict}");
    }
    if let Ok(g) = &gpu
        && let Some(v) = g["challenge"]["verdict"].as_str()
        && v != "pass"
    {
        anyhow::bail!("this machine's GPU failed its own challenge: {v}");
    }
    Ok(())
}
