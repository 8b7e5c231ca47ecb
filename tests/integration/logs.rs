//! `--log-format json` (issue 12): every line hotswap writes is one JSON object with the time,
//! the level, hotswap's pid, what it is about (generation, instance, child) and the message;
//! the children's own lines pass through untouched.

use nix::sys::signal::Signal;

use crate::support::service::server;
use crate::support::{Hotswap, WAIT};

#[test]
fn json_log_lines_carry_time_level_pid_generation_instance_and_message() {
    let args =
        ["--log-format", "json", "-n", "2", "--rolling", "-l", "127.0.0.1:0", "--", &server()];
    let mut hs = Hotswap::start(&args, &[]);
    hs.wait_for_stderr("gen 1 ready after ", WAIT);
    hs.signal(Signal::SIGHUP);
    hs.wait_for_stderr("gen 1 gone, drained after ", WAIT);
    hs.signal(Signal::SIGTERM);
    assert!(hs.wait_exit(WAIT).success());
    let lines = hs.stderr().lines();
    let ours: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| !l.starts_with("server["))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(ours.len() >= 6, "{lines:#?}");
    for line in &ours {
        assert_eq!(line["pid"], hs.pid(), "{line}");
        assert!(["info", "warn", "error", "debug"].contains(&line["level"].as_str().unwrap()));
        let time = line["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert!(line["message"].as_str().is_some_and(|m| !m.is_empty()), "{line}");
    }
    let find = |start: &str| {
        ours.iter()
            .find(|l| l["message"].as_str().unwrap().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?}: {ours:#?}"))
            .clone()
    };
    let ready = find("gen 2 ready after ");
    assert_eq!((ready["generation"].as_u64(), ready.get("child")), (Some(2), None));
    let instance = find("gen 2 instance 1 started");
    assert_eq!(instance["generation"], 2);
    assert_eq!(instance["instance"], 1);
    assert!(instance["child"].as_u64().is_some(), "{instance}");
    let stopping = find("stopping");
    assert!(stopping.get("generation").is_none(), "{stopping}");
}
