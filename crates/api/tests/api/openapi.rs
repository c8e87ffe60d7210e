//! The OpenAPI document: served, complete, and true to the router.

use axum::http::StatusCode;
use serde_json::Value;

use super::common::*;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn document_is_served_without_a_token_and_describes_every_operation() {
    let env = env().await;
    let (status, doc) = call(&env.state, "GET", "/api/v2/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v2/dags"));
    assert!(paths.contains_key("/api/v2/dags/{dag_id}"));
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in paths {
        assert!(path.starts_with("/api/v2/"), "{path}");
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(operation_ids.insert(id.to_string()), "duplicate {id}");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            // Every operation either needs the bearer token or says it is public.
            let security = op["security"].as_array().expect("security");
            let public = security.iter().all(|s| s.as_object().unwrap().is_empty());
            let known_public = ["/api/v2/version", "/api/v2/monitor/health"];
            assert_eq!(public, known_public.contains(&path.as_str()), "{path}");
        }
    }
    assert_eq!(
        doc["paths"]["/api/v2/dags"]["get"]["operationId"],
        "get_dags"
    );
}

/// Every documented operation is routed: filling its path parameters and calling it as an
/// admin never hits the router's fallback (whose 404 says just "not found").
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let env = env().await;
    let admin = token_for("admin", 60);
    let doc = updraft_api::openapi_document();
    let doc: Value = serde_json::to_value(&doc).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_none() {
                continue;
            }
            let uri = fill_path(path);
            let body = (method != "get" && method != "delete").then(|| serde_json::json!({}));
            let (status, body) =
                call(&env.state, &method.to_uppercase(), &uri, Some(&admin), body).await;
            assert!(
                !(status == StatusCode::NOT_FOUND && body["detail"] == "not found")
                    && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri} is documented but not routed"
            );
        }
    }
}
