//! `cairn deploy` and `cairn jobs …`: what customers run.

use crate::client_cmd::{NodeOpt, Signer, keys, send};
use anyhow::{Context, Result, bail};
use cairn_primitives::{BoundedString, JobSpec, OpenDeployment, Resources, TxBody};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::time::Duration;

/// `cairn deploy`.
#[derive(Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    node: NodeOpt,
    #[command(flatten)]
    signer: Signer,
    /// Devices to run on (one replica each).
    #[arg(long, default_value = "1")]
    replicas: u16,
    /// How long, in hours (fractions allowed, e.g. 0.25).
    #[arg(long, default_value = "1")]
    hours: f64,
    /// The most to pay per device-hour (credits under `bme`, base tokens under `direct`).
    #[arg(long, default_value = "1000000")]
    max_price: u64,
    /// Acceptable device classes (repeat; default any that meets the minimums).
    #[arg(long = "class")]
    classes: Vec<String>,
    /// Minimum CPU cores per device.
    #[arg(long, default_value = "0")]
    cpus: u32,
    /// Minimum RAM per device, MiB.
    #[arg(long, default_value = "0")]
    ram_mib: u64,
    /// Minimum GPUs per device.
    #[arg(long, default_value = "0")]
    gpus: u16,
    /// Minimum VRAM per GPU, MiB.
    #[arg(long, default_value = "0")]
    min_vram_mib: u64,
    /// Only devices in this region.
    #[arg(long)]
    region: Option<String>,
    /// Run this OCI image (Docker runtime); without it the command runs in the sandbox.
    #[arg(long)]
    image: Option<String>,
    /// Environment variable for the job, `KEY=VALUE` (repeat).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Let the job use the network (jobs run without it unless they ask).
    #[arg(long)]
    network: bool,
    /// Skip the confirmation.
    #[arg(long, short)]
    yes: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

fn bounded<const N: usize>(s: &str, what: &str) -> Result<BoundedString<N>> {
    BoundedString::new(s).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

pub(crate) fn deploy(a: DeployArgs) -> Result<()> {
    if a.command.is_empty() && a.image.is_none() {
        bail!("nothing to run: give a command after `--`, or --image");
    }
    if !(a.hours > 0.0 && a.hours.is_finite()) {
        bail!("--hours must be positive");
    }
    let duration_secs = (a.hours * 3600.0).ceil() as u64;
    let client = a.node.client();
    let quote = client.post_json(
        "/v1/quote",
        &json!({
            "classes": a.classes, "cpu_cores": a.cpus, "ram_mib": a.ram_mib,
            "gpu_count": a.gpus, "min_vram_mib": a.min_vram_mib, "replicas": a.replicas,
            "region": a.region, "duration_secs": duration_secs,
            "max_price_per_hour": a.max_price,
        }),
    )?;
    let unit = quote["unit"].as_str().unwrap_or("units");
    if !a.node.json || !a.yes {
        eprintln!(
            "quote: {} device(s) at {} {unit}/hour in all, for {duration_secs} s; deposit {} {unit} (unused time comes back)",
            a.replicas, quote["price_per_hour"], quote["deposit"]
        );
        for d in quote["devices"].as_array().into_iter().flatten() {
            eprintln!(
                "  {}  {} {unit}/h  {}",
                d["device"].as_str().unwrap_or("?"),
                d["price_per_hour"],
                d["region"].as_str().unwrap_or("")
            );
        }
    }
    if !a.yes {
        eprint!("deploy? [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not deployed");
        }
    }
    let env = a
        .env
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env '{kv}' is not KEY=VALUE"))?;
            Ok((bounded(k, "--env key")?, bounded(v, "--env value")?))
        })
        .collect::<Result<Vec<_>>>()?;
    let open = OpenDeployment {
        resources: Resources {
            classes: a
                .classes
                .iter()
                .map(|c| bounded(c, "--class"))
                .collect::<Result<_>>()?,
            min_vram_mib: a.min_vram_mib,
            gpu_count: a.gpus,
            cpu_cores: a.cpus,
            ram_mib: a.ram_mib,
        },
        replicas: a.replicas,
        region: a
            .region
            .as_deref()
            .map(|r| bounded(r, "--region"))
            .transpose()?,
        duration_secs,
        max_price_per_hour: cairn_primitives::PayUnits(a.max_price),
        job: JobSpec {
            image: a
                .image
                .as_deref()
                .map(|i| bounded(i, "--image"))
                .transpose()?,
            command: a
                .command
                .iter()
                .map(|c| bounded(c, "command"))
                .collect::<Result<_>>()?,
            env,
            network: a.network,
        },
    };
    let owner = keys(a.signer.keys_dir.clone())
        .load(&a.signer.key)?
        .address();
    let v = send(&a.node, a.signer, |_, _| Ok(TxBody::OpenDeployment(open)))?;
    // The deployment is the owner's newest.
    let list = client.get(&format!("/v1/deployments?owner={owner}&limit=1000"))?;
    let newest = list["deployments"]
        .as_array()
        .and_then(|d| d.iter().filter_map(|x| x["id"].as_u64()).max());
    if let Some(id) = newest {
        if a.node.json {
            println!("{}", json!({"deployment": id, "tx": v}));
        } else {
            println!("deployment {id}");
            eprintln!("  cairn jobs show {id}    cairn jobs logs {id} -f    cairn jobs stop {id}");
        }
    }
    Ok(())
}

/// `cairn jobs …`.
#[derive(Args)]
pub(crate) struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Your deployments, newest first.
    List {
        #[command(flatten)]
        node: NodeOpt,
        /// Whose deployments: the owner's key name.
        #[arg(long)]
        key: String,
        /// Key store directory.
        #[arg(long, env = "CAIRN_KEYS_DIR")]
        keys_dir: Option<std::path::PathBuf>,
    },
    /// One deployment with its leases.
    Show {
        #[command(flatten)]
        node: NodeOpt,
        /// The deployment.
        id: u64,
    },
    /// The job's output, for its owner (a signed request); `-f` follows it.
    Logs {
        #[command(flatten)]
        node: NodeOpt,
        /// The deployment.
        id: u64,
        /// Keep printing new output until every lease has ended.
        #[arg(long, short)]
        follow: bool,
        /// The owner's key name.
        #[arg(long)]
        key: String,
        /// Key store directory.
        #[arg(long, env = "CAIRN_KEYS_DIR")]
        keys_dir: Option<std::path::PathBuf>,
    },
    /// Stop a deployment; the unused deposit comes back.
    Stop {
        #[command(flatten)]
        node: NodeOpt,
        #[command(flatten)]
        signer: Signer,
        /// The deployment.
        id: u64,
    },
    /// Run a deployment longer (its extra deposit is taken now).
    Extend {
        #[command(flatten)]
        node: NodeOpt,
        #[command(flatten)]
        signer: Signer,
        /// The deployment.
        id: u64,
        /// Hours to add.
        #[arg(long)]
        hours: f64,
    },
}

fn show(v: &Value) {
    println!(
        "deployment {}  {}  owner {}  deposit {}  paid {}  refunded {}",
        v["id"],
        v["status"].as_str().unwrap_or("?"),
        v["owner"].as_str().unwrap_or("?"),
        v["deposit"],
        v["paid"],
        v["refunded"]
    );
    let job = &v["job"];
    println!(
        "  job: {}{}",
        job["image"]
            .as_str()
            .map(|i| format!("image {i} "))
            .unwrap_or_default(),
        job["command"]
            .as_array()
            .map(|c| c
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    );
    for l in v["leases"].as_array().into_iter().flatten() {
        if l.is_object() {
            println!(
                "  lease {}  {}  device {}  paid {}/{}  exit {}",
                l["id"],
                l["state"].as_str().unwrap_or("?"),
                l["device"].as_str().unwrap_or("?"),
                l["paid"],
                l["deposit"],
                l["exit_code"]
            );
            if let Some(why) = l["reason"].as_str() {
                println!("    failed: {why}");
            }
        }
    }
}

pub(crate) fn jobs(a: JobsArgs) -> Result<()> {
    match a.command {
        JobsCommand::List {
            node,
            key,
            keys_dir,
        } => {
            let owner = keys(keys_dir).load(&key)?.address();
            let v = node
                .client()
                .get(&format!("/v1/deployments?owner={owner}&limit=1000"))?;
            if node.json {
                println!("{v}");
                return Ok(());
            }
            let mut list: Vec<&Value> = v["deployments"].as_array().into_iter().flatten().collect();
            list.sort_by_key(|d| std::cmp::Reverse(d["id"].as_u64()));
            if list.is_empty() {
                println!("no deployments");
            }
            for d in list {
                println!(
                    "{:>6}  {:<9} replicas {}  deposit {}  paid {}  refunded {}",
                    d["id"],
                    d["status"].as_str().unwrap_or("?"),
                    d["replicas"],
                    d["deposit"],
                    d["paid"],
                    d["refunded"]
                );
            }
        }
        JobsCommand::Show { node, id } => {
            let v = node.client().get(&format!("/v1/deployments/{id}"))?;
            if node.json {
                println!("{v}");
            } else {
                show(&v);
            }
        }
        JobsCommand::Logs {
            node,
            id,
            follow,
            key,
            keys_dir,
        } => {
            let k = keys(keys_dir).load(&key)?;
            let client = node.client();
            let chain = crate::client_cmd::ChainInfo::of(&client)?;
            let dep = client.get(&format!("/v1/deployments/{id}"))?;
            let leases: Vec<u64> = dep["leases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["id"].as_u64().or_else(|| l.as_u64()))
                .collect();
            let mut offsets = vec![0u64; leases.len()];
            let mut out = std::io::stdout().lock();
            loop {
                let mut all_ended = true;
                for (lease, offset) in leases.iter().zip(offsets.iter_mut()) {
                    loop {
                        let chunk = client.lease_logs(*lease, *offset, &k, &chain.chain_id)?;
                        if leases.len() > 1 && !chunk.bytes.is_empty() {
                            write!(out, "[lease {lease}] ")?;
                        }
                        out.write_all(&chunk.bytes)?;
                        *offset += chunk.bytes.len() as u64;
                        all_ended &= !chunk.active;
                        if chunk.bytes.is_empty() || *offset >= chunk.total {
                            break;
                        }
                    }
                }
                out.flush()?;
                if !follow || all_ended {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            // Silence is not an answer: say why a lease printed nothing.
            for (lease, _) in leases.iter().zip(&offsets).filter(|(_, o)| **o == 0) {
                let l = client.get(&format!("/v1/leases/{lease}"))?;
                eprintln!("{}", no_output_note(*lease, &l));
            }
            if leases.is_empty() {
                eprintln!("deployment {id} has no leases");
            }
        }
        JobsCommand::Stop { node, signer, id } => {
            send(&node, signer, |_, _| {
                Ok(TxBody::CloseDeployment { deployment: id })
            })?;
        }
        JobsCommand::Extend {
            node,
            signer,
            id,
            hours,
        } => {
            if !(hours > 0.0 && hours.is_finite()) {
                bail!("--hours must be positive");
            }
            let extra_secs = (hours * 3600.0).ceil() as u64;
            send(&node, signer, |_, _| {
                Ok(TxBody::ExtendDeployment {
                    deployment: id,
                    extra_secs,
                })
            })?;
        }
    }
    Ok(())
}

/// What `cairn jobs logs` says of a lease that printed nothing: its state, and the reason or
/// exit code it ended with.
fn no_output_note(lease: u64, l: &Value) -> String {
    let state = l["state"].as_str().unwrap_or("unknown");
    let mut note = format!("lease {lease}: no output; {state}");
    if let Some(reason) = l["reason"].as_str() {
        note.push_str(&format!(": {reason}"));
    } else if let Some(code) = l["exit_code"].as_i64() {
        note.push_str(&format!(" with exit code {code}"));
    } else if state == "active" && l["started"] == false {
        note.push_str(", its job has not started yet");
    }
    note
}
