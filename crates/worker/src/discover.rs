//! What this machine has: CPU model, cores and RAM (sysinfo), and NVIDIA GPUs through NVML
//! (loaded at run time, so building needs no driver) with `nvidia-smi` as the fallback. Each
//! GPU is mapped to a catalog class; when there is none, [`Hardware::gpu_note`] says exactly
//! why (no driver, no library, an unknown model).

use cairn_primitives::{DeviceClass, gpu_class};
use std::path::PathBuf;

/// One NVIDIA GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// Index as the driver numbers it.
    pub index: u32,
    /// `GPU-…`, stable across reboots and slots.
    pub uuid: String,
    /// Model name as the driver reports it.
    pub model: String,
    /// Memory in MiB.
    pub vram_mib: u64,
    /// Driver version.
    pub driver: String,
    /// Minor number of its device node (`/dev/nvidia<minor>`), when known.
    pub minor: Option<u32>,
    /// The catalog class it maps to, `None` for a model the catalog does not know.
    pub class: Option<String>,
}

/// How a job reaches one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuAccess {
    /// Its CDI name (`nvidia.com/gpu=<uuid>`), for container runtimes.
    pub cdi: String,
    /// Its UUID (`CUDA_VISIBLE_DEVICES` for bare commands).
    pub uuid: String,
    /// Its device node, bound into a bare command's sandbox.
    pub node: Option<PathBuf>,
}

impl Gpu {
    /// How a job gets this GPU.
    pub fn access(&self) -> GpuAccess {
        GpuAccess {
            cdi: format!("nvidia.com/gpu={}", self.uuid),
            uuid: self.uuid.clone(),
            node: self.minor.map(|m| PathBuf::from(format!("/dev/nvidia{m}"))),
        }
    }
}

/// The machine.
#[derive(Clone, Debug)]
pub struct Hardware {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical cores.
    pub cores: u32,
    /// RAM in MiB.
    pub ram_mib: u64,
    /// NVIDIA GPUs found.
    pub gpus: Vec<Gpu>,
    /// Where the GPUs came from (`NVML`, `nvidia-smi`), or why there are none.
    pub gpu_source: Result<&'static str, String>,
}

impl Hardware {
    /// Looks; `catalog` maps GPU models to classes.
    pub fn discover(catalog: &[DeviceClass]) -> Self {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let cpu_model = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores =
            std::thread::available_parallelism().map_or(sys.cpus().len().max(1), |n| n.get());
        let (gpus, gpu_source) = match nvml_gpus() {
            Ok(g) => (g, Ok("NVML")),
            Err(nvml_why) => match smi_gpus() {
                Ok(g) => (g, Ok("nvidia-smi")),
                Err(smi_why) => (Vec::new(), Err(format!("{nvml_why}; {smi_why}"))),
            },
        };
        let gpus = gpus
            .into_iter()
            .map(|g| Gpu {
                class: gpu_class(catalog, &g.model, g.vram_mib).map(|c| c.name.clone()),
                ..g
            })
            .collect();
        Self {
            cpu_model,
            cores: u32::try_from(cores).unwrap_or(u32::MAX),
            ram_mib: sys.total_memory() >> 20,
            gpus,
            gpu_source,
        }
    }

    /// Why GPUs are not offered: none found (and why), or the models the catalog lacks.
    pub fn gpu_note(&self) -> Option<String> {
        match &self.gpu_source {
            Err(why) => Some(format!("no NVIDIA GPU: {why}")),
            Ok(_) => {
                let unknown: Vec<String> = self
                    .gpus
                    .iter()
                    .filter(|g| g.class.is_none())
                    .map(|g| format!("GPU {} ({}, {} MiB)", g.index, g.model, g.vram_mib))
                    .collect();
                (!unknown.is_empty()).then(|| {
                    format!(
                        "not offered, unknown model (not in the class catalog): {}",
                        unknown.join(", ")
                    )
                })
            }
        }
    }
}

/// GPUs through NVML, or why NVML cannot say.
fn nvml_gpus() -> Result<Vec<Gpu>, String> {
    use nvml_wrapper::Nvml;
    use nvml_wrapper::error::NvmlError;
    // The driver installs the versioned name; the bare one comes only with development files.
    let nvml = Nvml::builder()
        .lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"))
        .init()
        .or_else(|_| Nvml::init())
        .map_err(|e| match e {
            NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
                "NVML not found (libnvidia-ml.so.1: no NVIDIA driver installed)".to_string()
            }
            NvmlError::DriverNotLoaded => {
                "NVML found but the NVIDIA kernel driver is not loaded".to_string()
            }
            NvmlError::NoPermission => "NVML: no permission to talk to the driver".to_string(),
            e => format!("NVML failed: {e}"),
        })?;
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML device count: {e}"))?;
    if count == 0 {
        return Err("NVML: the driver is loaded but sees no GPU".into());
    }
    (0..count)
        .map(|i| {
            let d = nvml
                .device_by_index(i)
                .map_err(|e| format!("NVML GPU {i}: {e}"))?;
            let bad = |e: NvmlError| format!("NVML GPU {i}: {e}");
            Ok(Gpu {
                index: i,
                uuid: d.uuid().map_err(bad)?,
                model: d.name().map_err(bad)?,
                vram_mib: d.memory_info().map_err(bad)?.total >> 20,
                driver: driver.clone(),
                minor: d.minor_number().ok(),
                class: None,
            })
        })
        .collect()
}

/// GPUs through `nvidia-smi`, or why it cannot say.
fn smi_gpus() -> Result<Vec<Gpu>, String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,uuid,name,memory.total,driver_version",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .map_err(|_| "nvidia-smi is not installed".to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nvidia-smi failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let gpus = parse_smi(&String::from_utf8_lossy(&out.stdout));
    if gpus.is_empty() {
        return Err("nvidia-smi lists no GPU".into());
    }
    Ok(gpus)
}

/// Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version` in CSV
/// without header or units; malformed rows are skipped.
pub fn parse_smi(csv: &str) -> Vec<Gpu> {
    csv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let [index, uuid, model, mib, driver] = f.as_slice() else {
                return None;
            };
            let index: u32 = index.parse().ok()?;
            Some(Gpu {
                index,
                uuid: uuid.to_string(),
                model: model.to_string(),
                vram_mib: mib.parse().ok()?,
                driver: driver.to_string(),
                // nvidia-smi numbers device nodes like the driver does, by index.
                minor: Some(index),
                class: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_rows_parse_and_map_to_classes() {
        let rows = "0, GPU-3f6a1b2c-0000-1111-2222-333344445555, NVIDIA H200, 143771, 570.86.15\n\
                    1, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, NVIDIA GeForce RTX 4090, 24564, 570.86.15\n\
                    garbage\n\
                    2, GPU-x, Some Future GPU, 99999, 570.86.15\n";
        let gpus = parse_smi(rows);
        assert_eq!(gpus.len(), 3);
        assert_eq!(gpus[0].model, "NVIDIA H200");
        assert_eq!(gpus[0].vram_mib, 143_771);
        assert_eq!(
            gpus[1].access().cdi,
            "nvidia.com/gpu=GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
        assert_eq!(gpus[1].access().node, Some(PathBuf::from("/dev/nvidia1")));
        let catalog = DeviceClass::default_catalog();
        let classes: Vec<Option<&str>> = gpus
            .iter()
            .map(|g| gpu_class(&catalog, &g.model, g.vram_mib).map(|c| c.name.as_str()))
            .collect();
        assert_eq!(classes, vec![Some("H200"), Some("RTX-4090"), None]);
        let hw = Hardware {
            cpu_model: "x".into(),
            cores: 1,
            ram_mib: 1,
            gpus: gpus
                .into_iter()
                .map(|g| Gpu {
                    class: gpu_class(&catalog, &g.model, g.vram_mib).map(|c| c.name.clone()),
                    ..g
                })
                .collect(),
            gpu_source: Ok("nvidia-smi"),
        };
        let note = hw.gpu_note().unwrap();
        assert!(
            note.contains("unknown model") && note.contains("Some Future GPU"),
            "{note}"
        );
    }

    #[test]
    fn this_machine_is_discovered_and_a_missing_gpu_is_explained() {
        let hw = Hardware::discover(&DeviceClass::default_catalog());
        assert!(hw.cores >= 1 && hw.ram_mib > 0, "{hw:?}");
        // Either GPUs were found, or the note names what is missing.
        if hw.gpus.is_empty() {
            let note = hw.gpu_note().unwrap();
            assert!(
                note.contains("NVML") && note.contains("nvidia-smi"),
                "{note}"
            );
        }
    }
}
