//! `tailwater tenant …`, `tailwater token …`, `tailwater app …`: tenants,
//! scoped tokens and apps, through the HTTP API.

use clap::{Args, Subcommand};
use tailwater_model::tenancy::{
    AppInfo, AppPatch, NewApp, NewTenant, NewToken, Scope, TenantPatch,
};

use super::output::print_table;
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater tenant create acme --private-logs\n  tailwater tenant set acme --private-logs false\n  tailwater tenant list"
)]
pub struct TenantArgs {
    #[command(subcommand)]
    command: TenantCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Create a tenant (admin token).
    Create {
        name: String,
        /// New apps of this tenant start with private logs.
        #[arg(long)]
        private_logs: bool,
    },
    /// Change a tenant's default for new apps (existing apps keep theirs).
    Set {
        name: String,
        /// `true` or `false`.
        #[arg(long)]
        private_logs: bool_arg::Bool,
    },
    /// List tenants (all for an admin, its own for an owner).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater token create --tenant acme --scope ingest --app sdxl\n  tailwater token create --tenant acme --scope caller --expires 30d\n  tailwater token list --tenant acme\n  tailwater token revoke tok_1a2b3c4d5e6f7a8b"
)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; prints only the token (shown once) on stdout.
    Create {
        /// admin, owner (one tenant), ingest (one app's logs in), caller
        /// (one request's logs out).
        #[arg(long)]
        scope: Scope,
        /// The token's tenant (default: your token's own).
        #[arg(long)]
        tenant: Option<String>,
        /// The app: required for ingest, optional for caller.
        #[arg(long)]
        app: Option<String>,
        /// Valid for this long (`30d`, `12h`); forever when not given.
        #[arg(long)]
        expires: Option<String>,
        /// A note for people, shown by `token list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id, from now on.
    Revoke { id: String },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater app create sdxl --tenant acme --private-logs true --retention-days 14\n  tailwater app set sdxl --tenant acme --max-line-bytes 65536\n  tailwater app list --tenant acme"
)]
pub struct AppArgs {
    #[command(subcommand)]
    command: AppCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand, Debug)]
enum AppCommand {
    /// Create an app (settings not given: the tenant's default for
    /// private logs, the server's for the rest).
    Create {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change an app's settings (those not given stay as they are).
    Set {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// List a tenant's apps and their settings.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct Settings {
    /// Callers see nothing of this app's logs (`true` or `false`).
    #[arg(long)]
    private_logs: Option<bool_arg::Bool>,
    /// Days of logs kept (instead of the server's --retention).
    #[arg(long)]
    retention_days: Option<u32>,
    /// Longest line kept whole, in bytes (stored; enforced later).
    #[arg(long)]
    max_line_bytes: Option<u64>,
    /// Ingest limit in lines per second (stored; enforced later).
    #[arg(long)]
    rate_limit_lines_per_sec: Option<u64>,
    /// Ingest limit in bytes per second (stored; enforced later).
    #[arg(long)]
    rate_limit_bytes_per_sec: Option<u64>,
}

/// `true`/`false` as a flag value (clap's plain `bool` is a switch).
mod bool_arg {
    #[derive(Clone, Copy, Debug)]
    pub struct Bool(pub bool);

    impl std::str::FromStr for Bool {
        type Err = String;
        fn from_str(text: &str) -> Result<Bool, String> {
            match text {
                "true" | "yes" | "on" => Ok(Bool(true)),
                "false" | "no" | "off" => Ok(Bool(false)),
                _ => Err(format!("'{text}' is not true or false")),
            }
        }
    }
}

fn print_json(value: serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

pub async fn tenant(args: TenantArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    match args.command {
        TenantCommand::Create { name, private_logs } => {
            let tenant = client
                .create_tenant(&NewTenant { name, private_logs })
                .await?;
            println!("created tenant {}", tenant.name);
        }
        TenantCommand::Set { name, private_logs } => {
            let patch = TenantPatch {
                private_logs: Some(private_logs.0),
            };
            let tenant = client.update_tenant(&name, &patch).await?;
            println!(
                "tenant {}: new apps start with private_logs {}",
                tenant.name, tenant.private_logs
            );
        }
        TenantCommand::List { json } => {
            let tenants = client.tenants().await?;
            if json {
                return print_json(serde_json::to_value(&tenants)?).map(|()| 0);
            }
            let mut rows = vec![row(&["TENANT", "APPS", "PRIVATE_LOGS", "CREATED"])];
            rows.extend(tenants.into_iter().map(|tenant| {
                vec![
                    tenant.name,
                    tenant.apps.to_string(),
                    tenant.private_logs.to_string(),
                    tenant.created.to_string(),
                ]
            }));
            print_table(&rows)?;
        }
    }
    Ok(0)
}

pub async fn token(args: TokenArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    match args.command {
        TokenCommand::Create {
            scope,
            tenant,
            app,
            expires,
            name,
        } => {
            let created = client
                .create_token(&NewToken {
                    scope,
                    tenant,
                    app,
                    expires_in: expires,
                    name,
                })
                .await?;
            // Only the secret on stdout, so `$(tailwater token create …)`
            // captures it; the rest is for people.
            println!("{}", created.token);
            eprintln!(
                "created {} token {} (tenant {}, app {}, expires {}); it is shown only this once",
                created.info.scope,
                created.info.id,
                or_dash(created.info.tenant),
                or_dash(created.info.app),
                or_dash(created.info.expires),
            );
        }
        TokenCommand::List { tenant, json } => {
            let tokens = client.tokens(tenant.as_deref()).await?;
            if json {
                return print_json(serde_json::to_value(&tokens)?).map(|()| 0);
            }
            let mut rows = vec![row(&[
                "ID", "SCOPE", "TENANT", "APP", "STATE", "EXPIRES", "NAME",
            ])];
            let now = jiff::Timestamp::now();
            for token in tokens {
                let state = if token.revoked.is_some() {
                    "revoked"
                } else if token.expires.is_some_and(|expires| expires <= now) {
                    "expired"
                } else {
                    "live"
                };
                rows.push(vec![
                    token.id,
                    token.scope.to_string(),
                    or_dash(token.tenant),
                    or_dash(token.app),
                    state.to_owned(),
                    or_dash(token.expires),
                    or_dash(token.name),
                ]);
            }
            print_table(&rows)?;
        }
        TokenCommand::Revoke { id } => {
            let token = client.revoke_token(&id).await?;
            println!("revoked token {}", token.id);
        }
    }
    Ok(0)
}

fn patch(settings: Settings) -> AppPatch {
    AppPatch {
        private_logs: settings.private_logs.map(|value| value.0),
        retention_days: settings.retention_days.map(Some),
        max_line_bytes: settings.max_line_bytes.map(Some),
        rate_limit_lines_per_sec: settings.rate_limit_lines_per_sec.map(Some),
        rate_limit_bytes_per_sec: settings.rate_limit_bytes_per_sec.map(Some),
    }
}

/// An app's row of `app ls`.
fn cells(app: &AppInfo) -> Vec<String> {
    let settings = &app.settings;
    vec![
        app.name.clone(),
        app.tenant.clone(),
        settings.private_logs.to_string(),
        or_dash(settings.retention_days),
        or_dash(settings.max_line_bytes),
        or_dash(settings.rate_limit_lines_per_sec),
        or_dash(settings.rate_limit_bytes_per_sec),
    ]
}

/// An app on one line, as `app create` and `app set` say what they made.
fn describe(app: &AppInfo) -> String {
    let settings = &app.settings;
    format!(
        "app {} of tenant {}: private_logs {}, retention_days {}, max_line_bytes {}, rate_limit_lines_per_sec {}, rate_limit_bytes_per_sec {}",
        app.name,
        app.tenant,
        settings.private_logs,
        or_dash(settings.retention_days),
        or_dash(settings.max_line_bytes),
        or_dash(settings.rate_limit_lines_per_sec),
        or_dash(settings.rate_limit_bytes_per_sec),
    )
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|cell| (*cell).to_owned()).collect()
}

pub async fn app(args: AppArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    match args.command {
        AppCommand::Create {
            name,
            tenant,
            settings,
        } => {
            let patch = patch(settings);
            let new = NewApp {
                name,
                private_logs: patch.private_logs,
                retention_days: patch.retention_days.flatten(),
                max_line_bytes: patch.max_line_bytes.flatten(),
                rate_limit_lines_per_sec: patch.rate_limit_lines_per_sec.flatten(),
                rate_limit_bytes_per_sec: patch.rate_limit_bytes_per_sec.flatten(),
            };
            let app = client.create_app(tenant.as_deref(), &new).await?;
            println!(
                "created app {} in tenant {} (private_logs {})",
                app.name, app.tenant, app.settings.private_logs
            );
        }
        AppCommand::Set {
            name,
            tenant,
            settings,
        } => {
            let app = client
                .update_app(tenant.as_deref(), &name, &patch(settings))
                .await?;
            println!("{}", describe(&app));
        }
        AppCommand::List { tenant, json } => {
            let apps = client.apps(tenant.as_deref()).await?;
            if json {
                return print_json(serde_json::to_value(&apps)?).map(|()| 0);
            }
            let mut rows = vec![row(&[
                "APP",
                "TENANT",
                "PRIVATE_LOGS",
                "RETENTION",
                "MAX_LINE_BYTES",
                "LINES/S",
                "BYTES/S",
            ])];
            rows.extend(apps.iter().map(cells));
            print_table(&rows)?;
        }
    }
    Ok(0)
}
