//! The filter flags of the read commands (`export`; `logs` to adopt them),
//! and the `GET /v1/logs` query parameters they describe.

use clap::Args;
use tailwater_model::wire::{LogsParams, FIELD_PREFIX};

/// Which records a read command reads.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    version: Option<String>,
    #[arg(long)]
    runner: Option<String>,
    /// Only this request's logs.
    #[arg(long)]
    request: Option<String>,
    /// run, gateway or deploy.
    #[arg(long)]
    source: Option<String>,
    /// stdout, stderr or system.
    #[arg(long)]
    stream: Option<String>,
    /// This level and more severe: trace, debug, info, warn, error, fatal.
    #[arg(long)]
    level: Option<String>,
    /// Only lines with these words, together and in this order (ignoring
    /// case): `out of memory` finds "CUDA out-of-memory", not "memoryless".
    #[arg(long)]
    grep: Option<String>,
    /// Only lines holding this text anywhere, inside words too, ignoring
    /// ASCII case unless --case-sensitive: `memor` finds "memoryless".
    #[arg(long)]
    contains: Option<String>,
    /// Make --contains respect case.
    #[arg(long, requires = "contains")]
    case_sensitive: bool,
    /// Only lines a regex finds, anywhere in the line (Rust regex syntax;
    /// `(?i)` ignores case).
    #[arg(long)]
    regex: Option<String>,
    /// Only records whose field KEY has VALUE; repeat for several. Numbers and
    /// booleans as JSON writes them: --field status=500 --field cached=true.
    #[arg(long, value_name = "KEY=VALUE")]
    field: Vec<String>,
    /// Any other query parameter of GET /v1/logs (see the README); repeat for
    /// several: --where 'runner_re=gpu-.*' --where app_not=staging.
    #[arg(long = "where", value_name = "NAME=VALUE")]
    where_: Vec<String>,
    /// From this time: RFC 3339, or a duration ago such as 15m.
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this time: RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    /// The query parameters the flags describe; a bad `--field` or
    /// `--where`, an unknown name or one given twice is an error before
    /// anything is sent.
    pub fn params(&self) -> anyhow::Result<LogsParams> {
        let mut pairs = LogsParams {
            app: self.app.clone(),
            version: self.version.clone(),
            runner: self.runner.clone(),
            request: self.request.clone(),
            source: self.source.clone(),
            stream: self.stream.clone(),
            level: self.level.clone(),
            text: self.grep.clone(),
            contains: self.contains.clone(),
            case: self.case_sensitive.then(|| "sensitive".to_owned()),
            regex: self.regex.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            ..LogsParams::default()
        }
        .to_pairs();
        for field in &self.field {
            let (key, value) = field.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --field '{field}': use KEY=VALUE, as in --field status=500"
                )
            })?;
            pairs.push((format!("{FIELD_PREFIX}{key}"), value.to_owned()));
        }
        for pair in &self.where_ {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --where '{pair}': use NAME=VALUE, as in --where 'runner_re=gpu-.*'"
                )
            })?;
            pairs.push((name.to_owned(), value.to_owned()));
        }
        LogsParams::from_pairs(pairs).map_err(|error| anyhow::anyhow!(error))
    }
}
