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
        assert_eq!(h100.int8_tops, 1979.0);
    }
}
