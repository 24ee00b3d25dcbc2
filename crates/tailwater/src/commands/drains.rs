//! `tailwater drain …`: an app's drains (its records sent on to a URL, in
//! NDJSON, OTLP or Loki push), through the HTTP API.

use clap::{Args, Subcommand};
use tailwater_model::wire::{DrainFormat, DrainInfo, NewDrain};

use super::output::{print_json, print_table};
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater drain create --app sdxl https://logs.example.com/in\n  tailwater drain create --app sdxl --format otlp https://otel.example.com/v1/logs --receiver-token \"$OTEL_TOKEN\"\n  tailwater drain list --app sdxl\n  tailwater drain pause --app sdxl drn_0123456789abcdef\n  tailwater drain resume --app sdxl drn_0123456789abcdef\n  tailwater drain delete --app sdxl drn_0123456789abcdef"
)]
pub struct DrainArgs {
    #[command(subcommand)]
    command: DrainCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand, Debug)]
enum DrainCommand {
    /// Send the app's records from now on to a URL; prints the secret that
    /// signs every delivery, this once.
    Create {
        /// Where batches are POSTed (http:// or https://).
        url: String,
        #[command(flatten)]
        app: AppOf,
        /// ndjson (the API's record shape, a record a line), otlp (OTLP/HTTP
        /// protobuf) or loki (Loki push).
        #[arg(long, default_value = "ndjson")]
        format: DrainFormat,
        /// A name to tell drains apart by.
        #[arg(long)]
        name: Option<String>,
        /// A bearer token the receiver asks for (sent as Authorization).
        #[arg(long, env = "TAILWATER_DRAIN_RECEIVER_TOKEN", hide_env_values = true)]
        receiver_token: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the app's drains and how they stand.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        app: AppOf,
        #[arg(long)]
        json: bool,
    },
    /// Stop sending; the drain keeps its place.
    Pause {
        id: String,
        #[command(flatten)]
        app: AppOf,
    },
    /// Go on from where the drain stopped (after a pause by you or by its
    /// failures).
    Resume {
        id: String,
        #[command(flatten)]
        app: AppOf,
    },
    /// Delete a drain: it stops, and its place and secret are gone.
    #[command(visible_alias = "rm")]
    Delete {
        id: String,
        #[command(flatten)]
        app: AppOf,
    },
}

#[derive(Args, Debug)]
struct AppOf {
    /// The app whose records the drain sends.
    #[arg(long)]
    app: String,
    /// The app's tenant (admin tokens; the token's own otherwise).
    #[arg(long)]
    tenant: Option<String>,
}

fn describe(drain: &DrainInfo) -> String {
    let mut text = format!(
        "drain {} of app {} ({}): {} to {}",
        drain.id,
        drain.app,
        drain.format,
        match &drain.paused_reason {
            Some(reason) => format!("paused ({reason})"),
            None => "active".to_owned(),
        },
        drain.url
    );
    if let Some(error) = drain.last_error.as_ref().filter(|_| drain.failures > 0) {
        text.push_str(&format!(
            "; {} failed attempts in a row, the last: {error}",
            drain.failures
        ));
    }
    text
}

pub async fn run(args: DrainArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    match args.command {
        DrainCommand::Create {
            url,
            app,
            format,
            name,
            receiver_token,
            json,
        } => {
            let new = NewDrain {
                url,
                format,
                name,
                token: receiver_token,
            };
            let created = client
                .create_drain(app.tenant.as_deref(), &app.app, &new)
                .await?;
            if json {
                return print_json(serde_json::to_value(&created)?);
            }
            println!("created {}", describe(&created.info));
            println!("secret (shown once; it signs every delivery's tailwater-signature header):");
            println!("{}", created.secret);
        }
        DrainCommand::List { app, json } => {
            let drains = client.drains(app.tenant.as_deref(), &app.app).await?;
            if json {
                return print_json(serde_json::to_value(&drains)?);
            }
            let mut rows = vec![[
                "ID",
                "NAME",
                "FORMAT",
                "STATE",
                "DELIVERED",
                "FAILURES",
                "URL",
            ]
            .map(str::to_owned)
            .to_vec()];
            rows.extend(drains.iter().map(|drain| {
                vec![
                    drain.id.clone(),
                    drain.name.clone().unwrap_or_else(|| "-".into()),
                    drain.format.to_string(),
                    match drain.state {
                        tailwater_model::wire::DrainState::Active => "active".into(),
                        tailwater_model::wire::DrainState::Paused => "paused".into(),
                    },
                    drain.delivered.to_string(),
                    drain.failures.to_string(),
                    drain.url.clone(),
                ]
            }));
            print_table(&rows)?;
        }
        DrainCommand::Pause { id, app } => {
            let drain = client
                .pause_drain(app.tenant.as_deref(), &app.app, &id, false)
                .await?;
            println!("{}", describe(&drain));
        }
        DrainCommand::Resume { id, app } => {
            let drain = client
                .pause_drain(app.tenant.as_deref(), &app.app, &id, true)
                .await?;
            println!("{}", describe(&drain));
        }
        DrainCommand::Delete { id, app } => {
            let drain = client
                .delete_drain(app.tenant.as_deref(), &app.app, &id)
                .await?;
            println!("deleted drain {} of app {}", drain.id, drain.app);
        }
    }
    Ok(0)
}
