//! The OpenAPI document as `/openapi.json` serves it: poem-openapi's, with one
//! redundancy removed that client generators trip over.
//!
//! poem-openapi describes a documented field of a named type as
//! `{"description": d, "allOf": [{"$ref": T}, {"description": d}]}`: the second
//! member only repeats what the field's schema says already. `openapi-python-client`
//! refuses `allOf` over an enum with such a member ("Cannot take allOf a non-object")
//! and drops every model that has one. Removing members that repeat their parent
//! leaves `{"description": d, "allOf": [{"$ref": T}]}`, which means the same and which
//! generators read.

use serde_json::Value;

/// `raw` (poem-openapi's document) with the redundant `allOf` members removed; `raw`
/// itself if it is not JSON.
pub(crate) fn served_document(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(mut doc) => {
            tidy(&mut doc);
            describe_event_streams(&mut doc);
            unsigned_minimums(&mut doc);
            doc.to_string()
        }
        Err(_) => raw.to_owned(),
    }
}

/// poem-openapi describes a `text/event-stream` answer as an array of its items,
/// which no event matches. OpenAPI 3.0 tools (schemathesis among them) read the
/// media type's schema as the schema of one event: its `id`, `event` and `data`
/// fields, `data` being the JSON of one item (`contentSchema`).
fn describe_event_streams(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
        for response in responses.values_mut() {
            let Some(schema) = response.pointer_mut("/content/text~1event-stream/schema") else { continue };
            let Some(item) = schema.get("items").cloned() else { continue };
            *schema = serde_json::json!({
                "type": "object",
                "description": "One Server-Sent Event; `data` is the JSON of one message.",
                "required": ["data"],
                "properties": {
                    "id": { "type": "string", "description": "The event id: send it back as Last-Event-ID." },
                    "event": { "type": "string", "description": "The message's type." },
                    "data": { "type": "string", "contentMediaType": "application/json", "contentSchema": item },
                    "retry": { "type": "integer" }
                }
            });
        }
    }
}

/// poem-openapi writes `u64` and `u32` as `format: uint64` / `uint32` without bounds,
/// which validators do not know; the server refuses what does not fit, so say so.
fn unsigned_minimums(value: &mut Value) {
    match value {
        Value::Object(schema) => {
            let maximum = match schema.get("format").and_then(Value::as_str) {
                Some("uint64") => Some(Value::from(u64::MAX)),
                Some("uint32") => Some(Value::from(u32::MAX)),
                Some("uint16") => Some(Value::from(u16::MAX)),
                Some("uint8") => Some(Value::from(u8::MAX)),
                _ => None,
            };
            if let Some(maximum) = maximum {
                schema.entry("minimum").or_insert(Value::from(0));
                schema.entry("maximum").or_insert(maximum);
            }
            schema.values_mut().for_each(unsigned_minimums);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_minimums),
        _ => {}
    }
}

/// Removes, everywhere in `value`, each inline `allOf` member whose every entry its
/// parent schema holds too.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(schema) => {
            if let Some(Value::Array(members)) = schema.get("allOf") {
                let parent = schema.clone();
                let kept: Vec<Value> = members
                    .iter()
                    .filter(|member| {
                        let Value::Object(entries) = member else { return true };
                        entries.contains_key("$ref")
                            || entries.is_empty()
                            || !entries.iter().all(|(k, v)| k != "allOf" && parent.get(k) == Some(v))
                    })
                    .cloned()
                    .collect();
                schema.insert("allOf".into(), Value::Array(kept));
            }
            schema.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn removes_members_that_repeat_their_parent() {
        let raw = json!({"properties": {
            "order": {"description": "d", "allOf": [{"$ref": "#/x/Order"}, {"description": "d"}]},
            "lease": {"description": "l", "nullable": true,
                      "allOf": [{"$ref": "#/x/Lease"}, {"description": "l", "nullable": true}]},
            "other": {"allOf": [{"$ref": "#/x/A"}, {"description": "not the parent's"}]},
        }});
        let served: Value = serde_json::from_str(&served_document(&raw.to_string())).unwrap();
        assert_eq!(
            served,
            json!({"properties": {
                "order": {"description": "d", "allOf": [{"$ref": "#/x/Order"}]},
                "lease": {"description": "l", "nullable": true, "allOf": [{"$ref": "#/x/Lease"}]},
                "other": {"allOf": [{"$ref": "#/x/A"}, {"description": "not the parent's"}]},
            }})
        );
    }
}
