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
            doc.to_string()
        }
        Err(_) => raw.to_owned(),
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
