//! `cairn worker probe`: the proof-of-physical-work protocol run against this machine as a
//! checker would run it (its CPU, and GPU 0 with the CUDA solver where there is one), with
//! what each class's deadline would make of the rate measured.

use crate::Hardware;
use cairn_popw::{GPU_N, Params};
use cairn_primitives::{ClassKind, DeviceClass, gpu_class};
use cairn_solver::{
    CpuSolver, CudaSolver, SolveError, Solver, cpu_kernel_peak, cuda_unavailable, self_challenge,
};
use serde_json::json;
use std::io::Write;

/// Why the probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The catalog has no CPU class to claim.
    #[error("the catalog has no CPU class")]
    NoCpuClass,
    /// The solver failed (not a failed challenge: that is the report's verdict).
    #[error(transparent)]
    Solve(#[from] SolveError),
}

/// A progress bar on stderr: `label [####      ] done/total what`.
pub fn progress_bar(label: &str, done: u32, total: u32, what: &str) {
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
pub fn probe_gpu(
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
pub fn gpu_lines(g: &serde_json::Value) -> Vec<String> {
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

/// Probes this machine: GPU 0 (see [`probe_gpu`]), then the CPU class's whole challenge
/// with the CPU solver, the kernel's peak, and each class's compute deadline at the rate
/// measured. Progress goes to stderr unless `quiet`. The report is JSON (`cairn worker probe
/// --json` prints it; [`probe_lines`] renders it); its `verdict` and `gpu.challenge.verdict`
/// say whether this machine passed.
pub fn probe(quiet: bool) -> Result<serde_json::Value, ProbeError> {
    let json = quiet;
    let catalog = DeviceClass::default_catalog();
    let cpu = catalog
        .iter()
        .find(|c| c.kind == ClassKind::Cpu)
        .ok_or(ProbeError::NoCpuClass)?;
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
    Ok(json!({
        "gpu": match &gpu { Ok(g) => g.clone(), Err(why) => json!({"unavailable": why}) },
        "solver": report.solver, "claimed_class": cpu.name, "cores": cores,
        "cpu_core_tops": cpu.int8_tops,
        "ram_mib": ram, "n": params.n, "tables": params.tables,
        "compute_secs": report.solve.as_secs_f64(),
        "compute_deadline_secs": params.compute_deadline.as_secs_f64(),
        "int8_ops_per_sec": report.ops_per_sec,
        // What a checker would count for this answer's time (docs/checkers.md, "Measured
        // cores"): what matching and capacity rewards count for the CPU class.
        "counted_cores": report
            .verdict
            .is_ok()
            .then(|| cairn_popw::measured_cores(cpu, &params, report.solve, cores)),
        "kernel_peak_ops_per_sec": peak,
        "walk_secs": report.walk.as_secs_f64(),
        "walk_deadline_secs": params.walk_deadline.as_secs_f64(),
        "walk_chains": params.walk_chains, "walk_steps": params.walk_steps,
        "walk_rows": params.walk_rows,
        "walk_bytes": params.walk_bytes(),
        "audit_ms": report.audit.as_secs_f64() * 1e3,
        "verdict": verdict, "classes": classes,
    }))
}

/// The CPU part of a [`probe`] report as lines of text (the GPU's, if any, were shown as
/// it ran; [`gpu_lines`] renders them).
pub fn probe_lines(r: &serde_json::Value) -> Vec<String> {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let ops = f("int8_ops_per_sec");
    let walk_bytes = f("walk_bytes");
    let mut lines = vec![
        format!(
            "claimed class   {} × {}",
            r["claimed_class"].as_str().unwrap_or("?"),
            r["cores"]
        ),
        format!(
            "compute         {:.3} s (deadline {:.3} s), {:.1} GOP/s int8",
            f("compute_secs"),
            f("compute_deadline_secs"),
            ops / 1e9
        ),
        format!(
            "kernel peak     {:.1} GOP/s int8 (same kernel, data in L1: the ceiling) — {:.0} % of it",
            f("kernel_peak_ops_per_sec") / 1e9,
            100.0 * ops / f("kernel_peak_ops_per_sec").max(1.0)
        ),
        format!(
            "memory walk     {:.1} ms (deadline {:.1} ms): {} chains × {} steps of {} rows, {:.0} \
             MiB read at {:.1} GB/s",
            f("walk_secs") * 1e3,
            f("walk_deadline_secs") * 1e3,
            r["walk_chains"],
            r["walk_steps"],
            r["walk_rows"],
            walk_bytes / f64::from(1u32 << 20),
            walk_bytes / f("walk_secs").max(1e-9) / 1e9
        ),
        format!(
            "counted cores   {} of {} claimed (a core counts at {:.0} GOP/s: {} of the class's \
             per-core rate; the network adds to a checker's timing)",
            r["counted_cores"]
                .as_u64()
                .map_or("none".into(), |n| n.to_string()),
            r["cores"],
            f("cpu_core_tops") * 1e3 * cairn_popw::CPU_COUNTED_FRACTION,
            cairn_popw::CPU_COUNTED_FRACTION
        ),
        format!("audit           {:.1} ms", f("audit_ms")),
        format!("verdict         {}", r["verdict"].as_str().unwrap_or("?")),
        "per class (compute at the rate just measured):".to_string(),
    ];
    for c in r["classes"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {:<12} {:>10.3} s vs deadline {:>8.3} s  {}",
            c["class"].as_str().unwrap_or("?"),
            c["projected_secs"].as_f64().unwrap_or(0.0),
            c["deadline_secs"].as_f64().unwrap_or(0.0),
            if c["meets_deadline"] == true {
                "would pass"
            } else {
                "too slow"
            }
        ));
    }
    lines
}

/// Why a [`probe`] report fails: the CPU's verdict, then the GPU's, or `None` when both
/// passed (or the GPU was not probed).
pub fn probe_failure(r: &serde_json::Value) -> Option<String> {
    match r["verdict"].as_str() {
        Some("pass") => {}
        v => {
            return Some(format!(
                "this machine failed its own challenge: {}",
                v.unwrap_or("?")
            ));
        }
    }
    match r["gpu"]["challenge"]["verdict"].as_str() {
        Some(v) if v != "pass" => Some(format!("this machine's GPU failed its own challenge: {v}")),
        _ => None,
    }
}
