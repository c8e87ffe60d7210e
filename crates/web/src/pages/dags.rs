//! The DAGs page (`/dags`): search, tag and owner filters, active/paused tabs, sort and
//! pages; per DAG its schedule, next run, recent runs and the task states of its latest run;
//! the pause switch; and the import errors behind the banner.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PAGE_SIZE, contains_pattern, page_count, query_base};
use crate::WebState;
use crate::api_call;
use crate::error::UiError;
use crate::render::{self, url_encode};
use crate::session::Session;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/dags", get(list))
        .route("/import-errors", get(import_errors))
        .route("/dags/{dag_id}/pause", post(pause))
}

/// Dots in the recent-runs column.
const RECENT_RUNS: i64 = 10;

/// The sort choices: API `order_by` value and label.
const SORTS: &[(&str, &str)] = &[
    ("dag_id", "DAG id"),
    ("-dag_id", "DAG id, descending"),
    ("-last_run_start_date", "latest run first"),
    ("last_run_start_date", "oldest latest run first"),
    ("last_run_state", "latest run state"),
];

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    search: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    sort: String,
    page: Option<i64>,
}

async fn list(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let status = match q.status.as_str() {
        "active" | "paused" => q.status.clone(),
        _ => "all".to_string(),
    };
    let sort = if SORTS.iter().any(|(v, _)| *v == q.sort) {
        q.sort.clone()
    } else {
        "dag_id".to_string()
    };
    let page = q.page.unwrap_or(1).max(1);

    // The filters shared by the page and the tab counts.
    let mut filters = String::new();
    let search = q.search.trim();
    if !search.is_empty() {
        filters.push_str(&format!(
            "&dag_id_pattern={}",
            url_encode(&contains_pattern(search))
        ));
    }
    if !q.tag.is_empty() {
        filters.push_str(&format!("&tags={}", url_encode(&q.tag)));
    }
    if !q.owner.trim().is_empty() {
        filters.push_str(&format!("&owners={}", url_encode(q.owner.trim())));
    }
    let paused = match status.as_str() {
        "active" => "&paused=false",
        "paused" => "&paused=true",
        _ => "",
    };
    let offset = (page - 1) * PAGE_SIZE;
    let listing = api_call::get(
        &web,
        &session,
        &format!(
            "/dags?limit={PAGE_SIZE}&offset={offset}&order_by={}&exclude_stale=true{filters}{paused}",
            url_encode(&sort)
        ),
    )
    .await?;
    // The tab counts: the listing already counted the current tab, and every DAG is either
    // active or paused, so one more count gives all three.
    let other = if status == "paused" {
        "&paused=false"
    } else {
        "&paused=true"
    };
    let (other_count, import_errors, tags) = tokio::try_join!(
        async {
            api_call::get(
                &web,
                &session,
                &format!("/dags?limit=1&exclude_stale=true{filters}{other}"),
            )
            .await
            .map(|v| v["total_entries"].as_i64().unwrap_or(0))
        },
        async {
            api_call::get(&web, &session, "/importErrors?limit=1")
                .await
                .map(|v| v["total_entries"].as_i64().unwrap_or(0))
        },
        api_call::get(&web, &session, "/dagTags?limit=1000"),
    )?;

    let dags: Vec<Value> = listing["dags"].as_array().cloned().unwrap_or_default();
    let total = listing["total_entries"].as_i64().unwrap_or(0);
    let (all, active, paused_count) = match status.as_str() {
        "active" => (total + other_count, total, other_count),
        "paused" => (total + other_count, other_count, total),
        _ => (total, total - other_count, other_count),
    };
    let dag_ids: Vec<String> = dags
        .iter()
        .filter_map(|d| d["dag_id"].as_str().map(String::from))
        .collect();

    // Recent runs (newest first) and the task states of each DAG's latest run, in two queries.
    let runs = web.store().recent_runs(&dag_ids, RECENT_RUNS).await?;
    let mut recent: HashMap<String, Vec<Value>> = HashMap::new();
    let mut latest: HashMap<i64, String> = HashMap::new();
    for r in &runs {
        let list = recent.entry(r.dag_id.clone()).or_default();
        if list.is_empty() {
            latest.insert(r.id, r.dag_id.clone());
        }
        list.push(json!({"run_id": r.run_id, "state": r.state.as_str()}));
    }
    // Oldest on the left, newest on the right, as a timeline reads.
    for list in recent.values_mut() {
        list.reverse();
    }
    let latest_ids: Vec<i64> = latest.keys().copied().collect();
    let mut task_counts: HashMap<String, Vec<Value>> = HashMap::new();
    for c in web.store().task_state_counts(&latest_ids).await? {
        if let Some(dag_id) = latest.get(&c.run_pk) {
            task_counts
                .entry(dag_id.clone())
                .or_default()
                .push(json!({"state": c.state.as_str(), "count": c.count}));
        }
    }

    let pages = page_count(total);
    let keep = [
        ("search", q.search.as_str()),
        ("tag", q.tag.as_str()),
        ("owner", q.owner.as_str()),
        ("sort", sort.as_str()),
    ];
    let tab_base = query_base("/dags", &keep);
    let mut with_status = keep.to_vec();
    with_status.push(("status", status.as_str()));
    let page_base = query_base("/dags", &with_status);
    let back = format!("{page_base}page={page}");
    let all_tags: Vec<Value> = tags["tags"].as_array().cloned().unwrap_or_default();

    Ok(render::page(
        &web,
        &session,
        &headers,
        "dags.html",
        "dags",
        context! {
            title => "DAGs",
            dags => dags,
            recent => recent,
            task_counts => task_counts,
            import_errors => import_errors,
            all_tags => all_tags,
            counts => context! { all => all, active => active, paused => paused_count },
            search => q.search,
            tag => q.tag,
            owner => q.owner,
            status => status,
            sort => sort,
            sorts => SORTS,
            page => page,
            pages => pages,
            tab_base => tab_base,
            page_base => page_base,
            back => back,
        },
    ))
}

async fn import_errors(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let errors = api_call::get(&web, &session, "/importErrors?limit=100&order_by=filename").await?;
    Ok(render::page(
        &web,
        &session,
        &headers,
        "import_errors.html",
        "dags",
        context! {
            title => "Import errors",
            errors => errors["import_errors"],
        },
    ))
}

#[derive(Deserialize)]
pub struct PauseForm {
    paused: bool,
    #[serde(default)]
    back: Option<String>,
}

/// `POST /dags/{dag_id}/pause`: `PATCH /api/v2/dags/{dag_id}` as the user.
async fn pause(
    State(web): State<WebState>,
    session: Session,
    Path(dag_id): Path<String>,
    axum::Form(form): axum::Form<PauseForm>,
) -> Result<Response, UiError> {
    let answer = api_call::call(
        &web,
        &session,
        Method::PATCH,
        &format!("/dags/{}?update_mask=is_paused", url_encode(&dag_id)),
        Some(&json!({"is_paused": form.paused})),
    )
    .await?;
    let back = crate::session::safe_next(form.back.as_deref());
    Ok(if answer.is_success() {
        let verb = if form.paused { "paused" } else { "unpaused" };
        render::flash_redirect(&web, &back, true, &format!("{dag_id} {verb}"))
    } else {
        render::flash_redirect(&web, &back, false, &answer.detail())
    })
}
