//! `/execution/xcoms/{dag_id}/{run_id}/{task_id}/{key}`: XCom get, set, delete and count. Values
//! are stored as the worker sends them (already serialised JSON), as Airflow does.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::{Value, json};
use updraft_store::XCom;

use super::{ExecError, TaskToken, body, query_int};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/xcoms/{dag_id}/{run_id}/{task_id}/{*key}",
        get(get_xcom)
            .head(head_xcom)
            .post(set_xcom)
            .delete(delete_xcom),
    )
}

type XComPath = Path<(String, String, String, String)>;

fn map_index(q: &[(String, String)]) -> Result<i32, ExecError> {
    Ok(query_int(q, "map_index")?.unwrap_or(-1) as i32)
}

fn key_required(key: &str) -> Result<(), ExecError> {
    if key.is_empty() {
        return Err(ExecError::detail(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            "XCom key must be a non-empty string.",
        ));
    }
    Ok(())
}

/// `GET`: one value by `map_index` (default -1), or by position among the mapped values with
/// `offset` (negative counts from the end).
async fn get_xcom(
    State(state): State<AppState>,
    _token: TaskToken,
    Path((dag_id, run_id, task_id, key)): XComPath,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ExecError> {
    // The lazy sequence routes (`…/{key}/item/{offset}`, `…/{key}/slice`) share the key's
    // wildcard, so a key path ending like them is read as those routes.
    if let Some((base, offset)) = key.rsplit_once("/item/")
        && let Ok(offset) = offset.parse::<i64>()
    {
        let all = mapped_values(&state, &dag_id, &run_id, &task_id, base).await?;
        let at = if offset >= 0 {
            usize::try_from(offset).ok()
        } else {
            all.len()
                .checked_sub(usize::try_from(-offset).unwrap_or(usize::MAX))
        };
        return match at.and_then(|i| all.get(i)) {
            Some(v) => Ok(axum::Json(v.clone()).into_response()),
            None => Err(ExecError::detail(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "XCom with key='{base}' offset={offset} not found for task '{task_id}' in \
                     DAG run '{run_id}' of '{dag_id}'"
                ),
            )),
        };
    }
    if let Some(base) = key.strip_suffix("/slice") {
        let all = mapped_values(&state, &dag_id, &run_id, &task_id, base).await?;
        let picked = python_slice(
            &all,
            query_int(&q, "start")?,
            query_int(&q, "stop")?,
            query_int(&q, "step")?,
        )?;
        return Ok(axum::Json(Value::Array(picked)).into_response());
    }
    key_required(&key)?;
    let mi = map_index(&q)?;
    let value = match query_int(&q, "offset")? {
        None => {
            state
                .store
                .get_xcom(&dag_id, &run_id, &task_id, mi, &key)
                .await?
        }
        Some(offset) => {
            let mut all: Vec<XCom> = state
                .store
                .list_xcoms(&dag_id, &run_id)
                .await?
                .into_iter()
                .filter(|x| x.task_id == task_id && x.key == key)
                .collect();
            all.sort_by_key(|x| x.map_index);
            let at = if offset >= 0 {
                usize::try_from(offset).ok()
            } else {
                all.len()
                    .checked_sub(usize::try_from(-offset).unwrap_or(usize::MAX))
            };
            at.and_then(|i| all.get(i)).map(|x| x.value.clone())
        }
    };
    match value {
        Some(value) => Ok(axum::Json(json!({"key": key, "value": value})).into_response()),
        None => Err(ExecError::detail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "XCom with key='{key}' map_index={mi} not found for task '{task_id}' in DAG run \
                 '{run_id}' of '{dag_id}'"
            ),
        )),
    }
}

/// The values of `key` of every map index of a task in the run, by map index.
async fn mapped_values(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    key: &str,
) -> Result<Vec<Value>, ExecError> {
    let mut all: Vec<XCom> = state
        .store
        .list_xcoms(dag_id, run_id)
        .await?
        .into_iter()
        .filter(|x| x.task_id == task_id && x.key == key)
        .collect();
    all.sort_by_key(|x| x.map_index);
    Ok(all.into_iter().map(|x| x.value).collect())
}

/// `values[start:stop:step]` with Python's rules (negative bounds count from the end, a
/// negative step walks backwards, bounds are clamped).
fn python_slice(
    values: &[Value],
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> Result<Vec<Value>, ExecError> {
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(ExecError::Api(crate::Error::validation(
            &["query", "step"],
            "slice step cannot be zero",
        )));
    }
    let len = values.len() as i64;
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v + len } else { v };
    let mut out = Vec::new();
    if step > 0 {
        let mut i = start.map_or(0, |v| clamp(norm(v), 0, len));
        let end = stop.map_or(len, |v| clamp(norm(v), 0, len));
        while i < end {
            out.push(values[i as usize].clone());
            i += step;
        }
    } else {
        let mut i = start.map_or(len - 1, |v| clamp(norm(v), -1, len - 1));
        let end = stop.map_or(-1, |v| clamp(norm(v), -1, len - 1));
        while i > end {
            out.push(values[i as usize].clone());
            i += step;
        }
    }
    Ok(out)
}

/// `HEAD`: the number of (mapped) values in `Content-Range: map_indexes N`.
async fn head_xcom(
    State(state): State<AppState>,
    _token: TaskToken,
    Path((dag_id, run_id, task_id, key)): XComPath,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ExecError> {
    if q.iter().any(|(k, _)| k == "map_index") {
        return Err(ExecError::detail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Cannot specify map_index in a HEAD request",
        ));
    }
    let n = state
        .store
        .list_xcoms(&dag_id, &run_id)
        .await?
        .iter()
        .filter(|x| x.task_id == task_id && x.key == key)
        .count();
    let mut r = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("map_indexes {n}")) {
        r.headers_mut().insert("content-range", v);
    }
    Ok(r)
}

/// The instance a write addresses, which must be the token's own instance at its try: a task
/// writes only its own XComs, and an old try writes nothing.
async fn own_target(
    state: &AppState,
    token: &TaskToken,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
) -> Result<updraft_store::TaskInstance, ExecError> {
    let ti = token.current_ti(state).await?;
    if ti.dag_id != dag_id
        || ti.run_id != run_id
        || ti.task_id != task_id
        || ti.map_index != map_index
    {
        return Err(ExecError::detail(
            StatusCode::FORBIDDEN,
            "access_denied",
            "a task may only write the XComs of its own task instance",
        ));
    }
    Ok(ti)
}

/// `POST`: sets a value (the body is the JSON value) for `map_index` (default -1).
async fn set_xcom(
    State(state): State<AppState>,
    token: TaskToken,
    Path((dag_id, run_id, task_id, key)): XComPath,
    Query(q): Query<Vec<(String, String)>>,
    request: Request,
) -> Result<Response, ExecError> {
    key_required(&key)?;
    let mi = map_index(&q)?;
    let ti = own_target(&state, &token, &dag_id, &run_id, &task_id, mi).await?;
    // The SDK sends the length of a return value a mapped task downstream expands over; past
    // `core.max_map_length` the pushing task fails, as in Airflow. The scheduler reads the
    // length from the value itself when it expands the mapped task.
    if query_int(&q, "mapped_length")?
        .is_some_and(|n| n > i64::from(state.config.core.max_map_length))
    {
        return Err(ExecError::detail(
            StatusCode::BAD_REQUEST,
            "unmappable_return_value_length",
            "pushed value is too large to map as a downstream's dependency",
        ));
    }
    let value: Value = body(request, &state).await?;
    let now = Utc::now();
    let mut written = state.store.update_xcom(ti.id, &key, &value, now).await?;
    if !written {
        let xcom = XCom {
            ti_id: ti.id,
            dag_id,
            run_id,
            task_id,
            map_index: mi,
            key: key.clone(),
            value: value.clone(),
            timestamp: now,
        };
        match state.store.create_xcom(&xcom).await {
            Ok(()) => written = true,
            // Written concurrently by another request of the same try: replace it.
            Err(updraft_store::Error::Conflict(_)) => {
                written = state.store.update_xcom(ti.id, &key, &value, now).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !written {
        return Err(ExecError::Api(crate::Error::Internal(
            "xcom vanished while it was written".into(),
        )));
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"message": "XCom successfully set"})),
    )
        .into_response())
}

/// `DELETE`: removes the value for `map_index` (default -1); deleting a missing one is fine.
async fn delete_xcom(
    State(state): State<AppState>,
    token: TaskToken,
    Path((dag_id, run_id, task_id, key)): XComPath,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ExecError> {
    key_required(&key)?;
    let mi = map_index(&q)?;
    let ti = own_target(&state, &token, &dag_id, &run_id, &task_id, mi).await?;
    state.store.delete_xcom(ti.id, &key).await?;
    Ok(
        axum::Json(json!({"message": format!("XCom with key: {key} successfully deleted.")}))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[Value]) -> Vec<i64> {
        v.iter().map(|x| x.as_i64().unwrap()).collect()
    }

    #[test]
    fn slices_follow_python() {
        let v: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let s = |a, b, c| ints(&python_slice(&v, a, b, c).ok().unwrap());
        assert_eq!(s(None, None, None), [0, 1, 2, 3, 4]);
        assert_eq!(s(Some(1), Some(3), None), [1, 2]);
        assert_eq!(s(Some(-2), None, None), [3, 4]);
        assert_eq!(s(None, Some(-1), Some(2)), [0, 2]);
        assert_eq!(s(None, None, Some(-1)), [4, 3, 2, 1, 0]);
        assert_eq!(s(Some(3), Some(0), Some(-2)), [3, 1]);
        assert_eq!(s(Some(10), None, None), Vec::<i64>::new());
        assert_eq!(s(Some(-10), Some(2), None), [0, 1]);
        assert!(python_slice(&v, None, None, Some(0)).is_err());
    }
}
