//! `GET /v1/cluster`: distributed mode as this node sees it (nodes,
//! partitions, each node's consumer lag). Admin only: it names every node
//! and covers every tenant's traffic. A server without `--nats` answers
//! `{"mode": "embedded"}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tailwater_model::wire::ClusterStatus;

use super::ApiError;
use crate::access::scopes::Principal;
use crate::AppState;

pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ClusterStatus>, ApiError> {
    if !principal.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a {} token cannot read the cluster's status (it covers every tenant): use an admin token",
                principal.scope
            ),
        ));
    }
    let Some(cluster) = &state.cluster else {
        return Ok(Json(ClusterStatus {
            mode: "embedded".to_owned(),
            node: None,
            nodes: Vec::new(),
            partitions: Vec::new(),
        }));
    };
    match crate::cluster::status::status(cluster).await {
        Ok(status) => Ok(Json(status)),
        Err(error) => {
            tracing::warn!(%error, "cannot read the cluster's status");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("cannot read the cluster's status now ({error}): check that a quorum of the NATS servers is up, then ask again"),
            ))
        }
    }
}
