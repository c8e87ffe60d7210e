//! `/api/v2/connections`: list, create, get, patch, delete, bulk, test and defaults, with
//! Airflow's `ConnectionBody` / `ConnectionResponse`.
//!
//! Reads and writes go through the secrets layer, so passwords and extras are encrypted at
//! rest exactly as the CLI stores them. A password is never answered: responses carry `***`
//! in its place, and sensitive keys of the extra are masked the same way. Sending the masked
//! values back (a client that PATCHes what it read) keeps the stored secrets.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use updraft_secrets::{ConnectionValue, Secrets};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page, Pattern, SortKey};
use crate::resources::{
    BulkBody, BulkResponse, BulkTarget, MASK, check_team, present, redact_text, run_bulk, secrets,
    secrets_error,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_connections, post_connection, bulk_connections))
        .routes(routes!(get_connection, patch_connection, delete_connection))
        .routes(routes!(test_connection))
        .routes(routes!(create_default_connections))
}

/// Longest connection id, as Airflow's API allows.
const ID_LEN: usize = 200;

/// Airflow's `ConnectionResponse`; `password` is always `***` when one is set.
#[derive(Serialize, ToSchema)]
pub struct ConnectionResponse {
    connection_id: String,
    conn_type: String,
    description: Option<String>,
    host: Option<String>,
    login: Option<String>,
    schema: Option<String>,
    port: Option<i32>,
    password: Option<String>,
    extra: Option<String>,
    team_name: Option<String>,
}

impl ConnectionResponse {
    fn new(state: &AppState, c: ConnectionValue) -> ConnectionResponse {
        let names = &state.config.core.sensitive_var_conn_names;
        ConnectionResponse {
            connection_id: c.conn_id,
            conn_type: c.conn_type,
            description: c.description,
            host: c.host,
            login: c.login,
            schema: c.schema,
            port: c.port,
            password: c.password.map(|_| MASK.to_string()),
            extra: c.extra.map(|e| redact_text(&e, None, names)),
            team_name: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionCollectionResponse {
    connections: Vec<ConnectionResponse>,
    total_entries: usize,
}

/// Airflow's `ConnectionBody`. Optional fields left out of a PATCH keep their stored value.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    /// `^[\w.-]+$`, at most 200 characters.
    connection_id: String,
    conn_type: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    host: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    login: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    schema: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
    port: Option<Option<i32>>,
    /// `***` (what responses show) keeps the stored password.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    password: Option<Option<String>>,
    /// A JSON object as text; `***` values keep the stored values of their keys.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    extra: Option<Option<String>>,
    #[serde(default)]
    team_name: Option<String>,
}

impl ConnectionBody {
    fn check(&self) -> Result<()> {
        let id = &self.connection_id;
        if id.is_empty()
            || id.chars().count() > ID_LEN
            || !id
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(Error::validation(
                &["body", "connection_id"],
                format!("connection_id must match `^[\\w.-]+$` and be at most {ID_LEN} characters"),
            ));
        }
        if let Some(Some(extra)) = &self.extra
            && !extra.is_empty()
            && !matches!(serde_json::from_str::<Value>(extra), Ok(Value::Object(_)))
        {
            return Err(Error::validation(
                &["body", "extra"],
                "The `extra` field must be a valid JSON object (e.g., {'key': 'value'})",
            ));
        }
        check_team(&self.team_name)
    }

    /// `""` is an empty object, as in Airflow.
    fn extra(&self) -> Option<Option<String>> {
        self.extra.clone().map(|e| {
            e.map(|text| {
                if text.is_empty() {
                    "{}".to_string()
                } else {
                    text
                }
            })
        })
    }

    /// The whole connection this body describes (create, overwrite).
    fn to_value(&self) -> ConnectionValue {
        ConnectionValue {
            conn_id: self.connection_id.clone(),
            conn_type: self.conn_type.clone(),
            description: self.description.clone().flatten(),
            host: self.host.clone().flatten(),
            schema: self.schema.clone().flatten(),
            login: self.login.clone().flatten(),
            password: self.password.clone().flatten(),
            port: self.port.flatten(),
            extra: self.extra().flatten(),
        }
    }

    /// The stored connection with the fields of this body applied: those the body names (and,
    /// with an update mask, only those in the mask). Masked secrets keep the stored ones.
    fn apply(&self, mut c: ConnectionValue, mask: Option<&[String]>) -> ConnectionValue {
        let wants = |field: &str| mask.is_none_or(|m| m.iter().any(|f| f == field));
        if wants("conn_type") {
            c.conn_type = self.conn_type.clone();
        }
        let text_fields = [
            ("description", &self.description, &mut c.description),
            ("host", &self.host, &mut c.host),
            ("login", &self.login, &mut c.login),
            ("schema", &self.schema, &mut c.schema),
        ];
        for (name, new, old) in text_fields {
            if let Some(new) = new
                && wants(name)
            {
                *old = new.clone();
            }
        }
        if let Some(port) = self.port
            && wants("port")
        {
            c.port = port;
        }
        if let Some(password) = &self.password
            && wants("password")
            && password.as_deref() != Some(MASK)
        {
            c.password = password.clone();
        }
        if let Some(extra) = self.extra()
            && wants("extra")
        {
            c.extra = extra.map(|new| unmask_extra(&new, c.extra.as_deref()));
        }
        c
    }
}

/// Puts the stored values back where a client sent `***` for a key (it read a masked extra and
/// sent it back unchanged).
fn unmask_extra(new: &str, old: Option<&str>) -> String {
    let (Ok(Value::Object(mut new_map)), Some(Ok(Value::Object(old_map)))) = (
        serde_json::from_str::<Value>(new),
        old.map(serde_json::from_str::<Value>),
    ) else {
        return new.to_string();
    };
    let mut changed = false;
    for (k, v) in new_map.iter_mut() {
        if v.as_str() == Some(MASK)
            && let Some(stored) = old_map.get(k)
        {
            *v = stored.clone();
            changed = true;
        }
    }
    if changed {
        Value::Object(new_map).to_string()
    } else {
        new.to_string()
    }
}

const SORT_KEYS: &[&str] = &[
    "connection_id",
    "conn_id",
    "conn_type",
    "description",
    "host",
    "port",
    "id",
    "team_name",
];

fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "The Connection with connection_id: `{id}` was not found"
    ))
}

async fn find(secrets: &Secrets, id: &str) -> Result<ConnectionValue> {
    secrets
        .stored_connection(id)
        .await
        .map_err(secrets_error)?
        .ok_or_else(|| not_found(id))
}

/// List the connections stored in the database (not those of the environment or secret files).
#[utoipa::path(get, path = "/connections", tag = "Connection",
    params(
        ("limit" = Option<usize>, Query, description = "page size (default 50, at most 100)"),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`connection_id` (default), `conn_type`, `description`, `host`, `port` or `id`, `-` for descending; repeatable"),
        ("connection_id_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
    ),
    responses(
        (status = 200, body = ConnectionCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_connections(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<ConnectionCollectionResponse>> {
    user.require(Resource::Connection, Access::Read)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(&query, SORT_KEYS, "connection_id")?;
    let pattern = params::single(&query, "connection_id_pattern").map(Pattern::new);
    let mut rows: Vec<_> = state
        .store
        .list_connections()
        .await?
        .into_iter()
        .filter(|c| pattern.as_ref().is_none_or(|p| p.matches(&c.conn_id)))
        .collect();
    rows.sort_by(|a, b| {
        for SortKey { field, descending } in &order {
            let ord = match *field {
                "connection_id" | "conn_id" | "id" => a.conn_id.cmp(&b.conn_id),
                "conn_type" => a.conn_type.cmp(&b.conn_type),
                "description" => a.description.cmp(&b.description),
                "host" => a.host.cmp(&b.host),
                "port" => a.port.cmp(&b.port),
                _ => std::cmp::Ordering::Equal,
            };
            let ord = if *descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        a.conn_id.cmp(&b.conn_id)
    });
    let total_entries = rows.len();
    let secrets = secrets(&state)?;
    let mut connections = Vec::new();
    for row in rows.into_iter().skip(page.offset).take(page.limit) {
        let clear = secrets.decrypt_connection(row).map_err(secrets_error)?;
        connections.push(ConnectionResponse::new(&state, clear));
    }
    Ok(Json(ConnectionCollectionResponse {
        connections,
        total_entries,
    }))
}

/// Create a connection (409 when the id exists).
#[utoipa::path(post, path = "/connections", tag = "Connection",
    request_body = ConnectionBody,
    responses(
        (status = 201, body = ConnectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn post_connection(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<ConnectionBody>,
) -> Result<(StatusCode, Json<ConnectionResponse>)> {
    user.require(Resource::Connection, Access::Write)?;
    body.check()?;
    let secrets = secrets(&state)?;
    let created = secrets
        .create_connection(&body.to_value())
        .await
        .map_err(secrets_error)?;
    if !created {
        return Err(Error::Conflict(format!(
            "The Connection with connection_id: `{}` already exists",
            body.connection_id
        )));
    }
    let stored = find(&secrets, &body.connection_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(ConnectionResponse::new(&state, stored)),
    ))
}

/// Get one stored connection.
#[utoipa::path(get, path = "/connections/{connection_id}", tag = "Connection",
    params(("connection_id" = String, Path)),
    responses(
        (status = 200, body = ConnectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_connection(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(connection_id): Path<String>,
) -> Result<Json<ConnectionResponse>> {
    user.require(Resource::Connection, Access::Read)?;
    let found = find(&secrets(&state)?, &connection_id).await?;
    Ok(Json(ConnectionResponse::new(&state, found)))
}

async fn update(
    secrets: &Secrets,
    body: &ConnectionBody,
    mask: Option<&[String]>,
) -> Result<ConnectionValue> {
    body.check()?;
    let old = find(secrets, &body.connection_id).await?;
    let new = body.apply(old, mask);
    secrets.set_connection(&new).await.map_err(secrets_error)?;
    Ok(new)
}

/// Update a connection. Without `update_mask`, the fields present in the body are written;
/// with it, only those it names. A password that is absent, masked out or sent as `***` stays.
#[utoipa::path(patch, path = "/connections/{connection_id}", tag = "Connection",
    params(("connection_id" = String, Path), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = ConnectionBody,
    responses(
        (status = 200, body = ConnectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_connection(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(connection_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    Body(body): Body<ConnectionBody>,
) -> Result<Json<ConnectionResponse>> {
    user.require(Resource::Connection, Access::Write)?;
    if body.connection_id != connection_id {
        return Err(Error::BadRequest(
            "The connection_id in the request body does not match the URL parameter".into(),
        ));
    }
    let mask = params::multi(&query, "update_mask");
    let mask = (!mask.is_empty()).then_some(mask.as_slice());
    let updated = update(&secrets(&state)?, &body, mask).await?;
    Ok(Json(ConnectionResponse::new(&state, updated)))
}

/// Delete a stored connection.
#[utoipa::path(delete, path = "/connections/{connection_id}", tag = "Connection",
    params(("connection_id" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn delete_connection(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(connection_id): Path<String>,
) -> Result<StatusCode> {
    user.require(Resource::Connection, Access::Write)?;
    if !state.store.delete_connection(&connection_id).await? {
        return Err(not_found(&connection_id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Create, update and delete connections in one request (also the import path). Each action
/// reports the ids it changed and its errors; a failed action does not stop the next ones.
#[utoipa::path(patch, path = "/connections", tag = "Connection",
    request_body = BulkBody<ConnectionBody>,
    responses(
        (status = 200, body = BulkResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn bulk_connections(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<BulkBody<ConnectionBody>>,
) -> Result<Json<BulkResponse>> {
    user.require(Resource::Connection, Access::Write)?;
    let secrets = secrets(&state)?;
    let target = Connections {
        state: &state,
        secrets: &secrets,
    };
    Ok(Json(run_bulk(&target, &body.actions).await?))
}

struct Connections<'a> {
    state: &'a AppState,
    secrets: &'a Secrets,
}

impl BulkTarget for Connections<'_> {
    type Entity = ConnectionBody;
    const NAMES: &'static str = "connections with these connection_ids";

    fn key(entity: &ConnectionBody) -> &String {
        &entity.connection_id
    }

    async fn existing(&self) -> Result<HashSet<String>> {
        let all = self.state.store.list_connections().await?;
        Ok(all.into_iter().map(|c| c.conn_id).collect())
    }

    async fn create(&self, entity: &ConnectionBody, overwrite: bool) -> Result<bool> {
        entity.check()?;
        let value = entity.to_value();
        let outcome = if overwrite {
            self.secrets.set_connection(&value).await.map(|()| true)
        } else {
            self.secrets.create_connection(&value).await
        };
        outcome.map_err(secrets_error)
    }

    async fn update(&self, entity: &ConnectionBody, mask: Option<&[String]>) -> Result<()> {
        update(self.secrets, entity, mask).await.map(|_| ())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.state.store.delete_connection(id).await?)
    }
}

/// Airflow's `ConnectionTestResponse`.
#[derive(Serialize, ToSchema)]
pub struct ConnectionTestResponse {
    status: bool,
    message: String,
}

/// Test a connection. Disabled unless `core.test_connection` is `Enabled` (403, as Airflow's
/// `[core] test_connection` default). Updraft has no provider hooks to open connections with,
/// so an enabled test checks the body and answers `status: false` with the reason.
#[utoipa::path(post, path = "/connections/test", tag = "Connection",
    request_body = ConnectionBody,
    responses(
        (status = 200, body = ConnectionTestResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn test_connection(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<ConnectionBody>,
) -> Result<Json<ConnectionTestResponse>> {
    user.require(Resource::Connection, Access::Write)?;
    if !test_connection_enabled(&state) {
        return Err(Error::Forbidden(
            "Testing connections is disabled in Airflow configuration. \
             Contact your deployment admin to enable it."
                .into(),
        ));
    }
    body.check()?;
    Ok(Json(ConnectionTestResponse {
        status: false,
        message: format!(
            "testing connections of type `{}` is not supported: no hook can open it",
            body.conn_type
        ),
    }))
}

fn test_connection_enabled(state: &AppState) -> bool {
    state.config.core.test_connection == "Enabled"
}

/// Create Airflow's default connections. Updraft ships none (they name provider services it
/// has no hooks for), so this succeeds without creating anything.
#[utoipa::path(post, path = "/connections/defaults", tag = "Connection",
    responses(
        (status = 204, description = "done; Updraft has no default connections to create"),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn create_default_connections(user: CurrentUser) -> Result<StatusCode> {
    user.require(Resource::Connection, Access::Write)?;
    Ok(StatusCode::NO_CONTENT)
}
