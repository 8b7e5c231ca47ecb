//! Pure codecs: the environment a child receives, sd_notify datagrams, and
//! control-socket messages. No I/O; table-tested.

pub mod activation;
pub mod claim;
pub mod control;
pub mod notify;
