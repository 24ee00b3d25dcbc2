//! One module per subcommand.

pub mod agent;
pub mod cluster;
pub mod completions;
pub mod demo;
pub mod dev;
pub mod drains;
pub mod export;
pub mod login;
pub mod logs;
pub mod output;
pub mod requests;
pub mod run;
pub mod runners;
pub mod server;
pub mod status;
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

/// The embedded server of `tailwater demo` and `tailwater dev`: data in
/// `--data`, or in a temporary directory removed when this is dropped; an
/// admin token from `TAILWATER_BOOTSTRAP_TOKEN`, else a new one.
pub struct LocalServer {
    pub server: tailwater_server::RunningServer,
    pub url: String,
    pub token: String,
    pub data: std::path::PathBuf,
    /// `None` with `--data`.
    pub temporary: Option<tempfile::TempDir>,
}

impl LocalServer {
    pub async fn start(
        data: Option<std::path::PathBuf>,
        listen: std::net::SocketAddr,
        temporary_prefix: &str,
    ) -> anyhow::Result<LocalServer> {
        let temporary = match &data {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix(temporary_prefix)
                    .tempdir()?,
            ),
        };
        let data = match (data, &temporary) {
            (Some(data), _) => data,
            (None, Some(temporary)) => temporary.path().to_owned(),
            (None, None) => unreachable!("a temporary directory is made without --data"),
        };
        let token = server::bootstrap_token()
            .unwrap_or_else(tailwater_server::access::scopes::generate_token);
        let mut config = tailwater_server::ServerConfig::new(data.clone());
        config.listen = listen;
        config.bootstrap_token = Some(token.clone());
        let server = tailwater_server::start(config).await?;
        Ok(LocalServer {
            url: format!("http://{}", server.addr),
            server,
            token,
            data,
            temporary,
        })
    }
}
