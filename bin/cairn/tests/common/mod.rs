//! What the process-level tests share: child processes that never outlive a test, the timed
//! tests' turn, ports nobody else is handed, and waiting with context.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped, on every path (a failed assertion
/// included).
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// The timed tests take turns (docs/ARCHITECTURE.md, "Timed tests"); the turn lasts as long
/// as the returned file is open.
pub(crate) fn timed() -> std::fs::File {
    let path = std::env::temp_dir().join("cairn-timed-tests.lock");
    let file = std::fs::File::create(&path).expect("the timed tests' lock file");
    file.lock().expect("the timed tests' lock");
    file
}

/// A loopback port for a process that binds it later.
pub(crate) fn free_port() -> SocketAddr {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A port on `ip` for a process that binds it later (a checker named in a genesis): one
/// nobody else is handed meanwhile ([`cairn_devnet::free_port`]).
pub(crate) fn free_port_on(ip: Ipv4Addr) -> SocketAddr {
    cairn_devnet::free_port(ip.into()).expect("a free port")
}

/// Polls `f` every 100 ms for up to `secs`; panics with `what` if it never holds.
pub(crate) fn eventually(secs: u64, what: &str, f: impl FnMut() -> bool) {
    eventually_or(secs, what, f, String::new);
}

/// As [`eventually`], adding what `context` says (state, logs) to the panic.
pub(crate) fn eventually_or(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() >= deadline {
            panic!("timed out: {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `lines` lines of every `*.log` file in `dir`, each under its path.
pub(crate) fn log_tails(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {}\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}
