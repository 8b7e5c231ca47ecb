//! The default `--name` of a service (DESIGN.md §1): the program's file name, except that an
//! interpreter or launcher is named after what it runs, so `node api.js` and `node web.js` (or
//! `npm start` in two projects) do not claim the same control socket.
//!
//! A pure function of the command line. The one thing it cannot know from the arguments, a
//! project's name, comes from the caller: `project(dir)` answers the `name` in `dir/package.json`,
//! else the directory's own name (`dir` is relative to the children's working directory; `.` is
//! that directory itself).
//!
//! | command | name | rule |
//! |---|---|---|
//! | `./server`, `/srv/app/bin/server` | `server` | a program: its file name |
//! | `./server.py`, `gunicorn app:app`, `bundle exec puma` | `server`, `gunicorn`, `puma` | a program, less a script extension (`.js`, `.py`, …); an app server is a program |
//! | `node api.js`, `python3 app.py`, `ruby app.rb`, `bash run.sh` | `api`, `app`, `app`, `run` | an interpreter: its script's file name, less the extension |
//! | `node api/index.js`, `node index.js` | `api`, the project's | `index` and `__main__` stand for their directory |
//! | `python3 -m http.server` | `http.server` | the module |
//! | `python3 -c CODE`, `node -e CODE` | `python3`, `node` | inline code has no name: the interpreter's |
//! | `java -jar app-1.2.0.jar`, `java -cp lib com.acme.Shop` | `app`, `Shop` | the jar less its version, or the main class |
//! | `npm start`, `yarn start`, `npx next start`, `bun start` | the project's | a package runner: the project's name |
//! | `npm run web`, `yarn web`, `pnpm run web` | the project's + `-web` | … and the script's, unless it is `start` |
//! | `env A=1 node api.js`, `nice -n 5 …`, `uv run app.py`, `poetry run …`, `bundle exec …` | what follows | a wrapper: the name of the command it runs |
//!
//! The result never contains `/` (a package scope, `@acme/shop`, is dropped, any other `/`
//! becomes `-`) and is at most [`MAX_LEN`] bytes; `None` when nothing usable is left, and the
//! caller falls back to the program's file name.

use std::ffi::OsString;
use std::path::Path;

/// The longest default name, in bytes: the control socket's path must fit in `sun_path`.
pub const MAX_LEN: usize = 64;

/// Extensions dropped from a script's or program's file name.
const SCRIPT_EXTENSIONS: &[&str] = &[
    "js", "mjs", "cjs", "ts", "mts", "cts", "jsx", "tsx", "py", "pyz", "rb", "pl", "php", "sh",
    "lua", "R", "exs", "dll", "jar",
];

/// The default name of a service that runs `command`, or `None` if none can be made.
pub fn default_name(
    command: &[OsString],
    project: impl Fn(&Path) -> Option<String>,
) -> Option<String> {
    let args: Vec<String> = command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let raw = name_of(&args, &project)?;
    clean(&raw)
}

/// Makes a raw name valid: no scope, no `/`, no control characters, not empty, at most MAX_LEN.
fn clean(raw: &str) -> Option<String> {
    let unscoped = match raw.strip_prefix('@') {
        Some(scoped) => scoped.split_once('/').map_or(scoped, |(_, name)| name),
        None => raw,
    };
    let mut name: String =
        unscoped.chars().map(|c| if c == '/' || c.is_control() { '-' } else { c }).collect();
    if name.len() > MAX_LEN {
        let mut end = MAX_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    let name = name.trim_matches('-');
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

/// What kind of program `args[0]` is, by its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Interpreter(Interpreter),
    /// npm, yarn, pnpm, bun (without a script file), npx, …: runs the project in the directory.
    PackageRunner,
    /// Runs the command that follows its own options: env, nice, nohup, …
    Wrapper(Wrapper),
    Program,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interpreter {
    Node,
    Bun,
    Deno,
    Python,
    Ruby,
    Perl,
    Php,
    Shell,
    Java,
    Dotnet,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrapper {
    /// `env [-i] [-u NAME] [NAME=VALUE]… COMMAND`.
    Env,
    /// Options (some with a value), then the command.
    Options(&'static [&'static str]),
    /// `uv run`, `poetry run`, `bundle exec`, …: the word, options, then the command.
    Subcommand(&'static str, &'static [&'static str]),
}

fn kind_of(program: &str) -> Kind {
    use Interpreter::*;
    let versioned = |family: &str| {
        program
            .strip_prefix(family)
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    match program {
        "node" | "nodejs" | "tsx" | "ts-node" | "ts-node-esm" => Kind::Interpreter(Node),
        "bun" => Kind::Interpreter(Bun),
        "deno" => Kind::Interpreter(Deno),
        _ if versioned("python") || versioned("pypy") => Kind::Interpreter(Python),
        _ if versioned("ruby") => Kind::Interpreter(Ruby),
        "perl" => Kind::Interpreter(Perl),
        _ if versioned("php") => Kind::Interpreter(Php),
        "sh" | "bash" | "dash" | "zsh" | "ksh" => Kind::Interpreter(Shell),
        "java" => Kind::Interpreter(Java),
        "dotnet" => Kind::Interpreter(Dotnet),
        "Rscript" | "lua" | "luajit" | "elixir" => Kind::Interpreter(Other),
        "npm" | "yarn" | "pnpm" | "npx" | "pnpx" | "bunx" => Kind::PackageRunner,
        "env" => Kind::Wrapper(Wrapper::Env),
        "nice" => Kind::Wrapper(Wrapper::Options(&["-n", "--adjustment"])),
        "ionice" => Kind::Wrapper(Wrapper::Options(&["-c", "-n", "--class", "--classdata"])),
        "stdbuf" => Kind::Wrapper(Wrapper::Options(&["-i", "-o", "-e"])),
        "nohup" | "setsid" | "dumb-init" | "tini" | "catatonit" => {
            Kind::Wrapper(Wrapper::Options(&[]))
        }
        "uv" => Kind::Wrapper(Wrapper::Subcommand(
            "run",
            &[
                "--with",
                "--with-editable",
                "--with-requirements",
                "--python",
                "-p",
                "--project",
                "--directory",
                "--env-file",
                "--extra",
                "--group",
                "--package",
                "--index",
                "--default-index",
            ],
        )),
        "poetry" | "pipenv" | "pdm" | "rye" | "hatch" => {
            Kind::Wrapper(Wrapper::Subcommand("run", &["--directory", "-C", "--project", "-P"]))
        }
        "bundle" | "bundler" => Kind::Wrapper(Wrapper::Subcommand("exec", &["--gemfile"])),
        _ => Kind::Program,
    }
}

/// The file name of a path (its last component), if it has one.
fn file_name(path: &str) -> Option<&str> {
    Path::new(path).file_name()?.to_str()
}

/// A file name less one script extension.
fn stem(file_name: &str) -> &str {
    match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && SCRIPT_EXTENSIONS.contains(&ext) => stem,
        _ => file_name,
    }
}

fn name_of(args: &[String], project: &dyn Fn(&Path) -> Option<String>) -> Option<String> {
    let program = file_name(args.first()?)?;
    let rest = &args[1..];
    match kind_of(program) {
        Kind::Program => Some(stem(program).to_string()),
        Kind::Interpreter(interpreter) => interpreted(program, interpreter, rest, project),
        Kind::PackageRunner => package_runner(program, rest, project),
        Kind::Wrapper(wrapper) => {
            let inner = wrapped(wrapper, rest)?;
            name_of(inner, project)
        }
    }
}

/// The command a wrapper runs (`None` if there is none: the wrapper's own name is not used, as
/// it runs nothing worth naming then).
fn wrapped(wrapper: Wrapper, args: &[String]) -> Option<&[String]> {
    let (subcommand, with_value): (Option<&str>, &[&str]) = match wrapper {
        Wrapper::Env => (None, &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"]),
        Wrapper::Options(with_value) => (None, with_value),
        Wrapper::Subcommand(word, with_value) => (Some(word), with_value),
    };
    let mut i = 0;
    if let Some(word) = subcommand {
        // Options may come before the word too (`uv --quiet run …`).
        i = skip_options(args, 0, with_value);
        if args.get(i).map(String::as_str) != Some(word) {
            return None;
        }
        i += 1;
    }
    i = skip_options(args, i, with_value);
    if wrapper == Wrapper::Env {
        while args.get(i).is_some_and(|a| a.contains('=')) {
            i = skip_options(args, i + 1, with_value);
        }
    }
    let rest = &args[i..];
    (!rest.is_empty()).then_some(rest)
}

/// The index of the first argument at or after `i` that is not an option (nor an option's
/// value); past `--` when that comes first.
fn skip_options(args: &[String], mut i: usize, with_value: &[&str]) -> usize {
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            return i + 1;
        }
        if !arg.starts_with('-') || arg == "-" {
            return i;
        }
        i += if with_value.contains(&arg.as_str()) { 2 } else { 1 };
    }
    i
}

/// What an interpreter's arguments say about the script it runs.
fn interpreted(
    program: &str,
    interpreter: Interpreter,
    args: &[String],
    project: &dyn Fn(&Path) -> Option<String>,
) -> Option<String> {
    use Interpreter::*;
    // Options that take the next argument as their value, and those whose value is code.
    let (with_value, code): (&[&str], &[&str]) = match interpreter {
        Node => (
            &[
                "-r",
                "--require",
                "--import",
                "--loader",
                "--experimental-loader",
                "-C",
                "--conditions",
                "--env-file",
                "--title",
                "--input-type",
            ],
            &["-e", "--eval", "-p", "--print"],
        ),
        Bun => (
            &["-r", "--preload", "--cwd", "--env-file", "--config", "-c"],
            &["-e", "--eval", "-p", "--print"],
        ),
        Deno => (
            &["--config", "-c", "--import-map", "--env-file", "--location", "--cert", "--inspect"],
            &[],
        ),
        Python => (&["-W", "-X", "--check-hash-based-pycs"], &["-c"]),
        Ruby => (&["-r", "-I", "-C", "-E", "--encoding"], &["-e"]),
        Perl => (&["-I", "-M", "-m"], &["-e", "-E"]),
        Php => (&["-S", "-t", "-c", "-d", "-z"], &["-r"]),
        Shell => (&["-o", "+o", "-O", "+O"], &["-c"]),
        Java => (
            &[
                "-cp",
                "-classpath",
                "--class-path",
                "-p",
                "--module-path",
                "--add-modules",
                "--add-opens",
                "--add-exports",
            ],
            &[],
        ),
        Dotnet => (&[], &[]),
        Other => (&["-e"], &[]),
    };
    let mut i = 0;
    let mut subcommand_seen = false;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_str();
        if arg == "--" {
            return args.get(i + 1).and_then(|script| script_name(script, project));
        }
        if code.contains(&arg) {
            return Some(stem(program).to_string());
        }
        if interpreter == Python {
            if let Some(module) = arg.strip_prefix("-m") {
                let module = if module.is_empty() { args.get(i + 1)? } else { module };
                return Some(module.to_string());
            }
        }
        if interpreter == Java && (arg == "-jar" || arg == "--jar") {
            let jar = file_name(args.get(i + 1)?)?;
            return Some(without_version(stem(jar)).to_string());
        }
        if interpreter == Java && (arg == "-m" || arg == "--module") {
            let module = args.get(i + 1)?;
            return Some(module.split('/').next().unwrap_or(module).to_string());
        }
        if arg.starts_with('-') && arg != "-" {
            i += if with_value.contains(&arg) { 2 } else { 1 };
            continue;
        }
        // The first positional argument.
        return match interpreter {
            Java => Some(arg.rsplit('.').next().unwrap_or(arg).to_string()),
            Deno if !subcommand_seen && matches!(arg, "run" | "serve") => {
                subcommand_seen = true;
                i += 1;
                continue;
            }
            Deno if !subcommand_seen && arg == "task" => {
                package_runner(program, &args[i + 1..], project)
            }
            Bun if !subcommand_seen && arg == "run" => {
                subcommand_seen = true;
                i += 1;
                continue;
            }
            // `bun start`, `bun run web`: a package script, not a file.
            Bun if !looks_like_a_file(arg) => package_script(project(Path::new(".")), arg),
            Dotnet if arg == "run" => project(Path::new(".")),
            _ => script_name(arg, project),
        };
    }
    // An interpreter with no script (a REPL, a script on stdin): its own name.
    Some(stem(program).to_string())
}

/// Whether a package runner's argument names a file rather than a package script.
fn looks_like_a_file(arg: &str) -> bool {
    arg.contains('/') || file_name(arg).is_some_and(|f| stem(f) != f)
}

/// The name of a script at `path`: its file name less the extension, or for `index.js` and
/// `__main__.py` the name of their directory; for a directory with no name of its own (`node .`),
/// the project's.
fn script_name(path: &str, project: &dyn Fn(&Path) -> Option<String>) -> Option<String> {
    let p = Path::new(path);
    let Some(file) = p.file_name().and_then(|f| f.to_str()) else { return project(p) };
    match stem(file) {
        "index" | "__main__" => match p.parent().and_then(Path::file_name) {
            Some(dir) => dir.to_str().map(String::from),
            None => project(Path::new(".")),
        },
        stem => Some(stem.to_string()),
    }
}

/// `app-1.2.0`, `app-0.0.1-SNAPSHOT` → `app`: a release's version would change the name.
fn without_version(stem: &str) -> &str {
    let version = stem
        .match_indices('-')
        .map(|(i, _)| i)
        .find(|&i| i > 0 && stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()));
    version.map_or(stem, |i| &stem[..i])
}

/// npm, yarn, pnpm, npx, …: the project's name, and the script's unless it is `start`.
fn package_runner(
    program: &str,
    args: &[String],
    project: &dyn Fn(&Path) -> Option<String>,
) -> Option<String> {
    // Options that take a value; `--prefix DIR` and kin also move the project.
    const DIR: &[&str] = &["--prefix", "-C", "--dir", "--cwd"];
    const VALUE: &[&str] =
        &["--workspace", "-w", "--filter", "-F", "--package", "-p", "--loglevel"];
    let mut dir = Path::new(".");
    let mut positional = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            break;
        }
        if DIR.contains(&arg.as_str()) {
            dir = Path::new(args.get(i + 1)?);
            i += 2;
        } else if let Some(value) =
            arg.strip_prefix("--prefix=").or_else(|| arg.strip_prefix("--cwd="))
        {
            dir = Path::new(value);
            i += 1;
        } else if VALUE.contains(&arg.as_str()) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            positional.push(arg.as_str());
            if positional.len() == 2 {
                break;
            }
            i += 1;
        }
    }
    let name = project(dir);
    let script = match (program, positional.as_slice()) {
        ("npx" | "pnpx" | "bunx", _) => None,
        (_, ["run" | "run-script" | "rum" | "urn", script, ..]) => Some(*script),
        (_, ["start" | "exec" | "x" | "dlx" | "run" | "run-script", ..] | []) => None,
        ("npm", _) => None,
        // yarn, pnpm and bun run `yarn web` as `yarn run web`.
        (_, [script, ..]) => Some(*script),
    };
    match script {
        Some(script) => package_script(name, script),
        None => name,
    }
}

/// The project's name, followed by `-SCRIPT` unless the script is `start`.
fn package_script(project: Option<String>, script: &str) -> Option<String> {
    match (project, script) {
        (project, "start") => project,
        (Some(project), script) => Some(format!("{project}-{script}")),
        (None, script) => Some(script.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every project is called `shop`, except `api` and `web` (by package.json) and `/srv/old`.
    fn project(dir: &Path) -> Option<String> {
        match dir.to_str()? {
            "." => Some("shop".into()),
            "api" | "services/api" => Some("@acme/api".into()),
            "web" => Some("web".into()),
            "/srv/old" => Some("old".into()),
            _ => None,
        }
    }

    fn name(command: &str) -> Option<String> {
        let args: Vec<OsString> = command.split_whitespace().map(OsString::from).collect();
        default_name(&args, project)
    }

    #[test]
    fn the_table() {
        let table: &[(&str, &str)] = &[
            // Programs.
            ("./server", "server"),
            ("/srv/app/current/bin/server", "server"),
            ("target/debug/examples/server", "server"),
            ("./server.py", "server"),
            ("gunicorn app:app", "gunicorn"),
            ("gunicorn -w 4 api:app", "gunicorn"),
            ("uvicorn main:app --fd 3", "uvicorn"),
            ("sleep 60", "sleep"),
            ("puma -C config/puma.rb", "puma"),
            // Interpreters.
            ("node api.js", "api"),
            ("node web.js", "web"),
            ("/usr/bin/node dist/server.js", "server"),
            ("node --enable-source-maps -r dotenv/config dist/server.js --port 3000", "server"),
            ("node --max-old-space-size=4096 app.mjs", "app"),
            ("node api/index.js", "api"),
            ("node index.js", "shop"),
            ("node .", "shop"),
            ("node -e require('./x')", "node"),
            ("node", "node"),
            ("nodejs server.js", "server"),
            ("tsx server.ts", "server"),
            ("bun server.ts", "server"),
            ("bun run server.ts", "server"),
            ("bun start", "shop"),
            ("bun run web", "shop-web"),
            ("deno run --allow-net --config deno.json main.ts", "main"),
            ("deno task start", "shop"),
            ("python3 app.py", "app"),
            ("python3.11 -u app.py", "app"),
            ("python -W ignore manage.py runserver", "manage"),
            ("python3 -m http.server 8000", "http.server"),
            ("python3 -mhttp.server", "http.server"),
            ("python3 -m uvicorn app:app", "uvicorn"),
            ("python3 -c import_this", "python3"),
            ("python3 myapp/__main__.py", "myapp"),
            ("python3 .", "shop"),
            ("pypy3 app.py", "app"),
            ("ruby -Ilib app.rb", "app"),
            ("ruby -I lib app.rb", "app"),
            ("perl -Mstrict server.pl", "server"),
            ("php -S 127.0.0.1:8000 -t public router.php", "router"),
            ("sh -c exec_./server", "sh"),
            ("bash run.sh", "run"),
            ("bash -- run.sh", "run"),
            ("java -jar app.jar", "app"),
            ("java -Xmx1g -jar build/libs/shop-0.0.1-SNAPSHOT.jar", "shop"),
            ("java -jar my-app-1.2.jar", "my-app"),
            ("java -cp lib/* com.acme.Server", "Server"),
            ("java -m com.acme/com.acme.Main", "com.acme"),
            ("dotnet Shop.dll", "Shop"),
            ("dotnet run", "shop"),
            // Package runners.
            ("npm start", "shop"),
            ("npm run start", "shop"),
            ("npm run web", "shop-web"),
            ("npm --prefix api start", "api"),
            ("npm --prefix=/srv/old start", "old"),
            ("npm -w services/api run dev", "shop-dev"),
            ("yarn start", "shop"),
            ("yarn web", "shop-web"),
            ("yarn --cwd web start", "web"),
            ("pnpm run web", "shop-web"),
            ("pnpm -C api start", "api"),
            ("npx next start", "shop"),
            ("npm", "shop"),
            // Wrappers.
            ("env NODE_ENV=production node api.js", "api"),
            ("env -i PATH=/bin -u HOME node web.js", "web"),
            ("nice -n 5 node api.js", "api"),
            ("nohup python3 app.py", "app"),
            ("stdbuf -o L ./server", "server"),
            ("uv run app.py", "app"),
            ("uv run --python 3.12 --with gunicorn gunicorn app:app", "gunicorn"),
            ("uv --quiet run python3 -m http.server", "http.server"),
            ("poetry run uvicorn main:app", "uvicorn"),
            ("bundle exec puma", "puma"),
            ("bundle exec ruby app.rb", "app"),
            ("tini -- node api.js", "api"),
        ];
        let mut wrong = Vec::new();
        for (command, expected) in table {
            let got = name(command);
            if got.as_deref() != Some(*expected) {
                wrong.push(format!("{command:?}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn a_project_without_a_name_and_nothing_to_run_has_none() {
        let nameless = |_: &Path| None;
        let args = |s: &str| s.split_whitespace().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(default_name(&args("npm start"), nameless), None);
        assert_eq!(default_name(&args("node index.js"), nameless), None);
        assert_eq!(default_name(&args("env A=1"), nameless), None);
        assert_eq!(default_name(&args("uv sync"), nameless), None);
        assert_eq!(default_name(&[], nameless), None);
        // The script's own name still comes first.
        assert_eq!(default_name(&args("npm run web"), nameless).as_deref(), Some("web"));
    }

    #[test]
    fn names_are_valid_control_socket_names() {
        let odd = |name: &str| {
            let name = name.to_string();
            move |_: &Path| Some(name.clone())
        };
        let args = |s: &str| s.split_whitespace().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(default_name(&args("npm start"), odd("@acme/shop")).as_deref(), Some("shop"));
        assert_eq!(default_name(&args("npm start"), odd("a/b")).as_deref(), Some("a-b"));
        assert_eq!(default_name(&args("npm start"), odd("a\nb")).as_deref(), Some("a-b"));
        assert_eq!(default_name(&args("npm start"), odd("/")), None);
        assert_eq!(default_name(&args("npm start"), odd("..")), None);
        let long = "é".repeat(40);
        let got = default_name(&args("npm start"), odd(&long)).unwrap();
        assert!(got.len() <= MAX_LEN && got.chars().all(|c| c == 'é'), "{got:?}");
        assert_eq!(got.len(), MAX_LEN, "cut at a character boundary: {got:?}");
        // Not UTF-8: replaced, never dropped.
        use std::os::unix::ffi::OsStringExt;
        let bytes = vec![OsString::from("node"), OsString::from_vec(b"caf\xe9.js".to_vec())];
        assert_eq!(default_name(&bytes, |_| None).as_deref(), Some("caf\u{fffd}"));
    }
}
