//! hotswap: own a service's listening sockets and hand them to successive
//! generations of it. See ARCHITECTURE.md for the map.
#![deny(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod driver;
pub mod logging;
pub mod protocol;
pub mod run;
pub mod sys;

#[cfg(test)]
mod tidy;
