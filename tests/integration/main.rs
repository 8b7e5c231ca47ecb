//! hotswap's integration tests: one binary (cargo finds `tests/integration/main.rs`), so the
//! harness in `support` compiles once and every helper in it is used by some test. Each module is
//! one area, running the real binary with real children.

mod support;

mod activation;
mod addresses;
mod bad_input;
mod cli;
mod control;
mod deploy;
mod drain;
mod examples;
mod faults;
mod forward_signals;
mod instances;
mod lifecycle;
mod load_client;
mod logs;
mod notify;
mod pid1;
mod privileges;
mod readiness;
mod reexec;
mod releases;
mod reload;
mod rollback;
mod unmodified;
mod upstream;
