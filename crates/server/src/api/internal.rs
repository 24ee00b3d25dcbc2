//! `GET /internal/v1/cluster/records`: one page of a partition's records,
//! every tenant's, for a peer repairing a gap (`cluster::repair`). Only
//! this cluster's node credential opens it (`Authorization: Bearer <node
//! key>`); tenant and admin tokens are refused like any wrong key. A server
//! without `--nats` answers 404, whatever is sent: it has no peers.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use tailwater_model::wire::{RepairCursor, RepairPage};

use super::{no_other_params, take_param, ApiError};
use crate::cluster::repair;
use crate::AppState;

const TAKES: &str = "partition, tenant, after_ts_ns and after_position";

pub async fn records(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RepairPage>, ApiError> {
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
    let number = |name: &str, text: Option<String>| {
        text.map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid {name} '{text}': give a whole number of 0 or more"
                ))
            })
        })
        .transpose()
    };
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
