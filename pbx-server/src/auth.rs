//! API keys with roles, sent as `Authorization: Bearer <key>`.
//!
//! - `ingest`: the PBX side: stream packets, hang up.
//! - `supervisor`: reads: calls, listings, the live event feed.
//! - `admin`: everything, including re-driving FAILED calls.
//!
//! With no keys configured the API is open (and the server refuses to bind a
//! non-loopback address unless told it may run open).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::error::ApiError;

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Stream packets and hang up (the PBX side).
    Ingest,
    /// Read calls and watch events.
    Supervisor,
    /// Everything, including re-drive.
    Admin,
}

impl Role {
    /// The role's name as written in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    /// `true` when a key with this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed `role:key` setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid API key setting {0:?}: expected ROLE:KEY with ROLE one of ingest, supervisor, admin and a non-empty KEY"
)]
pub struct InvalidApiKey(pub String);

/// One configured key: `role:key`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's role.
    pub role: Role,
    /// The secret.
    pub key: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}:<redacted>)", self.role)
    }
}

impl FromStr for ApiKey {
    type Err = InvalidApiKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidApiKey(s.split(':').next().unwrap_or_default().to_owned() + ":...");
        let (role, key) = s.trim().split_once(':').ok_or_else(invalid)?;
        let role = match role {
            "ingest" => Role::Ingest,
            "supervisor" => Role::Supervisor,
            "admin" => Role::Admin,
            _ => return Err(invalid()),
        };
        if key.is_empty() {
            return Err(invalid());
        }
        Ok(ApiKey { role, key: key.to_owned() })
    }
}

/// The configured keys; empty means the API is open.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<String, Role>,
}

impl ApiKeys {
    /// Keys from settings. A key listed twice keeps its last role.
    pub fn new(keys: impl IntoIterator<Item = ApiKey>) -> Self {
        Self { keys: keys.into_iter().map(|k| (k.key, k.role)).collect() }
    }

    /// No keys: every request is allowed.
    pub fn open() -> Self {
        Self::default()
    }

    /// `true` when no keys are configured.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Allows the request when the API is open or its key's role covers `needed`:
    /// 401 without a known key, 403 with a key of another role.
    pub fn authorize(&self, auth: &Auth, needed: Role) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let Auth::Bearer(BearerKey(bearer)) = auth else {
            return Err(ApiError::unauthorized("a valid API key is required: Authorization: Bearer <key>"));
        };
        match self.keys.get(&bearer.token) {
            None => Err(ApiError::unauthorized("unknown API key")),
            Some(role) if role.allows(needed) => Ok(()),
            Some(role) => {
                Err(ApiError::forbidden(format!("this operation needs the {needed} role; the key has {role}")))
            }
        }
    }
}

impl ApiKeys {
    /// The role of the request's key: [`Role::Admin`] when the API is open, 401 without
    /// a known key.
    pub fn role(&self, auth: &Auth) -> Result<Role, ApiError> {
        if self.is_open() {
            return Ok(Role::Admin);
        }
        let Auth::Bearer(BearerKey(bearer)) = auth else {
            return Err(ApiError::unauthorized("a valid API key is required: Authorization: Bearer <key>"));
        };
        self.keys.get(&bearer.token).copied().ok_or_else(|| ApiError::unauthorized("unknown API key"))
    }

    /// The secrets, for deriving the event tickets' signing key.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The credentials of a raw `Authorization` header.
    pub(crate) fn from_header(header: Option<&str>) -> Auth {
        match header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) {
            Some(token) => Auth::Bearer(BearerKey(Bearer { token: token.trim().to_owned() })),
            None => Auth::Anonymous,
        }
    }

    /// [`ApiKeys::authorize`] for a route outside the OpenAPI document, from its raw
    /// `Authorization` header.
    pub(crate) fn authorize_header(&self, header: Option<&str>, needed: Role) -> Result<(), ApiError> {
        self.authorize(&Self::from_header(header), needed)
    }
}

/// An API key sent as `Authorization: Bearer <key>`.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", rename = "ApiKey")]
pub struct BearerKey(Bearer);

/// The credentials of a request, if any (checked by [`ApiKeys::authorize`]).
#[derive(Debug, SecurityScheme)]
pub enum Auth {
    /// A bearer key.
    Bearer(BearerKey),
    /// No credentials.
    #[oai(fallback)]
    Anonymous,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_role_and_key() {
        assert_eq!("admin:s3cr:et".parse(), Ok(ApiKey { role: Role::Admin, key: "s3cr:et".into() }));
        assert!("root:x".parse::<ApiKey>().is_err());
        assert!("ingest:".parse::<ApiKey>().is_err());
        assert!("ingest".parse::<ApiKey>().is_err());
    }

    #[test]
    fn admin_implies_every_role() {
        for needed in [Role::Ingest, Role::Supervisor, Role::Admin] {
            assert!(Role::Admin.allows(needed));
        }
        assert!(!Role::Ingest.allows(Role::Supervisor));
        assert!(!Role::Supervisor.allows(Role::Admin));
    }

    #[test]
    fn never_prints_the_secret() {
        let key: ApiKey = "ingest:topsecret".parse().unwrap();
        assert!(!format!("{key:?}").contains("topsecret"));
        let err = "nobody:topsecret".parse::<ApiKey>().unwrap_err();
        assert!(!err.to_string().contains("topsecret"));
    }
}
