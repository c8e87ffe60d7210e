//! The admin pages over the API's resources: variables (`/variables`), connections
//! (`/connections`) and pools (`/pools`): lists with search and pages, create, edit and delete
//! forms.
//!
//! Reads and writes are the API's routes called in-process as the signed-in user, so role
//! checks, validation, encryption at rest, masking of secrets and the event log are the API's.
//! A secret is never sent to the browser: values of sensitive variables and sensitive keys of a
//! connection's extra are shown as the API masks them, a connection's password not at all, and
//! an empty secret field in an edit form keeps what is stored.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::{Value as Ctx, context};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use updraft_api::{Access, Resource, required_role};

use super::{PAGE_SIZE, contains_pattern, page_count, query_base, require, seg};
use crate::WebState;
use crate::api_call::{self, Answer};
use crate::error::UiError;
use crate::render;
use crate::session::Session;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/variables", get(variables))
        .route("/variables/new", get(variable_new).post(variable_create))
        .route("/variables/edit", get(variable_edit).post(variable_update))
        .route("/variables/delete", post(variable_delete))
        .route("/connections", get(connections))
        .route(
            "/connections/new",
            get(connection_new).post(connection_create),
        )
        .route(
            "/connections/edit",
            get(connection_edit).post(connection_update),
        )
        .route("/connections/delete", post(connection_delete))
        .route("/connections/test", post(connection_test))
        .route("/pools", get(pools))
        .route("/pools/new", get(pool_new).post(pool_create))
        .route("/pools/edit", get(pool_edit).post(pool_update))
        .route("/pools/delete", post(pool_delete))
}

/// What the API shows in place of a secret.
const MASK: &str = "***";

// ---- helpers shared by the admin pages -------------------------------------------------------

/// The API's answer to a write: its body, or its error detail to show. A refusal of the role
/// (403) or of the session (401) is the page's answer instead.
pub fn outcome(answer: Answer) -> Result<Result<Value, (StatusCode, String)>, UiError> {
    match answer.status {
        s if s.is_success() => Ok(Ok(answer.body)),
        StatusCode::FORBIDDEN => Err(UiError::Forbidden(answer.detail())),
        StatusCode::UNAUTHORIZED => Err(UiError::LoginRequired { next: "/".into() }),
        s => Ok(Err((s, answer.detail()))),
    }
}

/// A page rendered with `status` (a form shown again with the API's error).
pub fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// `None` for an empty (or blank) form field.
fn opt(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    search: String,
    page: Option<i64>,
}

/// The list of `resource` under `path`: `(items, total, page)`.
async fn listing(
    web: &WebState,
    session: &Session,
    path: &str,
    pattern_param: &str,
    q: &ListQuery,
    items: &str,
) -> Result<(Vec<Value>, i64, i64), UiError> {
    let page = q.page.unwrap_or(1).max(1);
    let mut uri = format!("{path}?limit={PAGE_SIZE}&offset={}", (page - 1) * PAGE_SIZE);
    if !q.search.trim().is_empty() {
        uri.push_str(&format!(
            "&{pattern_param}={}",
            seg(&contains_pattern(q.search.trim()))
        ));
    }
    let body = api_call::get(web, session, &uri).await?;
    let rows = body[items].as_array().cloned().unwrap_or_default();
    Ok((rows, body["total_entries"].as_i64().unwrap_or(0), page))
}

// ---- variables -------------------------------------------------------------------------------

async fn variables(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    require(&session, Resource::Variable, Access::Read)?;
    let (rows, total, page) = listing(
        &web,
        &session,
        "/variables",
        "variable_key_pattern",
        &q,
        "variables",
    )
    .await?;
    Ok(render::page(
        &web,
        &session,
        &headers,
        "variables.html",
        "variables",
        context! {
            title => "Variables",
            variables => rows,
            total => total,
            search => q.search,
            page => page,
            pages => page_count(total),
            page_base => query_base("/variables", &[("search", q.search.as_str())]),
            write => session.role >= required_role(Resource::Variable, Access::Write),
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct VariableForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
pub struct KeyQuery {
    key: String,
}

/// The create or edit form; `masked` is the API's masked text of a stored value that may not
/// be shown (then the field starts empty and the masked text is shown beside it).
fn variable_form(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    editing: bool,
    masked: Option<&str>,
    form: &VariableForm,
    error: Option<&str>,
) -> Response {
    render::page(
        web,
        session,
        headers,
        "variable_form.html",
        "variables",
        context! {
            title => if editing { format!("Edit variable {}", form.key) } else { "New variable".into() },
            editing => editing,
            masked => masked.is_some(),
            masked_value => masked,
            key => form.key,
            value => form.value,
            description => form.description,
            error => error,
        },
    )
}

async fn variable_new(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    require(&session, Resource::Variable, Access::Write)?;
    Ok(variable_form(
        &web,
        &session,
        &headers,
        false,
        None,
        &VariableForm::default(),
        None,
    ))
}

async fn variable_create(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<VariableForm>,
) -> Result<Response, UiError> {
    let body = json!({
        "key": form.key.trim(),
        "value": form.value,
        "description": opt(&form.description),
    });
    let answer = api_call::call(&web, &session, Method::POST, "/variables", Some(&body)).await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(
            &web,
            "/variables",
            true,
            &format!("variable {} created", form.key.trim()),
        ),
        Err((status, detail)) => with_status(
            variable_form(&web, &session, &headers, false, None, &form, Some(&detail)),
            status,
        ),
    })
}

/// Whether the API masked (part of) a value it answered.
fn is_masked(value: &Value) -> bool {
    value.as_str().is_some_and(|v| v.contains(MASK))
}

async fn variable_edit(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Result<Response, UiError> {
    require(&session, Resource::Variable, Access::Write)?;
    let v = api_call::get(&web, &session, &format!("/variables/{}", seg(&q.key))).await?;
    let masked = is_masked(&v["value"]).then(|| v["value"].as_str().unwrap_or_default());
    let form = VariableForm {
        key: q.key,
        // A masked value is never put in the form: an empty field keeps the stored one.
        value: if masked.is_some() {
            String::new()
        } else {
            v["value"].as_str().unwrap_or_default().to_string()
        },
        description: v["description"].as_str().unwrap_or_default().to_string(),
    };
    Ok(variable_form(
        &web, &session, &headers, true, masked, &form, None,
    ))
}

async fn variable_update(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<VariableForm>,
) -> Result<Response, UiError> {
    let path = format!("/variables/{}", seg(&form.key));
    // Whether the stored value is masked is the API's answer, not the form's say.
    let current = api_call::call(&web, &session, Method::GET, &path, None).await?;
    let current = match outcome(current)? {
        Ok(v) => v,
        Err((_, detail)) => return Ok(render::flash_redirect(&web, "/variables", false, &detail)),
    };
    let masked =
        is_masked(&current["value"]).then(|| current["value"].as_str().unwrap_or_default());
    let keep_value = masked.is_some() && form.value.is_empty();
    let mask = if keep_value {
        "?update_mask=description"
    } else {
        ""
    };
    let body = json!({
        "key": form.key,
        "value": if keep_value { Value::String(String::new()) } else { Value::String(form.value.clone()) },
        "description": opt(&form.description),
    });
    let answer = api_call::call(
        &web,
        &session,
        Method::PATCH,
        &format!("{path}{mask}"),
        Some(&body),
    )
    .await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(
            &web,
            "/variables",
            true,
            &format!("variable {} saved", form.key),
        ),
        Err((status, detail)) => {
            let shown = VariableForm {
                value: if masked.is_some() {
                    String::new()
                } else {
                    form.value.clone()
                },
                ..form
            };
            with_status(
                variable_form(
                    &web,
                    &session,
                    &headers,
                    true,
                    masked,
                    &shown,
                    Some(&detail),
                ),
                status,
            )
        }
    })
}

/// Deletes `what` through the API (`DELETE /api/v2{api_path}`) and goes back to `back` with the
/// outcome as a flash.
async fn delete_then_back(
    web: &WebState,
    session: &Session,
    api_path: &str,
    back: &str,
    what: &str,
) -> Result<Response, UiError> {
    let answer = api_call::call(web, session, Method::DELETE, api_path, None).await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(web, back, true, &format!("{what} deleted")),
        Err((_, detail)) => render::flash_redirect(web, back, false, &detail),
    })
}

async fn variable_delete(
    State(web): State<WebState>,
    session: Session,
    axum::Form(q): axum::Form<KeyQuery>,
) -> Result<Response, UiError> {
    let api_path = format!("/variables/{}", seg(&q.key));
    delete_then_back(
        &web,
        &session,
        &api_path,
        "/variables",
        &format!("variable {}", q.key),
    )
    .await
}

// ---- connections -----------------------------------------------------------------------------

/// Whether `core.test_connection` lets people test connections (`Disabled` and `Hidden` do not).
fn test_enabled(web: &WebState) -> bool {
    web.api().config.core.test_connection == "Enabled"
}

async fn connections(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    require(&session, Resource::Connection, Access::Read)?;
    let (rows, total, page) = listing(
        &web,
        &session,
        "/connections",
        "connection_id_pattern",
        &q,
        "connections",
    )
    .await?;
    // What the page may show of each: the password only as "set" or not.
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|mut c| {
            let has_password = !c["password"].is_null();
            if let Some(o) = c.as_object_mut() {
                o.remove("password");
                o.insert("has_password".into(), has_password.into());
            }
            c
        })
        .collect();
    Ok(render::page(
        &web,
        &session,
        &headers,
        "connections.html",
        "connections",
        context! {
            title => "Connections",
            connections => rows,
            total => total,
            search => q.search,
            page => page,
            pages => page_count(total),
            page_base => query_base("/connections", &[("search", q.search.as_str())]),
            write => session.role >= required_role(Resource::Connection, Access::Write),
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct ConnectionForm {
    #[serde(default)]
    connection_id: String,
    #[serde(default)]
    conn_type: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    schema: String,
    #[serde(default)]
    login: String,
    /// Never shown again; empty in an edit form keeps the stored password.
    #[serde(default)]
    password: String,
    /// Checked: remove the stored password.
    #[serde(default)]
    clear_password: Option<String>,
    #[serde(default)]
    port: String,
    #[serde(default)]
    extra: String,
    #[serde(default)]
    description: String,
}

impl ConnectionForm {
    /// What the form shows: every field but the password.
    fn shown(&self) -> Ctx {
        context! {
            connection_id => self.connection_id,
            conn_type => self.conn_type,
            host => self.host,
            schema => self.schema,
            login => self.login,
            port => self.port,
            extra => self.extra,
            description => self.description,
        }
    }

    /// The API's `ConnectionBody`; every optional field present (an empty one clears it),
    /// the password only when typed (or `null` when it is to be removed).
    fn body(&self, editing: bool) -> Result<Value, String> {
        let port = match self.port.trim() {
            "" => Value::Null,
            p => match p.parse::<i32>() {
                Ok(n) if (0..=65535).contains(&n) => json!(n),
                _ => return Err(format!("port `{p}` is not a number from 0 to 65535")),
            },
        };
        let mut body = Map::new();
        body.insert("connection_id".into(), json!(self.connection_id.trim()));
        body.insert("conn_type".into(), json!(self.conn_type.trim()));
        for (name, value) in [
            ("host", &self.host),
            ("schema", &self.schema),
            ("login", &self.login),
            ("description", &self.description),
            ("extra", &self.extra),
        ] {
            body.insert(name.into(), json!(opt(value)));
        }
        body.insert("port".into(), port);
        if !self.password.is_empty() {
            body.insert("password".into(), json!(self.password));
        } else if editing && self.clear_password.is_some() {
            body.insert("password".into(), Value::Null);
        }
        Ok(Value::Object(body))
    }
}

#[derive(Deserialize)]
pub struct IdQuery {
    id: String,
}

#[allow(clippy::too_many_arguments)]
fn connection_form(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    editing: bool,
    has_password: bool,
    form: &ConnectionForm,
    error: Option<&str>,
) -> Response {
    render::page(
        web,
        session,
        headers,
        "connection_form.html",
        "connections",
        context! {
            title => if editing { format!("Edit connection {}", form.connection_id) } else { "New connection".into() },
            editing => editing,
            has_password => has_password,
            conn => form.shown(),
            test_enabled => test_enabled(web),
            error => error,
        },
    )
}

async fn connection_new(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    require(&session, Resource::Connection, Access::Write)?;
    Ok(connection_form(
        &web,
        &session,
        &headers,
        false,
        false,
        &ConnectionForm::default(),
        None,
    ))
}

async fn connection_create(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConnectionForm>,
) -> Result<Response, UiError> {
    let body = match form.body(false) {
        Ok(b) => b,
        Err(e) => {
            require(&session, Resource::Connection, Access::Write)?;
            return Ok(with_status(
                connection_form(&web, &session, &headers, false, false, &form, Some(&e)),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let answer = api_call::call(&web, &session, Method::POST, "/connections", Some(&body)).await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(
            &web,
            "/connections",
            true,
            &format!("connection {} created", form.connection_id.trim()),
        ),
        Err((status, detail)) => with_status(
            connection_form(&web, &session, &headers, false, false, &form, Some(&detail)),
            status,
        ),
    })
}

/// A stored connection as the edit form shows it (no password; the extra as the API masks it).
fn form_of(c: &Value) -> ConnectionForm {
    let text = |name: &str| c[name].as_str().unwrap_or_default().to_string();
    ConnectionForm {
        connection_id: text("connection_id"),
        conn_type: text("conn_type"),
        host: text("host"),
        schema: text("schema"),
        login: text("login"),
        password: String::new(),
        clear_password: None,
        port: c["port"]
            .as_i64()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        extra: text("extra"),
        description: text("description"),
    }
}

async fn connection_edit(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<IdQuery>,
) -> Result<Response, UiError> {
    require(&session, Resource::Connection, Access::Write)?;
    let c = api_call::get(&web, &session, &format!("/connections/{}", seg(&q.id))).await?;
    Ok(connection_form(
        &web,
        &session,
        &headers,
        true,
        !c["password"].is_null(),
        &form_of(&c),
        None,
    ))
}

async fn connection_update(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConnectionForm>,
) -> Result<Response, UiError> {
    let path = format!("/connections/{}", seg(form.connection_id.trim()));
    let current = api_call::call(&web, &session, Method::GET, &path, None).await?;
    let current = match outcome(current)? {
        Ok(c) => c,
        Err((_, detail)) => {
            return Ok(render::flash_redirect(&web, "/connections", false, &detail));
        }
    };
    let has_password = !current["password"].is_null();
    let body = match form.body(true) {
        Ok(b) => b,
        Err(e) => {
            return Ok(with_status(
                connection_form(
                    &web,
                    &session,
                    &headers,
                    true,
                    has_password,
                    &form,
                    Some(&e),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let answer = api_call::call(&web, &session, Method::PATCH, &path, Some(&body)).await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(
            &web,
            "/connections",
            true,
            &format!("connection {} saved", form.connection_id.trim()),
        ),
        Err((status, detail)) => with_status(
            connection_form(
                &web,
                &session,
                &headers,
                true,
                has_password,
                &form,
                Some(&detail),
            ),
            status,
        ),
    })
}

async fn connection_delete(
    State(web): State<WebState>,
    session: Session,
    axum::Form(q): axum::Form<IdQuery>,
) -> Result<Response, UiError> {
    let api_path = format!("/connections/{}", seg(&q.id));
    delete_then_back(
        &web,
        &session,
        &api_path,
        "/connections",
        &format!("connection {}", q.id),
    )
    .await
}

/// `POST /connections/test`: the stored connection (its masked secrets, which the API's test
/// reads as "keep") sent to `POST /api/v2/connections/test`; the answer is shown as a flash.
async fn connection_test(
    State(web): State<WebState>,
    session: Session,
    axum::Form(q): axum::Form<IdQuery>,
) -> Result<Response, UiError> {
    let back = format!("/connections/edit?id={}", seg(&q.id));
    let current = api_call::get(&web, &session, &format!("/connections/{}", seg(&q.id))).await?;
    let mut body = form_of(&current).body(false).map_err(UiError::BadRequest)?;
    if let Some(o) = body.as_object_mut()
        && !current["password"].is_null()
    {
        o.insert("password".into(), json!(MASK));
    }
    let answer = api_call::call(
        &web,
        &session,
        Method::POST,
        "/connections/test",
        Some(&body),
    )
    .await?;
    Ok(match outcome(answer)? {
        Ok(r) => render::flash_redirect(
            &web,
            &back,
            r["status"].as_bool().unwrap_or(false),
            r["message"].as_str().unwrap_or("tested"),
        ),
        Err((_, detail)) => render::flash_redirect(&web, &back, false, &detail),
    })
}

// ---- pools -----------------------------------------------------------------------------------

const DEFAULT_POOL: &str = "default_pool";

async fn pools(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    require(&session, Resource::Pool, Access::Read)?;
    let (rows, total, page) =
        listing(&web, &session, "/pools", "pool_name_pattern", &q, "pools").await?;
    Ok(render::page(
        &web,
        &session,
        &headers,
        "pools.html",
        "pools",
        context! {
            title => "Pools",
            pools => rows,
            total => total,
            search => q.search,
            page => page,
            pages => page_count(total),
            page_base => query_base("/pools", &[("search", q.search.as_str())]),
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct PoolForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slots: String,
    #[serde(default)]
    description: String,
}

impl PoolForm {
    fn slots(&self) -> Result<i32, String> {
        let s = self.slots.trim();
        s.parse::<i32>()
            .map_err(|_| format!("slots `{s}` is not a whole number (-1 means unlimited)"))
    }
}

#[derive(Deserialize)]
pub struct NameQuery {
    name: String,
}

fn pool_form(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    editing: bool,
    form: &PoolForm,
    error: Option<&str>,
) -> Response {
    render::page(
        web,
        session,
        headers,
        "pool_form.html",
        "pools",
        context! {
            title => if editing { format!("Edit pool {}", form.name) } else { "New pool".into() },
            editing => editing,
            is_default => form.name == DEFAULT_POOL,
            name => form.name,
            slots => form.slots,
            description => form.description,
            error => error,
        },
    )
}

async fn pool_new(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    require(&session, Resource::Pool, Access::Write)?;
    let form = PoolForm {
        slots: "128".into(),
        ..PoolForm::default()
    };
    Ok(pool_form(&web, &session, &headers, false, &form, None))
}

async fn pool_create(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<PoolForm>,
) -> Result<Response, UiError> {
    let slots = match form.slots() {
        Ok(s) => s,
        Err(e) => {
            require(&session, Resource::Pool, Access::Write)?;
            return Ok(with_status(
                pool_form(&web, &session, &headers, false, &form, Some(&e)),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let body = json!({
        "name": form.name.trim(),
        "slots": slots,
        "description": opt(&form.description),
    });
    let answer = api_call::call(&web, &session, Method::POST, "/pools", Some(&body)).await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(
            &web,
            "/pools",
            true,
            &format!("pool {} created", form.name.trim()),
        ),
        Err((status, detail)) => with_status(
            pool_form(&web, &session, &headers, false, &form, Some(&detail)),
            status,
        ),
    })
}

async fn pool_edit(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<NameQuery>,
) -> Result<Response, UiError> {
    require(&session, Resource::Pool, Access::Write)?;
    let p = api_call::get(&web, &session, &format!("/pools/{}", seg(&q.name))).await?;
    let form = PoolForm {
        name: q.name,
        slots: p["slots"].as_i64().unwrap_or_default().to_string(),
        description: p["description"].as_str().unwrap_or_default().to_string(),
    };
    Ok(pool_form(&web, &session, &headers, true, &form, None))
}

async fn pool_update(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<PoolForm>,
) -> Result<Response, UiError> {
    let slots = match form.slots() {
        Ok(s) => s,
        Err(e) => {
            require(&session, Resource::Pool, Access::Write)?;
            return Ok(with_status(
                pool_form(&web, &session, &headers, true, &form, Some(&e)),
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    // `default_pool` takes only its slots (the API's rule); other pools slots and description.
    let mask = if form.name == DEFAULT_POOL {
        "update_mask=slots"
    } else {
        "update_mask=slots&update_mask=description"
    };
    let body = if form.name == DEFAULT_POOL {
        json!({ "slots": slots })
    } else {
        json!({ "slots": slots, "description": opt(&form.description) })
    };
    let answer = api_call::call(
        &web,
        &session,
        Method::PATCH,
        &format!("/pools/{}?{mask}", seg(&form.name)),
        Some(&body),
    )
    .await?;
    Ok(match outcome(answer)? {
        Ok(_) => render::flash_redirect(&web, "/pools", true, &format!("pool {} saved", form.name)),
        Err((status, detail)) => with_status(
            pool_form(&web, &session, &headers, true, &form, Some(&detail)),
            status,
        ),
    })
}

async fn pool_delete(
    State(web): State<WebState>,
    session: Session,
    axum::Form(q): axum::Form<NameQuery>,
) -> Result<Response, UiError> {
    let api_path = format!("/pools/{}", seg(&q.name));
    delete_then_back(
        &web,
        &session,
        &api_path,
        "/pools",
        &format!("pool {}", q.name),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_encode_slashes_and_spaces() {
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("x.y-z_~"), "x.y-z_~");
    }

    #[test]
    fn search_is_literal() {
        assert_eq!(contains_pattern("a_b%"), "%a\\_b\\%%");
    }
}
