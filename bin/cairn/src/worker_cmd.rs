//! `cairn worker …`: the provider's agent. So far: `probe`, which runs the proof-of-physical-
//! work protocol against this machine as a checker would.

use anyhow::{Context, Result};
use cairn_popw::{
    CpuSolver, CudaSolver, GPU_N, Params, Solver, cpu_kernel_peak, cuda_unavailable,
    self_challenge, table_challenge,
};
use cairn_primitives::{ClassKind, DeviceClass, gpu_class};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;

/// `cairn worker …`.
#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(subcommand)]
    command: WorkerCommand,
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Detect this machine's hardware and run the compute, memory and audit phases of the
    /// challenge against it; report the class it can claim and which classes it would pass.
    Probe {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What `/proc/meminfo` says the machine has, in MiB.
fn ram_mib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .context("no MemTotal in /proc/meminfo")
}

/// The GPUs `nvidia-smi` reports (model, MiB of memory), or why there are none.
fn nvidia_gpus() -> Result<Vec<(String, u64)>, String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .map_err(|_| "no NVIDIA GPU found: nvidia-smi is not installed (no driver)".to_string())?;
    if !out.status.success() {
        return Err(format!(
            "no NVIDIA GPU usable: nvidia-smi failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let gpus: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, mib) = l.rsplit_once(',')?;
            Some((name.trim().to_string(), mib.trim().parse().ok()?))
        })
        .collect();
    if gpus.is_empty() {
        return Err("no NVIDIA GPU found: nvidia-smi lists none".into());
    }
    Ok(gpus)
}

/// GPU 0 measured with the CUDA solver: the int8 GEMM rate at the GPU challenge's size beside
/// its class's peak, and one whole table (inputs generated, product, copied back). `Err` says
/// why the GPU was not measured (the CPU is probed either way).
fn probe_gpu(catalog: &[DeviceClass], quiet: bool) -> Result<serde_json::Value, String> {
    let gpus = nvidia_gpus()?;
    let (model, mib) = gpus[0].clone();
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
    let challenge = table_challenge(&[7; 32], 0, GPU_N).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    solver
        .solve(&challenge)
        .map_err(|e| format!("{model}: {e}"))?;
    let table = start.elapsed();
    let peak = class.map(|c| c.int8_tops * 1e12);
    Ok(json!({
        "model": model, "vram_mib": mib, "gpus": gpus.len(),
        "class": class.map(|c| c.name.clone()),
        "solver": solver.name(), "n": GPU_N, "gemm_runs": reps,
        "int8_ops_per_sec": rate, "class_peak_ops_per_sec": peak,
        "fraction_of_peak": peak.map(|p| rate / p),
        "table_secs": table.as_secs_f64(),
    }))
}

pub(crate) fn run(a: WorkerArgs) -> Result<()> {
    let WorkerCommand::Probe { json } = a.command;
    let catalog = DeviceClass::default_catalog();
    let cpu = catalog
        .iter()
        .find(|c| c.kind == ClassKind::Cpu)
        .context("the catalog has no CPU class")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let ram = ram_mib()?;
    let gpu = probe_gpu(&catalog, json);
    let params = Params::for_class(cpu, cores, ram);
    let solver = CpuSolver;
    if !json {
        match &gpu {
            Ok(g) => eprintln!(
                "GPU {} ({} MiB, class {}): int8 GEMM {:.0} TOP/s at n = {GPU_N}{}; one table {:.1} ms",
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
                g["table_secs"].as_f64().unwrap_or(0.0) * 1e3
            ),
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
            let width = 30;
            let filled = (done as usize * width) / total.max(1) as usize;
            eprint!(
                "\rcompute [{}{}] {done}/{total} tables",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            let _ = std::io::stderr().flush();
        }
    })?;
    if !json {
        eprintln!();
    }
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
            "memory walk     {:.1} ms (deadline {:.1} ms), {} steps",
            report.walk.as_secs_f64() * 1e3,
            params.walk_deadline.as_secs_f64() * 1e3,
            params.walk_steps
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
    Ok(())
}
