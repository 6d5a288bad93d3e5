//! Twilio's request signature on the WebSocket upgrade: `X-Twilio-Signature` =
//! base64(HMAC-SHA1(auth token, the full URL Twilio requested)).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use poem::http::{HeaderMap, Uri};
use sha1::Sha1;

/// The signature Twilio sends for `url` with `auth_token`.
pub fn twilio_signature(auth_token: &str, url: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The URL Twilio requested, rebuilt from the upgrade request.
///
/// - With `public_url` (`wss://pbx.example.com`, as configured in the TwiML), that base
///   followed by the request's path and query: the rule to use behind a proxy that
///   rewrites hosts.
/// - Otherwise the scheme is taken from `X-Forwarded-Proto` (`https` or `wss` -> `wss`,
///   `http` or `ws` -> `ws`) if present, else from the connection (`wss` over TLS,
///   `ws` without); the host from `X-Forwarded-Host` if present, else `Host`.
///
/// The path is the one requested (`/v1/media/twilio`), before any routing.
pub fn expected_url(headers: &HeaderMap, uri: &Uri, tls: bool, public_url: Option<&str>) -> String {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(base) = public_url {
        return format!("{}{path}", base.trim_end_matches('/'));
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let scheme = match first("x-forwarded-proto").map(|p| p.to_ascii_lowercase()).as_deref() {
        Some("https" | "wss") => "wss",
        Some("http" | "ws") => "ws",
        _ if tls => "wss",
        _ => "ws",
    };
    let host = first("x-forwarded-host")
        .or_else(|| first("host"))
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

/// The same URL with and without the scheme's default port, as Twilio's own validators
/// accept both.
fn candidates(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else { return out };
    let default = if scheme == "wss" || scheme == "https" { "443" } else { "80" };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    match authority.rsplit_once(':') {
        Some((host, port)) if port == default => out.push(format!("{scheme}://{host}{path}")),
        Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => out.push(format!("{scheme}://{authority}:{default}{path}")),
    }
    out
}

/// Whether `given` is Twilio's signature of this request.
pub(crate) fn verify(auth_token: &str, given: Option<&str>, url: &str) -> bool {
    let Some(given) = given else { return false };
    let Ok(given) = BASE64.decode(given.trim()) else { return false };
    candidates(url).iter().any(|candidate| {
        let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes a key of any length");
        mac.update(candidate.as_bytes());
        mac.verify_slice(&given).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_base64() {
        // The string of Twilio's webhook-security example (token 12345, the URL with its
        // POST parameters appended in order); the value was computed independently with
        // Python's hmac and hashlib.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2\
                   CallSidCA1234567890ABCDE\
                   Caller+12349013030\
                   Digits1234\
                   From+12349013030\
                   To+18005551212";
        assert_eq!(twilio_signature("12345", url), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn url_rules() {
        let uri: Uri = "/v1/media/twilio".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "pbx.example.com".parse().unwrap());
        assert_eq!(expected_url(&h, &uri, false, None), "ws://pbx.example.com/v1/media/twilio");
        assert_eq!(expected_url(&h, &uri, true, None), "wss://pbx.example.com/v1/media/twilio");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "edge.example.com".parse().unwrap());
        assert_eq!(expected_url(&h, &uri, false, None), "wss://edge.example.com/v1/media/twilio");
        assert_eq!(expected_url(&h, &uri, false, Some("wss://a.example/")), "wss://a.example/v1/media/twilio");
        assert_eq!(candidates("wss://a.example/x"), vec!["wss://a.example/x", "wss://a.example:443/x"]);
        assert_eq!(candidates("wss://a.example:443/x"), vec!["wss://a.example:443/x", "wss://a.example/x"]);
        assert_eq!(candidates("ws://a.example:8080/x"), vec!["ws://a.example:8080/x"]);
    }

    #[test]
    fn verifies() {
        let url = "wss://a.example/v1/media/twilio";
        let sig = twilio_signature("tok", url);
        assert!(verify("tok", Some(&sig), url));
        assert!(verify("tok", Some(&twilio_signature("tok", "wss://a.example:443/v1/media/twilio")), url));
        assert!(!verify("other", Some(&sig), url));
        assert!(!verify("tok", None, url));
        assert!(!verify("tok", Some("not base64!"), url));
    }
}
