//! Control-socket messages: one JSON request line in; one JSON reply line
//! out, or for `reload --wait` one line per step and a final result line.
//! The field names are a stable interface (README, "Control socket").

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Reload {
        #[serde(default)]
        wait: bool,
    },
    /// A new generation from the previous serving generation's release.
    Rollback {
        #[serde(default)]
        wait: bool,
    },
    Status,
}

/// One line from hotswap to a control client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Error {
        error: String,
    },
    /// A reload step as it happens, e.g. `gen 3 ready after 212ms`.
    Step {
        step: String,
    },
    /// The end of a reload.
    Done {
        result: ReloadResult,
        #[serde(skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// `reload` without `wait`: the reload was asked for.
    Accepted {
        accepted: bool,
    },
    Status(Box<Status>),
}

pub const PERMISSION_DENIED: &str = "permission denied";

/// How a `reload --wait` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The new generation serves and the old one is gone (client exit 0).
    TookOver,
    /// The new generation failed; the old one serves on (client exit 1).
    RolledBack,
    /// The new generation took over but a socket does not listen (client exit 1).
    NotListening,
    /// A `--rolling` reload stopped at a failed instance: the instances
    /// before it run the new generation, the rest the old one (client exit 1).
    Stopped,
    /// hotswap is stopping; the reload will not happen (client exit 1).
    Cancelled,
    /// A rollback that could not start: nothing to roll back to, or a
    /// reload under way (client exit 1).
    Refused,
}

/// Where a child is in its life, as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Spawned, not ready yet.
    Starting,
    /// Ready (serving, or waiting for the rest of its generation).
    Ready,
    /// Sent the stop signal; SIGKILL at the drain timeout.
    Draining,
    /// SIGKILL sent; about to be reaped.
    Killed,
}

impl fmt::Display for ChildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ChildState::Starting => "starting",
            ChildState::Ready => "ready",
            ChildState::Draining => "draining",
            ChildState::Killed => "killed",
        })
    }
}

/// The last reload's result, as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastReloadResult {
    /// The new generation took over.
    Ok,
    /// The new generation failed and was retired.
    RolledBack,
}

impl fmt::Display for LastReloadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            LastReloadResult::Ok => "ok",
            LastReloadResult::RolledBack => "rolled_back",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub pid: u32,
    /// Unix time in seconds.
    pub started_at: f64,
    pub binary: String,
    pub sockets: Vec<SocketStatus>,
    /// The serving generation.
    pub generation: Option<u64>,
    /// Every generation with children, oldest first, with what it runs.
    #[serde(default)]
    pub generations: Vec<GenerationStatus>,
    pub children: Vec<ChildStatus>,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStatus {
    /// Its fd in every child (3, 4, …); None for a socket claimed at `bind()`,
    /// which reaches a child only through its bind.
    pub fd: Option<i32>,
    /// Its `LISTEN_FDNAMES` name (`unknown` when none was given).
    pub name: String,
    /// The bound address.
    pub address: String,
    /// `systemd`, `listen` or `claimed by gen N`.
    pub origin: String,
    /// What is wrong with it, if anything (its file no longer names it, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Where a generation is in its life, as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Waiting for its instances to be ready.
    Starting,
    /// Serving.
    Serving,
    /// Draining, failed or stopped; gone when its last child is.
    Retiring,
}

impl fmt::Display for GenerationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            GenerationState::Starting => "starting",
            GenerationState::Serving => "serving",
            GenerationState::Retiring => "retiring",
        })
    }
}

/// One generation and the release it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub id: u64,
    pub state: GenerationState,
    /// Its working directory with symlinks resolved: the release a `current`
    /// symlink pointed to when it started.
    pub release: Option<String>,
    /// Its program, an absolute path with symlinks resolved.
    pub program: Option<String>,
    /// A rollback: the generation whose release it runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_of: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub pid: u32,
    pub generation: u64,
    pub instance: u32,
    pub state: ChildState,
    pub started_at: f64,
    pub restarts: u32,
    /// Connections its process group holds open on the passed sockets.
    pub connections: u32,
    /// The last `STATUS=` it sent.
    pub status: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub result: LastReloadResult,
    pub reason: Option<String>,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_documented_json() {
        let reload: Request = serde_json::from_str(r#"{"cmd":"reload","wait":true}"#).unwrap();
        assert_eq!(reload, Request::Reload { wait: true });
        let bare: Request = serde_json::from_str(r#"{"cmd":"reload"}"#).unwrap();
        assert_eq!(bare, Request::Reload { wait: false });
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Error { error: PERMISSION_DENIED.into() },
            Reply::Step { step: "gen 2 ready after 5ms".into() },
            Reply::Done {
                result: ReloadResult::RolledBack,
                generation: Some(2),
                reason: Some("x".into()),
            },
            Reply::Accepted { accepted: true },
        ];
        for reply in replies {
            let line = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), reply, "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Reply::Error { error: PERMISSION_DENIED.into() }).unwrap(),
            r#"{"error":"permission denied"}"#
        );
        let done =
            Reply::Done { result: ReloadResult::TookOver, generation: Some(3), reason: None };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"result":"took_over","generation":3}"#
        );
    }

    #[test]
    fn status_values_are_the_documented_words() {
        let words = |v: &[serde_json::Value]| -> Vec<String> {
            v.iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        let states =
            [ChildState::Starting, ChildState::Ready, ChildState::Draining, ChildState::Killed]
                .map(|s| serde_json::to_value(s).unwrap());
        assert_eq!(words(&states), ["starting", "ready", "draining", "killed"]);
        let shown =
            [ChildState::Starting, ChildState::Ready, ChildState::Draining, ChildState::Killed]
                .map(|s| s.to_string());
        assert_eq!(
            shown,
            ["starting", "ready", "draining", "killed"],
            "the table shows the JSON words"
        );
        let results = [
            ReloadResult::TookOver,
            ReloadResult::RolledBack,
            ReloadResult::NotListening,
            ReloadResult::Stopped,
            ReloadResult::Cancelled,
        ]
        .map(|r| serde_json::to_value(r).unwrap());
        assert_eq!(
            words(&results),
            ["took_over", "rolled_back", "not_listening", "stopped", "cancelled"]
        );
        let last = [LastReloadResult::Ok, LastReloadResult::RolledBack]
            .map(|r| serde_json::to_value(r).unwrap());
        assert_eq!(words(&last), ["ok", "rolled_back"]);
        assert_eq!(
            [LastReloadResult::Ok.to_string(), LastReloadResult::RolledBack.to_string()],
            ["ok", "rolled_back"]
        );
    }
}
