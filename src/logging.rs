//! hotswap's own log, one line per event on stderr, in one of two forms
//! (`--log-format`):
//!
//! - `human`: `hotswap[PID]: gen 2 ready after 35ms`; journald and
//!   terminals add their own timestamps;
//! - `json`: one object per line, `{"time":…,"level":…,"pid":…,
//!   "generation":…,"instance":…,"child":…,"message":…}` for log shippers;
//!   `pid` is hotswap's, `child` the child a line is about, and
//!   `generation`, `instance`, `child` appear only when the line is about one.
//!
//! `HOTSWAP_LOG` sets the level (`error`, `warn`, `info`, `debug`, `trace`;
//! default `info`): a plain level rather than tracing's EnvFilter, whose
//! regex engine would double hotswap's size for a feature a supervisor does
//! not need.

use std::fmt;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `hotswap[PID]: message`.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The fields of one event: its message and what it is about.
#[derive(Default)]
struct Fields {
    message: String,
    generation: Option<u64>,
    instance: Option<u64>,
    child: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "generation" => self.generation = Some(value),
            "instance" => self.instance = Some(value),
            "child" => self.child = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(value) = u64::try_from(value) {
            self.record_u64(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

struct Line {
    format: LogFormat,
    pid: u32,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        match self.format {
            LogFormat::Human => {
                write!(writer, "hotswap[{}]: ", self.pid)?;
                match level {
                    Level::ERROR => write!(writer, "error: ")?,
                    Level::WARN => write!(writer, "warning: ")?,
                    _ => {}
                }
                writeln!(writer, "{}", fields.message)
            }
            LogFormat::Json => {
                let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                let mut line = serde_json::json!({
                    "time": time.to_string(),
                    "level": level.as_str().to_ascii_lowercase(),
                    "pid": self.pid,
                });
                for (key, value) in [
                    ("generation", fields.generation),
                    ("instance", fields.instance),
                    ("child", fields.child),
                ] {
                    if let Some(value) = value {
                        line[key] = value.into();
                    }
                }
                line["message"] = fields.message.into();
                writeln!(writer, "{line}")
            }
        }
    }
}

/// Installs the log on stderr, in `format`.
pub fn init(format: LogFormat) {
    let level = std::env::var("HOTSWAP_LOG").ok().and_then(|v| v.parse::<LevelFilter>().ok());
    tracing_subscriber::fmt()
        .with_max_level(level.unwrap_or(LevelFilter::INFO))
        // A closed stderr (the reader of `hotswap … | logger` died) must not
        // panic the supervisor and orphan its children: drop the line instead.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .event_format(Line { format, pid: std::process::id() })
        .init();
}
