//! The control socket's transport (DESIGN.md §6): binding it (mode 0600,
//! stale file taken over), serving one JSON request per connection with the
//! peer's uid checked (`SO_PEERCRED`), and the client's side of it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::paths::private_dir;
use super::sockets::remove_stale_socket;
use crate::protocol::control::{PERMISSION_DENIED, Reply, Request};

/// A request is one short JSON line, sent at once.
const MAX_REQUEST: u64 = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request from a control client, with where to send the reply lines.
pub struct ControlRequest {
    pub request: Request,
    pub reply: mpsc::UnboundedSender<Reply>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "control socket {0}: {1} bytes, longer than a unix socket path can be ({max}); use --control PATH or a shorter XDG_RUNTIME_DIR",
        max = super::paths::SUN_PATH_MAX
    )]
    TooLong(PathBuf, usize),
    #[error("another hotswap is running with control socket {0} (use --name or --control)")]
    Live(PathBuf),
    #[error("control socket {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// Binds the control socket, mode 0600. A stale file is taken over; a live
/// one means this service already runs.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, BindError> {
    let io_err = |e| BindError::Io(path.to_path_buf(), e);
    let len = path.as_os_str().len();
    if len > super::paths::SUN_PATH_MAX {
        return Err(BindError::TooLong(path.to_path_buf(), len));
    }
    if let Some(dir) = path.parent() {
        private_dir(dir).map_err(io_err)?;
    }
    remove_stale_socket(path).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => BindError::Live(path.to_path_buf()),
        _ => io_err(e),
    })?;
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(listener)
}

/// Accepts control clients for as long as hotswap runs.
pub async fn serve(
    listener: tokio::net::UnixListener,
    requests: mpsc::UnboundedSender<ControlRequest>,
) {
    let own_uid = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => drop(tokio::spawn(serve_one(stream, own_uid, requests.clone()))),
            Err(e) => {
                // Out of fds, say: back off rather than spin; requests wait in the backlog.
                tracing::warn!("control socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_one(
    stream: tokio::net::UnixStream,
    own_uid: u32,
    requests: mpsc::UnboundedSender<ControlRequest>,
) {
    let (read, mut write) = stream.into_split();
    let send = |reply: &Reply| {
        let mut line = serde_json::to_string(reply).expect("replies serialize");
        line.push('\n');
        line
    };
    // Read the request before judging it, so a refused client reads our
    // answer instead of meeting a closed socket when it writes.
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    let peer = getsockopt(&write.as_ref(), sockopt::PeerCredentials);
    if !peer.as_ref().is_ok_and(|c| c.uid() == 0 || c.uid() == own_uid) {
        let who = peer
            .map(|c| format!("uid {} pid {}", c.uid(), c.pid()))
            .unwrap_or_else(|e| e.to_string());
        tracing::warn!("control request refused: {who} is neither root nor uid {own_uid}");
        let _ = write
            .write_all(send(&Reply::Error { error: PERMISSION_DENIED.into() }).as_bytes())
            .await;
        return;
    }
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = write
                .write_all(send(&Reply::Error { error: format!("bad request: {e}") }).as_bytes())
                .await;
            return;
        }
    };
    let (reply, mut replies) = mpsc::unbounded_channel();
    if requests.send(ControlRequest { request, reply }).is_err() {
        return;
    }
    // Lines until the driver drops its sender (after the final reply).
    while let Some(reply) = replies.recv().await {
        if write.write_all(send(&reply).as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The client's failures, each with its exit code (DESIGN.md §4, §6).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no hotswap answers at {0}: {1}")]
    Unreachable(PathBuf, io::Error),
    #[error("permission denied by hotswap at {0}")]
    PermissionDenied(PathBuf),
    #[error("no answer from hotswap after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable(..) | ClientError::Protocol(_) => 2,
            ClientError::Timeout(_) => 3,
            ClientError::PermissionDenied(_) => 4,
        }
    }
}

/// Sends one request and hands each reply line to `on_reply` until it returns false.
pub fn request(
    path: &Path,
    request: &Request,
    timeout: Option<Duration>,
    mut on_reply: impl FnMut(Reply) -> bool,
) -> Result<(), ClientError> {
    let unreachable = |e| ClientError::Unreachable(path.to_path_buf(), e);
    let mut stream = UnixStream::connect(path).map_err(unreachable)?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    // A refusing server may already have answered and closed: read its answer anyway.
    let written = stream.write_all(line.as_bytes());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut reader = BufReader::new(stream.try_clone().map_err(unreachable)?);
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(timeout.expect("deadline from timeout")));
            }
            stream.set_read_timeout(Some(left)).map_err(unreachable)?;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(match written {
                    Err(e) => unreachable(e),
                    Ok(()) => ClientError::Protocol("hotswap closed the connection".into()),
                });
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ClientError::Timeout(timeout.expect("only a timeout times out")));
            }
            Err(e) => return Err(unreachable(e)),
        }
        let reply: Reply = serde_json::from_str(&line)
            .map_err(|e| ClientError::Protocol(format!("unreadable reply {line:?}: {e}")))?;
        if let Reply::Error { error } = &reply {
            if error == PERMISSION_DENIED {
                return Err(ClientError::PermissionDenied(path.to_path_buf()));
            }
            return Err(ClientError::Protocol(error.clone()));
        }
        if !on_reply(reply) {
            return Ok(());
        }
    }
}
