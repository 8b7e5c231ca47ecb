//! The OS boundary: every syscall hotswap makes goes through here.
//! `unsafe` is allowed only in `raw` (see its inventory).
//!
//! Architecture invariant: nothing here imports `core`. What `sys` sees it
//! reports in its own types (`process::Exit`, `channels::Heard`); the driver
//! turns them into the core's events.

pub mod channels;
pub mod claims;
pub mod control;
pub mod identity;
pub mod paths;
pub mod preload;
pub mod process;
pub mod procfs;
mod raw;
pub mod reexec;
pub mod sockets;
pub mod spawn;
pub mod tracking;
pub mod upstream;
pub mod watch;
