//! `/api/v2/variables`: list, create, get, patch, delete and bulk, with Airflow's
//! `VariableBody` / `VariableResponse`.
//!
//! Values go through the secrets layer (encrypted at rest when `core.fernet_key` is set) and
//! are answered in clear text, except that values of sensitive keys, and sensitive keys inside
//! JSON values, are shown as `***`. A value sent as JSON other than a string is stored as its
//! JSON text.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use updraft_secrets::Secrets;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page, Pattern, SortKey};
use crate::resources::{
    BulkBody, BulkResponse, BulkTarget, check_team, redact_text, run_bulk, secrets, secrets_error,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_variables, post_variable, bulk_variables))
        .routes(routes!(get_variable, patch_variable, delete_variable))
}

/// Longest key (Airflow's `ID_LEN`).
const KEY_LEN: usize = 250;

/// Airflow's `VariableResponse`.
#[derive(Serialize, ToSchema)]
pub struct VariableResponse {
    key: String,
    /// The value; `***` for sensitive keys (and sensitive keys inside a JSON value).
    value: Option<String>,
    description: Option<String>,
    is_encrypted: bool,
    team_name: Option<String>,
}

impl VariableResponse {
    fn new(
        state: &AppState,
        key: &str,
        raw: &str,
        clear: &str,
        description: Option<String>,
    ) -> VariableResponse {
        let extra = &state.config.core.sensitive_var_conn_names;
        VariableResponse {
            key: key.to_string(),
            value: Some(redact_text(clear, Some(key), extra)),
            description,
            is_encrypted: updraft_secrets::looks_like_token(raw),
            team_name: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VariableCollectionResponse {
    variables: Vec<VariableResponse>,
    total_entries: usize,
}

/// Airflow's `VariableBody`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableBody {
    key: String,
    /// A string is stored as is; any other JSON value as its JSON text.
    value: Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    team_name: Option<String>,
}

impl VariableBody {
    fn check(&self) -> Result<()> {
        if self.key.is_empty() || self.key.chars().count() > KEY_LEN {
            return Err(Error::validation(
                &["body", "key"],
                format!("key must be 1 to {KEY_LEN} characters"),
            ));
        }
        check_team(&self.team_name)
    }

    fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

const SORT_KEYS: &[&str] = &["key", "id", "_val", "description", "is_encrypted"];

async fn find(state: &AppState, secrets: &Secrets, key: &str) -> Result<VariableResponse> {
    let row = secrets
        .store()
        .get_variable(key)
        .await?
        .ok_or_else(|| not_found(key))?;
    let clear = secrets
        .decrypt_variable(key, &row.value)
        .map_err(secrets_error)?;
    Ok(VariableResponse::new(
        state,
        key,
        &row.value,
        &clear,
        row.description,
    ))
}

fn not_found(key: &str) -> Error {
    Error::NotFound(format!("The Variable with key: `{key}` was not found"))
}

/// List variables stored in the database (not those of the environment or secret files).
#[utoipa::path(get, path = "/variables", tag = "Variable",
    params(
        ("limit" = Option<usize>, Query, description = "page size (default 50, at most 100)"),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`key` (default), `id`, `_val`, `description` or `is_encrypted`, `-` for descending; repeatable"),
        ("variable_key_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
    ),
    responses(
        (status = 200, body = VariableCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_variables(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<VariableCollectionResponse>> {
    user.require(Resource::Variable, Access::Read)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(&query, SORT_KEYS, "key")?;
    let pattern = params::single(&query, "variable_key_pattern").map(Pattern::new);
    let secrets = secrets(&state)?;
    let mut rows: Vec<_> = secrets
        .store()
        .list_variables()
        .await?
        .into_iter()
        .filter(|v| pattern.as_ref().is_none_or(|p| p.matches(&v.key)))
        .collect();
    rows.sort_by(|a, b| {
        for SortKey { field, descending } in &order {
            let ord = match *field {
                "key" | "id" => a.key.cmp(&b.key),
                // The stored text, as Airflow orders by its stored column.
                "_val" => a.value.cmp(&b.value),
                "description" => a.description.cmp(&b.description),
                "is_encrypted" => updraft_secrets::looks_like_token(&a.value)
                    .cmp(&updraft_secrets::looks_like_token(&b.value)),
                _ => std::cmp::Ordering::Equal,
            };
            let ord = if *descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        a.key.cmp(&b.key)
    });
    let total_entries = rows.len();
    let mut variables = Vec::new();
    for v in rows.into_iter().skip(page.offset).take(page.limit) {
        let clear = secrets
            .decrypt_variable(&v.key, &v.value)
            .map_err(secrets_error)?;
        variables.push(VariableResponse::new(
            &state,
            &v.key,
            &v.value,
            &clear,
            v.description,
        ));
    }
    Ok(Json(VariableCollectionResponse {
        variables,
        total_entries,
    }))
}

/// Create a variable (409 when the key exists).
#[utoipa::path(post, path = "/variables", tag = "Variable",
    request_body = VariableBody,
    responses(
        (status = 201, body = VariableResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn post_variable(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<VariableBody>,
) -> Result<(StatusCode, Json<VariableResponse>)> {
    user.require(Resource::Variable, Access::Write)?;
    body.check()?;
    let secrets = secrets(&state)?;
    let created = secrets
        .create_variable(&body.key, &body.text(), body.description.as_deref())
        .await
        .map_err(secrets_error)?;
    if !created {
        return Err(Error::Conflict(format!(
            "The Variable with key: `{}` already exists",
            body.key
        )));
    }
    Ok((
        StatusCode::CREATED,
        Json(find(&state, &secrets, &body.key).await?),
    ))
}

/// Get one stored variable.
#[utoipa::path(get, path = "/variables/{variable_key}", tag = "Variable",
    params(("variable_key" = String, Path)),
    responses(
        (status = 200, body = VariableResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_variable(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(variable_key): Path<String>,
) -> Result<Json<VariableResponse>> {
    user.require(Resource::Variable, Access::Read)?;
    Ok(Json(find(&state, &secrets(&state)?, &variable_key).await?))
}

/// The fields of `body` an update writes: all of them, or those named in `update_mask`
/// (`value`, `description`; the key never changes).
fn apply_update(
    body: &VariableBody,
    mask: Option<&[String]>,
    old_value: String,
    old_description: Option<String>,
) -> (String, Option<String>) {
    let wants = |field: &str| mask.is_none_or(|m| m.iter().any(|f| f == field));
    let value = if wants("value") {
        body.text()
    } else {
        old_value
    };
    let description = if wants("description") {
        body.description.clone()
    } else {
        old_description
    };
    (value, description)
}

async fn update(
    secrets: &Secrets,
    key: &str,
    body: &VariableBody,
    mask: Option<&[String]>,
) -> Result<()> {
    body.check()?;
    let old = secrets
        .store()
        .get_variable(key)
        .await?
        .ok_or_else(|| not_found(key))?;
    let old_clear = secrets
        .decrypt_variable(key, &old.value)
        .map_err(secrets_error)?;
    let (value, description) = apply_update(body, mask, old_clear, old.description);
    secrets
        .set_variable(key, &value, description.as_deref())
        .await
        .map_err(secrets_error)
}

/// Update a variable; `update_mask` limits the change to `value` and/or `description`.
#[utoipa::path(patch, path = "/variables/{variable_key}", tag = "Variable",
    params(("variable_key" = String, Path), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = VariableBody,
    responses(
        (status = 200, body = VariableResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_variable(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(variable_key): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    Body(body): Body<VariableBody>,
) -> Result<Json<VariableResponse>> {
    user.require(Resource::Variable, Access::Write)?;
    if body.key != variable_key {
        return Err(Error::BadRequest(
            "Invalid body, key from request body doesn't match uri parameter".into(),
        ));
    }
    let mask = params::multi(&query, "update_mask");
    let mask = (!mask.is_empty()).then_some(mask.as_slice());
    let secrets = secrets(&state)?;
    update(&secrets, &variable_key, &body, mask).await?;
    Ok(Json(find(&state, &secrets, &variable_key).await?))
}

/// Delete a stored variable.
#[utoipa::path(delete, path = "/variables/{variable_key}", tag = "Variable",
    params(("variable_key" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn delete_variable(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(variable_key): Path<String>,
) -> Result<StatusCode> {
    user.require(Resource::Variable, Access::Write)?;
    if !state.store.delete_variable(&variable_key).await? {
        return Err(not_found(&variable_key));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Create, update and delete variables in one request (also the import path). Each action
/// reports the keys it changed and its errors; a failed action does not stop the next ones.
#[utoipa::path(patch, path = "/variables", tag = "Variable",
    request_body = BulkBody<VariableBody>,
    responses(
        (status = 200, body = BulkResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn bulk_variables(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<BulkBody<VariableBody>>,
) -> Result<Json<BulkResponse>> {
    user.require(Resource::Variable, Access::Write)?;
    let secrets = secrets(&state)?;
    let target = Variables {
        state: &state,
        secrets: &secrets,
    };
    Ok(Json(run_bulk(&target, &body.actions).await?))
}

struct Variables<'a> {
    state: &'a AppState,
    secrets: &'a Secrets,
}

impl BulkTarget for Variables<'_> {
    type Entity = VariableBody;
    const NAMES: &'static str = "variables with these keys";

    fn key(entity: &VariableBody) -> &String {
        &entity.key
    }

    async fn existing(&self) -> Result<HashSet<String>> {
        let all = self.secrets.store().list_variables().await?;
        Ok(all.into_iter().map(|v| v.key).collect())
    }

    async fn create(&self, entity: &VariableBody, overwrite: bool) -> Result<bool> {
        entity.check()?;
        let (key, value, description) = (&entity.key, entity.text(), entity.description.as_deref());
        let outcome = if overwrite {
            let set = self.secrets.set_variable(key, &value, description).await;
            set.map(|()| true)
        } else {
            self.secrets.create_variable(key, &value, description).await
        };
        outcome.map_err(secrets_error)
    }

    async fn update(&self, entity: &VariableBody, mask: Option<&[String]>) -> Result<()> {
        update(self.secrets, &entity.key, entity, mask).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.state.store.delete_variable(key).await?)
    }
}
