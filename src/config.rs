//! Values from the command line, parsed and validated without touching the OS.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "invalid listen address {0:?}: expected PORT, :PORT, HOST:PORT, [IPv6]:PORT, tcp://, udp://, unix:/PATH or unix:@NAME"
    )]
    BadAddress(String),
    #[error("port out of range in {0:?}: ports are 0 to 65535")]
    PortOutOfRange(String),
    #[error("invalid socket name {0:?}: use letters, digits, '.', '_' and '-' (at most 255)")]
    BadName(String),
    #[error("unknown signal {0:?}: use a name like TERM, SIGTERM or INT, or a number")]
    BadSignal(String),
    #[error("invalid readiness mode {0:?}: expected auto, notify, fd, ipc, delay:DUR or exec:CMD")]
    BadReadyMode(String),
    #[error("invalid duration {0:?}: {1}")]
    BadDuration(String, String),
    #[error("invalid socket mode {0:?}: expected octal like 0660")]
    BadMode(String),
    #[error("invalid size {0:?}: expected a number with K, M, G or T (500M, 1G)")]
    BadSize(String),
}

/// Where a `--listen` socket lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `8080`, `:8080`, `tcp://:8080`: every interface, IPv6 and IPv4 on one socket.
    TcpAnyHost(u16),
    Tcp(Host, u16),
    Udp(Host, u16),
    UnixPath(PathBuf),
    /// `unix:@name`: Linux abstract namespace, no file.
    UnixAbstract(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Empty host: every interface.
    Any,
    Ip(IpAddr),
    /// Resolved once at start, before anything else runs.
    Name(String),
}

/// One `--listen [NAME=]ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    pub name: Option<String>,
    pub addr: ListenAddr,
    /// The address as the user wrote it, without the name.
    pub text: String,
}

impl FromStr for ListenSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (name, text) = match s.split_once('=') {
            Some((name, rest)) if !name.contains(':') && !name.contains('/') => {
                validate_name(name)?;
                (Some(name.to_string()), rest)
            }
            _ => (None, s),
        };
        let addr = parse_addr(text)?;
        Ok(ListenSpec { name, addr, text: text.to_string() })
    }
}

/// A name for `LISTEN_FDNAMES`: what systemd accepts, minus the awkward characters.
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err(ConfigError::BadName(name.to_string())) }
}

fn parse_addr(text: &str) -> Result<ListenAddr, ConfigError> {
    let bad = || ConfigError::BadAddress(text.to_string());
    if let Some(path) = text.strip_prefix("unix:") {
        return match path.strip_prefix('@') {
            Some(name) if !name.is_empty() => Ok(ListenAddr::UnixAbstract(name.to_string())),
            Some(_) => Err(bad()),
            None if path.is_empty() => Err(bad()),
            None => Ok(ListenAddr::UnixPath(PathBuf::from(path))),
        };
    }
    if let Some(rest) = text.strip_prefix("udp://") {
        let (host, port) = parse_host_port(rest, text)?;
        return Ok(ListenAddr::Udp(host, port));
    }
    let rest = text.strip_prefix("tcp://").unwrap_or(text);
    if rest.contains("://") {
        return Err(bad());
    }
    if !rest.contains(':') {
        // A bare port.
        return Ok(ListenAddr::TcpAnyHost(parse_port(rest, text)?));
    }
    match parse_host_port(rest, text)? {
        (Host::Any, port) => Ok(ListenAddr::TcpAnyHost(port)),
        (host, port) => Ok(ListenAddr::Tcp(host, port)),
    }
}

fn parse_host_port(s: &str, text: &str) -> Result<(Host, u16), ConfigError> {
    let bad = || ConfigError::BadAddress(text.to_string());
    if let Ok(addr) = SocketAddr::from_str(s) {
        return Ok((Host::Ip(addr.ip()), addr.port()));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port = parse_port(port, text)?;
    if host.is_empty() {
        return Ok((Host::Any, port));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        return IpAddr::from_str(inner).map(|ip| (Host::Ip(ip), port)).map_err(|_| bad());
    }
    let valid_name = host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if !valid_name || host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    Ok((Host::Name(host.to_string()), port))
}

fn parse_port(port: &str, text: &str) -> Result<u16, ConfigError> {
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(ConfigError::BadAddress(text.to_string()));
    }
    port.parse::<u16>().map_err(|_| ConfigError::PortOutOfRange(text.to_string()))
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How hotswap learns that a child is ready (DESIGN.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyMode {
    /// The first of notify, fd and ipc.
    Auto,
    Notify,
    Fd,
    Ipc,
    Delay(Duration),
    /// Ready when this shell command exits 0.
    Exec(String),
}

impl ReadyMode {
    /// Whether a child gets a private `NOTIFY_SOCKET`.
    pub fn offers_notify(&self) -> bool {
        matches!(self, ReadyMode::Auto | ReadyMode::Notify)
    }
    /// Whether a child gets a `HOTSWAP_READY_FD` pipe.
    pub fn offers_fd(&self) -> bool {
        matches!(self, ReadyMode::Auto | ReadyMode::Fd)
    }
    /// Whether a child gets a Node IPC channel.
    pub fn offers_ipc(&self) -> bool {
        matches!(self, ReadyMode::Auto | ReadyMode::Ipc)
    }
}

impl FromStr for ReadyMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(ReadyMode::Auto),
            "notify" => Ok(ReadyMode::Notify),
            "fd" => Ok(ReadyMode::Fd),
            "ipc" => Ok(ReadyMode::Ipc),
            _ => {
                if let Some(dur) = s.strip_prefix("delay:") {
                    parse_duration(dur).map(ReadyMode::Delay)
                } else if let Some(cmd) = s.strip_prefix("exec:").filter(|c| !c.trim().is_empty()) {
                    Ok(ReadyMode::Exec(cmd.to_string()))
                } else {
                    Err(ConfigError::BadReadyMode(s.to_string()))
                }
            }
        }
    }
}

/// `500ms`, `30s`, `2m`: a unit is required, so `30` is refused rather than guessed.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| ConfigError::BadDuration(s.to_string(), e.to_string()))
}

/// `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<i32, ConfigError> {
    let bad = || ConfigError::BadSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map(|sig| sig as i32).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    nix::sys::signal::Signal::from_str(&name).map(|sig| sig as i32).map_err(|_| bad())
}

/// `500M`, `1G`, `512K`, `1.5G`, or bytes: powers of 1024, as systemd's
/// `MemoryMax=` reads them (a trailing `B` or `iB` is allowed).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(s.to_string());
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(bad());
    }
    Ok((value * (1u64 << shift) as f64) as u64)
}

/// `0660` (octal).
pub fn parse_mode(s: &str) -> Result<u32, ConfigError> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| ConfigError::BadMode(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ListenAddr {
        ListenSpec::from_str(s).unwrap().addr
    }

    #[test]
    fn every_address_form_parses() {
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert_eq!(addr("8080"), ListenAddr::TcpAnyHost(8080));
        assert_eq!(addr(":8080"), ListenAddr::TcpAnyHost(8080));
        assert_eq!(addr("tcp://:8080"), ListenAddr::TcpAnyHost(8080));
        assert_eq!(addr("127.0.0.1:8080"), ListenAddr::Tcp(ip("127.0.0.1"), 8080));
        assert_eq!(addr("[::1]:8080"), ListenAddr::Tcp(ip("::1"), 8080));
        assert_eq!(addr("tcp://[::1]:9"), ListenAddr::Tcp(ip("::1"), 9));
        assert_eq!(addr("tcp://localhost:80"), ListenAddr::Tcp(Host::Name("localhost".into()), 80));
        assert_eq!(addr("udp://127.0.0.1:53"), ListenAddr::Udp(ip("127.0.0.1"), 53));
        assert_eq!(addr("udp://:53"), ListenAddr::Udp(Host::Any, 53));
        assert_eq!(addr("unix:/run/app.sock"), ListenAddr::UnixPath("/run/app.sock".into()));
        assert_eq!(addr("unix:@app"), ListenAddr::UnixAbstract("app".into()));
    }

    #[test]
    fn a_name_prefix_is_split_off() {
        let spec = ListenSpec::from_str("web=127.0.0.1:8080").unwrap();
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(spec.text, "127.0.0.1:8080");
        assert_eq!(
            ListenSpec::from_str("admin=unix:/run/a.sock").unwrap().name.as_deref(),
            Some("admin")
        );
        assert_eq!(
            ListenSpec::from_str("we b=:80"),
            Err(ConfigError::BadName("we b".into())),
            "an invalid name is not silently taken as part of the address"
        );
    }

    #[test]
    fn bad_addresses_name_the_culprit() {
        for bad in
            ["", "http://x:80", "abc", "1.2.3.4.5:80", "127.0.0.1:", "[::1:80", "unix:", "unix:@"]
        {
            assert_eq!(
                ListenSpec::from_str(bad),
                Err(ConfigError::BadAddress(bad.into())),
                "{bad}"
            );
        }
        for big in ["70000", ":65536", "127.0.0.1:99999"] {
            assert_eq!(ListenSpec::from_str(big), Err(ConfigError::PortOutOfRange(big.into())));
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(matches!(parse_duration("30"), Err(ConfigError::BadDuration(..))));
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigquit"), Ok(3));
        assert_eq!(parse_signal("SIGWINCH"), Ok(28));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("TERMINATE"), Err(ConfigError::BadSignal("TERMINATE".into())));
        assert_eq!(parse_signal("99"), Err(ConfigError::BadSignal("99".into())));
    }

    #[test]
    fn sizes_in_powers_of_1024() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "M", "12Q", "-1G", "0", "lots"] {
            assert_eq!(parse_size(bad), Err(ConfigError::BadSize(bad.into())), "{bad}");
        }
    }

    #[test]
    fn ready_modes() {
        assert_eq!("auto".parse(), Ok(ReadyMode::Auto));
        assert_eq!("delay:1s".parse(), Ok(ReadyMode::Delay(Duration::from_secs(1))));
        assert_eq!(
            "exec:curl -f localhost".parse(),
            Ok(ReadyMode::Exec("curl -f localhost".into()))
        );
        assert!("exec:".parse::<ReadyMode>().is_err());
        assert!("delay:5".parse::<ReadyMode>().is_err());
        assert!("sometimes".parse::<ReadyMode>().is_err());
    }
}
