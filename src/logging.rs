//! One line per event on stderr: `hotswap[PID]: gen 2 ready after 35ms`.
//! journald and terminals add their own timestamps. `HOTSWAP_LOG` sets the
//! level (`error`, `warn`, `info`, `debug`, `trace`; default `info`): a plain
//! level rather than tracing's EnvFilter, whose regex engine would double
//! hotswap's size for a feature a supervisor does not need.

use std::fmt;

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct Line {
    prefix: String,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{}", self.prefix)?;
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

pub fn init() {
    let level = std::env::var("HOTSWAP_LOG").ok().and_then(|v| v.parse::<LevelFilter>().ok());
    let prefix = format!("hotswap[{}]: ", std::process::id());
    tracing_subscriber::fmt()
        .with_max_level(level.unwrap_or(LevelFilter::INFO))
        // A closed stderr (the reader of `hotswap … | logger` died) must not
        // panic the supervisor and orphan its children: drop the line instead.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .event_format(Line { prefix })
        .init();
}
