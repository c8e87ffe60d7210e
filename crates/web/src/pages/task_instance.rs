//! The task instance page (`/dags/{dag_id}/runs/{run_id}/tasks/{task_id}?map_index=&try=`):
//! state, times and where it ran; its tries; the rendered fields of the chosen try; its
//! XComs; the chosen try's log with a search box (`?q=` on the server, a live filter in the
//! browser), a download link and, while the try runs, a live tail.
//!
//! The log is read through the API's logs endpoint (`GET …/logs/{try_number}`), which owns the
//! log folder's layout and refuses ids that could leave it; the tail follows its continuation
//! token.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;
use updraft_api::{Access, Resource, required_role};
use updraft_store::XComFilter;

use super::actions::{run_page, task_page};
use super::seg;
use crate::WebState;
use crate::api_call;
use crate::error::UiError;
use crate::render;
use crate::session::Session;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}", get(page))
        .route("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/log", get(log))
}

/// Task states after which a try writes no more log.
const FINISHED: &[&str] = &[
    "success",
    "failed",
    "skipped",
    "upstream_failed",
    "removed",
    "up_for_retry",
    "up_for_reschedule",
];

/// Most mapped instances listed on a mapped task's page.
const MAPPED_LIMIT: i64 = 1000;

/// Most XComs listed.
const XCOM_LIMIT: i64 = 100;

/// Most log requests one download makes (each returns up to the API's chunk size).
const DOWNLOAD_CHUNKS: usize = 256;

#[derive(Deserialize, Default)]
pub struct TiQuery {
    map_index: Option<String>,
    #[serde(rename = "try")]
    try_number: Option<String>,
    #[serde(default)]
    q: String,
    /// `GET …/log`: the continuation token of the previous piece.
    #[serde(default)]
    token: String,
    /// `GET …/log?download=1`: the whole log as a file.
    #[serde(default)]
    download: String,
}

impl TiQuery {
    fn map_index(&self) -> Result<i32, UiError> {
        match self.map_index.as_deref().map(str::trim) {
            None | Some("") => Ok(-1),
            Some(m) => m
                .parse()
                .map_err(|_| UiError::BadRequest(format!("`{m}` is not a map index"))),
        }
    }

    fn try_number(&self) -> Result<Option<u32>, UiError> {
        match self.try_number.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => t
                .parse()
                .map(Some)
                .map_err(|_| UiError::BadRequest(format!("`{t}` is not a try number"))),
        }
    }
}

/// The API path of the task instance (`…/taskInstances/{task_id}[/{map_index}]`).
fn ti_path(dag_id: &str, run_id: &str, task_id: &str, map_index: i32) -> String {
    let mut out = format!(
        "/dags/{}/dagRuns/{}/taskInstances/{}",
        seg(dag_id),
        seg(run_id),
        seg(task_id)
    );
    if map_index >= 0 {
        out.push_str(&format!("/{map_index}"));
    }
    out
}

/// A structured log message as one line of text, as the API writes it for `text/plain`.
fn plain(m: &Value) -> String {
    let ts = m["timestamp"].as_str().unwrap_or("");
    let level = m["level"].as_str().unwrap_or("info").to_uppercase();
    let event = m["event"]
        .as_str()
        .map_or_else(|| m["event"].to_string(), String::from);
    if ts.is_empty() {
        event
    } else {
        format!("[{ts}] {level} - {event}")
    }
}

/// One piece of a try's log from the API: its lines and the token to continue from.
async fn log_piece(
    web: &WebState,
    session: &Session,
    (dag_id, run_id, task_id): (&str, &str, &str),
    map_index: i32,
    try_number: u32,
    token: &str,
) -> Result<(Vec<String>, String), UiError> {
    let mut path = format!(
        "/dags/{}/dagRuns/{}/taskInstances/{}/logs/{try_number}?map_index={map_index}",
        seg(dag_id),
        seg(run_id),
        seg(task_id)
    );
    if !token.is_empty() {
        path.push_str(&format!("&token={}", seg(token)));
    }
    let body = api_call::get(web, session, &path).await?;
    let lines = body["content"]
        .as_array()
        .map(|c| c.iter().map(plain).collect())
        .unwrap_or_default();
    let next = body["continuation_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((lines, next))
}

/// Lines containing `q`, ignoring case (all lines when `q` is empty).
fn filter_lines(lines: Vec<String>, q: &str) -> Vec<String> {
    let q = q.trim().to_lowercase();
    if q.is_empty() {
        return lines;
    }
    lines
        .into_iter()
        .filter(|l| l.to_lowercase().contains(&q))
        .collect()
}

async fn page(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(query): Query<TiQuery>,
) -> Result<Response, UiError> {
    let map_index = query.map_index()?;
    let base = ti_path(&dag_id, &run_id, &task_id, map_index);
    let answer = api_call::call(&web, &session, Method::GET, &base, None).await?;
    let index_given = query
        .map_index
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty());
    if !index_given && answer.status == StatusCode::NOT_FOUND {
        // A mapped task has no unmapped instance: list its instances instead.
        let mapped = api_call::get(
            &web,
            &session,
            &format!(
                "{}/listMapped?limit={MAPPED_LIMIT}&order_by=map_index",
                ti_path(&dag_id, &run_id, &task_id, -1)
            ),
        )
        .await?;
        if mapped["total_entries"].as_i64().unwrap_or(0) > 0 {
            return Ok(render::page(
                &web,
                &session,
                &headers,
                "task_mapped.html",
                "dags",
                context! {
                    title => format!("{task_id} · {run_id}"),
                    dag_id => dag_id,
                    run_id => run_id,
                    task_id => task_id,
                    dag_url => format!("/dags/{}", seg(&dag_id)),
                    run_url => run_page(&dag_id, &run_id),
                    page_path => format!("{}/tasks/{}", run_page(&dag_id, &run_id), seg(&task_id)),
                    instances => mapped["task_instances"],
                    total => mapped["total_entries"],
                },
            ));
        }
    }
    let ti = answer.into_ok()?;
    let tries = api_call::get(&web, &session, &format!("{base}/tries")).await?;
    let tries: Vec<Value> = tries["task_instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let current = ti["try_number"].as_u64().unwrap_or(0) as u32;
    let selected = match query.try_number()? {
        Some(t) if tries.iter().any(|x| x["try_number"] == t) => Some(t),
        Some(t) => {
            return Err(UiError::NotFound(format!(
                "task `{task_id}` has no try {t} in run `{run_id}`"
            )));
        }
        None => (current > 0).then_some(current),
    };
    let state = ti["state"].as_str().unwrap_or("");
    let live = selected == Some(current) && !FINISHED.contains(&state);

    // The store answers what the API lists without values (XComs) or only for the latest try
    // (rendered fields); the role is checked as the API would.
    if session.role < required_role(Resource::Dag, Access::Read) {
        return Err(UiError::Forbidden("your role may not read DAGs".into()));
    }
    let rendered = match selected {
        Some(t) if t == current => ti["rendered_fields"].clone(),
        Some(t) => {
            let id = ti["id"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(|| UiError::Internal("task instance without an id".into()))?;
            web.store()
                .get_rendered_fields(id, t)
                .await?
                .unwrap_or(Value::Null)
        }
        None => Value::Null,
    };
    // Values under sensitive names (`password`, `token`, ... and `core.sensitive_var_conn_names`)
    // are masked as the API masks variables and connections.
    let rendered = updraft_api::redact(
        rendered,
        None,
        &web.api().config.core.sensitive_var_conn_names,
    );
    let rendered: Vec<(String, String)> = rendered
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => serde_json::to_string_pretty(other).unwrap_or_default(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    let xcoms = web
        .store()
        .query_xcoms(&XComFilter {
            dag_id: Some(dag_id.clone()),
            run_id: Some(run_id.clone()),
            task_id: Some(task_id.clone()),
            map_index: Some(map_index),
            limit: Some(XCOM_LIMIT),
            ..XComFilter::default()
        })
        .await?;
    let xcoms: Vec<Value> = xcoms
        .items
        .iter()
        .map(|r| {
            let value = match &r.xcom.value {
                Value::String(s) => s.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            serde_json::json!({"key": r.xcom.key, "value": value, "timestamp": r.xcom.timestamp})
        })
        .collect();

    let (log_lines, token) = match selected {
        Some(t) => {
            let ids = (dag_id.as_str(), run_id.as_str(), task_id.as_str());
            let (lines, token) = log_piece(&web, &session, ids, map_index, t, "").await?;
            (filter_lines(lines, &query.q), token)
        }
        None => (Vec::new(), String::new()),
    };

    let page_url = task_page(&dag_id, &run_id, &task_id, Some(map_index));
    let sep = if page_url.contains('?') { '&' } else { '?' };
    let log_url = format!(
        "{}/tasks/{}/log?map_index={map_index}&try={}",
        run_page(&dag_id, &run_id),
        seg(&task_id),
        selected.unwrap_or(0)
    );
    Ok(render::page(
        &web,
        &session,
        &headers,
        "task_instance.html",
        "dags",
        context! {
            title => format!("{task_id} · {run_id}"),
            dag_id => dag_id,
            run_id => run_id,
            task_id => task_id,
            map_index => map_index,
            dag_url => format!("/dags/{}", seg(&dag_id)),
            run_url => run_page(&dag_id, &run_id),
            page_path => format!("{}/tasks/{}", run_page(&dag_id, &run_id), seg(&task_id)),
            page_url => page_url,
            try_base => format!("{page_url}{sep}try="),
            action_base => format!("{}/tasks/{}", run_page(&dag_id, &run_id), seg(&task_id)),
            ti => ti,
            tries => tries,
            selected => selected,
            rendered => rendered,
            xcoms => xcoms,
            xcom_total => xcoms_total_note(xcoms.len()),
            log_lines => log_lines,
            log_url => log_url,
            token => token,
            live => live,
            q => query.q,
        },
    ))
}

fn xcoms_total_note(shown: usize) -> Option<String> {
    (shown as i64 >= XCOM_LIMIT).then(|| format!("the first {XCOM_LIMIT} are shown"))
}

/// `GET …/tasks/{task_id}/log?try=&map_index=&token=`: what the try's log gained after
/// `token`, as plain text, with the next token in `X-Continuation-Token` and whether the try
/// may still write in `X-Log-Live`. With `download=1`, the whole log as an attachment.
async fn log(
    State(web): State<WebState>,
    session: Session,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(query): Query<TiQuery>,
) -> Result<Response, UiError> {
    let map_index = query.map_index()?;
    let Some(try_number) = query.try_number()? else {
        return Err(UiError::BadRequest("say which try: `try=`".into()));
    };
    let ids = (dag_id.as_str(), run_id.as_str(), task_id.as_str());

    if !query.download.is_empty() {
        let mut text = String::new();
        let mut token = String::new();
        for _ in 0..DOWNLOAD_CHUNKS {
            let (lines, next) =
                log_piece(&web, &session, ids, map_index, try_number, &token).await?;
            // A piece well below the API's chunk size ends the file.
            let size: usize = lines.iter().map(|l| l.len() + 1).sum();
            for l in &lines {
                text.push_str(l);
                text.push('\n');
            }
            if lines.is_empty() || size < (1 << 20) || next.is_empty() {
                break;
            }
            token = next;
        }
        let name: String =
            format!("{dag_id}__{run_id}__{task_id}__{map_index}__attempt-{try_number}.log")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
        let mut response = text.into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(response);
    }

    let (lines, next) = log_piece(&web, &session, ids, map_index, try_number, &query.token).await?;
    let ti = api_call::get(
        &web,
        &session,
        &ti_path(&dag_id, &run_id, &task_id, map_index),
    )
    .await?;
    let current = ti["try_number"].as_u64().unwrap_or(0) as u32;
    let state = ti["state"].as_str().unwrap_or("");
    let live = try_number == current && !FINISHED.contains(&state);
    // The page already said that the file is not there yet; a tail adds only new lines.
    let lines: Vec<String> = if query.token.is_empty() {
        lines
    } else {
        lines
            .into_iter()
            .filter(|l| !l.starts_with("*** log file does not exist"))
            .collect()
    };
    let mut text = filter_lines(lines, &query.q).join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&next) {
        h.insert("x-continuation-token", v);
    }
    h.insert(
        "x-log-live",
        HeaderValue::from_static(if live { "true" } else { "false" }),
    );
    Ok(response)
}
