//! Logging set-up shared by both daemons. `GATEHOUSE_LOG` is a tracing filter (default `info`).
//! Started by systemd (`JOURNAL_STREAM` is set), logs go to journald with their structured
//! fields (agent_id, generation, site, certificate…); otherwise to stderr, in colour only on a
//! terminal. Secrets never reach a log line: the types that hold them print `***`. On stderr
//! every field and message is escaped ([`gatehouse_proto::text::escape`]): text from callers
//! and hosts cannot end a line, so one event is always one line.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| "info".into());
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            // Plain field names (AGENT_ID, not F_AGENT_ID): `journalctl AGENT_ID=…` works.
            // None of ours collides with journald's own fields.
            .with(
                journald
                    .with_syslog_identifier(program())
                    .with_field_prefix(None),
            )
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .fmt_fields(escaped_fields())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Formats fields as `name=value` (the message bare), every value escaped.
pub fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = gatehouse_proto::text::escape(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

fn program() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "gatehouse".into())
}
