//! [`Constrained`]: a value whose schema states the constraints pbx-core enforces.
//!
//! poem-openapi's `#[oai(validator(...))]` writes a constraint into the schema *and*
//! enforces it itself, with its own error code and message. pbx-core already enforces
//! these (a call id's characters, a sequence's range, a media format's rates) with
//! codes clients rely on (`invalid_call_id`, `invalid_packet`, `invalid_argument`), and
//! [`super::body::JsonBody`] parses packets with serde, which runs no validator. So the
//! constraints here only *describe*: the value parses exactly as `T` does, the handler
//! validates it through pbx-core as before, and the schema tells a client (and
//! schemathesis, which checks both directions) the truth. The tests in this module and
//! `tests/it/openapi.rs` hold each description to what the core accepts.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use pbx_core::CallState;
use pbx_core::id::MAX_CALL_ID_LEN;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;

/// What a constraint adds to a schema.
pub trait Constraint: Send + Sync + 'static {
    /// Writes the constraint into `schema` (the schema of the underlying type).
    fn describe(schema: &mut MetaSchema);
}

/// A `T` whose schema also states the constraint `C` (see the module docs).
pub struct Constrained<T, C>(pub T, PhantomData<C>);

impl<T, C> Constrained<T, C> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value, PhantomData)
    }
}

impl<T: fmt::Debug, C> fmt::Debug for Constrained<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Clone, C> Clone for Constrained<T, C> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<T: PartialEq, C> PartialEq for Constrained<T, C> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<'de, T: serde::Deserialize<'de>, C> serde::Deserialize<'de> for Constrained<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self::new)
    }
}

impl<T: Type, C: Constraint> Type for Constrained<T, C> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(mut schema) => {
                C::describe(&mut schema);
                MetaSchemaRef::Inline(schema)
            }
            reference => reference,
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_raw_value()
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        self.0.raw_element_iter()
    }
}

impl<T: ParseFromJSON, C: Constraint> ParseFromJSON for Constrained<T, C> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        T::parse_from_json(value).map(Self::new).map_err(ParseError::propagate)
    }
}

impl<T: ToJSON, C: Constraint> ToJSON for Constrained<T, C> {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

impl<T: ParseFromParameter, C: Constraint> ParseFromParameter for Constrained<T, C> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        T::parse_from_parameter(value).map(Self::new).map_err(ParseError::propagate)
    }
}

/// A call id parameter (validated by `CallId::new` in the handler: `invalid_call_id`).
pub type CallIdParam = Constrained<String, CallIdRule>;

/// The characters of a call id, as `pbx_core::CallId` accepts them.
pub const CALL_ID_CHARS: &str = "A-Za-z0-9._:-";

/// A call id: 1 to 128 of `A-Z a-z 0-9 . _ : -` (`pbx_core::CallId`).
#[derive(Debug)]
pub struct CallIdRule;

impl Constraint for CallIdRule {
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(format!("^[{CALL_ID_CHARS}]+$"));
        schema.min_length = Some(1);
        schema.max_length = Some(MAX_CALL_ID_LEN);
    }
}

/// A listing cursor: a call id, or empty for the first page.
#[derive(Debug)]
pub struct CursorRule;

impl Constraint for CursorRule {
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(format!("^[{CALL_ID_CHARS}]*$"));
        schema.max_length = Some(MAX_CALL_ID_LEN);
    }
}

/// A state filter: a state's name, or empty for every state.
#[derive(Debug)]
pub struct StateFilterRule;

impl Constraint for StateFilterRule {
    fn describe(schema: &mut MetaSchema) {
        schema.enum_items = CallState::ALL.iter().map(|s| Value::from(s.as_str())).chain([Value::from("")]).collect();
    }
}

/// A page size: 1 to `MAX_LIST_LIMIT` (1000), 100 when absent (`ListQuery`'s bounds).
#[derive(Debug)]
pub struct PageLimitRule;

impl Constraint for PageLimitRule {
    fn describe(schema: &mut MetaSchema) {
        schema.minimum = Some(1.0);
        schema.maximum = Some(pbx_core::store::MAX_LIST_LIMIT as f64);
        schema.default = Some(Value::from(super::calls::DEFAULT_LIST_LIMIT));
    }
}

/// A packet's sequence: 1 to `i64::MAX` (`pbx_core::Packet`).
#[derive(Debug)]
pub struct SequenceRule;

impl Constraint for SequenceRule {
    fn describe(schema: &mut MetaSchema) {
        schema.minimum = Some(1.0);
    }
}

/// A packet's timestamp: finite and not negative (`pbx_core::Packet`).
#[derive(Debug)]
pub struct TimestampRule;

impl Constraint for TimestampRule {
    fn describe(schema: &mut MetaSchema) {
        schema.minimum = Some(0.0);
    }
}

/// A packet's channel: 0 or 1 (`pbx_core::Packet::on_channel`).
#[derive(Debug)]
pub struct ChannelRule;

impl Constraint for ChannelRule {
    fn describe(schema: &mut MetaSchema) {
        schema.minimum = Some(0.0);
        schema.maximum = Some(1.0);
    }
}

/// The encodings a media format may name, as `pbx_core::media::Encoding` parses them
/// (also in capitals, which the core accepts too).
const ENCODINGS: [&str; 9] = ["mulaw", "ulaw", "pcmu", "alaw", "pcma", "l16", "pcm16", "s16le", "linear16"];

/// A media format: `ENCODING[/RATE[/CHANNELS]]` with a supported rate and 1 or 2
/// channels (`pbx_core::MediaFormat`).
#[derive(Debug)]
pub struct MediaFormatRule;

impl MediaFormatRule {
    /// The pattern: every encoding in lower or upper case, every supported rate.
    pub fn pattern() -> String {
        let encodings: Vec<String> = ENCODINGS.iter().flat_map(|e| [e.to_string(), e.to_ascii_uppercase()]).collect();
        let rates: Vec<String> = pbx_core::media::SAMPLE_RATES.iter().map(u32::to_string).collect();
        format!("^({})(/({})(/[12])?)?$", encodings.join("|"), rates.join("|"))
    }
}

impl Constraint for MediaFormatRule {
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(Self::pattern());
    }
}

#[cfg(test)]
mod tests {
    use pbx_core::{CallId, MediaFormat};

    use super::*;

    /// Every format the pattern describes parses; a few it does not describe are refused
    /// by the core as well.
    #[test]
    fn media_format_pattern_matches_the_core() {
        let pattern = MediaFormatRule::pattern();
        let body = pattern.trim_start_matches('^').trim_end_matches('$');
        let (encodings, rest) = body.split_once(")(").expect("two groups");
        let encodings: Vec<&str> = encodings.trim_start_matches('(').split('|').collect();
        assert_eq!(encodings.len(), 2 * ENCODINGS.len());
        for encoding in encodings {
            for rate in pbx_core::media::SAMPLE_RATES {
                for channels in [1, 2] {
                    let format = format!("{encoding}/{rate}/{channels}");
                    assert!(format.parse::<MediaFormat>().is_ok(), "{format}");
                    assert!(format.len() <= 32, "{format}");
                }
                assert!(format!("{encoding}/{rate}").parse::<MediaFormat>().is_ok());
            }
            assert!(encoding.parse::<MediaFormat>().is_ok());
        }
        assert!(rest.contains("8000") && rest.contains("48000"));
        for refused in ["opus/48000/1", "mulaw/11025/1", "mulaw/8000/3", "mulaw/8000/1/x", ""] {
            assert!(refused.parse::<MediaFormat>().is_err(), "{refused}");
        }
    }

    #[test]
    fn call_id_rule_matches_the_core() {
        assert_eq!(MAX_CALL_ID_LEN, 128);
        let every: String = ('\0'..='\u{ff}').filter(|c| CallId::new(c.to_string()).is_ok()).collect();
        assert_eq!(every, "-.0123456789:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz");
        let listed: String = {
            let mut chars: Vec<char> = ('\0'..='\u{7f}')
                .filter(|c| c.is_ascii_alphanumeric() || CALL_ID_CHARS.trim_start_matches("A-Za-z0-9").contains(*c))
                .collect();
            chars.sort_unstable();
            chars.into_iter().collect()
        };
        assert_eq!(every, listed);
        assert!(CallId::new("a".repeat(MAX_CALL_ID_LEN)).is_ok());
        assert!(CallId::new("a".repeat(MAX_CALL_ID_LEN + 1)).is_err());
    }

    #[test]
    fn state_filter_lists_every_state() {
        let mut schema = MetaSchema::new("string");
        StateFilterRule::describe(&mut schema);
        for state in CallState::ALL {
            assert!(schema.enum_items.contains(&Value::from(state.as_str())));
            assert_eq!(state.as_str().parse::<CallState>().ok(), Some(state));
        }
    }
}
