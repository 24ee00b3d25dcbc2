//! Tenants and apps: made, changed, listed, and the names and settings
//! they may have.

use std::collections::HashMap;

use jiff::Timestamp;
use tailwater_model::tenancy::{AppInfo, AppPatch, AppSettings, NewApp, TenantInfo, TenantPatch};

use super::*;

impl Registry {
    pub fn tenants(&self) -> Vec<TenantInfo> {
        self.read()
            .state
            .tenants
            .iter()
            .map(|(name, tenant)| tenant.info(name))
            .collect()
    }

    pub fn tenant(&self, name: &str) -> Option<TenantInfo> {
        self.read()
            .state
            .tenants
            .get(name)
            .map(|tenant| tenant.info(name))
    }

    pub fn create_tenant(
        &self,
        name: &str,
        private_logs: bool,
    ) -> Result<TenantInfo, RegistryError> {
        validate_tenant_name(name)?;
        self.change(|loaded| {
            if loaded.state.tenants.contains_key(name) {
                return Err(RegistryError::Conflict(format!(
                    "tenant '{name}' already exists: pick another name"
                )));
            }
            let tenant = Tenant::new(private_logs);
            let change = Change::Tenant {
                name: name.to_owned(),
                created: tenant.created,
                private_logs,
            };
            Ok((Some(change), tenant.info(name)))
        })
    }

    /// Changes the tenant's defaults for new apps; existing apps keep theirs.
    pub fn update_tenant(
        &self,
        name: &str,
        patch: &TenantPatch,
    ) -> Result<TenantInfo, RegistryError> {
        self.change(|loaded| {
            let tenant = loaded
                .state
                .tenants
                .get(name)
                .ok_or_else(|| no_such_tenant(name))?;
            let mut tenant = Tenant::clone(tenant);
            let Some(private) = patch.private_logs else {
                return Ok((None, tenant.info(name)));
            };
            tenant.private_logs = private;
            let change = Change::Tenant {
                name: name.to_owned(),
                created: tenant.created,
                private_logs: private,
            };
            Ok((Some(change), tenant.info(name)))
        })
    }

    // --- apps ---

    pub fn apps(&self, tenant: &str) -> Result<Vec<AppInfo>, RegistryError> {
        let loaded = self.read();
        let found = loaded
            .state
            .tenants
            .get(tenant)
            .ok_or_else(|| no_such_tenant(tenant))?;
        Ok(found
            .apps
            .iter()
            .map(|(name, app)| app.info(tenant, name))
            .collect())
    }

    pub fn app(&self, tenant: &str, name: &str) -> Option<AppInfo> {
        let loaded = self.read();
        let app = loaded.state.tenants.get(tenant)?.apps.get(name)?;
        Some(app.info(tenant, name))
    }

    /// Creates an app; what `new` leaves out comes from the tenant's
    /// defaults.
    pub fn create_app(&self, tenant: &str, new: &NewApp) -> Result<AppInfo, RegistryError> {
        validate_app_name(&new.name)?;
        self.change(|loaded| {
            let found = loaded
                .state
                .tenants
                .get(tenant)
                .ok_or_else(|| no_such_tenant(tenant))?;
            if found.apps.contains_key(&new.name) {
                return Err(RegistryError::Conflict(format!(
                    "app '{}' already exists: change it with PATCH /v1/apps/{} (`tailwater app set`)",
                    new.name, new.name
                )));
            }
            let max = self.limits.max_apps_per_tenant;
            if found.apps.len() >= max {
                return Err(self.refuse(
                    tenant,
                    TOO_MANY_APPS,
                    format!("tenant '{tenant}' has {} apps, the most allowed (--max-apps-per-tenant {max}): send logs under an existing app name", found.apps.len()),
                ));
            }
            let app = App {
                created: Timestamp::now(),
                settings: AppSettings {
                    private_logs: new.private_logs.unwrap_or(found.private_logs),
                    retention_days: new.retention_days,
                    max_line_bytes: new.max_line_bytes,
                    rate_limit_lines_per_sec: new.rate_limit_lines_per_sec,
                    rate_limit_bytes_per_sec: new.rate_limit_bytes_per_sec,
                },
            };
            validate_settings(&app.settings)?;
            let info = app.info(tenant, &new.name);
            let change = Change::App {
                tenant: tenant.to_owned(),
                name: new.name.clone(),
                app,
            };
            Ok((Some(change), info))
        })
    }

    pub fn update_app(
        &self,
        tenant: &str,
        name: &str,
        patch: &AppPatch,
    ) -> Result<AppInfo, RegistryError> {
        self.change(|loaded| {
            let mut app = loaded
                .state
                .tenants
                .get(tenant)
                .ok_or_else(|| no_such_tenant(tenant))?
                .apps
                .get(name)
                .ok_or_else(|| no_such_app(name))?
                .clone();
            patch.apply(&mut app.settings);
            validate_settings(&app.settings)?;
            let info = app.info(tenant, name);
            let change = Change::App {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                app,
            };
            Ok((Some(change), info))
        })
    }

    /// Makes sure `app` exists in `tenant`, creating it with the tenant's
    /// defaults when it does not (ingest does this: agents need no prior
    /// step).
    pub fn ensure_app(&self, tenant: &str, app: &str) -> Result<(), RegistryError> {
        if self.app(tenant, app).is_some() {
            return Ok(());
        }
        let new = NewApp {
            name: app.to_owned(),
            ..NewApp::default()
        };
        match self.create_app(tenant, &new) {
            Ok(_) | Err(RegistryError::Conflict(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Whether callers are kept out of `app`'s logs. An app not registered
    /// (its records predate the registry) follows its tenant's default.
    pub fn is_private(&self, tenant: &str, app: &str) -> bool {
        let loaded = self.read();
        match loaded.state.tenants.get(tenant) {
            None => true,
            Some(found) => found
                .apps
                .get(app)
                .map_or(found.private_logs, |app| app.settings.private_logs),
        }
    }

    /// Apps with a retention of their own, for the store's retention.
    pub fn app_retention(&self) -> HashMap<(String, String), std::time::Duration> {
        let loaded = self.read();
        let mut ages = HashMap::new();
        for (tenant_name, tenant) in &loaded.state.tenants {
            for (app_name, app) in &tenant.apps {
                if let Some(days) = app.settings.retention_days {
                    ages.insert(
                        (tenant_name.clone(), app_name.clone()),
                        std::time::Duration::from_secs(u64::from(days) * 24 * 60 * 60),
                    );
                }
            }
        }
        ages
    }
}

pub(super) fn no_such_app(name: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "no such app '{name}': create it with POST /v1/apps (`tailwater app create`)"
    ))
}

/// Tenant names: 1 to 63 of `a-z 0-9 - _`, starting with a letter or digit.
pub fn validate_tenant_name(name: &str) -> Result<(), RegistryError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid tenant name '{name}': use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

/// App names: what agents send; not empty, at most 200 bytes, no control
/// characters.
pub fn validate_app_name(name: &str) -> Result<(), RegistryError> {
    if name.trim().is_empty()
        || name.len() > MAX_APP_NAME_BYTES
        || name.chars().any(char::is_control)
    {
        return Err(RegistryError::Invalid(format!(
            "invalid app name '{}': use 1 to {MAX_APP_NAME_BYTES} bytes without control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}

pub(super) fn validate_settings(settings: &AppSettings) -> Result<(), RegistryError> {
    for (name, value) in [
        ("retention_days", settings.retention_days.map(u64::from)),
        ("max_line_bytes", settings.max_line_bytes),
        (
            "rate_limit_lines_per_sec",
            settings.rate_limit_lines_per_sec,
        ),
        (
            "rate_limit_bytes_per_sec",
            settings.rate_limit_bytes_per_sec,
        ),
    ] {
        if value == Some(0) {
            return Err(RegistryError::Invalid(format!(
                "{name} must be at least 1: leave it out (or null) for the server's default"
            )));
        }
    }
    Ok(())
}
