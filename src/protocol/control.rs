//! Control-socket messages: one JSON request line in; one JSON reply line
//! out, or for `reload --wait` one line per step and a final result line.
//! The field names are a stable interface (README, "Control socket").

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Reload {
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
    /// The end of a reload: `took_over`, `rolled_back` or `cancelled`.
    Done {
        result: String,
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
    pub children: Vec<ChildStatus>,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStatus {
    pub fd: i32,
    pub name: String,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub pid: u32,
    pub generation: u64,
    pub instance: u32,
    /// `starting`, `ready`, `draining` or `killed`.
    pub state: String,
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
    /// `ok` or `rolled_back`.
    pub result: String,
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
                result: "rolled_back".into(),
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
    }
}
