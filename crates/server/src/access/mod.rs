//! Who may do what, and with whose logs: the one home of every access rule.
//!
//! - [`registry`]: tenants, apps and their settings, and API tokens (hashed),
//!   in a snapshot and a journal of changes; readers never wait on writers;
//!   and the key that seals record positions for each tenant.
//! - [`scopes`]: the scope rules: the [`Principal`] a request acts as, what
//!   it may do, and the [`CallerView`] a caller reads through.
//! - [`ownership`]: the recorded-caller rule: whose a request is (the app
//!   and runner that started it, the first `request_start` naming a caller
//!   within `--request-owner-grace`), checked on every record a caller is
//!   sent, by every read path.
//!
//! Dependencies point down: scopes → ownership → registry.

pub mod ownership;
pub mod registry;
pub mod scopes;

pub use scopes::{Action, CallerView, Denied, Principal};
