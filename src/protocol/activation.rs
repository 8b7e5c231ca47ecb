//! The socket-activation environment (`LISTEN_*`) and the other wrappers'
//! dialects of it, for a child; and the parsing of hotswap's own.

use std::ffi::{OsStr, OsString};

/// The first passed fd (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: i32 = 3;

/// The `FDNAME=` prefix of the sockets hotswap deposits in systemd's fd
/// store (`stored-1`, `stored-2`, …): at the next start, `LISTEN_FDNAMES`
/// tells them from the sockets of a `.socket` unit.
pub const STORED_PREFIX: &str = "stored-";

/// Whether an inherited fd's name is one hotswap gave it in the fd store.
pub fn is_stored(name: &str) -> bool {
    name.starts_with(STORED_PREFIX)
}

/// Variables that describe hotswap's own situation, never a child's.
/// `HOTSWAP_*` configures hotswap (clap reads them), so it is not inherited either.
const NOT_INHERITED: &[&str] = &[
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PIDFDID",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "FDSTORE",
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "SERVER_STARTER_PORT",
    "EINHORN_FD_COUNT",
];

fn inherited(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else { return true };
    !(NOT_INHERITED.contains(&key) || key.starts_with("HOTSWAP_") || key.starts_with("EINHORN_FD_"))
}

/// hotswap's environment minus what describes hotswap itself: the base of
/// every environment it gives a process (children and probes).
pub fn inheritable(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    parent.into_iter().filter(|(k, _)| inherited(k)).collect()
}

/// A passed socket as the child's environment describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassedSocket {
    /// For `LISTEN_FDNAMES`; `unknown` when the user gave none, as systemd does.
    pub name: String,
    /// For `SERVER_STARTER_PORT`: `127.0.0.1:8080`, `8080` or `/path/app.sock`.
    pub address: String,
}

/// Everything about one child's environment except `LISTEN_PID`, which only
/// exists after fork and is filled in by the spawner.
pub struct ChildEnv<'a> {
    pub sockets: &'a [PassedSocket],
    pub generation: u64,
    pub instance: u32,
    /// Per-child extras: `NOTIFY_SOCKET`, `HOTSWAP_READY_FD`, `NODE_CHANNEL_FD`.
    pub extra: Vec<(String, String)>,
}

impl ChildEnv<'_> {
    /// hotswap's environment minus what describes hotswap, plus the child's own.
    pub fn build(
        &self,
        parent: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        let mut env = inheritable(parent);
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        let n = self.sockets.len() as i32;
        set("LISTEN_FDS", n.to_string());
        let names: Vec<&str> = self.sockets.iter().map(|s| s.name.as_str()).collect();
        set("LISTEN_FDNAMES", names.join(":"));
        let starter: Vec<String> = self
            .sockets
            .iter()
            .zip(FIRST_FD..)
            .map(|(s, fd)| format!("{}={fd}", s.address))
            .collect();
        set("SERVER_STARTER_PORT", starter.join(";"));
        set("EINHORN_FD_COUNT", n.to_string());
        for i in 0..n {
            set(&format!("EINHORN_FD_{i}"), (FIRST_FD + i).to_string());
        }
        set("HOTSWAP_GENERATION", self.generation.to_string());
        set("HOTSWAP_INSTANCE", self.instance.to_string());
        for (k, v) in &self.extra {
            set(k, v.clone());
        }
        env
    }
}

/// What hotswap itself was handed by systemd (its own `LISTEN_*`).
#[derive(Debug, PartialEq, Eq)]
pub struct Inherited {
    pub count: usize,
    pub names: Vec<String>,
}

/// Reads hotswap's own activation variables. Like `sd_listen_fds`, fds meant
/// for another pid are not ours: they are ignored, not an error.
pub fn parse_inherited(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    own_pid: u32,
) -> Result<Inherited, String> {
    let none = Inherited { count: 0, names: Vec::new() };
    let Some(fds) = listen_fds else { return Ok(none) };
    match listen_pid.map(str::parse::<u32>) {
        Some(Ok(pid)) if pid == own_pid => {}
        _ => return Ok(none),
    }
    let count: usize = fds.parse().map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    let mut names: Vec<String> = match listen_fdnames {
        Some(list) if !list.is_empty() => list.split(':').map(str::to_string).collect(),
        _ => Vec::new(),
    };
    if !names.is_empty() && names.len() != count {
        return Err(format!(
            "LISTEN_FDNAMES names {} sockets, LISTEN_FDS says {count}",
            names.len()
        ));
    }
    names.resize(count, "unknown".to_string());
    Ok(Inherited { count, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(k: &str, v: &str) -> (OsString, OsString) {
        (k.into(), v.into())
    }

    fn lookup<'a>(env: &'a [(OsString, OsString)], key: &str) -> Vec<&'a str> {
        env.iter().filter(|(k, _)| k == key).map(|(_, v)| v.to_str().unwrap()).collect()
    }

    #[test]
    fn child_env_speaks_every_dialect_and_drops_hotswaps_own() {
        let sockets = [
            PassedSocket { name: "web".into(), address: "127.0.0.1:8080".into() },
            PassedSocket { name: "unknown".into(), address: "/run/a.sock".into() },
        ];
        let child = ChildEnv {
            sockets: &sockets,
            generation: 4,
            instance: 1,
            extra: vec![("NOTIFY_SOCKET".into(), "/run/hotswap/n/4.1".into())],
        };
        let parent = vec![
            os("PATH", "/usr/bin"),
            os("LISTEN_PID", "1"),
            os("LISTEN_FDS", "1"),
            os("LISTEN_FDNAMES", "x.socket"),
            os("LISTEN_PIDFDID", "77"),
            os("NOTIFY_SOCKET", "/run/systemd/notify"),
            os("WATCHDOG_USEC", "1000"),
            os("HOTSWAP_LISTEN", ":80"),
            os("EINHORN_FD_7", "9"),
        ];
        let env = child.build(parent);
        assert_eq!(lookup(&env, "PATH"), ["/usr/bin"]);
        assert_eq!(lookup(&env, "LISTEN_FDS"), ["2"]);
        assert_eq!(lookup(&env, "LISTEN_PID"), Vec::<&str>::new(), "filled in after fork");
        assert_eq!(lookup(&env, "LISTEN_PIDFDID"), Vec::<&str>::new());
        assert_eq!(lookup(&env, "LISTEN_FDNAMES"), ["web:unknown"]);
        assert_eq!(
            lookup(&env, "NOTIFY_SOCKET"),
            ["/run/hotswap/n/4.1"],
            "the child's own, not systemd's"
        );
        assert_eq!(lookup(&env, "WATCHDOG_USEC"), Vec::<&str>::new());
        assert_eq!(lookup(&env, "HOTSWAP_LISTEN"), Vec::<&str>::new());
        assert_eq!(lookup(&env, "SERVER_STARTER_PORT"), ["127.0.0.1:8080=3;/run/a.sock=4"]);
        assert_eq!(lookup(&env, "EINHORN_FD_COUNT"), ["2"]);
        assert_eq!(lookup(&env, "EINHORN_FD_0"), ["3"]);
        assert_eq!(lookup(&env, "EINHORN_FD_1"), ["4"]);
        assert_eq!(lookup(&env, "EINHORN_FD_7"), Vec::<&str>::new());
        assert_eq!(lookup(&env, "HOTSWAP_GENERATION"), ["4"]);
        assert_eq!(lookup(&env, "HOTSWAP_INSTANCE"), ["1"]);
    }

    #[test]
    fn inherited_sockets_are_ours_only_when_listen_pid_matches() {
        let ours = parse_inherited(Some("42"), Some("2"), Some("web:admin"), 42).unwrap();
        assert_eq!(ours, Inherited { count: 2, names: vec!["web".into(), "admin".into()] });
        let unnamed = parse_inherited(Some("42"), Some("2"), None, 42).unwrap();
        assert_eq!(unnamed.names, ["unknown", "unknown"]);
        assert_eq!(parse_inherited(Some("41"), Some("2"), None, 42).unwrap().count, 0);
        assert_eq!(parse_inherited(None, Some("2"), None, 42).unwrap().count, 0);
        assert_eq!(parse_inherited(None, None, None, 42).unwrap().count, 0);
        assert!(parse_inherited(Some("42"), Some("two"), None, 42).is_err());
        assert!(parse_inherited(Some("42"), Some("2"), Some("a:b:c"), 42).is_err());
    }
}
