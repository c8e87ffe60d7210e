//! Role checks at the routing layer, before a request's path, query or body is even parsed:
//! an anonymous caller gets 401 and a role that may not use the route gets 403 whatever it
//! sends, so a forbidden caller learns nothing from validation errors.
//!
//! What a route touches is its OpenAPI tag (Airflow's resource names: `DAG`, `DagRun`,
//! `Variable`, ...); reading is `GET` and the `POST …/list` batch queries, everything else
//! writes. Handlers still call [`CurrentUser::require`], so a route registered outside the
//! document is not left open.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};

/// The resource a tag stands for; `None` for public routes.
pub fn resource_of_tag(tag: &str) -> Option<Resource> {
    match tag {
        "Monitor" | "Version" => None,
        "Variable" => Some(Resource::Variable),
        "Connection" => Some(Resource::Connection),
        "Pool" => Some(Resource::Pool),
        "Config" => Some(Resource::Configuration),
        "Asset" => Some(Resource::Asset),
        // DAGs and what belongs to them (runs, task instances, logs, XComs, sources, versions,
        // stats, tags), and the read-only views around them (import errors, event log,
        // plugins, providers, jobs, warnings).
        _ => Some(Resource::Dag),
    }
}

/// `(METHOD, "/api/v2/...")` → what the route needs (`None`: public).
type Requirements = HashMap<(String, String), Option<(Resource, Access)>>;

/// The requirement of every documented route, from the OpenAPI document.
fn requirements() -> &'static Requirements {
    static TABLE: OnceLock<Requirements> = OnceLock::new();
    TABLE.get_or_init(|| {
        let doc = crate::openapi_document();
        let mut table = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let ops = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .map_or("", String::as_str);
                let access = if method == Method::GET
                    || (method == Method::POST && path.ends_with("/list"))
                {
                    Access::Read
                } else {
                    Access::Write
                };
                let need = resource_of_tag(tag).map(|r| (r, access));
                table.insert((method.to_string(), path.clone()), need);
            }
        }
        table
    })
}

/// What `method` on the route `matched_path` needs (`None`: public, or not in the document).
pub fn requirement(method: &Method, matched_path: &str) -> Option<(Resource, Access)> {
    requirements()
        .get(&(method.to_string(), matched_path.to_string()))
        .copied()
        .flatten()
}

pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let Some((resource, access)) = matched
        .as_ref()
        .and_then(|m| requirement(request.method(), m.as_str()))
    else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let user = match CurrentUser::from_request_parts(&mut parts, &state).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = user.require(resource, access) {
        return e.into_response();
    }
    // One lookup per request: the handler's `CurrentUser` and the event log reuse it.
    parts.extensions.insert(user);
    next.run(Request::from_parts(parts, body)).await
}
