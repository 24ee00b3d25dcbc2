//! Who is asking, and may they? The scope rules, in one place.
//!
//! Tokens themselves (random, shown once, SHA-256 at rest, compared in
//! constant time, expiry, revocation) live in [`crate::access::registry`]; this
//! module turns a token into a [`Principal`] and decides what it may do.
//!
//! The rules, checked in this order:
//!
//! 1. **Authentication.** No token, an unknown one, an expired one or a
//!    revoked one: 401, whatever the endpoint.
//! 2. **Tenant.** A request acts on the tenant named by `?tenant=` (or the
//!    `tenant` of a new token), else on the token's own tenant (an admin's
//!    is `default`). Only admin may name another tenant; for anyone else
//!    another tenant is 404 `not_found`, exactly as a tenant that does not
//!    exist, so tenants cannot be discovered.
//! 3. **Scope.** What each scope may do in its tenant ([`Principal::allow`]):
//!
//!    | action | admin | owner | ingest | caller |
//!    |---|---|---|---|---|
//!    | ingest | yes | yes | its app only | no |
//!    | read logs (history, tail) | yes | yes | no | one request at a time (`request=`), never a private app; only its app if it has one; once its owner settled (6.) |
//!    | create tenants | yes | no | no | no |
//!    | list tenants | all | its own | no | no |
//!    | change a tenant's defaults | yes | its own | no | no |
//!    | create, list, revoke tokens | yes | its tenant's, never admin tokens | no | no |
//!    | create, list, change apps | yes | yes | no | no |
//!    | read runners (`/v1/runners`) | yes | yes | no | no |
//!    | read a request (`/v1/requests/{id}`, its logs and tail) | yes | yes | no | as read logs, and see 5. and 6. |
//!    | list requests (`/v1/requests`) | yes | yes | no | only those recorded with it (5.), never a private app; only its app if it has one |
//!
//!    Refusals are 403 `forbidden` and say what the token may do.
//! 4. **Private apps.** A caller that names a private app (`app=`, or its
//!    token is bound to one) is refused with 403 `private_logs`; records of
//!    private apps are left out of everything else a caller reads. Privacy
//!    is checked as records are read, so making an app private hides it
//!    from live tails at once.
//! 5. **Recorded callers.** Where the gateway recorded which caller made a
//!    request (`fields.caller` on its `request_start` record: the caller
//!    token's public id), only that caller token reads it: any other caller
//!    gets 404 from `/v1/requests/{id}` and its logs, and no record from
//!    `/v1/logs?request=`, its tail, export or histogram, exactly as for a
//!    request that does not exist. Checked per record, as it leaves
//!    ([`CallerView::judge`]), against the first `request_start` naming a
//!    caller (in ingest order) of the record's own app
//!    ([`crate::access::ownership`]): a start stored after a tail opened applies to
//!    that tail at once, and another app's start decides nothing about
//!    this app's records. Runners of one app are one trust domain (one
//!    ingest token speaks for all of them).
//! 6. **Ownership settles first.** No caller sees a record of a request
//!    whose owner in its app is not settled: by a start naming a caller,
//!    or by the hold (`--request-owner-grace` and half again) passing
//!    since the app's first record of it with none (then any caller of the
//!    app). Until then history, export and histogram leave it out,
//!    `/v1/requests/{id}` is 404, and a live tail holds it back
//!    ([`crate::tail`]). Owners and admins are never held back.

use std::sync::Arc;

use crate::access::ownership::{Recorded, RequestStarts, Settling, Verdict};
use crate::access::registry::{Registry, TokenIdentity, DEFAULT_TENANT};
use tailwater_model::tenancy::Scope;
use tailwater_model::LogRecord;

pub use crate::access::registry::generate_secret as generate_token;

/// Who a request acts as, once its token checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub scope: Scope,
    /// The token's tenant; `None` for admin tokens, which act on every
    /// tenant.
    pub tenant: Option<String>,
    /// The one app an ingest token writes, or a caller token reads.
    pub app: Option<String>,
}

impl From<TokenIdentity> for Principal {
    fn from(identity: TokenIdentity) -> Principal {
        Principal {
            token_id: identity.id,
            scope: identity.scope,
            tenant: identity.tenant,
            app: identity.app,
        }
    }
}

/// What a request wants to do, for [`Principal::allow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Ingest,
    ReadLogs,
    CreateTenant,
    ListTenants,
    UpdateTenant,
    ManageTokens,
    ManageApps,
    ReadRunners,
}

/// A refusal: the API answers 404 or 403 with this message.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// 404: the thing does not exist, or is in a tenant the token cannot
    /// see (the two look the same).
    NotFound(String),
    /// 403 `forbidden`: the token's scope does not allow it.
    Forbidden(String),
    /// 403 `private_logs`: a caller asked for a private app's logs.
    Private(String),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }

    /// The tenant a request acts on: `requested`, or the token's own.
    /// Another tenant than its own is 404 for every scope but admin; a
    /// tenant that does not exist is 404 for everyone.
    pub fn tenant_for(
        &self,
        requested: Option<&str>,
        registry: &Registry,
    ) -> Result<String, Denied> {
        let own = self.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        let tenant = requested.filter(|name| !name.is_empty()).unwrap_or(own);
        if (self.is_admin() || tenant == own) && registry.tenant(tenant).is_some() {
            Ok(tenant.to_owned())
        } else {
            Err(Denied::NotFound(format!(
                "no such tenant '{tenant}': check the name (`tailwater tenant list`)"
            )))
        }
    }

    /// Whether the token's scope allows `action` at all (in its tenant).
    pub fn allow(&self, action: Action) -> Result<(), Denied> {
        use Action::*;
        let allowed = match self.scope {
            Scope::Admin => true,
            Scope::Owner => action != CreateTenant,
            Scope::Ingest => action == Ingest,
            Scope::Caller => action == ReadLogs,
        };
        if allowed {
            return Ok(());
        }
        let can = match self.scope {
            Scope::Admin => "everything",
            Scope::Owner => "everything in its tenant except creating tenants",
            Scope::Ingest => "only send logs (POST /v1/ingest) for its app",
            Scope::Caller => "only read one request's logs (GET /v1/logs?request=ID)",
        };
        let what = match action {
            Ingest => "send logs",
            ReadLogs => "read logs",
            CreateTenant => "create tenants",
            ListTenants => "list tenants",
            UpdateTenant => "change tenants",
            ManageTokens => "manage tokens",
            ManageApps => "manage apps",
            ReadRunners => "read runners",
        };
        Err(Denied::Forbidden(format!(
            "a {} token cannot {what}: it can do {can}; use a token with the right scope",
            self.scope
        )))
    }

    /// An ingest token writes only its own app.
    pub fn allow_ingest_app(&self, app: &str) -> Result<(), Denied> {
        match (&self.scope, &self.app) {
            (Scope::Ingest, Some(own)) if own != app => Err(Denied::Forbidden(format!(
                "this ingest token may only send logs for app '{own}', not '{app}': use a token for '{app}'"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether a token may create a token of `scope`.
    pub fn allow_new_token(&self, scope: Scope) -> Result<(), Denied> {
        self.allow(Action::ManageTokens)?;
        if scope == Scope::Admin && !self.is_admin() {
            return Err(Denied::Forbidden(
                "only an admin token can create admin tokens: ask an admin".into(),
            ));
        }
        Ok(())
    }

    /// Whether this token may see (list, revoke) a token of `scope` in
    /// `tenant` (`None` for admin tokens). Tokens it may not see are 404.
    pub fn may_see_token(&self, scope: Scope, tenant: Option<&str>) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Owner => scope != Scope::Admin && tenant == self.tenant.as_deref(),
            Scope::Ingest | Scope::Caller => false,
        }
    }

    /// For a log read by this token in `tenant`: `None` when it sees every
    /// record, else the [`CallerView`] its records are limited to. Refuses a
    /// caller's read without `request=`, for another app than its own, or
    /// of a private app.
    pub fn log_view(
        &self,
        tenant: &str,
        request: Option<&str>,
        app: Option<&str>,
        registry: &Registry,
        settling: &Arc<Settling>,
    ) -> Result<Option<CallerView>, Denied> {
        self.allow(Action::ReadLogs)?;
        if self.scope != Scope::Caller {
            return Ok(None);
        }
        let Some(request) = request.filter(|request| !request.is_empty()) else {
            return Err(Denied::Forbidden(
                "a caller token reads one request's logs at a time: add request=ID (`tailwater logs --request ID`)".into(),
            ));
        };
        self.allow_caller_app(tenant, app, registry)?;
        Ok(Some(CallerView {
            tenant: tenant.to_owned(),
            app: self.app.clone(),
            token_id: self.token_id.clone(),
            starts: Arc::new(RequestStarts::new(settling.clone(), tenant, request)),
        }))
    }

    /// For a list of requests (`GET /v1/requests`) by this token in
    /// `tenant`: `None` when it sees every request, else the
    /// [`RequestsView`] of a caller, who lists only the requests recorded
    /// with it (rule 5), of its app if it has one, never of a private app.
    pub fn requests_view(
        &self,
        tenant: &str,
        app: Option<&str>,
        registry: &Registry,
    ) -> Result<Option<RequestsView>, Denied> {
        self.allow(Action::ReadLogs)?;
        if self.scope != Scope::Caller {
            return Ok(None);
        }
        self.allow_caller_app(tenant, app, registry)?;
        Ok(Some(RequestsView {
            tenant: tenant.to_owned(),
            app: self.app.clone(),
            token_id: self.token_id.clone(),
        }))
    }

    /// A caller names only its own app (if its token has one), never a
    /// private one.
    fn allow_caller_app(
        &self,
        tenant: &str,
        app: Option<&str>,
        registry: &Registry,
    ) -> Result<(), Denied> {
        if let (Some(own), Some(asked)) = (&self.app, app) {
            if own != asked {
                return Err(Denied::Forbidden(format!(
                    "this caller token reads only app '{own}', not '{asked}': use a token for '{asked}'"
                )));
            }
        }
        if let Some(named) = app.or(self.app.as_deref()) {
            if registry.is_private(tenant, named) {
                return Err(Denied::Private(format!(
                    "the logs of app '{named}' are private: callers cannot read them; ask the tenant's owner"
                )));
            }
        }
        Ok(())
    }
}

/// What a caller token sees of a list of requests: only those whose
/// deciding `request_start` names it (never one settled to anyone: a
/// caller learns other requests only by their id), of its app if it has
/// one, never of a private app.
#[derive(Clone, Debug)]
pub struct RequestsView {
    tenant: String,
    app: Option<String>,
    token_id: String,
}

impl RequestsView {
    /// The caller token's public id: a listed request's deciding start
    /// names it in `fields.caller`.
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// The one app this caller reads, if its token names one.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// Whether this caller lists a request of `app` recorded as `recorded`.
    pub fn lists(&self, app: &str, recorded: &Recorded, registry: &Registry) -> bool {
        self.app.as_deref().is_none_or(|own| own == app)
            && !registry.is_private(&self.tenant, app)
            && *recorded == Recorded::Caller(self.token_id.clone())
    }
}

/// What a caller token sees of a log read: records of the one request it
/// reads, of its app (if it has one), never of a private app, and only
/// where that app's request was recorded with this caller or none.
#[derive(Clone)]
pub struct CallerView {
    tenant: String,
    app: Option<String>,
    /// The caller token's public id.
    token_id: String,
    /// The request read, and its apps' recorded callers as found so far.
    starts: Arc<RequestStarts>,
}

impl std::fmt::Debug for CallerView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CallerView")
            .field("tenant", &self.tenant)
            .field("app", &self.app)
            .field("token_id", &self.token_id)
            .field("request", &self.starts.request_id())
            .finish()
    }
}

impl CallerView {
    /// Whether the record is shown now, by every read of records that
    /// cannot wait (history, export, histogram): a record of a request
    /// whose ownership is not settled is not. Blocking, as
    /// [`CallerView::judge`].
    pub fn sees(&self, record: &LogRecord, registry: &Registry) -> bool {
        self.judge(record, registry) == Verdict::Show
    }

    /// What this caller gets of a record, checked per record as it leaves
    /// (a live tail holds a [`Verdict::Hold`] back and asks again):
    /// privacy changes and a `request_start` stored after the read began
    /// apply at once. Blocking: may read the store (see
    /// [`RequestStarts::recorded`]).
    pub fn judge(&self, record: &LogRecord, registry: &Registry) -> Verdict {
        if record.request_id.as_deref() != Some(self.starts.request_id())
            || !self.sees_app(&record.app, registry)
        {
            return Verdict::Hide;
        }
        self.starts.recorded(&record.app).verdict(&self.token_id)
    }

    /// Whether this caller may read the request as `app` holds it now:
    /// records of `app` visible to it, and `app`'s request settled to this
    /// caller or to anyone. Blocking, as [`CallerView::sees`].
    pub fn sees_request_of(&self, app: &str, registry: &Registry) -> bool {
        self.sees_app(app, registry) && self.starts.recorded(app).admits(&self.token_id)
    }

    /// The request this caller reads.
    pub fn request_id(&self) -> &str {
        self.starts.request_id()
    }

    /// Whether this caller is shown its request's records of `app` now:
    /// what [`CallerView::sees`] answers for each of them, asked once for
    /// all (a count judges apps, not records). Blocking, as
    /// [`CallerView::sees`].
    pub fn shows_request_in(&self, app: &str, registry: &Registry) -> bool {
        self.sees_app(app, registry)
            && self.starts.recorded(app).verdict(&self.token_id) == Verdict::Show
    }

    /// Whether records of `app` are visible to this caller.
    pub fn sees_app(&self, app: &str, registry: &Registry) -> bool {
        self.app.as_deref().is_none_or(|own| own == app) && !registry.is_private(&self.tenant, app)
    }
}
