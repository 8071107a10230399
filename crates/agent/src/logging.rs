//! Logging set-up shared by both daemons: `GATEHOUSE_LOG` is a tracing filter (default `info`);
//! output goes to stderr, in colour only on a terminal.

/// Installs the global subscriber.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
