//! Read-only views across DAGs: every DAG run (`/runs`, Airflow's Browse → DAG Runs), the event
//! log (`/audit-log`) and the health of the metadatabase and scheduler (`/health`), each from
//! its API route called in-process as the signed-in user.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{Days, NaiveDate, Utc};
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::{PAGE_SIZE, contains_pattern, page_count, query_base, seg};
use crate::WebState;
use crate::api_call;
use crate::error::UiError;
use crate::render;
use crate::session::Session;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/runs", get(runs))
        .route("/audit-log", get(audit_log))
        .route("/health", get(health))
}

/// The run states a filter offers.
const RUN_STATES: &[&str] = &["queued", "running", "success", "failed"];

/// `YYYY-MM-DD` → the start of that day and of the next, in UTC, as the API's timestamps.
fn day_bounds(name: &str, text: &str) -> Result<Option<(String, String)>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{name} `{text}` is not a date like 2026-01-31"))?;
    let next = day
        .checked_add_days(Days::new(1))
        .ok_or_else(|| format!("{name} `{text}` is out of range"))?;
    let at = |d: NaiveDate| format!("{}T00:00:00Z", d.format("%Y-%m-%d"));
    Ok(Some((at(day), at(next))))
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    #[serde(default)]
    dag: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    page: Option<i64>,
}

async fn runs(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Response, UiError> {
    let page = q.page.unwrap_or(1).max(1);
    let state = if RUN_STATES.contains(&q.state.as_str()) {
        q.state.clone()
    } else {
        String::new()
    };
    let mut uri = format!(
        "/dags/~/dagRuns?limit={PAGE_SIZE}&offset={}&order_by=-run_after&order_by=-id",
        (page - 1) * PAGE_SIZE
    );
    if !q.dag.trim().is_empty() {
        uri.push_str(&format!(
            "&dag_id_pattern={}",
            seg(&contains_pattern(q.dag.trim()))
        ));
    }
    if !state.is_empty() {
        uri.push_str(&format!("&state={state}"));
    }
    let mut error = None;
    match day_bounds("from", &q.from) {
        Ok(Some((start, _))) => uri.push_str(&format!("&run_after_gte={}", seg(&start))),
        Ok(None) => {}
        Err(e) => error = Some(e),
    }
    match day_bounds("to", &q.to) {
        Ok(Some((_, end))) => uri.push_str(&format!("&run_after_lt={}", seg(&end))),
        Ok(None) => {}
        Err(e) => error = Some(e),
    }
    let (rows, total) = if error.is_some() {
        (Vec::new(), 0)
    } else {
        let body = api_call::get(&web, &session, &uri).await?;
        (
            body["dag_runs"].as_array().cloned().unwrap_or_default(),
            body["total_entries"].as_i64().unwrap_or(0),
        )
    };
    let keep = [
        ("dag", q.dag.as_str()),
        ("state", state.as_str()),
        ("from", q.from.as_str()),
        ("to", q.to.as_str()),
    ];
    Ok(render::page(
        &web,
        &session,
        &headers,
        "runs.html",
        "runs",
        context! {
            title => "DAG runs",
            runs => rows,
            total => total,
            dag => q.dag,
            state => state,
            states => RUN_STATES,
            from => q.from,
            to => q.to,
            error => error,
            page => page,
            pages => page_count(total),
            page_base => query_base("/runs", &keep),
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    event: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    dag_id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    page: Option<i64>,
}

async fn audit_log(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, UiError> {
    let page = q.page.unwrap_or(1).max(1);
    let mut uri = format!(
        "/eventLogs?limit={PAGE_SIZE}&offset={}&order_by=-id",
        (page - 1) * PAGE_SIZE
    );
    if !q.event.trim().is_empty() {
        uri.push_str(&format!(
            "&event_pattern={}",
            seg(&contains_pattern(q.event.trim()))
        ));
    }
    if !q.owner.trim().is_empty() {
        uri.push_str(&format!("&owner={}", seg(q.owner.trim())));
    }
    if !q.dag_id.trim().is_empty() {
        uri.push_str(&format!("&dag_id={}", seg(q.dag_id.trim())));
    }
    let mut error = None;
    // The API's bounds are strict: "after" the last microsecond of the day before.
    match day_bounds("from", &q.from) {
        Ok(Some((start, _))) => {
            let after = chrono::DateTime::parse_from_rfc3339(&start)
                .map(|t| (t - chrono::Duration::microseconds(1)).to_rfc3339())
                .unwrap_or(start);
            uri.push_str(&format!("&after={}", seg(&after)));
        }
        Ok(None) => {}
        Err(e) => error = Some(e),
    }
    match day_bounds("to", &q.to) {
        Ok(Some((_, end))) => uri.push_str(&format!("&before={}", seg(&end))),
        Ok(None) => {}
        Err(e) => error = Some(e),
    }
    let (rows, total) = if error.is_some() {
        (Vec::new(), 0)
    } else {
        let body = api_call::get(&web, &session, &uri).await?;
        (
            body["event_logs"].as_array().cloned().unwrap_or_default(),
            body["total_entries"].as_i64().unwrap_or(0),
        )
    };
    let keep = [
        ("event", q.event.as_str()),
        ("owner", q.owner.as_str()),
        ("dag_id", q.dag_id.as_str()),
        ("from", q.from.as_str()),
        ("to", q.to.as_str()),
    ];
    Ok(render::page(
        &web,
        &session,
        &headers,
        "audit_log.html",
        "audit",
        context! {
            title => "Audit log",
            events => rows,
            total => total,
            event => q.event,
            owner => q.owner,
            dag_id => q.dag_id,
            from => q.from,
            to => q.to,
            error => error,
            page => page,
            pages => page_count(total),
            page_base => query_base("/audit-log", &keep),
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct FragmentQuery {
    #[serde(default)]
    fragment: Option<String>,
}

/// `/health`; with `?fragment=1` only the status cards, which the page refreshes every few
/// seconds.
async fn health(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<FragmentQuery>,
) -> Result<Response, UiError> {
    let body: Value = api_call::get(&web, &session, "/monitor/health").await?;
    // Who holds the scheduler's lease (the active scheduler, or the last one when it expired);
    // one indexed read, skipped when the database is down.
    let holder = if body["metadatabase"]["status"] == "healthy" {
        web.store()
            .lease_holder(updraft_scheduler::runtime::LEASE_NAME)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let heartbeat = body["scheduler"]["latest_scheduler_heartbeat"].clone();
    let age = heartbeat
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0);
    let ctx = context! {
        title => "Health",
        metadatabase => body["metadatabase"]["status"],
        scheduler => body["scheduler"]["status"],
        heartbeat => heartbeat,
        heartbeat_age => age.map(|a| a.max(0.0)),
        lease_holder => holder,
        checked_at => Utc::now().to_rfc3339(),
    };
    if q.fragment.is_some() {
        return Ok(render::render("health_status.html", ctx).into_response());
    }
    Ok(render::page(
        &web,
        &session,
        &headers,
        "health.html",
        "health",
        ctx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_utc_bounds() {
        assert_eq!(
            day_bounds("from", "2026-02-28").unwrap(),
            Some((
                "2026-02-28T00:00:00Z".to_string(),
                "2026-03-01T00:00:00Z".to_string()
            ))
        );
        assert_eq!(day_bounds("from", " ").unwrap(), None);
        assert!(
            day_bounds("to", "28/02/2026")
                .unwrap_err()
                .contains("not a date")
        );
    }
}
