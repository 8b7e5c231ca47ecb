//! Processes and process trees: `/proc/PID/stat`, `/proc/PID/task/*/children`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use crate::sys::process::Pid;

/// The fields of /proc/PID/stat hotswap needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: Pid,
    pub pgrp: Pid,
    /// The kernel's `PF_*` flags of the process's main thread.
    pub flags: u32,
}

/// `PF_EXITING` (include/linux/sched.h): set when the process starts to exit.
const PF_EXITING: u32 = 0x4;

pub fn stat(pid: Pid) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) S ppid pgrp …`; comm may hold spaces and parentheses, so parse after the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // session, tty_nr, tpgid, then flags.
    let flags = fields.nth(3)?.parse().ok()?;
    Some(Stat { state, ppid, pgrp, flags })
}

/// Whether `pid` belongs to the process tree of child `root` (a descendant,
/// or in its process group, which covers orphans re-parented to hotswap).
/// None when `pid` no longer exists.
pub fn in_tree(pid: Pid, root: Pid) -> Option<bool> {
    let first = stat(pid)?;
    if pid == root || first.pgrp == root {
        return Some(true);
    }
    let mut current = first;
    for _ in 0..64 {
        if current.ppid == root {
            return Some(true);
        }
        if current.ppid <= 1 {
            return Some(false);
        }
        match stat(current.ppid) {
            Some(parent) => current = parent,
            None => return Some(false),
        }
    }
    Some(false)
}

/// Every live process in process group `pgid`.
pub fn group_members(pgid: Pid) -> Vec<Pid> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

fn all_pids() -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Pid>().ok()).collect()
}

/// A live process of a tree, with its threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Proc {
    pub pid: Pid,
    pub tasks: Vec<Pid>,
}

/// `root` first, then every live descendant, breadth first; no zombies.
/// Empty when `root` is gone or a zombie.
pub fn descendants(root: Pid) -> Vec<Pid> {
    walk(root).into_iter().map(|p| p.pid).collect()
}

/// The processes of `root`'s tree. A child is listed in the `children` file
/// of the *thread* that forked it, so every task's file is read (research
/// doc, pitfall 5). Each child's `ppid` is checked against the parent it was
/// listed under, so a pid that died and was reused meanwhile is not followed.
pub(super) fn walk(root: Pid) -> Vec<Proc> {
    walk_with(root, (!children_files_exist()).then(children_by_ppid))
}

/// `walk`, finding children in `fallback` (pid → children) instead of the `children` files.
pub(super) fn walk_with(root: Pid, fallback: Option<HashMap<Pid, Vec<Pid>>>) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([(root, None)]);
    while let Some((pid, parent)) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        let Some(stat) = stat(pid) else { continue };
        if parent.is_some_and(|parent| stat.ppid != parent) {
            continue;
        }
        let Some(tasks) = tasks(pid) else { continue };
        // A leader that exited before its threads also reads `Z`: the
        // process is dead only when no other thread is left.
        if matches!(stat.state, 'Z' | 'X') && tasks.len() <= 1 {
            continue;
        }
        match &fallback {
            Some(by_ppid) => {
                let kids = by_ppid.get(&pid).into_iter().flatten();
                queue.extend(kids.map(|&kid| (kid, Some(pid))));
            }
            None => {
                for tid in &tasks {
                    queue.extend(children(pid, *tid).into_iter().map(|kid| (kid, Some(pid))));
                }
            }
        }
        out.push(Proc { pid, tasks });
    }
    out
}

/// The threads of `pid`; None when it is gone.
pub(super) fn tasks(pid: Pid) -> Option<Vec<Pid>> {
    let entries = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut tids: Vec<Pid> =
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    tids.sort_unstable();
    Some(tids)
}

/// `/proc/PID/task/TID/children`: the children that thread forked, space-separated.
/// The direct children of `pid` (a zombie has none: they were re-parented
/// when it exited), from every one of its tasks.
pub fn children_of(pid: Pid) -> Vec<Pid> {
    if !children_files_exist() {
        return children_by_ppid().remove(&pid).unwrap_or_default();
    }
    tasks(pid).unwrap_or_default().into_iter().flat_map(|tid| children(pid, tid)).collect()
}

/// The value of `key` in the environment `pid` was exec'ed with (a process
/// forked without exec shows its parent's).
pub fn environ_var(pid: Pid, key: &str) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// Whether `pid` is on its way out (`PF_EXITING`) but not a zombie yet:
/// its environment may no longer be readable, so it cannot say which
/// generation it belongs to.
pub fn exiting(pid: Pid) -> bool {
    stat(pid).is_some_and(|s| s.flags & PF_EXITING != 0 && s.state != 'Z')
}

fn children(pid: Pid, tid: Pid) -> Vec<Pid> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).unwrap_or_default();
    parse_children(&text)
}

fn parse_children(text: &str) -> Vec<Pid> {
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// `children` files need CONFIG_PROC_CHILDREN; without them the tree is
/// found from every process's ppid.
fn children_files_exist() -> bool {
    static EXIST: OnceLock<bool> = OnceLock::new();
    *EXIST.get_or_init(|| Path::new("/proc/thread-self/children").exists())
}

pub(super) fn children_by_ppid() -> HashMap<Pid, Vec<Pid>> {
    let mut by_ppid: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for pid in all_pids() {
        if let Some(stat) = stat(pid) {
            by_ppid.entry(stat.ppid).or_default().push(pid);
        }
    }
    by_ppid
}

/// The resident memory of `root`'s tree in bytes (the sum of each process's
/// `VmRSS`; pages shared between processes count once per process). None
/// when `root` is gone.
pub fn tree_rss(root: Pid) -> Option<u64> {
    let procs = walk(root);
    if procs.is_empty() {
        return None;
    }
    let rss = |pid: Pid| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        parse_vm_rss(&status).unwrap_or(0)
    };
    Some(procs.iter().map(|p| rss(p.pid)).sum())
}

/// The resident memory of the processes `pids` in bytes (the sum of each
/// one's `VmRSS`; those gone count 0).
pub fn rss_of(pids: &[Pid]) -> u64 {
    pids.iter()
        .map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            parse_vm_rss(&status).unwrap_or(0)
        })
        .sum()
}

/// `VmRSS:\t   15364 kB` in /proc/PID/status, in bytes. Absent for a zombie.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_survives_odd_command_names() {
        let stat = parse_stat("123 (my (odd) app) S 45 123 123 0 -1 4194308").unwrap();
        assert_eq!(stat, Stat { state: 'S', ppid: 45, pgrp: 123, flags: 0x40_0004 });
        // A python3 that renamed itself with prctl(PR_SET_NAME, "my (odd) app) x").
        let seen = "25887 (my (odd) app) x) R 25884 25884 19319 0 -1 4194304 3209 6581 1 0 4 3 3 0 \
                    20 0 1 0 142334 20238336 3818 18446744073709551615 94726316253184";
        let expected = Stat { state: 'R', ppid: 25884, pgrp: 25884, flags: 4194304 };
        assert_eq!(parse_stat(seen), Some(expected));
        assert_eq!(parse_stat("1 (a) b) c"), None, "fields after the last ) must be numbers");
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn children_and_rss_parse() {
        assert_eq!(parse_children("18238 18240 \n"), vec![18238, 18240]);
        assert_eq!(parse_children(""), Vec::<Pid>::new());
        let status = "Name:\tmy (odd) app) x\nVmPeak:\t   20000 kB\nVmRSS:\t   15364 kB\n";
        assert_eq!(parse_vm_rss(status), Some(15364 * 1024));
        assert_eq!(parse_vm_rss("Name:\tzombie\nState:\tZ (zombie)\n"), None);
    }

    #[test]
    fn this_process_is_its_own_tree() {
        let me = std::process::id();
        let procs = walk(me);
        assert_eq!(procs.first().map(|p| p.pid), Some(me));
        assert!(procs[0].tasks.contains(&me), "the main thread is one of the tasks");
        assert!(tree_rss(me).unwrap() > 1 << 20, "a test binary uses more than 1 MiB");
        assert!(descendants(u32::MAX).is_empty());
        assert_eq!(tree_rss(u32::MAX), None);
    }
}
