//! Pure codecs: the environment a child receives, sd_notify datagrams, env files and
//! control-socket messages. No I/O; table-tested.

pub mod activation;
pub mod claim;
pub mod control;
pub mod envfile;
pub mod notify;
