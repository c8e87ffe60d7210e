//! What people do to DAGs, runs and task instances from the UI: trigger a run with a form
//! generated from the DAG's params, clear (with a dry-run preview first), mark success or
//! failed, and write notes.
//!
//! Every action is a call into the API as the signed-in user: the API checks the role,
//! validates, writes the event log and changes the store. A refused or invalid action comes
//! back as an error flash (or, for the trigger form, the form again with the error and what
//! the user typed).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::context;
use serde_json::{Map, Value, json};
use updraft_api::{Access, Resource, required_role};

use super::seg;
use crate::WebState;
use crate::api_call;
use crate::error::UiError;
use crate::params_form;
use crate::render;
use crate::session::Session;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/dags/{dag_id}/trigger", get(trigger_page).post(trigger))
        .route("/dags/{dag_id}/runs/{run_id}/clear", post(clear_run))
        .route("/dags/{dag_id}/runs/{run_id}/state", post(mark_run))
        .route("/dags/{dag_id}/runs/{run_id}/note", post(run_note))
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear",
            post(clear_task),
        )
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/state",
            post(mark_task),
        )
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/note",
            post(task_note),
        )
}

/// The UI page of a run.
pub fn run_page(dag_id: &str, run_id: &str) -> String {
    format!("/dags/{}/runs/{}", seg(dag_id), seg(run_id))
}

/// The UI page of a task instance.
pub fn task_page(dag_id: &str, run_id: &str, task_id: &str, map_index: Option<i32>) -> String {
    let mut out = format!("{}/tasks/{}", run_page(dag_id, run_id), seg(task_id));
    if let Some(m) = map_index.filter(|m| *m >= 0) {
        out.push_str(&format!("?map_index={m}"));
    }
    out
}

/// A posted form as its pairs, in order.
type Fields = Vec<(String, String)>;

fn field<'a>(form: &'a Fields, name: &str) -> Option<&'a str> {
    form.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A checkbox: ticked when any value is `true`, `on` or `1`.
fn flag(form: &Fields, name: &str) -> bool {
    form.iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "true" | "on" | "1"))
}

fn text(form: &Fields, name: &str) -> String {
    field(form, name).unwrap_or("").trim().to_string()
}

/// The `map_index` field, when it names one (`-1` is the unmapped instance).
fn map_index(form: &Fields) -> Result<Option<i32>, UiError> {
    match field(form, "map_index").map(str::trim) {
        None | Some("") => Ok(None),
        Some(m) => m
            .parse()
            .map(Some)
            .map_err(|_| UiError::BadRequest(format!("`{m}` is not a map index"))),
    }
}

// ---- trigger -------------------------------------------------------------------------------

async fn trigger_page(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> Result<Response, UiError> {
    if session.role < required_role(Resource::Dag, Access::Write) {
        return Err(UiError::Forbidden(format!(
            "your role ({}) may not trigger DAG runs",
            session.role.as_str()
        )));
    }
    let dag = web
        .store()
        .get_dag(&dag_id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("there is no DAG `{dag_id}`")))?;
    let fields = params_form::fields(&dag.spec.params, None, &BTreeMap::new());
    Ok(trigger_form(
        &web,
        &session,
        &headers,
        &dag_id,
        dag.is_paused,
        TriggerForm {
            fields,
            ..TriggerForm::default()
        },
        StatusCode::OK,
    ))
}

/// What the trigger form shows besides its param fields.
#[derive(Default)]
struct TriggerForm {
    fields: Vec<params_form::Field>,
    conf: String,
    logical_date: String,
    run_id: String,
    note: String,
    /// The API's (or the form's) message about the whole form.
    error: Option<String>,
    /// Per-field messages: `conf`, `logical_date`.
    field_errors: BTreeMap<String, String>,
}

fn trigger_form(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    dag_id: &str,
    paused: bool,
    form: TriggerForm,
    status: StatusCode,
) -> Response {
    let mut response = render::page(
        web,
        session,
        headers,
        "trigger.html",
        "dags",
        context! {
            title => format!("Trigger {dag_id}"),
            dag_id => dag_id,
            dag_url => format!("/dags/{}", seg(dag_id)),
            action => format!("/dags/{}/trigger", seg(dag_id)),
            paused => paused,
            fields => form.fields,
            conf => form.conf,
            logical_date => form.logical_date,
            run_id => form.run_id,
            note => form.note,
            error => form.error,
            field_errors => form.field_errors,
        },
    );
    *response.status_mut() = status;
    response
}

/// `POST /dags/{dag_id}/trigger`: the form read into a conf and sent to `POST
/// /api/v2/dags/{dag_id}/dagRuns`; on success to the new run's page, else the form again.
async fn trigger(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let dag = web
        .store()
        .get_dag(&dag_id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("there is no DAG `{dag_id}`")))?;
    let params = &dag.spec.params;
    let raw_conf = field(&form, "conf").unwrap_or("").to_string();
    let logical_date = text(&form, "logical_date");
    let run_id = text(&form, "run_id");
    let note = text(&form, "note");
    let again = |fields: Vec<params_form::Field>,
                 error: Option<String>,
                 field_errors: BTreeMap<String, String>| TriggerForm {
        fields,
        conf: raw_conf.clone(),
        logical_date: logical_date.clone(),
        run_id: run_id.clone(),
        note: note.clone(),
        error,
        field_errors,
    };

    let mut errors = match params_form::read(params, &form, &raw_conf) {
        Ok(_) => BTreeMap::new(),
        Err(e) => e,
    };
    let logical = if logical_date.is_empty() {
        None
    } else {
        match params_form::datetime(&logical_date) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.insert("logical_date".into(), e);
                None
            }
        }
    };
    if !errors.is_empty() {
        let fields = params_form::fields(params, Some(&form), &errors);
        let message = "some values are not valid; see the marked fields".to_string();
        return Ok(trigger_form(
            &web,
            &session,
            &headers,
            &dag_id,
            dag.is_paused,
            again(fields, Some(message), errors),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let conf = params_form::read(params, &form, &raw_conf).unwrap_or_default();

    let mut body = Map::new();
    body.insert(
        "logical_date".into(),
        logical.map_or(Value::Null, Value::String),
    );
    body.insert("conf".into(), Value::Object(conf));
    if !run_id.is_empty() {
        body.insert("dag_run_id".into(), Value::String(run_id.clone()));
    }
    if !note.is_empty() {
        body.insert("note".into(), Value::String(note.clone()));
    }
    let answer = api_call::call(
        &web,
        &session,
        Method::POST,
        &format!("/dags/{}/dagRuns", seg(&dag_id)),
        Some(&Value::Object(body)),
    )
    .await?;
    if answer.is_success() {
        let new_run = answer.body["dag_run_id"].as_str().unwrap_or_default();
        return Ok(render::flash_redirect(
            &web,
            &run_page(&dag_id, new_run),
            true,
            &format!("triggered {dag_id}: run {new_run}"),
        ));
    }
    if answer.status == StatusCode::FORBIDDEN {
        return Ok(render::flash_redirect(
            &web,
            &format!("/dags/{}", seg(&dag_id)),
            false,
            &answer.detail(),
        ));
    }
    let detail = answer.detail();
    let mut field_errors = BTreeMap::new();
    if let Some(param) = params_form::param_of_error(&detail)
        && params.contains_key(&param)
    {
        field_errors.insert(param, detail.clone());
    }
    let fields = params_form::fields(params, Some(&form), &field_errors);
    let status = if answer.status.is_client_error() {
        answer.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok(trigger_form(
        &web,
        &session,
        &headers,
        &dag_id,
        dag.is_paused,
        again(fields, Some(detail), field_errors),
        status,
    ))
}

// ---- previews --------------------------------------------------------------------------------

/// The confirmation page of a change whose dry run listed `affected`: the same form posted
/// again with `confirm=1`.
#[allow(clippy::too_many_arguments)]
fn preview(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    title: &str,
    action: &str,
    form: &Fields,
    affected: &Value,
    back: &str,
    verb: &str,
) -> Response {
    let keep: Vec<(String, String)> = form
        .iter()
        .filter(|(k, _)| k != "csrf_token" && k != "confirm")
        .cloned()
        .collect();
    let items = affected["task_instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    render::page(
        web,
        session,
        headers,
        "action_preview.html",
        "dags",
        context! {
            title => title,
            action => action,
            keep => keep,
            items => items,
            back => back,
            verb => verb,
        },
    )
}

// ---- runs ------------------------------------------------------------------------------------

/// `POST /dags/{dag_id}/runs/{run_id}/clear`: without `confirm`, the dry run's list of what
/// would be cleared; with it, the clear.
async fn clear_run(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path((dag_id, run_id)): Path<(String, String)>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let back = run_page(&dag_id, &run_id);
    let confirm = flag(&form, "confirm");
    let mut body = json!({"dry_run": !confirm, "only_failed": flag(&form, "only_failed")});
    let note = text(&form, "note");
    if confirm && !note.is_empty() {
        body["note"] = Value::String(note);
    }
    let answer = api_call::call(
        &web,
        &session,
        Method::POST,
        &format!("/dags/{}/dagRuns/{}/clear", seg(&dag_id), seg(&run_id)),
        Some(&body),
    )
    .await?;
    if !answer.is_success() {
        return Ok(render::flash_redirect(&web, &back, false, &answer.detail()));
    }
    if !confirm {
        return Ok(preview(
            &web,
            &session,
            &headers,
            &format!("Clear run {run_id}"),
            &format!("{back}/clear"),
            &form,
            &answer.body,
            &back,
            "Clear",
        ));
    }
    Ok(render::flash_redirect(
        &web,
        &back,
        true,
        &format!("run {run_id} cleared"),
    ))
}

/// `POST /dags/{dag_id}/runs/{run_id}/state`: mark the run `success` or `failed`.
async fn mark_run(
    State(web): State<WebState>,
    session: Session,
    Path((dag_id, run_id)): Path<(String, String)>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let back = run_page(&dag_id, &run_id);
    let state = text(&form, "state");
    if !matches!(state.as_str(), "success" | "failed" | "queued") {
        return Ok(render::flash_redirect(
            &web,
            &back,
            false,
            &format!("`{state}` is not a state a run can be marked with"),
        ));
    }
    let answer = api_call::call(
        &web,
        &session,
        Method::PATCH,
        &format!(
            "/dags/{}/dagRuns/{}?update_mask=state",
            seg(&dag_id),
            seg(&run_id)
        ),
        Some(&json!({"state": state})),
    )
    .await?;
    Ok(if answer.is_success() {
        render::flash_redirect(&web, &back, true, &format!("run {run_id} marked {state}"))
    } else {
        render::flash_redirect(&web, &back, false, &answer.detail())
    })
}

/// The note field: empty removes the note.
fn note_value(form: &Fields) -> Value {
    let note = text(form, "note");
    if note.is_empty() {
        Value::Null
    } else {
        Value::String(note)
    }
}

/// `POST /dags/{dag_id}/runs/{run_id}/note`.
async fn run_note(
    State(web): State<WebState>,
    session: Session,
    Path((dag_id, run_id)): Path<(String, String)>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let back = run_page(&dag_id, &run_id);
    let answer = api_call::call(
        &web,
        &session,
        Method::PATCH,
        &format!(
            "/dags/{}/dagRuns/{}?update_mask=note",
            seg(&dag_id),
            seg(&run_id)
        ),
        Some(&json!({"note": note_value(&form)})),
    )
    .await?;
    Ok(if answer.is_success() {
        render::flash_redirect(&web, &back, true, "note saved")
    } else {
        render::flash_redirect(&web, &back, false, &answer.detail())
    })
}

// ---- task instances ----------------------------------------------------------------------------

/// `POST …/tasks/{task_id}/clear`: the task (one map index, or all) with, as ticked, its
/// upstream and downstream tasks, only the failed ones, and the same tasks in earlier and
/// later runs. Dry run first, as for a run.
async fn clear_task(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let map_index = map_index(&form)?;
    let back = task_page(&dag_id, &run_id, &task_id, map_index);
    let confirm = flag(&form, "confirm");
    let task = match map_index {
        Some(m) if m >= 0 => json!([task_id, m]),
        _ => json!(task_id),
    };
    let mut body = json!({
        "dry_run": !confirm,
        "dag_run_id": run_id,
        "task_ids": [task],
        "only_failed": flag(&form, "only_failed"),
        "include_upstream": flag(&form, "upstream"),
        "include_downstream": flag(&form, "downstream"),
        "include_past": flag(&form, "past"),
        "include_future": flag(&form, "future"),
    });
    let note = text(&form, "note");
    if confirm && !note.is_empty() {
        body["note"] = Value::String(note);
    }
    let answer = api_call::call(
        &web,
        &session,
        Method::POST,
        &format!("/dags/{}/clearTaskInstances", seg(&dag_id)),
        Some(&body),
    )
    .await?;
    if !answer.is_success() {
        return Ok(render::flash_redirect(&web, &back, false, &answer.detail()));
    }
    if !confirm {
        return Ok(preview(
            &web,
            &session,
            &headers,
            &format!("Clear {task_id} in run {run_id}"),
            &format!(
                "{}/tasks/{}/clear",
                run_page(&dag_id, &run_id),
                seg(&task_id)
            ),
            &form,
            &answer.body,
            &back,
            "Clear",
        ));
    }
    let count = answer.body["total_entries"].as_i64().unwrap_or(0);
    Ok(render::flash_redirect(
        &web,
        &back,
        true,
        &format!(
            "{count} task instance{} cleared",
            if count == 1 { "" } else { "s" }
        ),
    ))
}

/// `POST …/tasks/{task_id}/state`: mark `success` or `failed` (with upstream, downstream,
/// past and future as ticked), after a preview of what changes.
async fn mark_task(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let map_index = map_index(&form)?;
    let back = task_page(&dag_id, &run_id, &task_id, map_index);
    let state = text(&form, "state");
    if !matches!(state.as_str(), "success" | "failed" | "skipped") {
        return Ok(render::flash_redirect(
            &web,
            &back,
            false,
            &format!("`{state}` is not a state a task can be marked with"),
        ));
    }
    let confirm = flag(&form, "confirm");
    let body = json!({
        "new_state": state,
        "include_upstream": flag(&form, "upstream"),
        "include_downstream": flag(&form, "downstream"),
        "include_past": flag(&form, "past"),
        "include_future": flag(&form, "future"),
    });
    let mut path = format!(
        "/dags/{}/dagRuns/{}/taskInstances/{}",
        seg(&dag_id),
        seg(&run_id),
        seg(&task_id)
    );
    if !confirm {
        path.push_str("/dry_run");
    }
    path.push_str("?update_mask=new_state");
    if let Some(m) = map_index {
        path.push_str(&format!("&map_index={m}"));
    }
    let answer = api_call::call(&web, &session, Method::PATCH, &path, Some(&body)).await?;
    if !answer.is_success() {
        return Ok(render::flash_redirect(&web, &back, false, &answer.detail()));
    }
    if !confirm {
        return Ok(preview(
            &web,
            &session,
            &headers,
            &format!("Mark {task_id} {state} in run {run_id}"),
            &format!(
                "{}/tasks/{}/state",
                run_page(&dag_id, &run_id),
                seg(&task_id)
            ),
            &form,
            &answer.body,
            &back,
            &format!("Mark {state}"),
        ));
    }
    let count = answer.body["total_entries"].as_i64().unwrap_or(0);
    Ok(render::flash_redirect(
        &web,
        &back,
        true,
        &format!(
            "{count} task instance{} marked {state}",
            if count == 1 { "" } else { "s" }
        ),
    ))
}

/// `POST …/tasks/{task_id}/note`.
async fn task_note(
    State(web): State<WebState>,
    session: Session,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    axum::Form(form): axum::Form<Fields>,
) -> Result<Response, UiError> {
    let map_index = map_index(&form)?;
    let back = task_page(&dag_id, &run_id, &task_id, map_index);
    let mut path = format!(
        "/dags/{}/dagRuns/{}/taskInstances/{}?update_mask=note",
        seg(&dag_id),
        seg(&run_id),
        seg(&task_id)
    );
    if let Some(m) = map_index {
        path.push_str(&format!("&map_index={m}"));
    }
    let answer = api_call::call(
        &web,
        &session,
        Method::PATCH,
        &path,
        Some(&json!({"note": note_value(&form)})),
    )
    .await?;
    Ok(if answer.is_success() {
        render::flash_redirect(&web, &back, true, "note saved")
    } else {
        render::flash_redirect(&web, &back, false, &answer.detail())
    })
}
