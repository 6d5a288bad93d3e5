//! [`JsonBody`]: poem-openapi's `Json` request payload, parsed without its detours.
//!
//! `Json<T>` parses every body into a `serde_json::Value` tree and converts the tree
//! into `T`, and it checks the content type by parsing it as a MIME type, which
//! allocates. Skipping both took the single-packet ingest path from 57.8k to 54.7k
//! instructions per request (callgrind, memory store, BENCHMARKS.md).
//!
//! `JsonBody<T>` documents and accepts exactly what `Json<T>` does:
//! - The usual content types are recognised by comparison; any other goes through
//!   the same MIME check as `Json`.
//! - The body is deserialised straight into `T` with serde. If serde refuses it, the
//!   body is parsed again the `Json` way, so a rejected body gets `Json`'s own error
//!   message, and a body serde is stricter about (a repeated key, say) is still
//!   judged by `Json`'s rules. `T`'s serde form must accept nothing its `ParseFromJSON`
//!   refuses; the malformed-input tests hold both to that.

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use serde::de::DeserializeOwned;

/// A JSON request body, parsed straight into `T` (see the module docs).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        const COMMON: [&str; 3] =
            ["application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"];
        COMMON.iter().any(|common| content_type.eq_ignore_ascii_case(common))
            || <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Json<T> as Payload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }
}

impl<T: ParseFromJSON + DeserializeOwned> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = <Json<T> as ParsePayload>::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        if let Ok(value) = serde_json::from_slice::<T>(&data) {
            return Ok(Self(value));
        }
        // Json's judgement and error message, from the same bytes.
        let mut again = RequestBody::new(poem::Body::from_vec(data));
        <Json<T> as ParsePayload>::from_request(request, &mut again).await.map(|Json(value)| Self(value))
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON + DeserializeOwned);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::PacketIn;

    /// Whatever serde accepts as a packet, `Json` accepts too, with the same fields.
    #[test]
    fn serde_accepts_no_packet_json_refuses() {
        let documents = [
            r#"{"sequence":1,"data":"x","timestamp":1.5}"#,
            r#"{"sequence":1,"data":"x","timestamp":2}"#,
            r#"{"sequence":1,"data":"x","timestamp":-0.0}"#,
            r#"{"sequence":-3,"data":"","timestamp":0}"#,
            r#"{"sequence":9223372036854775807,"data":"\u00e9\n","timestamp":1e300}"#,
            r#"{"sequence":9223372036854775808,"data":"x","timestamp":1}"#,
            r#"{"sequence":1.0,"data":"x","timestamp":1}"#,
            r#"{"sequence":1e2,"data":"x","timestamp":1}"#,
            r#"{"sequence":1,"data":"x","timestamp":1,"extra":[1,{"a":null}]}"#,
            r#"{"sequence":1,"sequence":2,"data":"x","timestamp":1}"#,
            r#"{"sequence":1,"data":["x"],"timestamp":1}"#,
            r#"{"sequence":1,"data":{"x":1},"timestamp":1}"#,
            r#"{"sequence":1,"data":"x","timestamp":null}"#,
            r#"{"sequence":"1","data":"x","timestamp":1}"#,
            r#"  {"sequence":1,"data":"x","timestamp":1}  "#,
            r#"{"sequence":1,"data":"x","timestamp":1} trailing"#,
            r#"[{"sequence":1,"data":"x","timestamp":1}]"#,
        ];
        let mut accepted = 0;
        for document in documents {
            let Ok(fast) = serde_json::from_str::<PacketIn>(document) else { continue };
            accepted += 1;
            let value = serde_json::from_str::<serde_json::Value>(document).expect("serde accepted it");
            let slow = PacketIn::parse_from_json(Some(value)).unwrap_or_else(|e| panic!("{document}: {e:?}"));
            assert_eq!(
                (fast.sequence.0, &fast.data, fast.timestamp.0.to_bits()),
                (slow.sequence.0, &slow.data, slow.timestamp.0.to_bits()),
                "{document}"
            );
        }
        // The seven well-formed packets above; serde refuses the rest.
        assert_eq!(accepted, 7);
    }

    #[test]
    fn recognises_json_content_types_like_json_does() {
        type P = JsonBody<i64>;
        for yes in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=latin1",
            "application/problem+json",
        ] {
            assert!(P::check_content_type(yes), "{yes}");
            assert_eq!(P::check_content_type(yes), <Json<i64> as Payload>::check_content_type(yes), "{yes}");
        }
        for no in ["text/plain", "application/xml", "application/jsonx", "json", ""] {
            assert!(!P::check_content_type(no), "{no}");
        }
    }
}
