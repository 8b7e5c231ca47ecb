//! Reading /proc: process trees and the connections a child holds.

use std::collections::HashSet;
use std::fs;

use super::process::Pid;

/// The fields of /proc/PID/stat hotswap needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: Pid,
    pub pgrp: Pid,
}

pub fn stat(pid: Pid) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) S ppid pgrp …`; comm may hold spaces and parentheses, so parse after the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgrp })
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

/// The value of `key` in the environment `pid` was exec'ed with.
pub fn environ_var(pid: Pid, key: &str) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// The direct children of `pid`, from every one of its tasks (a child
/// forked by a thread is listed under that thread).
pub fn children_of(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(text.split_whitespace().filter_map(|c| c.parse::<Pid>().ok()));
    }
    children
}

/// `root` and every live descendant, `root` first (zombies left out).
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let children = children_of(out[i]);
        out.extend(children.into_iter().filter(|&c| stat(c).is_some_and(|s| s.state != 'Z')));
        i += 1;
    }
    out
}

/// Every live process in process group `pgid`.
pub fn group_members(pgid: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Pid>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

fn socket_inodes(pid: Pid, into: &mut HashSet<u64>) {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else { return };
    for entry in entries.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            if let Ok(inode) = inode.parse() {
                into.insert(inode);
            }
        }
    }
}

/// Connections the processes of group `pgid` hold open that were accepted
/// from the passed sockets: established TCP on `tcp_ports`, connected unix
/// streams on `unix_paths`.
pub fn count_connections(pgid: Pid, tcp_ports: &[u16], unix_paths: &[String]) -> u32 {
    let mut inodes = HashSet::new();
    for pid in group_members(pgid) {
        socket_inodes(pid, &mut inodes);
    }
    if inodes.is_empty() {
        return 0;
    }
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        count += tcp_connections(&text, tcp_ports, &inodes);
    }
    let text = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    count + unix_connections(&text, unix_paths, &inodes)
}

/// Rows of /proc/net/tcp{,6}: `sl local rem st … uid timeout inode`.
fn tcp_connections(table: &str, ports: &[u16], inodes: &HashSet<u64>) -> u32 {
    const ESTABLISHED: &str = "01";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let inode = f.get(9).and_then(|i| i.parse::<u64>().ok());
            f.get(3) == Some(&ESTABLISHED)
                && port.is_some_and(|p| ports.contains(&p))
                && inode.is_some_and(|i| inodes.contains(&i))
        })
        .count() as u32
}

/// Rows of /proc/net/unix: `Num RefCount Protocol Flags Type St Inode Path`;
/// an accepted connection carries its listener's path.
fn unix_connections(table: &str, paths: &[String], inodes: &HashSet<u64>) -> u32 {
    const CONNECTED: &str = "03";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let inode = f.get(6).and_then(|i| i.parse::<u64>().ok());
            let path = f.get(7).map(|p| p.to_string());
            f.get(5) == Some(&CONNECTED)
                && path.is_some_and(|p| paths.contains(&p))
                && inode.is_some_and(|i| inodes.contains(&i))
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_survives_odd_command_names() {
        let stat = parse_stat("123 (my (odd) app) S 45 123 123 0 -1").unwrap();
        assert_eq!(stat, Stat { state: 'S', ppid: 45, pgrp: 123 });
    }

    #[test]
    fn counts_only_established_connections_we_hold_on_our_ports() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 200 1 0
   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 201 1 0
   3: 0100007F:0016 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 202 1 0";
        let ours: HashSet<u64> = [100, 200, 202].into();
        assert_eq!(
            tcp_connections(tcp, &[8080], &ours),
            1,
            "listener, other holder and other port excluded"
        );
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path
0000: 00000002 00000000 00010000 0001 01 300 /run/app.sock
0000: 00000003 00000000 00000000 0001 03 301 /run/app.sock
0000: 00000003 00000000 00000000 0001 03 302";
        let ours: HashSet<u64> = [300, 301, 302].into();
        assert_eq!(unix_connections(unix, &["/run/app.sock".into()], &ours), 1);
    }
}
