//! The cluster's message format, partitions, message ids and intake
//! subjects: their one home is the model ([`tailwater_model::cluster`]),
//! shared with the agent; re-exported here for the cluster's modules.

pub use tailwater_model::cluster::*;
