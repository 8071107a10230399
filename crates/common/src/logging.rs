//! Logging set-up shared by both daemons. The filter is the config file's `log` (default
//! `info`, changed by a reload), or `GATEHOUSE_LOG` when that is set.
//! Started by systemd (`JOURNAL_STREAM` is set), logs go to journald with their structured
//! fields (agent_id, generation, site, certificate…); otherwise to stderr, in colour only on a
//! terminal. Secrets never reach a log line: the types that hold them print `***`. On stderr
//! every field and message is escaped ([`gatehouse_proto::text::escape`]): text from callers
//! and hosts cannot end a line, so one event is always one line.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The running log filter, which a config reload may change.
#[derive(Debug, Clone)]
pub struct LogFilter {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    /// `GATEHOUSE_LOG` was set: it wins over the config file, at start and on reload.
    from_env: bool,
}

/// Checks a filter (`info`, `gatehouse_agent=debug,info`) as the config file gives it.
pub fn check_filter(directives: &str) -> Result<(), String> {
    EnvFilter::try_new(directives)
        .map(|_| ())
        .map_err(|e| format!("{directives:?} is not a log filter: {e}"))
}

/// `filter` without the noise of netlink-packet-route, which warns of every kernel attribute
/// newer than itself.
fn quiet(filter: EnvFilter) -> EnvFilter {
    filter.add_directive(
        "netlink_packet_route=error"
            .parse()
            .expect("a valid directive"),
    )
}

/// Installs the global subscriber with `filter` (the config file's `log`), unless
/// `GATEHOUSE_LOG` says otherwise.
pub fn init(filter: &str) -> LogFilter {
    let (env, from_env) = match EnvFilter::try_from_env("GATEHOUSE_LOG") {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()),
            false,
        ),
    };
    let (layer, handle) = reload::Layer::new(quiet(env));
    let registry = tracing_subscriber::registry().with(layer);
    let installed = if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        // Plain field names (AGENT_ID, not F_AGENT_ID): `journalctl AGENT_ID=…` works.
        // None of ours collides with journald's own fields.
        registry
            .with(
                journald
                    .with_syslog_identifier(program())
                    .with_field_prefix(None),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(escaped_fields())
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init()
    };
    LogFilter {
        handle: installed.is_ok().then_some(handle),
        from_env,
    }
}

impl LogFilter {
    /// Applies the config file's filter (kept as is when `GATEHOUSE_LOG` is set).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        if self.from_env {
            return Ok(());
        }
        let filter = quiet(EnvFilter::try_new(directives).map_err(|e| e.to_string())?);
        match &self.handle {
            Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
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
