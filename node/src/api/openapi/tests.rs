//! The API reference stays true: the checked-in copy equals the generated document, every
//! route the routers register is in it, and its enums match what the node serialises.

use std::collections::BTreeSet;

use serde_json::Value;

use super::json;
use crate::api::error::ErrorCode;

/// The checked-in copy, relative to the node crate.
const CHECKED_IN: &str = "../docs/api/openapi.json";

/// The environment variable that makes the staleness test write the file instead.
const BLESS: &str = "KITH_BLESS";

fn doc() -> Value {
    serde_json::from_str(json()).expect("the document is JSON")
}

#[test]
fn checked_in_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CHECKED_IN);
    if std::env::var_os(BLESS).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("docs/api has a parent")).unwrap();
        std::fs::write(&path, json()).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == json(),
        "docs/api/openapi.json is stale (or missing): the API changed. Regenerate it with\n  \
         {BLESS}=1 cargo test -p kith-node checked_in_document_is_current\n\
         or: cargo run -p kith-node -- openapi > docs/api/openapi.json"
    );
}

/// The `(METHOD, path)` pairs a router file registers with `.route("path", get(a).post(b))`.
fn registered(source: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    // rustfmt breaks a long `.route(` call after its parenthesis.
    let source: String = source
        .split(".route(")
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join(".route(");
    let source = source.as_str();
    for (start, _) in source.match_indices(".route(\"") {
        let rest = &source[start + ".route(\"".len()..];
        let Some(end) = rest.find('"') else { continue };
        let path = rest[..end].to_string();
        // The call's arguments: up to the parenthesis closing `.route(`.
        let mut depth = 1;
        let args: String = rest[end..]
            .chars()
            .take_while(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth > 0
            })
            .collect();
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = args.match_indices(&format!("{method}(")).any(|(i, _)| {
                !args[..i]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if called {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_registered_route_is_documented() {
    let sources = [
        include_str!("../routes.rs"),
        include_str!("../groups.rs"),
        include_str!("../requests.rs"),
        include_str!("../media.rs"),
        include_str!("../web.rs"),
        include_str!("../openapi.rs"),
        include_str!("../history.rs"),
        include_str!("../settings.rs"),
    ];
    let routes: BTreeSet<_> = sources.iter().flat_map(|s| registered(s)).collect();
    assert!(
        routes.len() > 25,
        "the route scan found too few: {routes:?}"
    );
    let doc = doc();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert_eq!(routes, documented, "routes and the OpenAPI document differ");
}

#[test]
fn every_operation_answers_the_shared_errors_and_needs_the_token() {
    let doc = doc();
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["token"], serde_json::json!([]));
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            for status in ["401", "403", "500", "503"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} lacks {status}"
                );
            }
            if op["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} takes JSON but lacks {status}"
                    );
                }
            }
        }
    }
}

#[test]
fn error_codes_in_the_document_are_the_ones_the_api_sends() {
    let doc = doc();
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum");
    assert!(codes.len() >= 28);
    for code in codes {
        let parsed: ErrorCode = serde_json::from_value(code.clone()).expect("a known code");
        assert_eq!(parsed.as_str(), code.as_str().unwrap());
    }
    for code in ["not_admin", "not_member", "too_large", "media_failed"] {
        assert!(codes.iter().any(|c| c == code), "{code} missing");
    }
    assert_eq!(
        doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
}

#[test]
fn every_event_type_is_a_schema() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let text = serde_json::to_string(&schemas["Event"]).unwrap();
    for event in ["message", "status", "presence", "media_progress", "group"] {
        assert!(text.contains(&format!("\"{event}\"")), "{event} missing");
    }
    assert!(serde_json::to_string(&schemas["Lagged"])
        .unwrap()
        .contains("\"lagged\""));
    let stream = &doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"];
    assert!(stream.get("text/event-stream").is_some());
}

#[test]
fn delivery_status_schema_matches_the_wire() {
    use kith_protocol::DeliveryStatus;
    let doc = doc();
    let words = &doc["components"]["schemas"]["DeliveryStatus"]["enum"];
    for status in [
        DeliveryStatus::Pending,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
    ] {
        let wire = serde_json::to_value(status).unwrap();
        let schema = serde_json::to_value(crate::view::StatusSchema::from(status)).unwrap();
        assert_eq!(wire, schema);
        assert!(words.as_array().unwrap().contains(&wire), "{wire} missing");
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            let id = op["operationId"].as_str().expect("an operation id");
            assert!(ids.insert(id.to_string()), "{id} twice");
        }
    }
}
