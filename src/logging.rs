//! One line per event on stderr: `hotswap[PID]: gen 2 ready after 35ms`.
//! journald and terminals add their own timestamps. `HOTSWAP_LOG` filters
//! (`debug`, `warn`, …; default `info`).

use std::fmt;

use tracing::{Level, Subscriber};
use tracing_subscriber::EnvFilter;
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
    let filter = EnvFilter::try_from_env("HOTSWAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let prefix = format!("hotswap[{}]: ", std::process::id());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Line { prefix })
        .init();
}
