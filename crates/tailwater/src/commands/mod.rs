//! One module per subcommand.

pub mod demo;
pub mod logs;
pub mod output;
pub mod requests;
pub mod run;
pub mod runners;
pub mod server;
pub mod tenancy;

/// Logs of tailwater itself go to stderr, filtered by `TAILWATER_LOG`
/// (`info`, `debug`, `tailwater_store=debug`, …), else by `default`.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAILWATER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
