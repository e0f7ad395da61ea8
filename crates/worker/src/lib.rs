//! The provider's agent (`cairn worker`): runs the jobs its devices' leases name, in a
//! sandbox with enforced limits, reports on each lease from the device key, and uploads the
//! job's output to the node for the customer to read. It also discovers what this machine
//! offers (its CPU and the GPUs the catalog knows), registers it, and probes it with the
//! proof-of-physical-work challenge.
//!
//! ```
//! use cairn_primitives::DeviceClass;
//! let hw = cairn_worker::Hardware::discover(&DeviceClass::default_catalog());
//! assert!(hw.cores >= 1);
//! // Each GPU found is matched to a catalog class, or the reason it is not offered is given.
//! let _why_no_gpu: Option<String> = hw.gpu_note();
//! ```
#![deny(missing_docs)]

mod agent;
mod cgroup;
mod checking;
mod discover;
mod docker;
mod probe;
mod process;
mod register;
mod runtime;
mod sandbox;
/// Fixtures for tests: a collecting sink and a Podman service. Only with the `test-utils`
/// feature (which dev-dependencies turn on): it installs packages, which a release build must
/// never do.
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

pub use agent::{Agent, AgentConfig, AgentError};
pub use checking::{ProvingDevice, spawn as spawn_checking, spawn_with as spawn_checking_with};
pub use discover::{Gpu, GpuAccess, Hardware, parse_smi};
pub use docker::{DockerRuntime, default_socket};
pub use probe::{
    ProbeError, gpu_lines, probe, probe_failure, probe_gpu, probe_lines, progress_bar,
};
pub use process::ProcessRuntime;
pub use register::{Offer, Offered, RegisterError, offer, register_offer, serve, worker_dir};
pub use runtime::{Job, Limits, Outcome, RunReport, Runtime, RuntimeError, Sink, StopSignal};
pub use sandbox::{HELPER_ARG, helper_main};
