//! The OS boundary: every syscall hotswap makes goes through here.
//! `unsafe` is allowed only in `raw` (see its inventory).

pub mod channels;
pub mod listeners;
pub mod process;
pub mod procfs;
mod raw;
pub mod spawn;
pub mod upstream;
