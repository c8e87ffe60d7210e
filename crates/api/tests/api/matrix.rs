//! The role matrix: every documented operation × anonymous and every role. The expected
//! minimum role of each operation is written out here, from Airflow's permission model, and
//! independently of how the server derives it; an operation missing from the table fails the
//! test, so a new route must be classified before it lands.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::common::*;

/// Operation id → the least role that may call it (`public`: no token needed).
const EXPECTED: &[(&str, &str)] = &[
    // monitor
    ("get_version", "public"),
    ("get_health", "public"),
    // DAGs, tasks, sources, versions, stats, tags
    ("get_dags", "viewer"),
    ("get_dag", "viewer"),
    ("get_dag_details", "viewer"),
    ("patch_dag", "user"),
    ("patch_dags", "user"),
    ("delete_dag", "user"),
    ("get_tasks", "viewer"),
    ("get_task", "viewer"),
    ("get_dag_source", "viewer"),
    ("get_dag_versions", "viewer"),
    ("get_dag_version", "viewer"),
    ("get_dag_stats", "viewer"),
    ("get_dag_tags", "viewer"),
    ("list_dag_warnings", "viewer"),
    // DAG runs
    ("get_dag_runs", "viewer"),
    ("get_list_dag_runs_batch", "viewer"),
    ("get_dag_run", "viewer"),
    ("trigger_dag_run", "user"),
    ("patch_dag_run", "user"),
    ("delete_dag_run", "user"),
    ("clear_dag_run", "user"),
    // task instances, tries, logs, XComs
    ("get_task_instances", "viewer"),
    ("get_task_instances_batch", "viewer"),
    ("get_task_instance", "viewer"),
    ("get_mapped_task_instance", "viewer"),
    ("get_mapped_task_instances", "viewer"),
    ("get_task_instance_dependencies", "viewer"),
    ("get_task_instance_dependencies_by_map_index", "viewer"),
    ("get_task_instance_tries", "viewer"),
    ("get_mapped_task_instance_tries", "viewer"),
    ("get_task_instance_try_details", "viewer"),
    ("get_mapped_task_instance_try_details", "viewer"),
    ("get_log", "viewer"),
    ("patch_task_instance", "user"),
    ("patch_mapped_task_instance", "user"),
    ("patch_task_instance_dry_run", "user"),
    ("patch_mapped_task_instance_dry_run", "user"),
    ("post_clear_task_instances", "user"),
    ("bulk_task_instances", "user"),
    ("get_xcom_entries", "viewer"),
    ("get_xcom_entry", "viewer"),
    ("create_xcom_entry", "user"),
    ("update_xcom_entry", "user"),
    ("delete_xcom_entry", "user"),
    // pools: everyone reads, ops manage
    ("get_pools", "viewer"),
    ("get_pool", "viewer"),
    ("post_pool", "op"),
    ("patch_pool", "op"),
    ("delete_pool", "op"),
    ("bulk_pools", "op"),
    // variables and connections: ops only, reads included
    ("get_variables", "op"),
    ("get_variable", "op"),
    ("post_variable", "op"),
    ("patch_variable", "op"),
    ("delete_variable", "op"),
    ("bulk_variables", "op"),
    ("get_connections", "op"),
    ("get_connection", "op"),
    ("post_connection", "op"),
    ("patch_connection", "op"),
    ("delete_connection", "op"),
    ("bulk_connections", "op"),
    ("test_connection", "op"),
    ("create_default_connections", "op"),
    // views around the DAGs
    ("get_import_errors", "viewer"),
    ("get_import_error", "viewer"),
    ("get_event_logs", "viewer"),
    ("get_event_log", "viewer"),
    ("get_plugins", "viewer"),
    ("import_errors", "viewer"),
    ("get_providers", "viewer"),
    ("get_jobs", "viewer"),
    // the configuration holds deployment details: admins only
    ("get_config", "admin"),
    ("get_config_value", "admin"),
];

const ROLES: [&str; 4] = ["viewer", "user", "op", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("known role")
}

#[tokio::test]
async fn every_route_enforces_its_role_for_every_role_and_anonymous() {
    let env = env().await;
    let doc: Value = serde_json::to_value(updraft_api::openapi_document()).unwrap();
    let tokens: Vec<String> = ROLES.iter().map(|r| token_for(r, 600)).collect();
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap();
            seen.push(id.to_string());
            let Some((_, need)) = EXPECTED.iter().find(|(op_id, _)| *op_id == id) else {
                failures.push(format!("{id} ({method} {path}) has no expected role"));
                continue;
            };
            let uri = fill_path(path);
            let m = method.to_uppercase();
            // A body that is valid JSON but not a valid request: authorization must be
            // decided before it is looked at.
            let body = (method != "get" && method != "delete").then(|| json!({}));

            let (status, _) = call(&env.state, &m, &uri, None, body.clone()).await;
            let anonymous_ok = if *need == "public" {
                status != StatusCode::UNAUTHORIZED
            } else {
                status == StatusCode::UNAUTHORIZED
            };
            if !anonymous_ok {
                failures.push(format!("{m} {uri} anonymous: {status}"));
            }
            for (role, token) in ROLES.iter().zip(&tokens) {
                let (status, _) = call(&env.state, &m, &uri, Some(token), body.clone()).await;
                let allowed = *need == "public" || rank(role) >= rank(need);
                let ok = if allowed {
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                } else {
                    status == StatusCode::FORBIDDEN
                };
                if !ok {
                    failures.push(format!("{m} {uri} as {role} (needs {need}): {status}"));
                }
            }
        }
    }
    for (id, _) in EXPECTED {
        if !seen.iter().any(|s| s == id) {
            failures.push(format!("{id} is expected but not documented"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
