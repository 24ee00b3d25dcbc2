//! An app's drains: `/v1/apps/{app}/drains`.

use tailwater_model::wire::{percent_encode, CreatedDrain, DrainInfo, NewDrain};

use crate::{tenant_query, Client, ClientError};

impl Client {
    fn drains_path(app: &str, rest: &str) -> String {
        format!("/v1/apps/{}/drains{rest}", percent_encode(app))
    }

    /// `POST /v1/apps/{app}/drains`: the new drain and its secret (shown
    /// this once).
    pub async fn create_drain(
        &self,
        tenant: Option<&str>,
        app: &str,
        new: &NewDrain,
    ) -> Result<CreatedDrain, ClientError> {
        let path = Self::drains_path(app, "");
        self.json(tenant_query(self.request(reqwest::Method::POST, &path), tenant).json(new))
            .await
    }

    /// `GET /v1/apps/{app}/drains`.
    pub async fn drains(
        &self,
        tenant: Option<&str>,
        app: &str,
    ) -> Result<Vec<DrainInfo>, ClientError> {
        let path = Self::drains_path(app, "");
        self.json(tenant_query(
            self.request(reqwest::Method::GET, &path),
            tenant,
        ))
        .await
    }

    /// `POST …/drains/{id}/pause` (`resume: false`) or `…/resume`.
    pub async fn pause_drain(
        &self,
        tenant: Option<&str>,
        app: &str,
        id: &str,
        resume: bool,
    ) -> Result<DrainInfo, ClientError> {
        let action = if resume { "resume" } else { "pause" };
        let path = Self::drains_path(app, &format!("/{}/{action}", percent_encode(id)));
        self.json(tenant_query(
            self.request(reqwest::Method::POST, &path),
            tenant,
        ))
        .await
    }

    /// `DELETE …/drains/{id}`.
    pub async fn delete_drain(
        &self,
        tenant: Option<&str>,
        app: &str,
        id: &str,
    ) -> Result<DrainInfo, ClientError> {
        let path = Self::drains_path(app, &format!("/{}", percent_encode(id)));
        self.json(tenant_query(
            self.request(reqwest::Method::DELETE, &path),
            tenant,
        ))
        .await
    }
}
