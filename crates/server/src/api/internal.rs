//! The routes only the other nodes of a cluster call, each for a peer
//! filling what the stream dropped before it read it:
//! `GET /internal/v1/cluster/records`, one page of a partition's records,
//! every tenant's (`cluster::repair`), and
//! `GET /internal/v1/cluster/stream-records`, one page of a stretch of the
//! stream's records with their ids (`cluster::stretch`). Only this
//! cluster's node credential opens them (`Authorization: Bearer <node
//! key>`); tenant and admin tokens are refused like any wrong key. A server
//! without `--nats` answers 404, whatever is sent: it has no peers.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use tailwater_model::wire::{RepairCursor, RepairPage, StreamPage};

use super::{no_other_params, take_param, ApiError};
use crate::cluster::{repair, stretch, Cluster};
use crate::AppState;

const TAKES: &str = "partition, tenant, after_ts_ns and after_position";
const STREAM_TAKES: &str = "from_sequence, to_sequence and after";

/// The cluster, once the caller is one of its nodes.
fn node_only<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Cluster, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::not_found(
            "this server runs without --nats: it has no peers, and serves no records to any",
        ));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !repair::is_node_key(&state.registry, offered) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint is for the nodes of this cluster only: they send their node credential, derived from the cluster's shared key; no tenant or admin token opens it",
        ));
    }
    Ok(cluster)
}

fn number(name: &str, text: Option<String>) -> Result<Option<u64>, ApiError> {
    text.map(|text| {
        text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid {name} '{text}': give a whole number of 0 or more"
            ))
        })
    })
    .transpose()
}

pub async fn records(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RepairPage>, ApiError> {
    let cluster = node_only(&state, &headers)?;
    let partitions = cluster.config.partitions;
    let partition =
        number("partition", take_param(&mut pairs, "partition")?)?.ok_or_else(|| {
            ApiError::bad_request(format!(
                "partition is missing: give one of 0 to {}",
                partitions - 1
            ))
        })?;
    let partition = u32::try_from(partition)
        .ok()
        .filter(|partition| *partition < partitions)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid partition {partition}: this cluster has partitions 0 to {}",
                partitions - 1
            ))
        })?;
    let tenant = take_param(&mut pairs, "tenant")?;
    let after_ts_ns = take_param(&mut pairs, "after_ts_ns")?
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid after_ts_ns '{text}': give nanoseconds since the epoch"
                ))
            })
        })
        .transpose()?;
    let after_position = number("after_position", take_param(&mut pairs, "after_position")?)?;
    no_other_params(&pairs, TAKES)?;
    if after_ts_ns.is_some() != after_position.is_some()
        || (after_ts_ns.is_some() && tenant.is_none())
    {
        return Err(ApiError::bad_request(
            "give after_ts_ns and after_position together, with the tenant they are in (as a page's next gives them)",
        ));
    }
    let from = tenant.map(|tenant| RepairCursor {
        tenant,
        after_ts_ns,
        after_position,
    });
    let store = state.store.clone();
    let page =
        tokio::task::spawn_blocking(move || repair::page(&store, partitions, partition, from))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    Ok(Json(RepairPage {
        node: cluster.config.node.clone(),
        ..page
    }))
}

/// One page of the records of stream sequences `from_sequence..=to_sequence`
/// after id `after`, when this node stored that stretch whole at the
/// stream's ids; 409 `not_held` when it did not (asking again will not
/// help: the peer asks another node).
pub async fn stream_records(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<StreamPage>, ApiError> {
    let cluster = node_only(&state, &headers)?;
    let from = number("from_sequence", take_param(&mut pairs, "from_sequence")?)?;
    let to = number("to_sequence", take_param(&mut pairs, "to_sequence")?)?;
    let after = number("after", take_param(&mut pairs, "after")?)?;
    no_other_params(&pairs, STREAM_TAKES)?;
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::bad_request(
            "give from_sequence and to_sequence: the stretch of the stream to read",
        ));
    };
    if from == 0 || to < from || to >= 1 << 46 {
        return Err(ApiError::bad_request(format!(
            "invalid stretch {from}..={to}: give 1 <= from_sequence <= to_sequence, sequences of the stream"
        )));
    }
    let held = state
        .applied
        .as_ref()
        .is_some_and(|applied| applied.holds(from, to));
    if !held {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            format!(
                "node {} has not stored sequences {from} to {to} of the stream whole with the stream's ids: ask another node",
                cluster.config.node
            ),
        ));
    }
    let store = state.store.clone();
    let page = tokio::task::spawn_blocking(move || stretch::page(&store, from, to, after))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(StreamPage {
        node: cluster.config.node.clone(),
        ..page
    }))
}
