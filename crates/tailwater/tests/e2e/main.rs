//! End-to-end tests: the real `tailwater` binary, real child processes and
//! signals, a real server on loopback with its data on disk.

mod common;

mod agent;
mod agent_nats;
mod api;
mod around;
mod binary_ingest;
mod cli;
mod cluster;
mod cluster_docs;
mod cluster_faults;
mod connections;
mod demo;
mod dev;
mod disk_full;
mod drains;
mod export;
mod failover;
mod faults;
mod limits;
mod logs;
mod multiline;
mod order;
mod readme;
mod requests;
mod requests_list;
mod restarts;
mod scopes;
mod shipping;
mod spool;
mod supervisor;
mod tenancy;
mod terminal;
mod tour;
