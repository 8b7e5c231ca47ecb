//! The command line as a new user meets it (issue 10): default names that do not collide,
//! `hotswap list`, stale control sockets skipped, the hint for a command without its `--`, and
//! the shell completions and man pages, generated from the clap definitions and kept in
//! `packaging/` (`UPDATE_GENERATED=1 cargo test --test integration cli::` rewrites them).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use hotswap::cli::Cli;
use hotswap::protocol::control::Status;
use nix::sys::signal::Signal;

use crate::support::service::*;
use crate::support::tools::{repo, tool};
use crate::support::{Hotswap, path_str, run_hotswap};

/// `hotswap list --json` with `env`, parsed.
fn list_json(env: &[(&str, &str)]) -> Vec<Status> {
    let out = run_hotswap(&["list", "--json"], env);
    assert_eq!(out.status.code(), Some(0), "list --json: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("list --json is not a list of statuses ({e}): {}", describe(&out))
    })
}

/// `hotswap -l 127.0.0.1:0 -- node DIR/NAME.js` (no `--name`, no `--control`) with `env`; waits
/// until its first generation is ready and fails if it refused to start.
fn start_node(dir: &Path, name: &str, env: &[(&str, &str)]) -> Hotswap {
    let script = dir.join(format!("{name}.js"));
    let server = repo("examples/node/server.js");
    std::fs::write(&script, format!("require({server:?});\n")).expect("write the script");
    let node = tool("node", "nodejs");
    let hs = Hotswap::start(&["-l", "127.0.0.1:0", "--", &node, &path_str(&script)], env);
    let line = hs.wait_for_any(0, &["gen 1 ready after ", "another hotswap"], WAIT);
    assert!(line.contains("gen 1 ready after "), "{name}.js did not start: {line}");
    hs
}

/// Two services started as `hotswap -- node api.js` and `hotswap -- node web.js` with the same
/// runtime directory run side by side, called `api` and `web`; `hotswap list` shows both.
#[test]
fn node_api_and_web_run_side_by_side_and_list_shows_both() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let scripts = tempfile::tempdir().expect("tempdir");
    let xdg = path_str(runtime.path());
    let env = [("XDG_RUNTIME_DIR", xdg.as_str())];
    let api = start_node(scripts.path(), "api", &env);
    let web = start_node(scripts.path(), "web", &env);

    let listed = list_json(&env);
    let names: Vec<(&str, u32)> = listed.iter().map(|s| (s.name.as_str(), s.pid)).collect();
    assert_eq!(names, [("api", api.pid() as u32), ("web", web.pid() as u32)], "{listed:#?}");
    assert!(listed.iter().all(|s| s.generation == Some(1) && s.children.len() == 1));

    let out = run_hotswap(&["list"], &env);
    assert_eq!(out.status.code(), Some(0), "list: {}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    let header = ["NAME", "PID", "GEN", "CHILDREN", "UPTIME", "LAST RELOAD"];
    assert!(header.iter().all(|h| lines[0].contains(h)), "{table}");
    assert_eq!(lines.len(), 3, "a header and two services: {table}");
    for (line, (name, pid)) in lines[1..].iter().zip(names) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[..4], [name, &pid.to_string(), "1", "1"], "{table}");
        assert_eq!(words.last(), Some(&"-"), "no reload yet: {table}");
    }

    // Each by its default name; a reload shows in the list.
    let out = run_hotswap(&["reload", "web", "--wait"], &env);
    assert_eq!(out.status.code(), Some(0), "reload web --wait: {}", describe(&out));
    let web_status = parse_status(&run_hotswap(&["status", "web", "--json"], &env));
    assert_eq!((web_status.name.as_str(), web_status.generation), ("web", Some(2)));
    let out = run_hotswap(&["list"], &env);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let web_line = table.lines().find(|l| l.starts_with("web ")).expect("web's line");
    assert!(web_line.contains("gen 2 ok after "), "{table}");
}

/// A hotswap that was SIGKILLed leaves its control socket file behind: `list` leaves it out,
/// and `status`/`reload` without a name still find the one service that runs.
#[test]
fn list_status_and_reload_skip_a_stale_control_socket() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let xdg = path_str(runtime.path());
    let env = [("XDG_RUNTIME_DIR", xdg.as_str())];
    let start = |name: &str| {
        let args = ["--name", name, "--ready", "delay:10ms", "--", "sleep", "60"];
        let hs = Hotswap::start(&args, &env);
        hs.wait_for_stderr("gen 1 ready after ", WAIT);
        hs
    };
    let mut dead = start("dead");
    dead.signal(Signal::SIGKILL);
    dead.wait_exit(WAIT);
    let stale = runtime.path().join("hotswap/dead.sock");
    assert!(stale.exists(), "a SIGKILLed hotswap leaves {} behind", stale.display());
    let alive = start("alive");

    let out = run_hotswap(&["list"], &env);
    assert_eq!(out.status.code(), Some(0), "list: {}", describe(&out));
    assert!(out.stderr.is_empty(), "nothing to say about a stale socket: {}", describe(&out));
    let names: Vec<String> = list_json(&env).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["alive"]);

    let only = parse_status(&run_hotswap(&["status", "--json"], &env));
    assert_eq!((only.name.as_str(), only.pid), ("alive", alive.pid() as u32));
    let out = run_hotswap(&["reload", "--wait"], &env);
    assert_eq!(out.status.code(), Some(0), "reload without a name: {}", describe(&out));
    let out = run_hotswap(&["status", "dead"], &env);
    assert_eq!(out.status.code(), Some(2), "the dead one by name: {}", describe(&out));

    drop(alive);
    let out = run_hotswap(&["status"], &env);
    assert_eq!(out.status.code(), Some(2), "only a stale socket: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hotswap is running"));
    assert_eq!(list_json(&env), []);
}

/// A fake `npm` (a shell script: the name is decided before anything runs) in `bin`.
fn fake_npm(bin: &Path) -> String {
    let npm = bin.join("npm");
    std::fs::write(&npm, "#!/bin/sh\nexec sleep 60\n").expect("write the fake npm");
    std::fs::set_permissions(&npm, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path_str(&npm)
}

/// `npm start` is named after the package.json of the children's directory (`--chdir`), its
/// scope dropped; without a package.json, after the directory.
#[test]
fn npm_start_is_named_after_its_package() {
    let work = tempfile::tempdir().expect("tempdir");
    let npm = fake_npm(work.path());
    let shop = work.path().join("shop-release-7");
    std::fs::create_dir(&shop).expect("mkdir");
    std::fs::write(shop.join("package.json"), r#"{"name": "@acme/shop", "version": "7.0.0"}"#)
        .expect("write package.json");
    let billing = work.path().join("billing");
    std::fs::create_dir(&billing).expect("mkdir");
    for (dir, name) in [(&shop, "shop"), (&billing, "billing")] {
        let args = ["--chdir", &path_str(dir), "--ready", "delay:10ms", "--", &npm, "start"];
        let hs = Hotswap::start(&args, &[]);
        hs.wait_for_stderr("gen 1 ready after ", WAIT);
        assert!(hs.dir().join(format!("hotswap/{name}.sock")).exists(), "{name}.sock");
        let status = parse_status(&hs.run_cli(&["status", "--json"]));
        assert_eq!(status.name, name);
    }
}

/// A command without its `--` gets the command line that works; an option of another
/// subcommand gets that subcommand's name instead of clap's `-- --json`. Exit code 2.
#[test]
fn usage_errors_show_the_command_line_that_works() {
    let out = run_hotswap(&["--listen", ":3000", "node", "server.js"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: unexpected argument 'node' found\n"), "{stderr}");
    assert!(stderr.contains("'hotswap --listen :3000 -- node server.js'"), "{stderr}");
    let out = run_hotswap(&["reload", "web", "--json"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'hotswap status --json'") && !stderr.contains("-- --json"),
        "{stderr}"
    );
}

/// `source <(hotswap completions bash)`, then what bash does on TAB: `hotswap rel<TAB>` gives
/// `reload`, `hotswap status --j<TAB>` gives `--json`.
#[test]
fn bash_completes_subcommands_and_their_options() {
    let out = run_hotswap(&["completions", "bash"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("hotswap.bash");
    std::fs::write(&script, &out.stdout).expect("write the script");
    let complete = |line: &str| -> Vec<String> {
        // What readline does: set COMP_* and call the function `complete -p` names with
        // (command, word being completed, previous word).
        let program = r#"
            source "$1"
            read -r -a COMP_WORDS <<< "$2"
            [[ "$2" == *" " ]] && COMP_WORDS+=("")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
            spec=$(complete -p hotswap) || exit 3
            fn=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<< "$spec")
            "$fn" hotswap "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}"
        "#;
        let bash = tool("bash", "bash");
        let out = Command::new(bash)
            .args(["--norc", "--noprofile", "-c", program, "bash"])
            .arg(&script)
            .arg(line)
            .output()
            .expect("run bash");
        assert!(out.status.success(), "bash completing {line:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
    };
    assert_eq!(complete("hotswap rel"), ["reload"]);
    assert_eq!(complete("hotswap status --j"), ["--json"]);
    assert!(complete("hotswap ").iter().any(|w| w == "list"), "{:?}", complete("hotswap "));
    assert_eq!(complete("hotswap completions z"), ["zsh"]);
}

/// The zsh and fish scripts parse in their shells.
#[test]
fn zsh_and_fish_completions_parse() {
    for (shell, package, check) in [("zsh", "zsh", "-n"), ("fish", "fish", "--no-execute")] {
        let out = run_hotswap(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("completion");
        std::fs::write(&script, &out.stdout).expect("write the script");
        let checked =
            Command::new(tool(shell, package)).arg(check).arg(&script).output().expect("run it");
        assert!(checked.status.success(), "{shell} {check}: {}", describe(&checked));
    }
}

/// Where the generated files live in the repository.
fn packaging(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(relative)
}

/// Compares `generated` (file name → content) with the files in `dir`, all of them; with
/// `UPDATE_GENERATED=1`, writes them instead.
fn assert_generated(dir: &Path, generated: &[(String, Vec<u8>)], how: &str) {
    if std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(dir).expect("mkdir");
        for (name, content) in generated {
            std::fs::write(dir.join(name), content).expect("write a generated file");
        }
    }
    let mut stale = Vec::new();
    for (name, content) in generated {
        if std::fs::read(dir.join(name)).ok().as_ref() != Some(content) {
            stale.push(name.clone());
        }
    }
    let mut present: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    present.sort();
    let mut expected: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    expected.sort();
    assert!(
        stale.is_empty() && present == expected,
        "{} is not what {how} generates now (stale: {stale:?}; present: {present:?}, expected \
         {expected:?}): run `UPDATE_GENERATED=1 cargo test --test integration cli::` and commit",
        dir.display()
    );
}

/// `packaging/completions/` holds what clap_complete makes of the command line's definitions,
/// and `hotswap completions SHELL` prints it.
#[test]
fn the_completions_in_packaging_are_current() {
    use clap_complete::Shell;
    let files =
        [(Shell::Bash, "hotswap.bash"), (Shell::Zsh, "_hotswap"), (Shell::Fish, "hotswap.fish")];
    let generated: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(shell, file)| {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "hotswap", &mut script);
            (file.to_string(), script)
        })
        .collect();
    assert_generated(&packaging("completions"), &generated, "clap_complete");
    for ((shell, _), (file, script)) in files.iter().zip(&generated) {
        let out = run_hotswap(&["completions", &shell.to_string()], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(
            out.stdout == *script,
            "`hotswap completions {shell}` is not packaging/completions/{file}: rebuild hotswap"
        );
    }
}

/// hotswap(1): clap_mangen's sections from the clap definitions, then one section per heading
/// of the `--help` text's end ([`hotswap::cli::AFTER_HELP`]): `Signals:`, `Exit status …:`, ….
fn main_man_page() -> Vec<u8> {
    use clap_mangen::roff::{Roff, bold, roman};
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page).expect("render");
    man.render_name_section(&mut page).expect("render");
    man.render_synopsis_section(&mut page).expect("render");
    man.render_description_section(&mut page).expect("render");
    man.render_options_section(&mut page).expect("render");
    man.render_subcommands_section(&mut page).expect("render");
    let mut roff = Roff::default();
    for line in hotswap::cli::AFTER_HELP.lines().filter(|l| !l.trim().is_empty()) {
        match line.strip_prefix("  ") {
            None => {
                let title = line.trim_end_matches(':').to_uppercase();
                roff.control("SH", [title.as_str()]);
            }
            Some(entry) => match entry.split_once("  ") {
                Some((term, text)) => {
                    roff.control("TP", []);
                    roff.text([bold(term.trim())]);
                    roff.text([roman(text.trim())]);
                }
                None => {
                    roff.text([roman(entry.trim())]);
                }
            },
        }
    }
    roff.to_writer(&mut page).expect("render");
    man.render_version_section(&mut page).expect("render");
    page
}

/// `packaging/man/` holds the man pages clap_mangen makes from the clap definitions: hotswap(1)
/// and one page per subcommand, and `man` renders each without a warning.
#[test]
fn the_man_pages_in_packaging_are_current() {
    let out = tempfile::tempdir().expect("tempdir");
    clap_mangen::generate_to(Cli::command(), out.path()).expect("render the man pages");
    std::fs::write(out.path().join("hotswap.1"), main_man_page()).expect("write hotswap.1");
    let mut generated = Vec::new();
    for entry in std::fs::read_dir(out.path()).expect("read them").flatten() {
        let content = std::fs::read(entry.path()).expect("read a page");
        generated.push((entry.file_name().to_string_lossy().into_owned(), content));
    }
    let names: Vec<&str> = generated.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"hotswap.1") && names.contains(&"hotswap-list.1"), "{names:?}");
    assert_generated(&packaging("man"), &generated, "clap_mangen");

    let man = tool("man", "man-db");
    for (name, _) in &generated {
        let page = packaging("man").join(name);
        let shown = Command::new(&man)
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&page)
            .env("MANWIDTH", "100")
            .output()
            .expect("run man");
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.status.success() && text.contains("SYNOPSIS"),
            "man -l {name}: {}",
            describe(&shown)
        );
        assert!(shown.stderr.is_empty(), "man -l {name} warns: {}", describe(&shown));
    }
    let main_page = std::fs::read_to_string(packaging("man/hotswap.1")).expect("hotswap.1");
    for words in ["\\-\\-listen", "hotswap\\-reload(1)", "EXIT STATUS", "SIGNALS"] {
        assert!(main_page.contains(words), "hotswap.1 has no {words:?}");
    }
}
