//! What this machine offers the network and how it joins: one device per CPU and per GPU the
//! catalog knows, each with its own key in the worker's data directory; registering them on
//! chain for an owner; and serving their leases.

use crate::{
    Agent, AgentConfig, AgentError, DockerRuntime, Gpu, GpuAccess, Hardware, ProcessRuntime,
    Runtime,
};
use cairn_client::Client;
use cairn_keystore::Keystore;
use cairn_primitives::{
    BoundedString, DeviceClass, DeviceSpec, Keypair, PayUnits, RegisterDevice, TxBody,
    device_pop_message, namespace,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Why registering or serving this machine's devices failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A device key could not be loaded or created.
    #[error("device key: {0}")]
    Key(#[from] cairn_keystore::Error),
    /// The node could not be reached or refused a request.
    #[error(transparent)]
    Node(#[from] cairn_client::Error),
    /// A field is not valid on chain (e.g. a region too long).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The ledger rejected the registration.
    #[error("registering {device} failed: {code}")]
    Rejected {
        /// What the device is.
        device: String,
        /// The ledger's error code.
        code: String,
    },
    /// The agent could not start or stopped with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// The worker's data dir: `$CAIRN_HOME/worker`, else `$XDG_DATA_HOME/cairn/worker`, else
/// `~/.local/share/cairn/worker` (empty variables count as unset).
pub fn worker_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| cairn_keystore::data_home().join("worker"))
}

/// The CPU device's key in the worker's data dir (created on first use, 0600).
fn cpu_device_key(dir: &Path) -> Result<Keypair, RegisterError> {
    Ok(Keystore::at(dir.join("keys")).load_or_create("device-cpu")?)
}

/// A GPU's device key (one per GPU, named by its UUID; created on first use, 0600).
fn gpu_device_key(dir: &Path, gpu: &Gpu) -> Result<Keypair, RegisterError> {
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
pub struct Offered {
    /// What it is, for messages.
    pub label: String,
    /// Its key (its address is the device's id on chain).
    pub key: Keypair,
    /// Its class in the catalog.
    pub class: String,
    /// What it registers.
    pub spec: DeviceSpec,
    /// The GPU access its leases' jobs get (none for the CPU device).
    pub gpus: Vec<GpuAccess>,
    /// The GPU's index, which its challenges run on (none for the CPU device).
    pub gpu_index: Option<usize>,
}

/// The devices this machine offers: its CPU, and each GPU whose model the catalog knows.
pub struct Offer {
    /// The CPU device first.
    pub devices: Vec<Offered>,
    /// Why GPUs are missing from the offer, if they are.
    pub gpu_note: Option<String>,
}

/// Discovers the hardware and loads (or creates) a device key for each device offered.
pub fn offer(dir: &Path) -> Result<Offer, RegisterError> {
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
        gpu_index: None,
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
            gpu_index: usize::try_from(gpu.index).ok(),
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
    client: &Client,
    owner: &Keypair,
    device: &Offered,
    price: PayUnits,
    region: &str,
) -> Result<bool, RegisterError> {
    if client
        .get(&format!("/v1/devices/{}", device.key.address()))
        .is_ok()
    {
        return Ok(false);
    }
    let invalid = |field| move |reason| RegisterError::Invalid { field, reason };
    let region = BoundedString::new(region).map_err(invalid("region"))?;
    let class = BoundedString::new(&device.class).map_err(invalid("class"))?;
    let (chain_id, _) = client.chain()?;
    let pop = device.key.sign(
        &namespace("device-pop", &chain_id),
        &device_pop_message(&owner.address()),
    );
    let body = TxBody::RegisterDevice(RegisterDevice {
        device_key: device.key.public_key(),
        class,
        spec: device.spec.clone(),
        region,
        price_per_hour: price,
        pop,
    });
    let hash = client.sign_and_submit(owner, None, body)?;
    let v = client.wait_final(&hash, Duration::from_secs(30))?;
    if v["status"] == "failed" {
        return Err(RegisterError::Rejected {
            device: device.label.clone(),
            code: v["code"].as_str().unwrap_or("?").to_string(),
        });
    }
    Ok(true)
}

/// Registers every device of `offer` not yet on chain (the CPU at `price`, GPUs at
/// `gpu_price`, per hour in payment units); one line per device says what happened.
pub fn register_offer(
    client: &Client,
    owner: &Keypair,
    offer: &Offer,
    price: PayUnits,
    gpu_price: PayUnits,
    region: &str,
) -> Result<Vec<String>, RegisterError> {
    let mut lines = Vec::new();
    for device in &offer.devices {
        let p = if device.gpus.is_empty() {
            price
        } else {
            gpu_price
        };
        let fresh = register_device(client, owner, device, p, region)?;
        lines.push(format!(
            "{} {} as class {}: {}",
            if fresh {
                "registered"
            } else {
                "already registered"
            },
            device.key.address(),
            device.class,
            device.label
        ));
    }
    if let Some(note) = &offer.gpu_note {
        lines.push(note.clone());
    }
    Ok(lines)
}

/// Runs the worker daemon for this machine's devices until `shutdown` is set, then drains:
/// bare commands in the sandbox (namespaces, set up by this binary), images through the
/// Docker Engine API on `docker_socket`. `keys_dir` (the operator's keys) is hidden from jobs.
pub fn serve(
    node: &str,
    dir: &Path,
    keys_dir: Option<&Path>,
    docker_socket: &Path,
    configure: impl FnOnce(&mut AgentConfig),
    shutdown: Arc<AtomicBool>,
) -> Result<(), RegisterError> {
    let offer = offer(dir)?;
    let mut cfg = AgentConfig::new(node, dir.to_path_buf());
    cfg.hidden.extend(keys_dir.map(Path::to_path_buf));
    configure(&mut cfg);
    let process = ProcessRuntime::default();
    if let Some(why) = process.unavailable() {
        eprintln!("worker: bare commands cannot run on this machine: {why}");
    }
    let worker_id = offer
        .devices
        .first()
        .map(|d| d.key.address().to_string())
        .unwrap_or_default();
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
    // Checking runs beside the agent: the devices answer their checkers' rounds and send
    // heartbeats until the agent has drained.
    let proving = offer
        .devices
        .iter()
        .map(|d| crate::checking::ProvingDevice {
            key: d.key.clone(),
            gpu: d.gpu_index,
        })
        .collect();
    let checking_stop = Arc::new(AtomicBool::new(false));
    let checking = crate::checking::spawn(node, proving, checking_stop.clone());
    let devices = offer.devices.into_iter().map(|d| (d.key, d.gpus)).collect();
    let result = Agent::new(cfg, devices, Arc::new(process), container)
        .and_then(|agent| agent.run(shutdown));
    checking_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = checking.join();
    result?;
    Ok(())
}
