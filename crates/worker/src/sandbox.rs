//! The sandbox helper: `cairn sandbox-exec`, a small single-threaded process that the process
//! runtime executes for each bare-command job. It builds the job's sandbox from Linux
//! namespaces and mounts, then runs the job in it. No external program is involved.
//!
//! Why a helper process: namespaces, `setuid` and `fork` cannot be used safely from the
//! multi-threaded worker, but they can from a freshly executed single-threaded process. The
//! worker passes the job's description and reads back whether the job started over a socket
//! that is the helper's standard input (see [`Spec`] and [`Status`]).
//!
//! Three processes, each waiting for the next and leaving with its exit code:
//! 1. **outer** (in the worker's namespaces): joins the job's cgroup first, so that nothing
//!    of the job runs outside it, and writes the user namespace's id maps for the next one.
//! 2. **middle**: creates the namespaces: user, mount, PID, IPC, UTS, cgroup, and network
//!    unless the job asked for it. A root worker maps root and `nobody` through; an
//!    unprivileged one maps only itself, as root of the namespace. A root worker on a system
//!    that refuses user namespaces goes on without one (the others need none for root).
//! 3. **init** (PID 1 of the new PID namespace): builds the new root (below), brings the
//!    private network namespace's loopback up, drops every
//!    capability from the bounding set, sets `no_new_privs`, starts a new session, sets the
//!    job's rlimits and CPUs, and starts the job as an unprivileged user; then reaps orphans
//!    until the job exits. When init exits the kernel kills everything left in the
//!    namespace; each stage dies with its parent (`PR_SET_PDEATHSIG`), so killing the outer
//!    helper ends the whole sandbox.
//!
//! The new root is an empty tmpfs, made read-only at the end, holding: every top-level
//! directory of the machine bound read-only and `nosuid` (recursively, every submount
//! made read-only or taken away; one that cannot be bound stays an empty directory); a
//! fresh `/proc` for the PID namespace; a small `/dev` with only the harmless nodes (and a GPU lease's device nodes); fresh `/tmp`, `/root`, `/home`, `/run`;
//! the job's private work dir, writable, at `/work`; and empty mounts over every hidden path
//! (the worker's keys and data). The work dir is bound by init, which is root in the user
//! namespace, before the job drops to `nobody`: so a work dir under a 0700 home works.
//!
//! Anything that fails before the job's program is executed is reported on the status
//! socket with its reason (the lease then fails and the customer pays nothing); once the
//! program runs, its exit code is the job's.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The hidden subcommand that runs [`helper_main`].
pub const HELPER_ARG: &str = "sandbox-exec";

/// The most bytes a [`Spec`] may take on the wire (a job's command and environment are
/// bounded far below this by the ledger).
pub(crate) const MAX_SPEC_BYTES: usize = 1 << 20;

/// The user the job runs as when the worker is root.
pub(crate) const NOBODY: u32 = 65_534;

/// What the helper is asked to run, sent by the worker as a little-endian `u32` length and
/// that many bytes of JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Program and arguments.
    pub(crate) command: Vec<String>,
    /// The job's whole environment (nothing of the worker's is passed on).
    pub(crate) env: Vec<(String, String)>,
    /// The host directory bound at `/work` (absolute, symlinks resolved).
    pub(crate) work_dir: PathBuf,
    /// Host paths covered by empty mounts (absolute, symlinks resolved).
    pub(crate) hidden: Vec<PathBuf>,
    /// Device nodes bound in (a GPU lease's).
    pub(crate) devices: Vec<PathBuf>,
    /// Whether the job keeps the machine's network.
    pub(crate) network: bool,
    /// `cgroup.procs` files the helper joins before anything else.
    pub(crate) cgroup_procs: Vec<PathBuf>,
    /// `RLIMIT_NPROC` and `RLIMIT_AS` (bytes), when no cgroup holds processes and memory.
    pub(crate) nproc: Option<u64>,
    /// See `nproc`.
    pub(crate) address_space: Option<u64>,
    /// Pin the job to CPUs `0..cpus`.
    pub(crate) cpus: Option<u32>,
    /// The worker's pid: the helper leaves at once if its parent is already gone.
    pub(crate) parent: u32,
}

/// What the helper tells the worker on the status socket: lines of `R` (the job's program
/// is running) or `E<reason>` (it could not be started). End of file without `R` means the
/// helper died before the job started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The job's program was executed.
    Running,
    /// It could not be, and why.
    Failed(String),
}

impl Status {
    /// Parses everything the helper wrote: the first failure wins, else whether it ran.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(bytes);
        let mut running = false;
        for line in text.lines() {
            if let Some(reason) = line.strip_prefix('E') {
                return Some(Self::Failed(reason.to_string()));
            }
            running |= line == "R";
        }
        running.then_some(Self::Running)
    }
}

/// Why a stage failed; sent to the worker as the job's reason.
#[derive(Debug)]
struct Fail(String);

type Res<T> = std::result::Result<T, Fail>;

trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Res<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Res<T> {
        self.map_err(|e| Fail(format!("{}: {e}", what())))
    }
}

/// Entry point of `cairn sandbox-exec`: call it first thing in `main`, before any thread
/// starts. Exits with the job's exit code (128 + signal when a signal ended it).
pub fn helper_main() -> ! {
    // Standard input is the status socket; the job gets /dev/null there instead.
    let status = match take_status_socket() {
        Ok(s) => s,
        Err(Fail(why)) => {
            eprintln!("cairn {HELPER_ARG}: {why} (this is an internal command of the worker)");
            std::process::exit(125);
        }
    };
    let result = read_spec(&status).and_then(|spec| outer(&spec, &status));
    leave(&status, result)
}

/// Ends a stage: with its code, or with 125 after reporting why it failed.
fn leave(status: &UnixStream, result: Res<i32>) -> ! {
    let code = result.unwrap_or_else(|Fail(why)| {
        report(status, &Status::Failed(why));
        125
    });
    std::process::exit(code)
}

fn take_status_socket() -> Res<UnixStream> {
    let stdin = std::io::stdin();
    let fd = rustix::io::fcntl_dupfd_cloexec(stdin.as_fd(), 3).ctx(|| "standard input".into())?;
    let null = std::fs::File::open("/dev/null").ctx(|| "/dev/null".into())?;
    rustix::stdio::dup2_stdin(&null).ctx(|| "standard input".into())?;
    let sock = UnixStream::from(fd);
    // A socket, not a terminal or a file: anything else means a person ran this by hand.
    sock.peer_addr()
        .ctx(|| "standard input is not the worker's status socket".into())?;
    Ok(sock)
}

fn read_spec(mut status: &UnixStream) -> Res<Spec> {
    let mut len = [0u8; 4];
    status
        .read_exact(&mut len)
        .ctx(|| "reading the job".into())?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_SPEC_BYTES {
        return Err(Fail(format!(
            "the job's description is {len} bytes, over the limit of {MAX_SPEC_BYTES}"
        )));
    }
    let mut body = vec![0u8; len];
    status
        .read_exact(&mut body)
        .ctx(|| "reading the job".into())?;
    serde_json::from_slice(&body).ctx(|| "the job's description".into())
}

fn report(mut status: &UnixStream, s: &Status) {
    let line = match s {
        Status::Running => "R\n".to_string(),
        Status::Failed(why) => format!("E{}\n", why.replace('\n', " ")),
    };
    // One write: the worker reads lines until every copy of the socket is closed.
    let _ = status.write_all(line.as_bytes());
}

/// `fork(2)`. Sound here because the helper is single-threaded: it is executed afresh by
/// the worker and starts no thread, so the child's copy of the process is consistent.
#[allow(unsafe_code)]
fn fork() -> Res<Option<u32>> {
    // SAFETY: see above; the child only makes system calls and uses its own copies of the
    // parent's memory.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Fail(format!("fork: {}", std::io::Error::last_os_error()))),
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// `unshare(2)` of namespaces only. rustix marks it unsafe because unsharing the file
/// descriptor table would invalidate descriptors other code owns; namespaces never do.
#[allow(unsafe_code)]
fn unshare(flags: rustix::thread::UnshareFlags) -> rustix::io::Result<()> {
    use rustix::thread::UnshareFlags as F;
    assert!(!flags.intersects(F::FILES | F::FS | F::SYSVSEM));
    // SAFETY: see above; no file descriptor changes hands.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// Brings the network namespace's loopback interface up, so that 127.0.0.1 inside the
/// sandbox is a loopback of its own (a fresh namespace has it down). An `ioctl` on a
/// datagram socket, as `ip link set lo up` does it.
#[allow(unsafe_code)]
fn loopback_up() -> Res<()> {
    // SAFETY: plain system calls on a socket this function owns and closes, with an `ifreq`
    // that lives on the stack for their duration and whose name is NUL-terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(Fail(format!(
                "loopback: socket: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(Fail(format!("bringing the loopback interface up: {err}")));
        }
    }
    Ok(())
}

fn die_with_parent(parent: u32) -> Res<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .ctx(|| "PR_SET_PDEATHSIG".into())?;
    // The parent may have died before the line above: then nothing would kill us.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(parent) {
        std::process::exit(125);
    }
    Ok(())
}

/// Waits for `pid` and returns its exit code (128 + signal when a signal ended it).
fn wait_for(pid: u32) -> i32 {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return 125;
    };
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => return code_of(st),
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 125,
        }
    }
}

fn code_of(st: rustix::process::WaitStatus) -> i32 {
    st.exit_status()
        .or_else(|| st.terminating_signal().map(|s| 128 + s))
        .unwrap_or(125)
}

/// Whether this process runs as root (of its user namespace).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Stage 1, in the worker's namespaces.
fn outer(spec: &Spec, status: &UnixStream) -> Res<i32> {
    die_with_parent(spec.parent)?;
    if is_root() && !maps_nobody() {
        return Err(Fail(format!(
            "this worker runs as root of a user namespace with no id for nobody ({NOBODY}), \
             so jobs cannot run as an unprivileged user: give the namespace that id (a \
             container's uid map), or run the worker as an ordinary user"
        )));
    }
    let me = std::process::id().to_string();
    for f in &spec.cgroup_procs {
        std::fs::write(f, &me).ctx(|| format!("joining the job's cgroup ({})", f.display()))?;
    }
    let (mut ours, theirs) = UnixStream::pair().ctx(|| "socketpair".into())?;
    let outer_pid = std::process::id();
    let Some(child) = fork()? else {
        drop(ours);
        leave(status, middle(spec, status, theirs, outer_pid));
    };
    drop(theirs);
    let mut tag = [0u8; 1];
    if ours.read_exact(&mut tag).is_ok() {
        if tag[0] == b'U' {
            write_id_maps(child)?;
        }
        ours.write_all(b"G").ctx(|| "sandbox setup".into())?;
    }
    // The middle stage reported its own failure if it stopped before the tag.
    Ok(wait_for(child))
}

fn write_id_maps(pid: u32) -> Res<()> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let (uid_map, gid_map) = if is_root() {
        let m = format!("0 0 1\n{NOBODY} {NOBODY} 1\n");
        (m.clone(), m)
    } else {
        // One line mapping only ourselves needs no privilege; setgroups must be denied first.
        std::fs::write(proc.join("setgroups"), "deny")
            .ctx(|| "denying setgroups in the user namespace".into())?;
        (
            format!("0 {} 1\n", rustix::process::geteuid().as_raw()),
            format!("0 {} 1\n", rustix::process::getegid().as_raw()),
        )
    };
    std::fs::write(proc.join("uid_map"), uid_map).ctx(|| "writing the uid map".into())?;
    std::fs::write(proc.join("gid_map"), gid_map).ctx(|| "writing the gid map".into())
}

/// Stage 2: creates the namespaces.
fn middle(spec: &Spec, status: &UnixStream, mut sync: UnixStream, outer: u32) -> Res<i32> {
    use rustix::thread::UnshareFlags as F;
    die_with_parent(outer)?;
    let mut flags = F::NEWNS | F::NEWPID | F::NEWIPC | F::NEWUTS | F::NEWCGROUP;
    if !spec.network {
        flags |= F::NEWNET;
    }
    let tag = match unshare(flags | F::NEWUSER) {
        Ok(()) => b'U',
        Err(e) if is_root() => {
            // Root needs no user namespace for the others; some container runtimes forbid
            // creating one.
            unshare(flags)
                .ctx(|| format!("creating namespaces (a user namespace failed first: {e})"))?;
            b'N'
        }
        Err(e) => return Err(Fail(no_userns_reason(e))),
    };
    sync.write_all(&[tag]).ctx(|| "sandbox setup".into())?;
    let mut go = [0u8; 1];
    sync.read_exact(&mut go)
        .ctx(|| "the outer helper failed to map the user namespace".into())?;
    drop(sync);
    // Init's parent (this process) is outside init's PID namespace, where getppid() says 0:
    // init learns whether this process is still alive from this socket instead.
    let (lifeline, init_end) = UnixStream::pair().ctx(|| "socketpair".into())?;
    let Some(init_pid) = fork()? else {
        drop(lifeline);
        leave(status, init(spec, status, &init_end, tag == b'U'));
    };
    drop(init_end);
    let code = wait_for(init_pid);
    drop(lifeline);
    Ok(code)
}

/// Says exactly why an unprivileged worker cannot create a user namespace.
fn no_userns_reason(e: rustix::io::Errno) -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut why = format!(
        "this worker runs as an unprivileged user and cannot create a user namespace \
         (unshare(CLONE_NEWUSER): {e})"
    );
    let checks = [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ];
    for (path, bad) in checks {
        if read(path).as_deref() == Some(bad) {
            let key = path.trim_start_matches("/proc/sys/").replace('/', ".");
            why.push_str(&format!("; this system sets {key} = {bad}"));
        }
    }
    why.push_str(
        ": run the worker as root, or allow unprivileged user namespaces, or run jobs in \
         containers with --bare-image",
    );
    why
}

/// Stage 3: PID 1 of the job's namespaces.
fn init(spec: &Spec, status: &UnixStream, lifeline: &UnixStream, userns: bool) -> Res<i32> {
    use rustix::process::{Resource, Rlimit};
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .ctx(|| "PR_SET_PDEATHSIG".into())?;
    // The middle stage may have died before the line above: its end of the lifeline is then
    // closed (end of file) instead of silent.
    lifeline.set_nonblocking(true).ctx(|| "lifeline".into())?;
    match (&*lifeline).read(&mut [0u8; 1]) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        _ => std::process::exit(125),
    }
    build_root(spec)?;
    if !spec.network {
        loopback_up()?;
    }
    let _ = rustix::system::sethostname(b"cairn-job");
    rustix::process::setsid().ctx(|| "setsid".into())?;
    let limit = |r: Resource, v: u64, what: &str| {
        rustix::process::setrlimit(
            r,
            Rlimit {
                current: Some(v),
                maximum: Some(v),
            },
        )
        .ctx(|| format!("setting the {what} limit"))
    };
    limit(Resource::Fsize, 1 << 30, "file size")?;
    limit(Resource::Core, 0, "core dump")?;
    limit(Resource::Nofile, 1024, "open files")?;
    if let Some(n) = spec.nproc {
        limit(Resource::Nproc, n.max(1), "process")?;
    }
    if let Some(n) = spec.address_space {
        limit(Resource::As, n.max(1 << 20), "memory")?;
    }
    if let Some(cpus) = spec.cpus {
        let mut set = rustix::thread::CpuSet::new();
        for c in 0..cpus.max(1) as usize {
            set.set(c);
        }
        rustix::thread::sched_setaffinity(None, &set).ctx(|| "pinning CPUs".into())?;
    }
    // No capability can come back, through exec of anything.
    for cap in 0..64u32 {
        let set = rustix::thread::CapabilitySet::from_bits_retain(1 << cap);
        match rustix::thread::remove_capability_from_bounding_set(set) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(Fail(format!("dropping capabilities: {e}"))),
        }
    }
    rustix::thread::set_no_new_privs(true).ctx(|| "no_new_privs".into())?;
    let Some(program) = spec.command.first() else {
        return Err(Fail("the job has no command".into()));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(&spec.command[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/work");
    if !userns || maps_nobody() {
        // Root mapped through (or no user namespace): the job runs as nobody. An
        // unprivileged worker's namespace maps only itself, as root without capabilities.
        use std::os::unix::process::CommandExt;
        cmd.uid(NOBODY).gid(NOBODY);
    }
    match cmd.spawn() {
        Err(e) => Err(Fail(format!("cannot run `{program}`: {e}"))),
        Ok(child) => {
            report(status, &Status::Running);
            let job = child.id();
            drop(child);
            // Reap everything; leave with the job's code. The kernel then kills the rest.
            loop {
                match rustix::process::wait(rustix::process::WaitOptions::empty()) {
                    Ok(Some((pid, st))) if pid.as_raw_nonzero().get() as u32 == job => {
                        return Ok(code_of(st));
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(Fail(format!("waiting for the job: {e}"))),
                }
            }
        }
    }
}

/// Whether this process's user namespace has an id for `nobody` (a root worker's own
/// namespace must, and the one it makes for the job does).
fn maps_nobody() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| maps_uid(&m, NOBODY))
}

/// Whether a `uid_map` (lines of `inside outside count`) gives `uid` an id.
fn maps_uid(map: &str, uid: u32) -> bool {
    map.lines().any(|l| {
        let n: Vec<u64> = l
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let uid = u64::from(uid);
        matches!(n[..], [inside, _, count] if (inside..inside.saturating_add(count)).contains(&uid))
    })
}

/// Top-level names of the new root that are not the machine's.
const OWN_TOP: [&str; 7] = ["dev", "proc", "tmp", "root", "home", "run", "work"];

/// The nodes of the job's `/dev`.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn tmpfs(target: &Path, mode: &str, extra: rustix::mount::MountFlags) -> Res<()> {
    use rustix::mount::MountFlags as M;
    rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        M::NOSUID | M::NODEV | extra,
        std::ffi::CString::new(format!("mode={mode},size=64m"))
            .ok()
            .as_deref(),
    )
    .ctx(|| format!("tmpfs on {}", target.display()))
}

fn mkdir(p: &Path) -> Res<()> {
    std::fs::create_dir_all(p).ctx(|| format!("creating {}", p.display()))
}

/// `base` + an absolute host path.
fn under(base: &str, host: &Path) -> PathBuf {
    Path::new(base).join(host.strip_prefix("/").unwrap_or(host))
}

/// Binds `src` (a host path seen under /oldroot) onto `dst`, creating the mount point.
fn bind_node(src: &Path, dst: &Path) -> Res<()> {
    if let Some(parent) = dst.parent() {
        mkdir(parent)?;
    }
    if !dst.exists() {
        std::fs::File::create(dst).ctx(|| format!("creating {}", dst.display()))?;
    }
    rustix::mount::mount_bind(src, dst).ctx(|| format!("binding {}", src.display()))
}

/// The flags a remount must keep (a user namespace may not clear them).
fn kept_flags(p: &Path) -> rustix::mount::MountFlags {
    use rustix::fs::StatVfsMountFlags as S;
    use rustix::mount::MountFlags as M;
    let Ok(st) = rustix::fs::statvfs(p) else {
        return M::empty();
    };
    let mut f = M::empty();
    for (s, m) in [
        (S::NODEV, M::NODEV),
        (S::NOEXEC, M::NOEXEC),
        (S::NOATIME, M::NOATIME),
        (S::NODIRATIME, M::NODIRATIME),
        (S::RELATIME, M::RELATIME),
    ] {
        if st.f_flag.contains(s) {
            f |= m;
        }
    }
    // Neither means strictatime; a remount without any atime flag would ask for relatime.
    if !st.f_flag.intersects(S::NOATIME | S::RELATIME) {
        f |= M::STRICTATIME;
    }
    f
}

/// Where the mount table is read while the new root is assembled (the machine's `/proc` is
/// under the old root then).
const MOUNTINFO: &str = "/oldroot/proc/self/mountinfo";

/// Mount points listed in [`MOUNTINFO`] (octal escapes decoded), in mount order.
fn mount_points() -> Res<Vec<PathBuf>> {
    let text = std::fs::read_to_string(MOUNTINFO).ctx(|| MOUNTINFO.into())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect())
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the job's root (see the module's docs) and enters it, at `/work`.
fn build_root(spec: &Spec) -> Res<()> {
    use rustix::mount::{MountFlags as M, MountPropagationFlags as P, UnmountFlags as U};
    rustix::mount::mount_change("/", P::PRIVATE | P::REC).ctx(|| "making mounts private".into())?;
    // A scratch root, so that the machine's tree can be reached at /oldroot while the new
    // one is assembled at /newroot.
    tmpfs(Path::new("/tmp"), "0755", M::empty())?;
    mkdir(Path::new("/tmp/newroot"))?;
    mkdir(Path::new("/tmp/oldroot"))?;
    rustix::process::pivot_root("/tmp", "/tmp/oldroot").ctx(|| "pivot_root".into())?;
    std::env::set_current_dir("/").ctx(|| "chdir /".into())?;
    tmpfs(Path::new("/newroot"), "0755", M::empty())?;

    // The machine's top-level directories, read-only.
    let entries = std::fs::read_dir("/oldroot").ctx(|| "listing /".into())?;
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(|n| OWN_TOP.contains(&n)) {
            continue;
        }
        let (src, dst) = (e.path(), Path::new("/newroot").join(&name));
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            let to = std::fs::read_link(&src).ctx(|| format!("reading {}", src.display()))?;
            std::os::unix::fs::symlink(&to, &dst).ctx(|| format!("linking {}", dst.display()))?;
        } else if ft.is_dir() {
            mkdir(&dst)?;
            // A directory that cannot be bound (a FUSE mount root may not enter, say) stays
            // empty in the job's tree: hidden, never writable.
            let _ = rustix::mount::mount_bind_recursive(&src, &dst);
        } else if ft.is_file() {
            let _ = bind_node(&src, &dst);
        }
    }
    for mp in mount_points()? {
        if mp == Path::new("/newroot") || !mp.starts_with("/newroot") {
            continue;
        }
        let flags = M::BIND | M::RDONLY | M::NOSUID | kept_flags(&mp);
        if rustix::mount::mount_remount(&mp, flags, "").is_err() {
            // A submount that cannot be made read-only (another user's FUSE mount, say)
            // is taken away instead; never left writable.
            rustix::mount::unmount(&mp, U::DETACH)
                .ctx(|| format!("making {} read-only", mp.display()))?;
        }
    }

    // The job's own /proc, /dev and scratch directories.
    let proc_dir = Path::new("/newroot/proc");
    mkdir(proc_dir)?;
    rustix::mount::mount(
        "proc",
        proc_dir,
        "proc",
        M::NOSUID | M::NODEV | M::NOEXEC,
        None,
    )
    .ctx(|| "mounting /proc for the job's PID namespace".into())?;
    let dev = Path::new("/newroot/dev");
    mkdir(dev)?;
    tmpfs(dev, "0755", M::empty())?;
    for n in DEV_NODES {
        bind_node(&Path::new("/oldroot/dev").join(n), &dev.join(n))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).ctx(|| format!("/dev/{link}"))?;
    }
    mkdir(&dev.join("shm"))?;
    tmpfs(&dev.join("shm"), "1777", M::empty())?;
    mkdir(&dev.join("pts"))?;
    // Pseudo-terminals are a convenience; a system that refuses a private devpts still runs
    // the job.
    let _ = rustix::mount::mount(
        "devpts",
        dev.join("pts").as_path(),
        "devpts",
        M::NOSUID | M::NOEXEC,
        c"newinstance,ptmxmode=0666,mode=620",
    );
    for (d, mode) in [
        ("tmp", "1777"),
        ("root", "0755"),
        ("home", "0755"),
        ("run", "0755"),
    ] {
        let p = Path::new("/newroot").join(d);
        mkdir(&p)?;
        tmpfs(&p, mode, M::empty())?;
    }
    for h in &spec.hidden {
        let dst = under("/newroot", h);
        let Ok(meta) = std::fs::symlink_metadata(&dst) else {
            continue; // not in the job's tree at all
        };
        if meta.is_dir() {
            tmpfs(&dst, "0755", M::RDONLY)?;
        } else {
            rustix::mount::mount_bind("/oldroot/dev/null", &dst)
                .ctx(|| format!("hiding {}", h.display()))?;
        }
    }
    for d in &spec.devices {
        bind_node(&under("/oldroot", d), &under("/newroot", d))
            .map_err(|Fail(e)| Fail(format!("giving the job its GPU: {e}")))?;
    }
    let work = Path::new("/newroot/work");
    mkdir(work)?;
    let src = under("/oldroot", &spec.work_dir);
    rustix::mount::mount_bind(&src, work)
        .ctx(|| format!("binding the job's work dir {}", spec.work_dir.display()))?;
    rustix::mount::mount_remount(work, M::BIND | M::NOSUID | M::NODEV | kept_flags(work), "")
        .ctx(|| "remounting /work".into())?;

    // Enter it; the scratch root and the machine's tree go away with the old root.
    std::env::set_current_dir("/newroot").ctx(|| "chdir /newroot".into())?;
    rustix::process::pivot_root(".", ".").ctx(|| "pivot_root into the job's root".into())?;
    rustix::mount::unmount(".", U::DETACH).ctx(|| "detaching the old root".into())?;
    std::env::set_current_dir("/").ctx(|| "chdir /".into())?;
    rustix::mount::mount_remount("/", M::BIND | M::RDONLY | M::NOSUID | M::NODEV, "")
        .ctx(|| "making the job's root read-only".into())?;
    std::env::set_current_dir("/work").ctx(|| "chdir /work".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(Status::parse(b"R\n"), Some(Status::Running));
        assert_eq!(
            Status::parse(b"Ecannot run `x`: No such file or directory\n"),
            Some(Status::Failed(
                "cannot run `x`: No such file or directory".into()
            ))
        );
        // A failure after the program started never happens, but a failure wins anyway.
        assert_eq!(
            Status::parse(b"R\nEboom\n"),
            Some(Status::Failed("boom".into()))
        );
        assert_eq!(Status::parse(b""), None);
        assert_eq!(Status::parse(b"garbage"), None);
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
    }

    #[test]
    fn uid_maps_are_read_as_ranges() {
        assert!(maps_uid("         0          0 4294967295\n", NOBODY));
        assert!(maps_uid("0 0 1\n65534 65534 1\n", NOBODY));
        assert!(!maps_uid("0 1000 1\n", NOBODY));
        assert!(maps_uid("0 100000 65536\n", NOBODY));
        assert!(!maps_uid("0 100000 65534\n", NOBODY));
        assert!(!maps_uid("", NOBODY));
    }

    #[test]
    fn host_paths_go_under_a_base() {
        assert_eq!(
            under("/newroot", Path::new("/var/lib/cairn")),
            PathBuf::from("/newroot/var/lib/cairn")
        );
    }
}
