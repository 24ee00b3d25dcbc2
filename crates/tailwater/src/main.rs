//! `tailwater`: the one binary. Each subcommand lives in `commands/` and
//! wires the library crates together; none holds logic of its own that
//! another command would need.

mod commands;
mod config;
mod render;

/// mimalloc: the store and the server allocate many small strings per
/// record; glibc's allocator spent a quarter of ingest's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `tailwater run` lives beside a worker for the worker's whole life, so it
/// keeps its memory small: memory it frees goes back to the system at once
/// (mimalloc keeps it a while by default, which suits the server), and no
/// transparent huge pages ([`tailwater_agent::stay_small`]).
fn keep_the_agent_small() {
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same in its
    /// v2 and v3; options are only ever appended).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: mimalloc is this binary's allocator (linked in above); setting
    // an option is a plain store, safe at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    tailwater_agent::stay_small();
}

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tailwater",
    version,
    about = "Logs for serverless and GPU worker fleets: capture from the first byte, store, search, tail.",
    after_help = "Start here:\n  tailwater demo                          a server and demo workers, on this machine\n  tailwater server                        the server, on 127.0.0.1:7070\n  tailwater run --app my-app -- python handler.py\n  tailwater logs --app my-app -f\n  tailwater dev --port 8080 -- python server.py\n\nConfiguration: flags, then TAILWATER_SERVER and TAILWATER_TOKEN, then a profile of\n~/.config/tailwater/config.toml (`tailwater login` writes one)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest, storage, search and live tail.
    Server(Box<commands::server::ServerArgs>),
    /// Run a worker under the agent: capture its output and ship it.
    Run(Box<commands::run::RunArgs>),
    /// Show logs, then follow them with -f.
    Logs(Box<commands::logs::LogsArgs>),
    /// Develop a worker locally: a server, the agent and live logs, in one
    /// command.
    Dev(Box<commands::dev::DevArgs>),
    /// Is the server reachable; its version, your token, your store's size.
    Status(commands::status::StatusArgs),
    /// Save a server and token as a profile of the config file.
    Login(commands::login::LoginArgs),
    /// Print a shell completion script: bash, zsh or fish.
    Completions(commands::completions::CompletionsArgs),
    /// Tenants: create, list, set their defaults for new apps.
    Tenant(commands::tenancy::TenantArgs),
    /// Scoped API tokens: create (shown once), list, revoke.
    Token(commands::tenancy::TokenArgs),
    /// Apps and their settings: create, set, list.
    #[command(visible_alias = "apps")]
    App(commands::tenancy::AppArgs),
    /// An app's drains: its records sent on to a URL (NDJSON, OTLP, Loki),
    /// signed: create, list, pause, resume, delete.
    #[command(visible_alias = "drains")]
    Drain(commands::drains::DrainArgs),
    /// One request: its state, status, timing, runner and logs.
    Requests(commands::requests::RequestsArgs),
    /// Runners and their states, and their logs across their whole life.
    Runners(commands::runners::RunnersArgs),
    /// Export every record a filter matches, as text or NDJSON, to a file.
    Export(Box<commands::export::ExportArgs>),
    /// Distributed mode: the live nodes, partitions and consumer lag
    /// (admin tokens).
    Cluster(commands::cluster::ClusterArgs),
    /// Start a server and demo GPU workers that serve requests through their
    /// agents (a failed request, an OOM kill, a crash on import).
    #[command(
        after_help = "Examples:\n  tailwater demo\n  tailwater demo --listen 127.0.0.1:7171 --data ./demo-data"
    )]
    Demo(commands::demo::DemoArgs),
    /// A demo worker (used by `tailwater demo`).
    #[command(hide = true)]
    DemoWorker(commands::demo::DemoWorkerArgs),
    /// A running agent (`tailwater run`), over its control socket: the
    /// server in use, failovers, lines shipped, the spool's backlog.
    Agent(commands::agent::AgentArgs),
}

/// Where a client command finds the server: flags, then the environment,
/// then a profile of the config file (see [`config`]).
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The server's URL [default: the profile's, else http://127.0.0.1:7070].
    /// Several (comma-separated or repeated; a profile's `server` too) for
    /// the nodes of a cluster: `tailwater run` ships to one and fails over
    /// to the next when that one is away; `tailwater logs` reads from the
    /// first that answers, and `-f` moves to the next when its server stops
    /// answering; other commands use the first.
    #[arg(
        long,
        env = "TAILWATER_SERVER",
        value_name = "URL",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// An API token (printed by the server on its first start) [default: the
    /// profile's].
    #[arg(long, env = "TAILWATER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of certificates to trust for an https server whose
    /// certificate is self-signed or from a private authority.
    #[arg(long, env = "TAILWATER_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// The config file's profile to use (`tailwater login` writes them)
    /// [default: the file's default_profile, else "default"].
    #[arg(long, env = "TAILWATER_PROFILE", value_name = "NAME")]
    profile: Option<String>,
}

/// Where the token in use came from, for the hint printed with a 401.
static TOKEN_ORIGIN: std::sync::OnceLock<config::Origin> = std::sync::OnceLock::new();

impl Connection {
    /// These settings as the flags that give them, for a command that parses
    /// its own arguments again (`runners logs ID …` runs `logs`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let flags = [
            (
                "--server",
                (!self.server.is_empty()).then(|| self.server.join(",")),
            ),
            ("--token", self.token.clone()),
            ("--profile", self.profile.clone()),
            (
                "--ca-cert",
                self.ca_cert.as_ref().map(|path| path.display().to_string()),
            ),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value]);
            }
        }
        args
    }

    /// The server and token, by flags, environment, profile, default.
    pub fn resolve(&self) -> anyhow::Result<config::Resolved> {
        // Several servers are joined: a profile's token (its one server's)
        // is then never taken for them.
        let servers = (!self.server.is_empty()).then(|| self.server.join(","));
        let resolved = config::resolve(
            servers.as_deref(),
            self.token.as_deref(),
            self.profile.as_deref(),
        )?;
        let _ = TOKEN_ORIGIN.set(resolved.token_origin.clone());
        Ok(resolved)
    }

    /// A client of the first server (see [`Connection::clients`]).
    pub fn client(&self) -> anyhow::Result<tailwater_client::Client> {
        let mut clients = self.clients()?;
        Ok(clients.remove(0))
    }

    /// A client of each server, in their order, with the one token.
    pub fn clients(&self) -> anyhow::Result<Vec<tailwater_client::Client>> {
        let resolved = self.resolve()?;
        let token = resolved.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no token for {}: pass --token, set TAILWATER_TOKEN, or save one with `tailwater login` (the server prints an admin token on its first start)", resolved.server)
        })?;
        let pem = self.ca_certificate()?;
        let mut clients = Vec::new();
        for server in self.servers(&resolved)? {
            let client = tailwater_client::Client::new(&server, token)?;
            clients.push(match &pem {
                Some(pem) => client.with_ca_certificate(pem)?,
                None => client,
            });
        }
        Ok(clients)
    }

    /// The servers, in order: those given, else the resolved one (a
    /// profile's, which may list several too, or the default). An empty
    /// one, or one without its scheme, is an error.
    pub fn servers(&self, resolved: &config::Resolved) -> anyhow::Result<Vec<String>> {
        let given: Vec<&str> = if self.server.is_empty() {
            resolved.server.split(',').collect()
        } else {
            self.server.iter().map(String::as_str).collect()
        };
        parse_servers(&given)
    }

    /// The PEM of `--ca-cert`, if given.
    pub fn ca_certificate(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.ca_cert else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|error| {
            anyhow::anyhow!(
                "cannot read --ca-cert {}: {error}; give the PEM file of the server's certificate or its authority",
                path.display()
            )
        })?;
        Ok(Some(pem))
    }
}

/// Server URLs as given (each trimmed): at least one, none empty, each
/// with its scheme.
fn parse_servers(given: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut servers = Vec::new();
    for server in given.iter().map(|server| server.trim()) {
        anyhow::ensure!(
            !server.is_empty(),
            "--server has an empty URL: give URLs separated by commas, such as --server http://a:7070,http://b:7070"
        );
        anyhow::ensure!(
            server.contains("://"),
            "--server '{server}' has no scheme: write it in full, such as http://{server} (or https://)"
        );
        servers.push(server.to_owned());
    }
    Ok(servers)
}

/// What to do about an error the server gave, beyond its own message.
fn hint(error: &anyhow::Error) -> Option<String> {
    let status = error.chain().find_map(|cause| match cause.downcast_ref() {
        Some(tailwater_client::ClientError::Api { status, .. }) => Some(*status),
        _ => None,
    })?;
    match (status, TOKEN_ORIGIN.get()?) {
        (401, config::Origin::Profile { name, path }) => Some(format!(
            "the token is profile '{name}''s, in {}: run `tailwater login --profile {name}` with a valid one",
            path.display()
        )),
        (401, _) => Some("the token is from --token or TAILWATER_TOKEN: check it".to_owned()),
        (403, _) => Some(
            "`tailwater status` shows this token's scope; an owner or admin can create one with more (`tailwater token create --scope …`)".to_owned(),
        ),
        _ => None,
    }
}

impl Command {
    /// Whether the command prints an answer and ends (so a closed pipe is
    /// its reader saying it has enough), rather than running on (a server,
    /// an agent, `dev`, the demo) or following its reader itself (`logs`,
    /// which stops when its pager quits).
    fn prints_and_ends(&self) -> bool {
        matches!(
            self,
            Command::Status(_)
                | Command::Login(_)
                | Command::Completions(_)
                | Command::Tenant(_)
                | Command::Token(_)
                | Command::App(_)
                | Command::Drain(_)
                | Command::Requests(_)
                | Command::Runners(_)
                | Command::Export(_)
                | Command::Cluster(_)
                | Command::Agent(_)
        )
    }
}

/// Ends the process at a write to a closed pipe (`tailwater status | head
/// -1`), as Unix tools do, instead of `println!` panicking on the error that
/// Rust's ignored SIGPIPE turns it into. Sockets are not affected: their
/// writes never raise SIGPIPE.
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal, before any
    // thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|command| command == "run")
    {
        keep_the_agent_small();
    }
    let cli = Cli::parse();
    if cli.command.prints_and_ends() {
        die_quietly_on_a_closed_pipe();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("can start the async runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => commands::server::run(*args).await,
            Command::Run(args) => commands::run::run(*args).await,
            Command::Logs(args) => commands::logs::run(*args).await,
            Command::Dev(args) => commands::dev::run(*args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Login(args) => commands::login::run(args).await,
            Command::Completions(args) => commands::completions::run(args),
            Command::Tenant(args) => commands::tenancy::tenant(args).await,
            Command::Token(args) => commands::tenancy::token(args).await,
            Command::App(args) => commands::tenancy::app(args).await,
            Command::Drain(args) => commands::drains::run(args).await,
            Command::Requests(args) => commands::requests::run(args).await,
            Command::Runners(args) => commands::runners::run(args).await,
            Command::Export(args) => commands::export::run(*args).await,
            Command::Cluster(args) => commands::cluster::run(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::DemoWorker(args) => commands::demo::worker(args).await,
            Command::Agent(args) => commands::agent::run(args).await,
        }
    });
    // Leave no background task (a stuck pipe reader, a retry) holding the
    // process open past its answer.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("tailwater: error: {error:#}");
            if let Some(hint) = hint(&error) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Connection;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        connection: Connection,
    }

    /// What `resolve` gives without flags: unused when servers are given.
    fn nothing_resolved() -> crate::config::Resolved {
        crate::config::Resolved {
            server: String::new(),
            token: None,
            token_origin: crate::config::Origin::Default,
        }
    }

    fn servers(args: &[&str]) -> Vec<String> {
        let flags = Flags::try_parse_from([&["tailwater"], args].concat()).unwrap();
        flags.connection.servers(&nothing_resolved()).unwrap()
    }

    #[test]
    fn several_servers_comma_separated_or_repeated_keep_their_order() {
        assert_eq!(
            servers(&[
                "--server",
                "http://a:1,http://b:2",
                "--server",
                "http://c:3"
            ]),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert_eq!(servers(&["--server", "http://a:1"]), ["http://a:1"]);
    }

    #[test]
    fn an_empty_server_or_one_without_its_scheme_is_an_error_saying_what_to_write() {
        let error = super::parse_servers(&["http://a:1", "", "http://b:2"]).unwrap_err();
        assert!(error.to_string().contains("empty URL"), "{error}");
        let error = super::parse_servers(&["http://a:1", " b:7070"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--server 'b:7070' has no scheme: write it in full, such as http://b:7070 (or https://)"
        );
        assert_eq!(
            super::parse_servers(&[" http://a:1", "https://b:2 "]).unwrap(),
            ["http://a:1", "https://b:2"]
        );
    }

    #[test]
    fn a_profiles_server_may_list_several() {
        let flags = Flags::try_parse_from(["tailwater"]).unwrap();
        let resolved = crate::config::Resolved {
            server: "http://a:1, http://b:2".into(),
            ..nothing_resolved()
        };
        assert_eq!(
            flags.connection.servers(&resolved).unwrap(),
            ["http://a:1", "http://b:2"]
        );
    }

    #[test]
    fn logs_reads_from_each_server_and_other_commands_take_the_first() {
        let flags = Flags::try_parse_from([
            "tailwater",
            "--server",
            "http://a:1,http://b:2",
            "--token",
            "tw_x",
        ])
        .unwrap();
        let clients = flags.connection.clients().unwrap();
        let servers: Vec<&str> = clients.iter().map(|client| client.server()).collect();
        assert_eq!(servers, ["http://a:1", "http://b:2"]);
        assert_eq!(flags.connection.client().unwrap().server(), "http://a:1");
    }
}
