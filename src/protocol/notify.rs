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
pub fn reloading(monotonic_usec: u128) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\n")
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
        assert_eq!(reloading(12), "RELOADING=1\nMONOTONIC_USEC=12\n");
        assert_eq!(ready("gen 2\nserving"), "READY=1\nSTATUS=gen 2 serving\n");
        assert_eq!(stopping(), "STOPPING=1\n");
    }
}
