//! `tailwater`: the one binary. Each subcommand lives in `commands/` and
//! wires the library crates together; none holds logic of its own that
//! another command would need.

mod commands;

/// mimalloc: the store and the server allocate many small strings per
/// record; glibc's allocator spent a quarter of ingest's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tailwater",
    version,
    about = "Logs for serverless and GPU worker fleets: capture from the first byte, store, search, tail.",
    after_help = "Start here:\n  tailwater demo                          a server and demo workers, on this machine\n  tailwater server                        the server, on 127.0.0.1:7070\n  tailwater run --app my-app -- python handler.py\n  tailwater logs --app my-app -f"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest, storage, search and live tail.
    Server(commands::server::ServerArgs),
    /// Run a worker under the agent: capture its output and ship it.
    Run(Box<commands::run::RunArgs>),
    /// Show logs, then follow them with -f.
    Logs(Box<commands::logs::LogsArgs>),
    /// Tenants: create, list, set their defaults for new apps.
    Tenant(commands::tenancy::TenantArgs),
    /// Scoped API tokens: create (shown once), list, revoke.
    Token(commands::tenancy::TokenArgs),
    /// Apps and their settings: create, set, list.
    #[command(visible_alias = "apps")]
    App(commands::tenancy::AppArgs),
    /// One request: its state, status, timing, runner and logs.
    Requests(commands::requests::RequestsArgs),
    /// Runners and their states, and their logs across their whole life.
    Runners(commands::runners::RunnersArgs),
    /// Start a server and demo workers that log like GPU workers.
    Demo(commands::demo::DemoArgs),
    /// A demo worker (used by `tailwater demo`).
    #[command(hide = true)]
    DemoWorker(commands::demo::DemoWorkerArgs),
}

/// Where a client command finds the server.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The server's URL.
    #[arg(
        long,
        env = "TAILWATER_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// An API token (printed by the server on its first start).
    #[arg(long, env = "TAILWATER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Connection {
    pub fn client(&self) -> anyhow::Result<tailwater_client::Client> {
        let token = self.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no token: pass --token or set TAILWATER_TOKEN (the server prints an admin token on its first start)")
        })?;
        Ok(tailwater_client::Client::new(&self.server, token)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("can start the async runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => commands::server::run(args).await,
            Command::Run(args) => commands::run::run(*args).await,
            Command::Logs(args) => commands::logs::run(*args).await,
            Command::Tenant(args) => commands::tenancy::tenant(args).await,
            Command::Token(args) => commands::tenancy::token(args).await,
            Command::App(args) => commands::tenancy::app(args).await,
            Command::Requests(args) => commands::requests::run(args).await,
            Command::Runners(args) => commands::runners::run(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::DemoWorker(args) => commands::demo::worker(args).await,
        }
    });
    // Leave no background task (a stuck pipe reader, a retry) holding the
    // process open past its answer.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("tailwater: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
