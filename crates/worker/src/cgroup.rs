//! One cgroup per bare-command job, when the worker may make them (root, a writable cgroup
//! file system): the memory limit on what the job really uses (resident memory, no swap)
//! rather than on address space, a process limit of its own rather than one shared by every
//! job of the same user, CPU time and peak memory for its usage reports, and whether the
//! kernel killed something for memory.
//!
//! Both hierarchies: the unified one (v2: `memory.max`, `memory.swap.max`, `pids.max`,
//! `cpu.stat`, `memory.peak`, `memory.events`) and the legacy one (v1: the `memory`, `pids`
//! and `cpuacct` controllers, each job nested under the worker's own group in each).

use crate::runtime::Limits;
use cairn_primitives::Usage;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";

/// A job's cgroup; removed when dropped (after anything left in it is killed).
#[derive(Debug)]
pub(crate) struct JobCgroup {
    v2: bool,
    /// v2: the one directory; v1: memory, pids, cpuacct (in that order).
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (`cpu.stat`, `memory.events`, `memory.oom_control`).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == key).then(|| words.next()?.parse().ok())?
    })
}

/// This process's group in a v1 controller's hierarchy, or the v2 one (`controller` = "").
fn own_group(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            names.is_empty()
        } else {
            names.split(',').any(|n| n == controller)
        };
        hit.then(|| path.trim_start_matches('/').to_string())
    })
}

impl JobCgroup {
    /// A fresh group named `name` with `limits`, or why none could be made.
    pub(crate) fn create(name: &str, limits: &Limits) -> Result<Self, String> {
        let memory = (limits.memory_mib.max(4) << 20).to_string();
        let pids = limits.pids.max(1).to_string();
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            // Unified: a parent of ours under the root, with the controllers delegated to it.
            let parent = Path::new(ROOT).join("cairn-jobs");
            std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            write(
                &Path::new(ROOT).join("cgroup.subtree_control"),
                "+memory +pids +cpu",
            )
            .ok();
            write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")
                .map_err(|e| format!("enabling controllers in {}: {e}", parent.display()))?;
            let dir = parent.join(name);
            let _ = std::fs::remove_dir(&dir);
            std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let group = Self {
                v2: true,
                dirs: vec![dir.clone()],
            };
            write(&dir.join("memory.max"), &memory)
                .and_then(|()| write(&dir.join("pids.max"), &pids))
                .map_err(|e| format!("limits in {}: {e}", dir.display()))?;
            let _ = write(&dir.join("memory.swap.max"), "0");
            return Ok(group);
        }
        // Built up in place, so that a failure part way removes what was made.
        let mut group = Self {
            v2: false,
            dirs: Vec::new(),
        };
        for controller in ["memory", "pids", "cpuacct"] {
            let base = Path::new(ROOT).join(controller);
            if !base.join("cgroup.procs").exists() {
                return Err(format!(
                    "no {controller} controller mounted at {}",
                    base.display()
                ));
            }
            let own = own_group(controller).unwrap_or_default();
            let dir = base.join(own).join(name);
            let _ = std::fs::remove_dir(&dir);
            std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            group.dirs.push(dir);
        }
        write(&group.dirs[0].join("memory.limit_in_bytes"), &memory)
            .and_then(|()| write(&group.dirs[1].join("pids.max"), &pids))
            .map_err(|e| format!("limits: {e}"))?;
        // No swap on top, where swap accounting exists.
        let _ = write(&group.dirs[0].join("memory.memsw.limit_in_bytes"), &memory);
        Ok(group)
    }

    /// Removes the job groups a dead worker left (the worker's pid is in their names, see
    /// the process runtime): anything still in them is killed. Returns their paths.
    pub(crate) fn remove_stale() -> Vec<PathBuf> {
        let v2 = Path::new(ROOT).join("cgroup.controllers").exists();
        let parents: Vec<PathBuf> = if v2 {
            vec![Path::new(ROOT).join("cairn-jobs")]
        } else {
            ["memory", "pids", "cpuacct"]
                .iter()
                .map(|c| {
                    Path::new(ROOT)
                        .join(c)
                        .join(own_group(c).unwrap_or_default())
                })
                .collect()
        };
        let mut removed = Vec::new();
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = worker_pid(&name) else {
                    continue;
                };
                if Path::new("/proc").join(pid.to_string()).exists() {
                    continue;
                }
                removed.push(entry.path());
                // Dropping it kills what is left inside and removes it.
                drop(Self {
                    v2,
                    dirs: vec![entry.path()],
                });
            }
        }
        removed
    }

    /// The files a process writes its pid to, to join the group (all of them).
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// CPU time and peak memory so far.
    pub(crate) fn usage(&self) -> Usage {
        let (cpu_ns, peak) = if self.v2 {
            let d = &self.dirs[0];
            (
                read_key(&d.join("cpu.stat"), "usage_usec").map(|u| u * 1000),
                read_u64(&d.join("memory.peak")).or_else(|| read_u64(&d.join("memory.current"))),
            )
        } else {
            (
                read_u64(&self.dirs[2].join("cpuacct.usage")),
                read_u64(&self.dirs[0].join("memory.max_usage_in_bytes")),
            )
        };
        Usage {
            cpu_ms: cpu_ns.unwrap_or(0) / 1_000_000,
            max_rss_mib: peak.unwrap_or(0) >> 20,
            ..Usage::default()
        }
    }

    /// Whether the kernel killed a process of the group for passing its memory limit.
    pub(crate) fn oom_killed(&self) -> bool {
        let d = &self.dirs[0];
        let kills = if self.v2 {
            read_key(&d.join("memory.events"), "oom_kill")
        } else {
            read_key(&d.join("memory.oom_control"), "oom_kill")
        };
        kills.unwrap_or(0) > 0
    }

    fn pids(&self) -> Vec<u32> {
        let mut all = Vec::new();
        for f in self.procs_files() {
            if let Ok(text) = std::fs::read_to_string(f) {
                all.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Kills everything still in the group.
    pub(crate) fn kill_all(&self) {
        if self.v2 && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        for attempt in 0..50 {
            if self.pids().is_empty() {
                break;
            }
            self.kill_all();
            std::thread::sleep(Duration::from_millis(20 * (attempt + 1).min(5)));
        }
        for d in self.dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                tracing::warn!(cgroup = %d.display(), error = %e, "could not remove a job's cgroup");
            }
        }
    }
}

/// The worker pid in a job group's name (`cairn-lease-<lease>-<pid>-<seq>`).
fn worker_pid(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("cairn-lease-")?.split('-');
    let (_lease, pid, _seq) = (parts.next()?, parts.next()?, parts.next()?);
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_carry_the_worker_pid() {
        assert_eq!(worker_pid("cairn-lease-7-1234-0"), Some(1234));
        assert_eq!(worker_pid("cairn-lease-7"), None);
        assert_eq!(worker_pid("libpod_parent"), None);
    }

    #[test]
    fn key_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(read_key(&f, "oom_kill"), Some(2));
        assert_eq!(read_key(&f, "under_oom"), Some(0));
        assert_eq!(read_key(&f, "missing"), None);
    }
}
