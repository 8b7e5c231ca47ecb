//! The deterministic supervisor: events in, actions out.
//!
//! Architecture invariant: nothing in here performs I/O, reads the clock or
//! depends on tokio, nix or libc. Time comes in as `now`; work goes out as
//! `Action`s for the driver to perform.

mod supervisor;
mod types;

#[cfg(test)]
mod tests;

pub use supervisor::{ChildSnapshot, ChildState, LastReload, Snapshot, Supervisor};
pub use types::*;
