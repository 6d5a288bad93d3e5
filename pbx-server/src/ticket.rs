//! Short-lived tickets for the event feeds, for clients that cannot send an
//! `Authorization` header: browsers open WebSockets and EventSources without one.
//!
//! A client with a key asks `POST /v1/events/ticket` and passes the answer as
//! `?ticket=` on `GET /v1/events/ws` or `GET /v1/events`. A ticket is
//! `v1.<expiry unix seconds>.<role>.<nonce>.<signature>`, the signature an HMAC-SHA256
//! over the rest with a secret derived from the configured API keys: every instance
//! configured with the same keys accepts every other's tickets (behind a load
//! balancer the ticket and the socket may reach different instances), and none can
//! be forged without a key. A ticket lives [`TICKET_TTL`] and is accepted once per
//! process; it is not a key, so a ticket in an access log is worth nothing a minute
//! later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::Role;

/// How long a ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Issues and checks tickets.
pub struct Tickets {
    secret: [u8; 32],
    /// Nonces accepted, with their expiry, so that a ticket is used once.
    used: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets(<secret>)")
    }
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket this server could have issued.
    #[error("the ticket is malformed or its signature is wrong")]
    Invalid,
    /// Issued, but expired.
    #[error("the ticket has expired; ask POST /v1/events/ticket for a new one")]
    Expired,
    /// Issued, and already used.
    #[error("the ticket was used already; ask POST /v1/events/ticket for a new one")]
    Used,
}

impl Tickets {
    /// Tickets signed with a secret derived from `material` (the configured keys).
    pub fn new<'a>(material: impl IntoIterator<Item = &'a str>) -> Self {
        let mut keys: Vec<&str> = material.into_iter().collect();
        keys.sort_unstable();
        let mut hash = Sha256::new();
        hash.update(b"pbx event tickets v1\0");
        for key in keys {
            hash.update(key.as_bytes());
            hash.update([0]);
        }
        Self { secret: hash.finalize().into(), used: Mutex::new(HashMap::new()) }
    }

    fn sign(&self, payload: &str) -> String {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A ticket for `role`, valid from `now` for [`TICKET_TTL`], and its expiry.
    pub fn issue(&self, role: Role, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires = now + chrono::Duration::from_std(TICKET_TTL).unwrap_or_default();
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let payload = format!("v1.{}.{}.{nonce}", expires.timestamp(), role.as_str());
        let signature = self.sign(&payload);
        (format!("{payload}.{signature}"), expires)
    }

    /// The role of a valid, unexpired, unused ticket; using it spends it.
    pub fn redeem(&self, ticket: &str, now: DateTime<Utc>) -> Result<Role, TicketError> {
        let (payload, signature) = ticket.rsplit_once('.').ok_or(TicketError::Invalid)?;
        let expected = self.sign(payload);
        // Constant-time comparison of the signatures.
        if expected.len() != signature.len()
            || expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0
        {
            return Err(TicketError::Invalid);
        }
        let mut parts = payload.split('.');
        let (Some("v1"), Some(expires), Some(role), Some(nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| TicketError::Invalid)?;
        let role = match role {
            "ingest" => Role::Ingest,
            "supervisor" => Role::Supervisor,
            "admin" => Role::Admin,
            _ => return Err(TicketError::Invalid),
        };
        if now.timestamp() >= expires {
            return Err(TicketError::Expired);
        }
        let mut used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        used.retain(|_, exp| *exp > now.timestamp());
        if used.insert(nonce.to_owned(), expires).is_some() {
            return Err(TicketError::Used);
        }
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_ticket_is_redeemed_once_for_its_role() {
        let tickets = Tickets::new(["k1", "k2"]);
        let (ticket, expires) = tickets.issue(Role::Supervisor, now());
        assert_eq!(expires, now() + chrono::Duration::seconds(60));
        assert_eq!(tickets.redeem(&ticket, now()), Ok(Role::Supervisor));
        assert_eq!(tickets.redeem(&ticket, now()), Err(TicketError::Used));
    }

    #[test]
    fn other_instances_with_the_same_keys_accept_it_and_others_do_not() {
        let (ticket, _) = Tickets::new(["k1", "k2"]).issue(Role::Admin, now());
        assert_eq!(Tickets::new(["k2", "k1"]).redeem(&ticket, now()), Ok(Role::Admin));
        assert_eq!(Tickets::new(["k1"]).redeem(&ticket, now()), Err(TicketError::Invalid));
    }

    #[test]
    fn expired_tampered_and_garbage_tickets_are_refused() {
        let tickets = Tickets::new(["k"]);
        let (ticket, _) = tickets.issue(Role::Supervisor, now());
        assert_eq!(tickets.redeem(&ticket, now() + chrono::Duration::seconds(60)), Err(TicketError::Expired));
        let forged = ticket.replace(".supervisor.", ".admin.");
        assert_eq!(tickets.redeem(&forged, now()), Err(TicketError::Invalid));
        for garbage in ["", ".", "v1", "v1.1.admin.n.sig", "a.b.c.d.e.f"] {
            assert_eq!(tickets.redeem(garbage, now()), Err(TicketError::Invalid), "{garbage:?}");
        }
    }
}
