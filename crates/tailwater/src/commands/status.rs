//! `tailwater status`: is the server reachable, which version is it, who is
//! this token, how much its tenant stores, and which of its parts are
//! damaged.

use clap::Args;

use crate::Connection;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  tailwater status\n  tailwater status --profile prod --json")]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// The answer of GET /v1/status, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let status = client.status().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(0);
    }
    println!(
        "server   {} (tailwater {})",
        client.server(),
        status.version
    );
    println!(
        "token    {} ({} scope, tenant {})",
        status.token_id, status.scope, status.tenant
    );
    let Some(store) = status.store else {
        println!("store    sizes are shown to owner and admin tokens only");
        return Ok(0);
    };
    println!(
        "store    {} records, {} of text, {} on disk",
        store.records,
        bytes(store.raw_bytes),
        bytes(store.stored_bytes)
    );
    for app in &store.apps {
        println!(
            "  {:<24} {:>12} records {:>10} on disk",
            app.app,
            app.records,
            bytes(app.stored_bytes)
        );
    }
    if !store.damaged_parts.is_empty() {
        println!(
            "damaged  {} parts (their unreadable records are not counted above; reads that meet them say they are incomplete):",
            store.damaged_parts.len()
        );
    }
    for part in &store.damaged_parts {
        let what = match (part.quarantined, part.records) {
            (true, _) => "quarantined: none of its records is served".to_owned(),
            (false, Some(records)) => format!(
                "{} unreadable blocks ({records} records), the rest served",
                part.blocks.len()
            ),
            (false, None) => "unreadable blocks".to_owned(),
        };
        println!(
            "  {} (app {}): {what}; {}",
            part.path,
            part.app.as_deref().unwrap_or("unknown"),
            part.reason
        );
    }
    Ok(0)
}

/// `1.5 MiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{count} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}
