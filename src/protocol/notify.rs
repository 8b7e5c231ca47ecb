//! sd_notify datagrams: what children send us, and what we send systemd.

/// The assignments hotswap acts on; everything else is ignored, as systemd does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyMsg {
    /// `READY=1`.
    Ready,
    /// `STATUS=…`.
    Status(String),
    /// `WATCHDOG=1` (false), or `WATCHDOG=trigger` (true: fail it now).
    Watchdog(bool),
}

/// Parses one datagram: newline-separated `KEY=VALUE` assignments.
pub fn parse(datagram: &[u8]) -> Vec<NotifyMsg> {
    let text = String::from_utf8_lossy(datagram);
    text.lines()
        .filter_map(|line| match line.split_once('=') {
            Some(("READY", "1")) => Some(NotifyMsg::Ready),
            Some(("STATUS", status)) => Some(NotifyMsg::Status(status.to_string())),
            Some(("WATCHDOG", "1")) => Some(NotifyMsg::Watchdog(false)),
            Some(("WATCHDOG", "trigger")) => Some(NotifyMsg::Watchdog(true)),
            _ => None,
        })
        .collect()
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd ≥ 253 requires alongside it.
pub fn reloading(monotonic_usec: u128, status: &str) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS={}\n", one_line(status))
}

/// A `STATUS=` line alone.
pub fn status(status: &str) -> String {
    format!("STATUS={}\n", one_line(status))
}

/// Deposits the attached fd in systemd's fd store under `name`.
pub fn fd_store(name: &str) -> String {
    format!("FDSTORE=1\nFDNAME={name}\n")
}

/// Removes every fd named `name` from systemd's fd store.
pub fn fd_store_remove(name: &str) -> String {
    format!("FDSTOREREMOVE=1\nFDNAME={name}\n")
}

/// Whether systemd offers hotswap an fd store: `$FDSTORE`, the unit's
/// `FileDescriptorStoreMax=` (set by systemd ≥ 254), above 0.
pub fn fd_store_offered(fdstore: Option<&str>) -> bool {
    fdstore.and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 0)
}

/// `WATCHDOG=1`: hotswap's event loop is alive (systemd's `WatchdogSec=`).
pub fn watchdog() -> String {
    "WATCHDOG=1\n".to_string()
}

/// `EXTEND_TIMEOUT_USEC=`: systemd must not time the current state
/// (start, reload, stop) out for this long; sent again before it passes.
pub fn extend_timeout(usec: u128) -> String {
    format!("EXTEND_TIMEOUT_USEC={usec}\n")
}

/// How often hotswap itself must send `WATCHDOG=1`, from its own
/// `WATCHDOG_USEC` and `WATCHDOG_PID` (sd_watchdog_enabled(3)): half the
/// interval, as sd_watchdog_enabled(3) advises; None when disabled or
/// meant for another process.
pub fn own_watchdog(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<std::time::Duration> {
    let usec: u64 = usec?.parse().ok().filter(|&u| u > 0)?;
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

pub fn ready(status: &str) -> String {
    format!("READY=1\nSTATUS={}\n", one_line(status))
}

pub fn stopping() -> String {
    "STOPPING=1\n".to_string()
}

/// A STATUS= value must not break the datagram's line structure.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_watchdog_is_half_the_interval_for_this_pid_only() {
        let half = Some(std::time::Duration::from_millis(500));
        assert_eq!(own_watchdog(Some("1000000"), None, 7), half);
        assert_eq!(own_watchdog(Some("1000000"), Some("7"), 7), half);
        assert_eq!(own_watchdog(Some("1000000"), Some("8"), 7), None);
        assert_eq!(own_watchdog(Some("0"), None, 7), None);
        assert_eq!(own_watchdog(Some("x"), None, 7), None);
        assert_eq!(own_watchdog(None, None, 7), None);
    }

    #[test]
    fn parses_ready_and_status_ignoring_the_rest() {
        assert_eq!(parse(b"READY=1"), vec![NotifyMsg::Ready]);
        assert_eq!(
            parse(b"STATUS=warming up\nREADY=1\nMAINPID=7\nX_CUSTOM=1\n"),
            vec![NotifyMsg::Status("warming up".into()), NotifyMsg::Ready]
        );
        assert_eq!(parse(b"READY=0"), vec![]);
        assert_eq!(
            parse(b"WATCHDOG=1\nWATCHDOG=trigger\nWATCHDOG=0"),
            vec![NotifyMsg::Watchdog(false), NotifyMsg::Watchdog(true)]
        );
        assert_eq!(parse(b"BARRIER=1"), vec![]);
        assert_eq!(parse(b"garbage\xff"), vec![]);
    }

    #[test]
    fn formats_upstream_messages() {
        assert_eq!(reloading(12, "gen 2"), "RELOADING=1\nMONOTONIC_USEC=12\nSTATUS=gen 2\n");
        assert_eq!(status("a\nb"), "STATUS=a b\n");
        assert_eq!(watchdog(), "WATCHDOG=1\n");
        assert_eq!(extend_timeout(5), "EXTEND_TIMEOUT_USEC=5\n");
        assert_eq!(fd_store("stored-1"), "FDSTORE=1\nFDNAME=stored-1\n");
        assert_eq!(fd_store_remove("stored-1"), "FDSTOREREMOVE=1\nFDNAME=stored-1\n");
        assert!(fd_store_offered(Some("16")));
        assert!(!fd_store_offered(Some("0")) && !fd_store_offered(Some("x")));
        assert!(!fd_store_offered(None));
        assert_eq!(ready("gen 2\nserving"), "READY=1\nSTATUS=gen 2 serving\n");
        assert_eq!(stopping(), "STOPPING=1\n");
    }
}
