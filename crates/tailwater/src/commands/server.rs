//! `tailwater server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use tailwater_model::time::parse_std_duration;
use tailwater_server::drains::DrainSettings;
use tailwater_server::limits::{self, IngestLimits, Rate};
use tailwater_server::tls::TlsFiles;
use tailwater_server::{ServerConfig, DEFAULT_MAX_BATCH_BYTES};
use tailwater_store::Durability;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater server\n  tailwater server --data /var/lib/tailwater --listen 0.0.0.0:7070"
)]
pub struct ServerArgs {
    /// Where the server keeps its data.
    #[arg(long, env = "TAILWATER_DATA", default_value = "tailwater-data")]
    data: PathBuf,
    /// Address to listen on. Loopback unless told otherwise.
    #[arg(long, env = "TAILWATER_LISTEN", default_value = tailwater_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// When an acknowledged write is on disk: `sync` fsyncs before
    /// answering (survives power loss; concurrent batches share an fsync);
    /// `interval` fsyncs every --sync-interval (a power loss takes at most
    /// that); `none` leaves it to the OS (survives a server crash only).
    #[arg(long, value_enum, default_value = "sync")]
    durability: DurabilityArg,
    /// With --durability interval: how often the log is fsynced.
    #[arg(long, default_value = "1s", value_parser = parse_std_duration)]
    sync_interval: std::time::Duration,
    /// Memory for recent records before they are written into compressed
    /// parts, in bytes.
    #[arg(long, default_value_t = tailwater_store::DEFAULT_MEMTABLE_MAX_BYTES)]
    memtable_max_bytes: usize,
    /// Bytes of an emptied log segment kept to write the next one over
    /// (it is cut to this at a frame's end; an idle server keeps none):
    /// the log holds at most twice this beside what is not yet in parts.
    #[arg(long, default_value_t = tailwater_store::DEFAULT_WAL_SPARE_MAX_BYTES)]
    wal_spare_max_bytes: u64,
    /// Memory for decoded blocks kept for the next page of a query, in
    /// bytes (0 keeps none).
    #[arg(long, default_value_t = tailwater_store::DEFAULT_BLOCK_CACHE_BYTES)]
    block_cache_bytes: usize,
    /// Threads one count (`GET /v1/logs/count`, a histogram) may read
    /// blocks on; every core the server may use unless told otherwise. All
    /// counts share one pool of these (each also scans on its own thread),
    /// and no tenant holds more than half of it.
    #[arg(long, default_value_t = tailwater_store::default_query_threads())]
    query_threads: usize,
    /// Stored records one count or histogram may read; one that would read
    /// more is refused (400 count_too_large) before it reads any.
    #[arg(long, default_value_t = tailwater_store::DEFAULT_COUNT_SCAN_LIMIT)]
    count_scan_limit: u64,
    /// zstd level (1 to 22) of what rests on disk: an idle server writes
    /// each flushed part again at it once, in full blocks; flushes write at
    /// 3. Higher is smaller and costs more CPU while idle (BENCHMARKS.md);
    /// 3 or less settles nothing.
    #[arg(long, default_value_t = tailwater_store::DEFAULT_MERGE_ZSTD_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    merge_zstd_level: i32,
    /// Settle into block format 3, the numbers of messages kept apart from
    /// their text: smaller at rest (0.77× `zstd -3` against 0.82–0.84×),
    /// but counts and searches over settled parts read 2–3× slower today.
    #[arg(long)]
    settle_numbers_apart: bool,
    /// Counts and histograms one tenant runs at once; more wait up to 2 s
    /// for one to end, then are refused (429 count_busy, Retry-After).
    #[arg(long, default_value_t = tailwater_server::count_slots::DEFAULT_COUNT_CONCURRENCY)]
    count_concurrency: usize,
    /// How far behind the newest record of its runner a record may be and
    /// still be stored; older ones are refused and counted.
    #[arg(long, default_value = "1h", value_parser = parse_std_duration)]
    out_of_order_window: std::time::Duration,
    /// How far ahead of the server's clock a record's time may be; a record
    /// dated further ahead is stored at the server's time, keeps its own in
    /// the field original_ts, and is counted (so a runner's wrong clock
    /// never makes its later lines look out of order).
    #[arg(long, default_value = "5m", value_parser = parse_std_duration)]
    max_clock_skew: std::time::Duration,
    /// How long records are kept (whole days are deleted once past it).
    #[arg(long, default_value = "90d", value_parser = parse_std_duration)]
    retention: std::time::Duration,
    /// Disk the stored parts may take, in bytes; past it the oldest days are
    /// deleted. Unlimited when not given.
    #[arg(long)]
    max_disk_bytes: Option<u64>,
    /// Largest ingest request body, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_BYTES)]
    max_batch_bytes: usize,
    /// Take binary ingest batches (application/x-tailwater-batch, what the
    /// agent sends by default); `--ingest-binary=false` answers them 415,
    /// and agents send JSON instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    ingest_binary: bool,
    /// Most memory one query regex (or `contains` text, or label regex) may
    /// take once compiled, in bytes; larger ones are refused with a 400.
    #[arg(long, default_value_t = tailwater_model::DEFAULT_REGEX_SIZE_LIMIT)]
    regex_size_limit: usize,
    /// The longest line stored whole, in bytes, for apps without their own
    /// max_line_bytes; longer ones are cut and marked.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
    /// Fields one record may carry; more are left out and the record marked.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_FIELDS)]
    max_fields: usize,
    /// Longest label value (version, runner, boot) and request id, in bytes.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_LABEL_BYTES)]
    max_label_bytes: usize,
    /// Longest top-level field key, in bytes; fields with longer keys are
    /// left out and the record marked.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_FIELD_KEY_BYTES)]
    max_field_key_bytes: usize,
    /// Longest token name, in bytes; longer ones are refused with a 400.
    #[arg(long, default_value_t = tailwater_server::access::registry::DEFAULT_MAX_TOKEN_NAME_BYTES)]
    max_token_name_bytes: usize,
    /// Live (neither revoked nor expired) tokens one tenant may have; more
    /// are refused with a 400.
    #[arg(long, default_value_t = tailwater_server::access::registry::DEFAULT_MAX_TOKENS_PER_TENANT)]
    max_tokens_per_tenant: usize,
    /// Apps one tenant may have; more are refused with a 400.
    #[arg(long, default_value_t = tailwater_server::access::registry::DEFAULT_MAX_APPS_PER_TENANT)]
    max_apps_per_tenant: usize,
    /// Lines per second each app may send, for apps without their own
    /// rate_limit_lines_per_sec (429 past it). No limit when not given.
    #[arg(long)]
    app_rate_lines: Option<u64>,
    /// Bytes of text per second each app may send, for apps without their
    /// own rate_limit_bytes_per_sec. No limit when not given.
    #[arg(long)]
    app_rate_bytes: Option<u64>,
    /// Lines per second each runner may send (429 past it). No limit when
    /// not given.
    #[arg(long)]
    runner_rate_lines: Option<u64>,
    /// Bytes of text per second each runner may send. No limit when not
    /// given.
    #[arg(long)]
    runner_rate_bytes: Option<u64>,
    /// Replace what this regex matches before storage (repeatable; named
    /// custom_1, custom_2, … in /metrics; a group named `keep` is kept).
    #[arg(long, value_name = "REGEX")]
    redact: Vec<String>,
    /// Do not apply the default redaction patterns (API keys, tokens, JWTs,
    /// Authorization headers).
    #[arg(long)]
    no_default_redaction: bool,
    /// Let anyone who can reach the server read /metrics (by default it
    /// takes an admin token).
    #[arg(long)]
    public_metrics: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key", env = "TAILWATER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", env = "TAILWATER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Records one Loki API query (`/loki/api/v1/query`, `query_range`,
    /// label and series reads) reads at most; past it, the query is
    /// refused with an error naming this limit.
    #[arg(long, default_value_t = tailwater_server::DEFAULT_LOGQL_MAX_RECORDS)]
    logql_max_records: usize,
    /// `request_start` records one page of `GET /v1/requests` reads at most;
    /// past it, the page hands out a cursor with what it found.
    #[arg(long, default_value_t = tailwater_server::requests::list::DEFAULT_SCAN_MAX)]
    requests_scan_max: usize,
    /// How long a runner that has not ended may be silent (agents send a
    /// heartbeat every 10 s when idle) before it is marked lost.
    #[arg(long, default_value = "60s", value_parser = parse_std_duration)]
    heartbeat_timeout: std::time::Duration,
    /// Runners the runner table keeps; past it, the one heard from longest
    /// ago is forgotten (its logs are kept), counted and logged.
    #[arg(long, default_value_t = tailwater_server::runners::DEFAULT_MAX_RUNNERS)]
    max_runners: usize,
    /// How many records a live tail client may fall behind before the ones
    /// it has not got are skipped; it is told how many, with a cursor.
    #[arg(long, default_value_t = tailwater_server::tail::DEFAULT_TAIL_BUFFER)]
    tail_buffer: u64,
    /// How long a client may take to send a request's head once it starts
    /// (over TLS: from connecting to the end of the handshake); past it the
    /// connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_std_duration)]
    header_read_timeout: std::time::Duration,
    /// How long a connection may wait for its next request (or its first)
    /// before it is closed. Live tails are never cut while they stream.
    #[arg(long, default_value = "60s", value_parser = parse_std_duration)]
    idle_timeout: std::time::Duration,
    /// How long a request body may take to arrive whole once its handler
    /// reads it; past it the request fails (its answer says why) and the
    /// connection closes.
    #[arg(long, default_value = "30s", value_parser = parse_std_duration)]
    body_read_timeout: std::time::Duration,
    /// How long a write may wait on a client that reads nothing (an answer,
    /// a live tail, a WebSocket) before the connection is closed; a tail
    /// client then resumes with Last-Event-ID.
    #[arg(long, default_value = "60s", value_parser = parse_std_duration)]
    write_timeout: std::time::Duration,
    /// Connections open at once, at most (fewer if `ulimit -n` does not
    /// allow them). At the cap a new connection takes the place of the one
    /// waiting longest with no request in progress.
    #[arg(long, default_value_t = tailwater_server::serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Longest request head (request line and headers), in bytes; past it
    /// the answer is 431.
    #[arg(long, default_value_t = tailwater_server::serve::DEFAULT_MAX_HEADER_BYTES)]
    max_header_bytes: usize,
    /// Longest URI (path and query), in bytes; past it the answer is 414.
    #[arg(long, default_value_t = tailwater_server::serve::DEFAULT_MAX_URI_BYTES)]
    max_uri_bytes: usize,
    /// How long after a request's first line its gateway's request_start
    /// naming the caller must be stored. Until then (and half as long
    /// again) callers see none of the request; one with no recorded caller
    /// by then is any caller's of the app. 0s: a request's start must come
    /// in the batch of its first line.
    #[arg(long, default_value = "2s", value_parser = parse_std_duration)]
    request_owner_grace: std::time::Duration,
    /// Record ids (OTLP's log.record.uid) remembered per tenant, so that a
    /// record sent again is stored once; 0 remembers none.
    #[arg(long, default_value_t = tailwater_server::ingest::identity::DEFAULT_DEDUP_UIDS)]
    dedup_uids: usize,
    /// Let drains reach loopback, private and link-local addresses (off:
    /// an app's owner cannot point a drain at this server's network or a
    /// cloud metadata address).
    #[arg(long)]
    drain_allow_private: bool,
    /// A PEM file of certificate authorities drains trust besides the
    /// public web roots: for a receiver whose certificate your own CA
    /// signed.
    #[arg(long, value_name = "PATH")]
    drain_ca_file: Option<std::path::PathBuf>,
    /// Most records one drain delivery holds.
    #[arg(long, default_value_t = DrainSettings::default().batch_records)]
    drain_batch_records: usize,
    /// A drain sends its batch once it holds about this many bytes.
    #[arg(long, default_value_t = DrainSettings::default().batch_bytes)]
    drain_batch_bytes: usize,
    /// Longest a stored record waits for a fuller drain batch.
    #[arg(long, default_value = "1s", value_parser = parse_std_duration)]
    drain_batch_wait: std::time::Duration,
    /// Failed deliveries in a row after which a drain pauses (it says so in
    /// its app's logs; `tailwater drain resume` goes on from its place).
    #[arg(long, default_value_t = DrainSettings::default().max_failures)]
    drain_max_failures: u32,
    /// A drain's first retry delay; it doubles up to --drain-backoff-max,
    /// with jitter, or waits the receiver's Retry-After when longer.
    #[arg(long, default_value = "500ms", value_parser = parse_std_duration)]
    drain_backoff: std::time::Duration,
    /// The longest delay between a drain's retries.
    #[arg(long, default_value = "60s", value_parser = parse_std_duration)]
    drain_backoff_max: std::time::Duration,
    /// One drain delivery's whole time, connecting included.
    #[arg(long, default_value = "30s", value_parser = parse_std_duration)]
    drain_delivery_timeout: std::time::Duration,
    /// Drains one app may have.
    #[arg(long, default_value_t = DrainSettings::default().max_per_app)]
    max_drains_per_app: usize,
    /// Drains one tenant may have, across its apps.
    #[arg(long, default_value_t = DrainSettings::default().max_per_tenant)]
    max_drains_per_tenant: usize,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Distributed mode: nodes meeting on a NATS JetStream cluster.
#[derive(Args, Debug)]
#[command(next_help_heading = "Distributed mode (NATS JetStream)")]
struct ClusterArgs {
    /// Run as a node of a cluster over these NATS servers (JetStream on,
    /// 2.9 or later; comma-separated nats://host:port, with the node's
    /// NATS user as nats://user:password@host:port, or --nats-nkey or
    /// --nats-creds): accepted batches are
    /// published to a replicated stream and every node stores them. Needs
    /// --node and --durability sync.
    #[arg(
        long,
        env = "TAILWATER_NATS",
        value_delimiter = ',',
        requires = "node",
        hide_env_values = true
    )]
    nats: Vec<String>,
    /// The node's NATS user as a creds file (its user JWT and seed, as
    /// `nsc generate creds` writes it) instead of user:password in the
    /// --nats URLs. Only its owner may read it (chmod 600).
    #[arg(
        long,
        env = "TAILWATER_NATS_CREDS",
        value_name = "FILE",
        requires = "nats"
    )]
    nats_creds: Option<PathBuf>,
    /// The node's NATS user as an nkey: a file holding only the user's
    /// seed (SU…, as `nk -gen user -pubout` writes it; the nats-server
    /// configuration names its public key U…). Only its owner may read
    /// it (chmod 600).
    #[arg(
        long,
        env = "TAILWATER_NATS_NKEY",
        value_name = "FILE",
        requires = "nats"
    )]
    nats_nkey: Option<PathBuf>,
    /// This node's name in the cluster: unique, and the same at every
    /// restart (its consumers are named after it).
    #[arg(long, env = "TAILWATER_NODE", requires = "nats")]
    node: Option<String>,
    /// Partitions of the stream (by tenant, app and runner); fixed once
    /// the stream exists: every node must give the same.
    #[arg(long, default_value_t = tailwater_server::cluster::DEFAULT_PARTITIONS)]
    nats_partitions: u32,
    /// Copies JetStream keeps of each batch (1 to 5; 3 survives the loss
    /// of one NATS server).
    #[arg(long, default_value_t = tailwater_server::cluster::DEFAULT_REPLICAS)]
    nats_replicas: usize,
    /// How long a batch waits for JetStream's acknowledgement before the
    /// sender is answered 503 cluster_unavailable (and sends it again).
    #[arg(long, default_value = "10s", value_parser = parse_std_duration)]
    nats_publish_timeout: std::time::Duration,
    /// The stream's replay window by age: a node away longer cannot catch
    /// up from the stream.
    #[arg(long, default_value = "7d", value_parser = parse_std_duration)]
    nats_max_age: std::time::Duration,
    /// The stream's replay window by size, in bytes (each of the
    /// --nats-replicas servers keeps this much).
    #[arg(long, default_value_t = tailwater_server::cluster::DEFAULT_MAX_BYTES)]
    nats_max_bytes: i64,
    /// Batches of one partition a node may hold unacknowledged while it
    /// stores them.
    #[arg(long, default_value_t = tailwater_server::cluster::DEFAULT_MAX_ACK_PENDING)]
    nats_max_ack_pending: i64,
    /// How long a node's heartbeat lasts: a node silent for longer
    /// (stopped, killed, frozen) is taken for gone. It beats 4 times as
    /// often.
    #[arg(long, default_value = "10s", value_parser = parse_std_duration)]
    nats_node_ttl: std::time::Duration,
    /// The most one tenant's agents may hold waiting in its intake stream
    /// on NATS, in bytes (not yet relayed: a rate-limited app's, or while
    /// no node is up); past it their publishes are refused and they keep
    /// the lines in their spools. At most --nats-max-bytes; the same on
    /// every node (each sets it on the streams it opens). Reserved on the
    /// NATS servers' storage for every tenant.
    #[arg(long, default_value_t = tailwater_server::cluster::intake::DEFAULT_TENANT_BYTES)]
    nats_intake_tenant_bytes: i64,
    /// The URL the other nodes reach this one at (http://host:port, or
    /// https:// with --tls-cert), carried in its heartbeat: they repair
    /// gaps from it there. Default: the --listen address, which peers
    /// cannot reach when it is 0.0.0.0 or behind NAT or a container's
    /// port mapping.
    #[arg(
        long,
        env = "TAILWATER_NATS_ADVERTISE",
        value_name = "URL",
        requires = "nats"
    )]
    nats_advertise: Option<String>,
    /// Certificates (PEM: the nodes' own, or the CA that issued them)
    /// this node trusts when it calls its peers over HTTPS, besides the
    /// public roots: for nodes serving --tls-cert certificates that are
    /// self-signed or from a private CA.
    #[arg(
        long,
        env = "TAILWATER_NATS_PEER_CA",
        value_name = "FILE",
        requires = "nats"
    )]
    nats_peer_ca: Option<PathBuf>,
    /// How long a node waits at a stretch the stream dropped before it
    /// read it for a live peer that can fill it in order (with the
    /// stream's ids); past it the node reads on and repairs the gap from a
    /// peer's partitions (with its own ids).
    #[arg(long, default_value = "30s", value_parser = parse_std_duration)]
    nats_fill_wait: std::time::Duration,
}

impl ClusterArgs {
    fn config(self) -> Option<tailwater_server::cluster::ClusterConfig> {
        let node = self.node?;
        if self.nats.is_empty() {
            return None;
        }
        let mut config = tailwater_server::cluster::ClusterConfig::new(self.nats, node);
        config.creds = self.nats_creds;
        config.nkey = self.nats_nkey;
        config.partitions = self.nats_partitions;
        config.replicas = self.nats_replicas;
        config.publish_timeout = self.nats_publish_timeout;
        config.max_age = self.nats_max_age;
        config.max_bytes = self.nats_max_bytes;
        config.max_ack_pending = self.nats_max_ack_pending;
        config.node_ttl = self.nats_node_ttl;
        config.intake_tenant_bytes = self.nats_intake_tenant_bytes;
        config.advertise = self.nats_advertise;
        config.peer_ca = self.nats_peer_ca;
        config.fill_wait = self.nats_fill_wait;
        Some(config)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    Sync,
    Interval,
    #[value(alias = "buffered")]
    None,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<u8> {
    super::init_tracing("info");
    // mimalloc asks for transparent huge pages on its arenas; each page it
    // returns and touches again is then 2 MiB to zero. Without them the
    // store's ingest spends half the system time and a full scan peaks a
    // quarter lower (BENCHMARKS.md). Only the server: the agent's worker
    // would inherit the setting.
    // SAFETY: prctl with integer arguments; it changes no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let mut config = ServerConfig::new(args.data.clone());
    config.listen = args.listen;
    config.bootstrap_token = bootstrap_token();
    config.max_batch_bytes = args.max_batch_bytes;
    config.ingest_binary = args.ingest_binary;
    config.regex_size_limit = args.regex_size_limit;
    config.logql_max_records = args.logql_max_records;
    config.requests_scan_max = args.requests_scan_max;
    config.runners.heartbeat_timeout = args.heartbeat_timeout;
    config.runners.max_runners = args.max_runners;
    config.tail_buffer = args.tail_buffer;
    config.connections = tailwater_server::serve::ConnectionLimits {
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        body_read_timeout: args.body_read_timeout,
        write_timeout: args.write_timeout,
        max_connections: args.max_connections.max(1),
        max_header_bytes: args.max_header_bytes,
        max_uri_bytes: args.max_uri_bytes,
    };
    config.request_owner_grace = args.request_owner_grace;
    config.dedup_uids = args.dedup_uids;
    config.cluster = args.cluster.config();
    config.drains = DrainSettings {
        allow_private: args.drain_allow_private,
        ca_file: args.drain_ca_file,
        batch_records: args.drain_batch_records.max(1),
        batch_bytes: args.drain_batch_bytes.max(1),
        batch_wait: args.drain_batch_wait,
        max_failures: args.drain_max_failures.max(1),
        backoff: args.drain_backoff,
        backoff_max: args.drain_backoff_max.max(args.drain_backoff),
        timeout: args.drain_delivery_timeout,
        max_per_app: args.max_drains_per_app,
        max_per_tenant: args.max_drains_per_tenant,
        ..DrainSettings::default()
    };
    config.store.memtable_max_bytes = args.memtable_max_bytes;
    config.store.wal_spare_max_bytes = args.wal_spare_max_bytes;
    config.store.block_cache_bytes = args.block_cache_bytes;
    config.store.query_threads = args.query_threads.max(1);
    config.store.count_scan_limit = args.count_scan_limit;
    config.store.merge_zstd_level = args.merge_zstd_level;
    config.store.settle_numbers_apart = args.settle_numbers_apart;
    config.count_concurrency = args.count_concurrency.max(1);
    config.store.out_of_order_window = args.out_of_order_window;
    config.store.max_clock_skew = args.max_clock_skew;
    config.retention.max_age = args.retention;
    config.retention.max_total_bytes = args.max_disk_bytes;
    config.store.durability = match args.durability {
        DurabilityArg::Sync => Durability::SyncEachBatch,
        DurabilityArg::Interval => Durability::Interval(args.sync_interval),
        DurabilityArg::None => Durability::Buffered,
    };
    config.limits = IngestLimits {
        max_line_bytes: args.max_line_bytes,
        max_fields: args.max_fields,
        max_label_bytes: args.max_label_bytes,
        max_field_key_bytes: args.max_field_key_bytes,
        app_rate: Rate {
            lines_per_sec: args.app_rate_lines,
            bytes_per_sec: args.app_rate_bytes,
        },
        runner_rate: Rate {
            lines_per_sec: args.runner_rate_lines,
            bytes_per_sec: args.runner_rate_bytes,
        },
    };
    config.registry = tailwater_server::access::registry::RegistryLimits {
        max_token_name_bytes: args.max_token_name_bytes,
        max_tokens_per_tenant: args.max_tokens_per_tenant,
        max_apps_per_tenant: args.max_apps_per_tenant,
    };
    config.redact_defaults = !args.no_default_redaction;
    config.redact = args.redact;
    config.public_metrics = args.public_metrics;
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let server = tailwater_server::start(config).await?;
    println!(
        "tailwater server listening on {} (data in {})",
        server.url(),
        args.data.display()
    );
    if let Some(token) = &server.new_admin_token {
        print_new_token(token);
    }
    server.run_until_signal().await?;
    Ok(0)
}

/// `TAILWATER_BOOTSTRAP_TOKEN`, if set and not empty.
pub fn bootstrap_token() -> Option<String> {
    std::env::var("TAILWATER_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
}

pub fn print_new_token(token: &str) {
    println!("admin token (shown once, stored hashed; keep it safe):\n  {token}");
    println!("use it with:\n  export TAILWATER_TOKEN={token}");
}
