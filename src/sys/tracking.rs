//! Which processes each child started (DESIGN.md §2, "Everything a
//! generation starts ends with it"), so that none outlives it: workers that
//! left the process group (`setsid`, Node `detached`), daemons that
//! double-forked, anything their tree spawned.
//!
//! Where hotswap may create cgroups (root, or a delegated cgroup v2
//! subtree), every child runs in a cgroup of its own,
//! `<hotswap's cgroup>/hotswap.<tag>/g<generation>/c<n>`, entered between
//! fork and exec, and `cgroup.kill` ends everything in it at once, however
//! it escaped. Elsewhere hotswap follows the process tree (hotswap is a
//! subreaper, so an orphan of a child's tree becomes hotswap's own child)
//! and the environment every process of a generation inherits
//! (`HOTSWAP_GENERATION`, `HOTSWAP_INSTANCE`), plus the process group.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid as NixPid;

use super::process::Pid;
use super::procfs;

/// How a child was spawned into tracking: for a cgroup, the directory the
/// child makes and moves itself into between clone and exec.
#[derive(Debug)]
pub struct Placement {
    /// The child's cgroup, which the spawn routine makes and enters in the child.
    pub cgroup: Option<PathBuf>,
}

/// What hotswap knows of one child.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Tracked {
    generation: u64,
    instance: u32,
    cgroup: Option<PathBuf>,
    /// The child itself was reaped: its pid names nothing of ours any more,
    /// only what it left behind is tracked (never `kill(pid)` or `killpg(pid)` now).
    reaped: bool,
}

/// Where the cgroups go, when hotswap may create them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Cgroups {
    /// `<hotswap's cgroup>/hotswap.<tag>` (`paths::own_tag`: the pid, with
    /// the pid namespace outside the initial one).
    base: PathBuf,
}

/// The processes of every child, by child pid. A re-exec of hotswap hands
/// it over as it is (it holds no fd).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Tracker {
    cgroups: Option<Cgroups>,
    children: HashMap<Pid, Tracked>,
    /// Cgroup directories to remove once their last process is gone.
    empty_soon: BTreeSet<PathBuf>,
}

impl Tracker {
    /// cgroups when hotswap may create them under its own cgroup (cgroup v2),
    /// else the process tree. Also cleans the cgroups of hotswaps that died
    /// before they could (their pid is gone).
    pub fn new() -> Tracker {
        let cgroups = match own_cgroup().and_then(|own| Cgroups::create(&own)) {
            Ok(cgroups) => Some(cgroups),
            Err(e) => {
                tracing::debug!("no cgroup per generation ({e}): following the process tree");
                None
            }
        };
        if let Some(c) = &cgroups {
            tracing::debug!("a cgroup per child under {}", c.base.display());
        }
        Tracker { cgroups, children: HashMap::new(), empty_soon: BTreeSet::new() }
    }

    /// Tracking by process tree only, whatever the system offers (tests).
    pub fn without_cgroups() -> Tracker {
        Tracker { cgroups: None, children: HashMap::new(), empty_soon: BTreeSet::new() }
    }

    /// Whether children get a cgroup of their own.
    pub fn uses_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Where the next child goes: its generation's cgroup is created now;
    /// the spawn routine makes the child's own below it and moves the child
    /// there before exec, so nothing it starts can escape it, not even
    /// before its first instruction.
    pub fn place(&mut self, generation: u64, serial: u64) -> io::Result<Placement> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(Placement { cgroup: None });
        };
        let parent = cgroups.base.join(format!("g{generation}"));
        fs::create_dir_all(&parent)?;
        Ok(Placement { cgroup: Some(parent.join(format!("c{serial}"))) })
    }

    /// A child was spawned as `placement` said; a spawn that failed gives its placement back.
    pub fn spawned(&mut self, pid: Pid, generation: u64, instance: u32, placement: Placement) {
        let cgroup = placement.cgroup;
        self.children.insert(pid, Tracked { generation, instance, cgroup, reaped: false });
    }

    /// The spawn did not happen: remove the cgroup made for it.
    pub fn unplaced(&mut self, placement: Placement) {
        if let Some(dir) = placement.cgroup {
            let _ = fs::remove_dir(&dir);
        }
    }

    /// What child `pid` started that still runs (the child itself left out):
    /// its cgroup's processes; or its tree, its process group and the orphans
    /// of its tree (hotswap's adopted children carrying its generation and
    /// instance in their environment). For an exited child, ask before
    /// reaping it: while its zombie holds the pid, the group id still names
    /// only its own processes.
    pub fn remains(&self, pid: Pid) -> Vec<Pid> {
        let Some(tracked) = self.children.get(&pid) else { return Vec::new() };
        let mut found: BTreeSet<Pid> = match &tracked.cgroup {
            Some(dir) => cgroup_procs(dir).into_iter().collect(),
            None => {
                let mut found: BTreeSet<Pid> =
                    self.orphans_of(tracked.generation, tracked.instance).into_iter().collect();
                if !tracked.reaped {
                    found.extend(procfs::descendants(pid));
                    found.extend(procfs::group_members(pid));
                }
                found
            }
        };
        found.remove(&pid);
        found.retain(|&p| procfs::stat(p).is_some_and(|s| s.state != 'Z'));
        found.into_iter().collect()
    }

    /// Sends `signal` to what child `pid` left running.
    pub fn signal_remains(&self, pid: Pid, signal: i32) {
        let Ok(signal) = Signal::try_from(signal) else { return };
        for p in self.remains(pid) {
            let _ = kill(NixPid::from_raw(p as i32), signal);
        }
    }

    /// SIGKILL to child `pid` (unless reaped) and to everything it started.
    /// Returns the other processes it found still running.
    pub fn kill_all_of(&mut self, pid: Pid) -> Vec<Pid> {
        let Some(tracked) = self.children.get(&pid) else { return Vec::new() };
        let reaped = tracked.reaped;
        if let Some(dir) = &tracked.cgroup {
            let left = self.remains(pid);
            // A child spawned but not past its exec has not moved into its
            // cgroup yet (it waits at the spawn gate): killed by its pid.
            if !reaped {
                let _ = kill(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            }
            // NotFound: the child died before it made its cgroup.
            if let Err(e) = kill_cgroup(dir).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }) {
                tracing::warn!("cgroup.kill in {}: {e}", dir.display());
            }
            return left;
        }
        let mut killed = BTreeSet::new();
        // Repeat: a process may have forked while we were killing its parent.
        for _ in 0..8 {
            if !reaped {
                let _ = killpg(NixPid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let found: Vec<Pid> =
                self.remains(pid).into_iter().filter(|p| !killed.contains(p)).collect();
            if found.is_empty() {
                break;
            }
            for &p in &found {
                let _ = kill(NixPid::from_raw(p as i32), Signal::SIGKILL);
                killed.insert(p);
            }
        }
        killed.into_iter().collect()
    }

    /// Processes hotswap adopted (their parent died) that belong to
    /// `generation`'s instance `instance` and are no child of its own.
    fn orphans_of(&self, generation: u64, instance: u32) -> Vec<Pid> {
        let hotswap = std::process::id();
        procfs::children_of(hotswap)
            .into_iter()
            .filter(|p| !self.children.contains_key(p))
            .filter(|&p| {
                let ours = procfs::environ_var(p, "HOTSWAP_GENERATION")
                    == Some(generation.to_string())
                    && procfs::environ_var(p, "HOTSWAP_INSTANCE") == Some(instance.to_string());
                // One that got our stop signal and is exiting can no longer say
                // whose it is: it counts until it is a zombie, so that a drain
                // does not end while it still runs.
                ours || procfs::exiting(p)
            })
            .collect()
    }

    /// Child `pid` itself was reaped; what it left may still run (`remains`).
    pub fn reaped(&mut self, pid: Pid) {
        if let Some(tracked) = self.children.get_mut(&pid) {
            tracked.reaped = true;
        }
        self.remove_empty();
    }

    /// Child `pid` and all it started are gone: forget it; its cgroup goes once empty.
    pub fn forget(&mut self, pid: Pid) {
        if let Some(Tracked { cgroup: Some(dir), .. }) = self.children.remove(&pid) {
            self.empty_soon.insert(dir);
        }
        self.remove_empty();
    }

    /// Every live process of child `pid`'s tree, the child first.
    pub fn members(&self, pid: Pid) -> Vec<Pid> {
        match self.children.get(&pid).and_then(|t| t.cgroup.as_ref()) {
            Some(dir) => {
                let mut members = vec![pid];
                members.extend(cgroup_procs(dir).into_iter().filter(|&p| p != pid));
                members
            }
            None => procfs::descendants(pid),
        }
    }

    /// Every live process of every child's tree, including what retired
    /// children left draining.
    pub fn all_members(&self) -> Vec<Pid> {
        let mut all = Vec::new();
        for (&pid, tracked) in &self.children {
            if !tracked.reaped {
                all.extend(self.members(pid));
            } else {
                all.extend(self.remains(pid));
            }
        }
        all
    }

    /// hotswap exits: SIGKILL whatever is left of any child, remove the cgroups.
    pub fn shutdown(&mut self) {
        let pids: Vec<Pid> = self.children.keys().copied().collect();
        for pid in pids {
            self.kill_all_of(pid);
        }
        if let Some(cgroups) = &self.cgroups {
            let _ = kill_cgroup(&cgroups.base);
            // The killed are hotswap's to reap (it adopted them); a cgroup
            // goes only once its last process is gone. Bounded: hotswap exits.
            for _ in 0..100 {
                super::process::reap_all(|_| {});
                remove_tree(&cgroups.base);
                if !cgroups.base.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    fn remove_empty(&mut self) {
        self.empty_soon.retain(|dir| match fs::remove_dir(dir) {
            // EBUSY: a killed process is not gone yet; try again at the next reap.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => true,
            Ok(()) | Err(_) => {
                if let Some(generation) = dir.parent() {
                    let _ = fs::remove_dir(generation); // only once its last child's is gone
                }
                false
            }
        });
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Cgroups {
    /// Makes `<own>/hotswap.<tag>`, after cleaning those of dead hotswaps.
    fn create(own: &Path) -> io::Result<Cgroups> {
        clean_stale(own);
        let base = own.join(format!("hotswap.{}", super::paths::own_tag()));
        fs::create_dir(&base)?;
        // cgroup.kill exists from Linux 5.14; without it a kill could miss escapees.
        if !base.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&base);
            return Err(io::Error::other("no cgroup.kill (Linux < 5.14)"));
        }
        Ok(Cgroups { base })
    }
}

/// hotswap's own cgroup v2 directory: `0::PATH` in /proc/self/cgroup, under
/// the cgroup2 mount in /proc/self/mountinfo.
fn own_cgroup() -> io::Result<PathBuf> {
    let cgroup = fs::read_to_string("/proc/self/cgroup")?;
    let relative = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("no cgroup v2 hierarchy"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (fields, fstype) = l.split_once(" - ")?;
            fstype.starts_with("cgroup2 ").then(|| fields.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| io::Error::other("cgroup2 is not mounted"))?;
    Ok(mount.join(relative.trim_start_matches('/')))
}

fn cgroup_procs(dir: &Path) -> Vec<Pid> {
    let mut pids = Vec::new();
    for sub in walk(dir) {
        let text = fs::read_to_string(sub.join("cgroup.procs")).unwrap_or_default();
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<Pid>().ok()));
    }
    pids
}

fn kill_cgroup(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.kill"), "1")
}

/// `dir` and every cgroup below it, parents first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            // The type readdir gives (cgroupfs fills it in): a stat of each of
            // a cgroup's ~50 files made reaping 64 instances cost ~20 ms.
            let is_dir = |e: &fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
            out.extend(entries.filter_map(|e| e.ok()).filter(is_dir).map(|e| e.path()));
        }
        i += 1;
    }
    out
}

/// Removes a cgroup tree, deepest first (a cgroup with children cannot go).
fn remove_tree(dir: &Path) {
    for sub in walk(dir).into_iter().rev() {
        let _ = fs::remove_dir(sub);
    }
}

/// Kills and removes `hotswap.<tag>` cgroups under `own` whose hotswap is gone.
fn clean_stale(own: &Path) {
    let Ok(entries) = fs::read_dir(own) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(tag) = name.to_str().and_then(|n| n.strip_prefix("hotswap.")) else { continue };
        if super::paths::tag_is_gone(tag) {
            let dir = entry.path();
            if kill_cgroup(&dir).is_ok() {
                tracing::info!("killed what a dead hotswap ({tag}) left in {}", dir.display());
            }
            remove_tree(&dir);
        }
    }
}
