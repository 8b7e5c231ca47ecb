//! The deterministic supervisor: events in, actions out.
//!
//! Architecture invariant: nothing in here performs I/O, reads the clock or
//! depends on tokio, nix or libc (`src/tidy.rs` checks). Time comes in as
//! `now`; work goes out as `Action`s for the driver to perform.
#![warn(missing_docs)]

mod handoff;
mod supervisor;
mod timers;
mod types;
mod waiters;

#[cfg(test)]
mod tests;

pub use supervisor::{
    ChildPhase, ChildSnapshot, GenerationSnapshot, GenerationState, LastReload, Snapshot,
    Supervisor,
};
pub use types::*;
