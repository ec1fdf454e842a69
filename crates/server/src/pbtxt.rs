//! Triton's config.pbtxt (protobuf text format of `inference.ModelConfig`)
//! and its JSON form, read and written through prost-reflect over our copy
//! of the supported fields (`proto/model_config.proto`).
//!
//! A field Triton has but this server does not implement is absent from the
//! descriptor, so the parser refuses it, naming the field and its line.

use crate::pb;
use miette::Diagnostic;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;

/// The JSON mapping Triton's endpoints use: proto field names, every field
/// (defaults included), 64-bit integers as numbers, enums by name.
const TRITON_JSON: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false)
    .stringify_64_bit_integers(false);

/// Parses config.pbtxt text into Triton's JSON form of the config.
/// The error names the line and the field at fault.
pub fn parse_pbtxt(text: &str) -> Result<Value, String> {
    let text = &colon_before_lists(text);
    let msg =
        DynamicMessage::parse_text_format(pb::model_config_descriptor(), text).map_err(|e| {
            let line = e
                .labels()
                .and_then(|mut l| l.next())
                .map(|l| format!("line {}: ", line_of(text, l.offset())))
                .unwrap_or_default();
            format!("config.pbtxt {line}{}", explain(&e.to_string()))
        })?;
    to_json(&msg)
}

/// Checks a JSON config (the `config` parameter of a load request) against
/// the supported fields and returns it in the normalized JSON form.
pub fn check_json(value: &Value) -> Result<Value, String> {
    let msg = DynamicMessage::deserialize(pb::model_config_descriptor(), value)
        .map_err(|e| format!("config: {}", explain(&e.to_string())))?;
    to_json(&msg)
}

/// Renders a config (any JSON form) with Triton's JSON mapping, dropping
/// fields this server does not know.
pub fn normalize_json(value: &Value) -> Result<Value, String> {
    to_json(&lenient(value)?)
}

/// The gRPC form of a config given in JSON, fields unknown here dropped.
pub fn json_to_proto(value: &Value) -> Result<pb::ModelConfig, String> {
    let bytes = lenient(value)?.encode_to_vec();
    pb::ModelConfig::decode(bytes.as_slice()).map_err(|e| format!("config does not encode: {e}"))
}

fn lenient(value: &Value) -> Result<DynamicMessage, String> {
    let opts = DeserializeOptions::new().deny_unknown_fields(false);
    DynamicMessage::deserialize_with_options(pb::model_config_descriptor(), value, &opts)
        .map_err(|e| format!("config: {e}"))
}

fn to_json(msg: &DynamicMessage) -> Result<Value, String> {
    msg.serialize_with_options(serde_json::value::Serializer, &TRITON_JSON)
        .map_err(|e| format!("config does not serialize: {e}"))
}

/// Turns the parser's "field 'x' not found for message 'y'" into advice.
fn explain(err: &str) -> String {
    match err
        .strip_prefix("field '")
        .and_then(|r| r.split_once("' not found for message '"))
    {
        Some((field, message)) => format!(
            "field '{field}' (in {}) is not supported by metal-mps serve, or is misspelled",
            message.trim_end_matches(['\'', '`'])
        ),
        None => match err
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
        {
            Some((field, _)) => {
                format!("field '{field}' is not supported by metal-mps serve, or is misspelled")
            }
            None => err.to_string(),
        },
    }
}

/// Protobuf's C++ text format (which Triton uses) lets a list of messages
/// follow its field name without a colon (`input [ { ... } ]`); prost-reflect
/// wants `input: [ ... ]`. Inserts the colon after a field name directly
/// followed by `[`, outside strings and comments. Lines are unchanged.
fn colon_before_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    // Whether the last significant token was an identifier (a field name).
    let mut after_ident = false;
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                out.push(c);
                for c in chars.by_ref() {
                    out.push(c);
                    if c == '\n' {
                        break;
                    }
                }
                continue;
            }
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c || d == '\n' {
                        break;
                    }
                }
                after_ident = false;
                continue;
            }
            '[' if after_ident => out.push_str(": ["),
            c if c.is_alphanumeric() || c == '_' || c == '.' => {
                out.push(c);
                after_ident = c.is_alphabetic() || c == '_' || after_ident;
                continue;
            }
            c if c.is_whitespace() => {
                out.push(c);
                continue;
            }
            c => out.push(c),
        }
        after_ident = false;
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
name: "simple_cnn"
backend: "metal_mps"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
version_policy: { specific: { versions: [1, 3] } }
parameters { key: "precision" value: { string_value: "fp16" } }
"#;

    #[test]
    fn parses_a_triton_config() {
        let v = parse_pbtxt(CONFIG).unwrap();
        assert_eq!(v["name"], "simple_cnn");
        assert_eq!(v["max_batch_size"], 8);
        assert_eq!(v["input"][0]["dims"], serde_json::json!([3, 224, 224]));
        assert_eq!(v["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(v["instance_group"][0]["kind"], "KIND_CPU");
        assert_eq!(v["dynamic_batching"]["max_queue_delay_microseconds"], 100);
        assert_eq!(
            v["version_policy"]["specific"]["versions"],
            serde_json::json!([1, 3])
        );
        assert_eq!(v["parameters"]["precision"]["string_value"], "fp16");
    }

    #[test]
    fn lists_without_colon_parse_and_strings_are_untouched() {
        assert_eq!(
            colon_before_lists("input [ { name: \"a [b\" } ] # x [y\ndims: [1]"),
            "input : [ { name: \"a [b\" } ] # x [y\ndims: [1]"
        );
        assert_eq!(
            colon_before_lists("kind: KIND_CPU\ncount: 1"),
            "kind: KIND_CPU\ncount: 1"
        );
    }

    #[test]
    fn unsupported_field_is_named_with_its_line() {
        let e = parse_pbtxt("name: \"m\"\nsequence_batching { }\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("'sequence_batching'"),
            "{e}"
        );
        let e = parse_pbtxt("input [ { name: \"x\" reshape: { shape: [1] } } ]").unwrap_err();
        assert!(e.contains("'reshape'"), "{e}");
    }

    #[test]
    fn json_checks_and_converts() {
        let v = parse_pbtxt(CONFIG).unwrap();
        assert_eq!(check_json(&v).unwrap(), v);
        let e =
            check_json(&serde_json::json!({"name": "m", "ensemble_scheduling": {}})).unwrap_err();
        assert!(e.contains("ensemble_scheduling"), "{e}");
        let p = json_to_proto(
            &serde_json::json!({"name": "m", "optimization": {}, "max_batch_size": "4"}),
        )
        .unwrap();
        assert_eq!((p.name.as_str(), p.max_batch_size), ("m", 4));
    }
}
