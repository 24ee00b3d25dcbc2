//! A batch the store cannot take for now, through no fault of the sender:
//! a full disk or a stalled store, or the one partition it would go to
//! cannot be written. Nothing is lost by sending it again after a while:
//! records already stored are recognised by their sequence numbers and not
//! stored twice.

use std::time::Duration;

use tailwater_store::StoreError;

/// How long a sender is asked to wait (`Retry-After`) before it sends the
/// batch again.
pub const STORE_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why, in the words every protocol's answer carries; the detail (which
/// may name another tenant's files) stays in the server's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The disk (or a quota) is full: HTTP 507.
    DiskFull,
    /// This app's records of one day cannot be written for now; every
    /// other app goes on being stored: HTTP 503.
    Unwritable,
    /// The store cannot take writes for now: HTTP 503.
    Stalled,
    /// Distributed mode: the NATS cluster did not acknowledge the batch
    /// (no quorum, a leader being elected, unreachable): HTTP 503.
    Cluster,
}

impl Unavailable {
    /// The refusal `error` is, when sending again later can succeed.
    pub fn of(error: &StoreError) -> Option<Unavailable> {
        match error {
            error if is_disk_full(error) => Some(Unavailable::DiskFull),
            StoreError::PartitionUnwritable { .. } => Some(Unavailable::Unwritable),
            StoreError::Stalled(_) => Some(Unavailable::Stalled),
            _ => None,
        }
    }

    /// The refusal's reason, as metrics and error bodies name it.
    pub fn code(self) -> &'static str {
        match self {
            Unavailable::DiskFull => "disk_full",
            Unavailable::Unwritable => "unwritable",
            Unavailable::Stalled => "store_stalled",
            Unavailable::Cluster => "cluster_unavailable",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Unavailable::DiskFull => "the server's disk is full: send the batch again after Retry-After (the server's operator must free space)",
            Unavailable::Unwritable => "this app's records of that day cannot be written to disk for now (the server's log says why; other apps are not affected): send the batch again after Retry-After",
            Unavailable::Stalled => "the server cannot store records for now (its log says why): send the batch again after Retry-After",
            Unavailable::Cluster => "the server's NATS cluster did not acknowledge the batch (its log says why): send the batch again after Retry-After, to this server or another",
        }
    }

    pub fn retry_after(self) -> Duration {
        STORE_UNAVAILABLE_RETRY_AFTER
    }
}

/// Whether `error` comes, at any depth, from a full disk (or quota).
pub fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        let io = error.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))) {
            return true;
        }
        next = error.source();
    }
    false
}
