//! The OpenFeature Remote Evaluation Protocol (OFREP) over the live
//! table's flags, so an application using any OpenFeature SDK with the
//! OFREP provider reads the same flags the proxy applies:
//! `POST /ofrep/v1/evaluate/flags/{key}` (one flag) and
//! `POST /ofrep/v1/evaluate/flags` (all of them, with an `ETag` for
//! `If-None-Match`), request `{"context": {"targetingKey": "..."}}`. A
//! boolean flag's value is `true`/`false`, a variant flag's the variant's
//! name; the reason is `SPLIT`, `DISABLED` or `DEFAULT`. A leaf: the admin
//! router calls it.

use http::StatusCode;
use serde_json::{json, Map, Value};
use switchyard_proxy::flags::{Flag, Reason};
use switchyard_proxy::RoutingTable;

/// An OFREP answer: status and body (`None`: 304, no body).
pub struct Answer {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub etag: Option<String>,
}

/// The request body's `context`, or the OFREP error for a body that is
/// not one.
fn context(body: &[u8]) -> Result<Map<String, Value>, (&'static str, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    match value.get("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(context)) => Ok(context.clone()),
        Some(_) => Err(("INVALID_CONTEXT", "context must be a JSON object".into())),
    }
}

/// The flag's answer for this context, or its error code and details.
fn evaluate(flag: &Flag, context: &Map<String, Value>) -> Result<Value, (&'static str, String)> {
    let key = match context.get("targetingKey") {
        Some(Value::String(key)) if !key.is_empty() => Some(key.as_bytes()),
        Some(Value::String(_)) | None | Some(Value::Null) => None,
        Some(_) => return Err(("INVALID_CONTEXT", "targetingKey must be a string".into())),
    };
    let (state, reason) = flag.evaluate(key);
    if key.is_none() && reason != Reason::Disabled {
        return Err((
            "TARGETING_KEY_MISSING",
            format!(
                "flag '{}' buckets units by their key: send context.targetingKey (the value of the key the proxy reads)",
                flag.name
            ),
        ));
    }
    let variant = flag.state_name(state);
    let value = if flag.is_boolean() {
        Value::Bool(state == 0 && reason != Reason::Disabled)
    } else {
        Value::String(variant.to_owned())
    };
    Ok(json!({
        "key": &*flag.name,
        "value": value,
        "reason": reason.as_str(),
        "variant": variant,
        "metadata": { "source": "switchyard" },
    }))
}

fn failure(key: &str, code: &str, details: String) -> Value {
    json!({ "key": key, "errorCode": code, "errorDetails": details })
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub fn single(table: &RoutingTable, key: &str, body: &[u8]) -> Answer {
    let answer = |status, body| Answer {
        status,
        body: Some(body),
        etag: None,
    };
    let context = match context(body) {
        Ok(context) => context,
        Err((code, details)) => {
            return answer(StatusCode::BAD_REQUEST, failure(key, code, details))
        }
    };
    let Some(flag) = table.flag(key) else {
        return answer(
            StatusCode::NOT_FOUND,
            failure(
                key,
                "FLAG_NOT_FOUND",
                format!("no flag '{key}': GET /api/v1/flags lists them"),
            ),
        );
    };
    match evaluate(flag, &context) {
        Ok(value) => answer(StatusCode::OK, value),
        Err((code, details)) => answer(StatusCode::BAD_REQUEST, failure(key, code, details)),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag; `if_none_match` is the
/// client's last `ETag` (the answer is 304 while it still holds).
pub fn bulk(table: &RoutingTable, body: &[u8], if_none_match: Option<&str>) -> Answer {
    let context = match context(body) {
        Ok(context) => context,
        Err((code, details)) => {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                body: Some(json!({ "errorCode": code, "errorDetails": details })),
                etag: None,
            }
        }
    };
    let flags: Vec<Value> = table
        .flags()
        .iter()
        .map(|flag| {
            evaluate(flag, &context)
                .unwrap_or_else(|(code, details)| failure(&flag.name, code, details))
        })
        .collect();
    let body = json!({ "flags": flags });
    // The answer depends on the table and the context only.
    let etag = format!(
        "\"{:016x}\"",
        xxhash_rust::xxh3::xxh3_64(body.to_string().as_bytes())
    );
    if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) {
        return Answer {
            status: StatusCode::NOT_MODIFIED,
            body: None,
            etag: Some(etag),
        };
    }
    Answer {
        status: StatusCode::OK,
        body: Some(body),
        etag: Some(etag),
    }
}
