//! Device classes: the hardware a provider may claim, from the catalog in the genesis file.

use serde::{Deserialize, Serialize};

/// The index of a class in the genesis catalog.
pub type ClassId = u16;

/// Whether a class is a GPU (one device per GPU) or a CPU class (counted per core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassKind {
    /// One GPU per device.
    Gpu,
    /// Per core: a CPU device claims N cores.
    Cpu,
}

/// One entry of the class catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceClass {
    /// Unique name, such as `H100-SXM`.
    pub name: String,
    /// GPU or CPU.
    pub kind: ClassKind,
    /// Memory per GPU in MiB (0 for CPU classes).
    pub vram_mib: u64,
    /// Dense int8 tensor throughput in TOP/s (per core for CPU classes).
    pub int8_tops: f64,
    /// Dense bf16 throughput in TFLOP/s (per core for CPU classes).
    pub bf16_tflops: f64,
    /// Memory bandwidth in GB/s.
    pub mem_bandwidth_gbps: f64,
    /// Relative share of the capacity pool per unit (GPU or core).
    pub reward_weight: u32,
    /// Percentage of the genesis minimum stake bonded per unit.
    pub stake_multiplier_pct: u32,
}

impl DeviceClass {
    /// The built-in catalog, from `catalog/classes.toml`.
    pub fn default_catalog() -> Vec<DeviceClass> {
        #[derive(Deserialize)]
        struct File {
            class: Vec<DeviceClass>,
        }
        let file: File = toml::from_str(include_str!("../catalog/classes.toml"))
            .expect("the built-in class catalog parses (tested)");
        file.class
    }
}

/// How a GPU's reported model name maps to a class of the built-in catalog: the class, words
/// that must appear, words that must not (variants the catalog has no figures for), and a
/// VRAM range in MiB.
type GpuModel = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    u64,
    u64,
);

const GPU_MODELS: &[GpuModel] = &[
    ("H200", &["h200"], &[], 0, u64::MAX),
    ("H100-PCIe", &["h100", "pcie"], &[], 0, u64::MAX),
    ("H100-SXM", &["h100"], &["pcie", "nvl"], 0, u64::MAX),
    ("A100-80GB", &["a100"], &[], 60_000, u64::MAX),
    ("A100-40GB", &["a100"], &[], 0, 60_000),
    ("L40S", &["l40s"], &[], 0, u64::MAX),
    ("RTX-4090", &["rtx", "4090"], &["laptop", "d"], 0, u64::MAX),
    ("RTX-3090", &["rtx", "3090"], &["laptop", "ti"], 0, u64::MAX),
    ("RTX-3080", &["rtx", "3080"], &["laptop", "ti"], 0, u64::MAX),
    ("RTX-3050", &["rtx", "3050"], &["laptop", "ti"], 0, u64::MAX),
    ("GTX-1080-Ti", &["gtx", "1080", "ti"], &[], 0, u64::MAX),
];

/// The catalog class a GPU belongs to, from the model name its driver reports (NVML or
/// `nvidia-smi`, e.g. "NVIDIA GeForce RTX 4090" or "NVIDIA A100-SXM4-80GB") and its memory;
/// `None` for a model the catalog has no class for. Only classes present in `catalog` match.
pub fn gpu_class<'a>(
    catalog: &'a [DeviceClass],
    model: &str,
    vram_mib: u64,
) -> Option<&'a DeviceClass> {
    let lower = model.to_lowercase().replace(['-', '_', '/'], " ");
    let words: Vec<&str> = lower.split_whitespace().collect();
    GPU_MODELS
        .iter()
        .find(|(_, need, not, lo, hi)| {
            need.iter().all(|w| words.contains(w))
                && !not.iter().any(|w| words.contains(w))
                && (*lo..*hi).contains(&vram_mib)
        })
        .and_then(|(name, ..)| {
            catalog
                .iter()
                .find(|c| c.name == *name && c.kind == ClassKind::Gpu)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalog_has_the_named_classes() {
        let cat = DeviceClass::default_catalog();
        for name in [
            "H200",
            "H100-SXM",
            "H100-PCIe",
            "A100-80GB",
            "A100-40GB",
            "L40S",
            "RTX-4090",
            "RTX-3090",
            "RTX-3080",
            "RTX-3050",
            "GTX-1080-Ti",
            "CPU",
        ] {
            assert!(cat.iter().any(|c| c.name == name), "{name} missing");
        }
        let h100 = cat.iter().find(|c| c.name == "H100-SXM").unwrap();
        let class = |model: &str, mib: u64| gpu_class(&cat, model, mib).map(|c| c.name.as_str());
        assert_eq!(class("NVIDIA H200", 143_771), Some("H200"));
        assert_eq!(class("NVIDIA H100 80GB HBM3", 81_559), Some("H100-SXM"));
        assert_eq!(class("NVIDIA H100 PCIe", 81_559), Some("H100-PCIe"));
        assert_eq!(class("NVIDIA H100 NVL", 95_830), None);
        assert_eq!(class("NVIDIA A100-SXM4-80GB", 81_920), Some("A100-80GB"));
        assert_eq!(class("NVIDIA A100-PCIE-40GB", 40_960), Some("A100-40GB"));
        assert_eq!(class("NVIDIA GeForce RTX 4090", 24_564), Some("RTX-4090"));
        assert_eq!(class("NVIDIA GeForce RTX 3080 Ti", 12_288), None);
        assert_eq!(
            class("NVIDIA GeForce GTX 1080 Ti", 11_264),
            Some("GTX-1080-Ti")
        );
        assert_eq!(class("Tesla T4", 15_360), None);
        assert_eq!(h100.int8_tops, 1979.0);
    }
}
