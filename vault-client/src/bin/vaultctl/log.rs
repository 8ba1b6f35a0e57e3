//! vaultctl's stderr logging: the library reports through `tracing`
//! (ignored `VAULT_NAMESPACE` / `VAULT_SKIP_VERIFY`, watch retries, failed
//! re-logins); without a subscriber those warnings would be lost.
//!
//! Level `warn` unless `RUST_LOG` says otherwise; one line per event,
//! `vaultctl: warning: MESSAGE field=value`, like vaultctl's own messages:
//! no timestamps, targets or spans. The library never logs secret values.

use std::fmt;
use std::io::IsTerminal as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// One event as `vaultctl: LEVEL: message fields`.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(w, "vaultctl: {level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Install the subscriber (once, at start). An unusable `RUST_LOG` falls
/// back to `warn`.
pub(crate) fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Err: a subscriber is already set (cannot happen in the binary).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(Line)
        .try_init();
}
