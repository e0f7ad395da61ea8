//! `cairn bench popw`: the proof-of-physical-work figures of docs/design.md §6 — the CPU
//! solver's int8 rate beside the same kernel on L1-resident data, the checker's audit CPU
//! time for the CPU class's answer and for a GPU class's (bar < 50 ms), and, where an NVIDIA
//! GPU and CUDA's libraries are present, the cuBLAS int8 rate against its class's peak
//! (bar ≥ 70 %) and the whole challenge of its class run on it.

use anyhow::{Context, Result};
use cairn_popw::{CPU_N, Params, table_challenge};
use cairn_primitives::{ClassKind, DeviceClass};
use cairn_solver::{AuditCase, CpuSolver, Solver, cpu_kernel_peak};
use cairn_worker::Hardware;
use cairn_worker::{gpu_lines, probe_gpu, progress_bar};
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};

/// `cairn bench popw`.
#[derive(Args)]
pub(crate) struct PopwBenchArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The GPU class whose answer is audited (any machine can: the opened rows are computed on
    /// the CPU).
    #[arg(long, default_value = "H200")]
    class: String,
    /// Times each audit is run; the median and the slowest are reported.
    #[arg(long, default_value_t = 11)]
    runs: usize,
}

/// The audit of `params`' answer: (rows, tables, median and slowest time on one core, median
/// on every core).
pub(crate) fn audit(
    params: &Params,
    label: &str,
    runs: usize,
    quiet: bool,
) -> Result<serde_json::Value> {
    let case = AuditCase::build(params, rand::random(), |done, total| {
        if !quiet {
            progress_bar(
                &format!("opening rows of {label}"),
                done as u32,
                total as u32,
                "tables",
            );
        }
    })?;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let time = |pool: Option<&rayon::ThreadPool>| -> Result<Vec<f64>> {
        let mut t = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = Instant::now();
            let verdict = match pool {
                Some(p) => p.install(|| case.check()),
                None => case.check(),
            };
            t.push(start.elapsed().as_secs_f64() * 1e3);
            verdict.context("the honest answer failed its audit")?;
        }
        t.sort_by(f64::total_cmp);
        Ok(t)
    };
    let single = time(Some(&one))?;
    let all = time(None)?;
    Ok(json!({
        "answer": label, "tables": params.tables, "n": params.n,
        "rows_opened": case.rows(), "tables_audited": case.tables(),
        "columns_checked": case.params.audit_cols.min(params.n), "rounds": params.rounds,
        "one_core_ms_median": single[single.len() / 2],
        "one_core_ms_max": single[single.len() - 1],
        "all_cores_ms_median": all[all.len() / 2],
        "bar_ms": 50.0,
    }))
}

pub(crate) fn run(a: PopwBenchArgs) -> Result<()> {
    let quiet = a.json;
    let catalog = DeviceClass::default_catalog();
    let find = |name: &str| {
        catalog
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("the catalog has no class {name}"))
    };
    let cpu = find("CPU")?;
    let gpu_class = find(&a.class)?;
    anyhow::ensure!(
        gpu_class.kind == ClassKind::Gpu,
        "{} is not a GPU class",
        a.class
    );
    let hw = Hardware::discover(&catalog);

    // The CPU solver: one table of the CPU class's size, every core.
    if !quiet {
        eprintln!("… CPU solver: one {CPU_N}² table on {} cores", hw.cores);
    }
    let c = table_challenge(&[1; 32], 0, CPU_N)?;
    let _ = CpuSolver.solve(&c)?; // warm: pages, threads
    let start = Instant::now();
    let _ = CpuSolver.solve(&c)?;
    let solve = start.elapsed();
    let rate = 2.0 * f64::from(CPU_N).powi(3) / solve.as_secs_f64();
    let peak = cpu_kernel_peak(Duration::from_millis(500));

    let cpu_params = Params::for_class(cpu, hw.cores, hw.ram_mib);
    let gpu_params = Params::for_class(gpu_class, 1, 0);
    let audits = [
        audit(
            &cpu_params,
            &format!("CPU × {} cores", hw.cores),
            a.runs,
            quiet,
        )?,
        audit(&gpu_params, &gpu_class.name, a.runs, quiet)?,
    ];
    let gpu = probe_gpu(&catalog, &hw, quiet);
    if a.json {
        println!(
            "{}",
            json!({
                "cpu_solver": {"solver": CpuSolver.name(), "n": CPU_N,
                    "secs": solve.as_secs_f64(), "int8_ops_per_sec": rate,
                    "kernel_peak_ops_per_sec": peak},
                "audits": audits,
                "gpu": match &gpu { Ok(g) => g.clone(), Err(why) => json!({"unavailable": why}) },
            })
        );
        return Ok(());
    }
    println!(
        "CPU solver        {:.1} GOP/s int8 ({}, one {CPU_N}² table in {:.3} s); the same kernel on \
         L1-resident data: {:.1} GOP/s — {:.0} % of it",
        rate / 1e9,
        CpuSolver.name(),
        solve.as_secs_f64(),
        peak / 1e9,
        100.0 * rate / peak
    );
    for au in &audits {
        let f = |k: &str| au[k].as_f64().unwrap_or(0.0);
        println!(
            "audit {:<11} {:.1} ms CPU (median of {}, slowest {:.1} ms; {:.1} ms on every core) \
             — bar < 50 ms: {}; {} rows in {} of {} tables of {}², {} columns each",
            au["answer"].as_str().unwrap_or("?"),
            f("one_core_ms_median"),
            a.runs,
            f("one_core_ms_max"),
            f("all_cores_ms_median"),
            if f("one_core_ms_median") < 50.0 {
                "met"
            } else {
                "NOT met"
            },
            au["rows_opened"],
            au["tables_audited"],
            au["tables"],
            au["n"],
            au["columns_checked"],
        );
    }
    match &gpu {
        Ok(g) => {
            for line in gpu_lines(g) {
                println!("{line}");
            }
        }
        Err(why) => println!("GPU               not measured: {why}"),
    }
    Ok(())
}
