//! `/api/v2/pools`: list, create, get, patch, delete and bulk, with Airflow's `PoolBody`,
//! `PoolPatchBody` and `PoolResponse`.
//!
//! Slot usage comes from one grouped query over the task instances of every pool
//! ([`updraft_store::Store::pool_slot_usage`]). Deferred tasks never hold slots here
//! (`include_deferred` is always false, and setting it is refused).

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use updraft_store::{Pool, PoolUsage};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page, Pattern, SortKey};
use crate::resources::{BulkBody, BulkResponse, BulkTarget, check_team, present, run_bulk};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_pools, post_pool, bulk_pools))
        .routes(routes!(get_pool, patch_pool, delete_pool))
}

const DEFAULT_POOL: &str = "default_pool";
/// Longest pool name, as Airflow's API allows.
const NAME_LEN: usize = 256;

/// Airflow's `PoolResponse`.
#[derive(Serialize, ToSchema)]
pub struct PoolResponse {
    name: String,
    /// -1 means unlimited.
    slots: i32,
    description: Option<String>,
    include_deferred: bool,
    occupied_slots: i64,
    running_slots: i64,
    queued_slots: i64,
    scheduled_slots: i64,
    /// -1 for an unlimited pool.
    open_slots: i64,
    deferred_slots: i64,
    team_name: Option<String>,
}

fn response(pool: Pool, usage: Option<&PoolUsage>) -> PoolResponse {
    let usage = usage.cloned().unwrap_or_default();
    // Airflow's occupied slots: running and queued (deferred only with include_deferred).
    let occupied = usage.running + usage.queued;
    PoolResponse {
        open_slots: if pool.slots == -1 {
            -1
        } else {
            i64::from(pool.slots) - occupied
        },
        name: pool.name,
        slots: pool.slots,
        description: pool.description,
        include_deferred: false,
        occupied_slots: occupied,
        running_slots: usage.running,
        queued_slots: usage.queued,
        scheduled_slots: usage.scheduled,
        deferred_slots: usage.deferred,
        team_name: None,
    }
}

async fn usage(state: &AppState) -> Result<HashMap<String, PoolUsage>> {
    Ok(state
        .store
        .pool_slot_usage()
        .await?
        .into_iter()
        .map(|u| (u.pool.clone(), u))
        .collect())
}

async fn find(state: &AppState, name: &str) -> Result<PoolResponse> {
    let pool = state
        .store
        .get_pool(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    Ok(response(pool, usage(state).await?.get(name)))
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("The Pool with name: `{name}` was not found"))
}

#[derive(Serialize, ToSchema)]
pub struct PoolCollectionResponse {
    pools: Vec<PoolResponse>,
    total_entries: usize,
}

/// Airflow's `PoolBody`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolBody {
    #[serde(alias = "pool")]
    name: String,
    /// -1 means unlimited.
    slots: i32,
    #[serde(default)]
    description: Option<String>,
    /// Must be false: deferred tasks never hold pool slots here.
    #[serde(default)]
    include_deferred: bool,
    #[serde(default)]
    team_name: Option<String>,
}

fn check_slots(slots: i32) -> Result<()> {
    if slots < -1 {
        return Err(Error::validation(
            &["body", "slots"],
            "slots must be -1 (unlimited) or more",
        ));
    }
    Ok(())
}

fn check_include_deferred(include_deferred: bool) -> Result<()> {
    if include_deferred {
        return Err(Error::validation(
            &["body", "include_deferred"],
            "include_deferred cannot be enabled: deferred tasks never hold pool slots in updraft",
        ));
    }
    Ok(())
}

impl PoolBody {
    fn check(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.chars().count() > NAME_LEN {
            return Err(Error::validation(
                &["body", "name"],
                format!("name must be 1 to {NAME_LEN} characters"),
            ));
        }
        check_slots(self.slots)?;
        check_include_deferred(self.include_deferred)?;
        check_team(&self.team_name)
    }
}

/// Airflow's `PoolPatchBody`: every field optional.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolPatchBody {
    #[serde(default, alias = "pool")]
    name: Option<String>,
    #[serde(default)]
    slots: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default)]
    include_deferred: Option<bool>,
    #[serde(default)]
    team_name: Option<String>,
}

impl From<&PoolBody> for PoolPatchBody {
    fn from(b: &PoolBody) -> PoolPatchBody {
        PoolPatchBody {
            name: Some(b.name.clone()),
            slots: Some(b.slots),
            description: Some(b.description.clone()),
            include_deferred: Some(b.include_deferred),
            team_name: b.team_name.clone(),
        }
    }
}

const SORT_KEYS: &[&str] = &["id", "pool", "name"];

/// List pools with their slot usage.
#[utoipa::path(get, path = "/pools", tag = "Pool",
    params(
        ("limit" = Option<usize>, Query, description = "page size (default 50, at most 100)"),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`name` (default; also `pool`, `id`), `-` for descending; repeatable"),
        ("pool_name_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
    ),
    responses(
        (status = 200, body = PoolCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_pools(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<PoolCollectionResponse>> {
    user.require(Resource::Pool, Access::Read)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(&query, SORT_KEYS, "id")?;
    let pattern = params::single(&query, "pool_name_pattern").map(Pattern::new);
    let mut pools: Vec<Pool> = state
        .store
        .list_pools()
        .await?
        .into_iter()
        .filter(|p| pattern.as_ref().is_none_or(|pat| pat.matches(&p.name)))
        .collect();
    pools.sort_by(|a, b| {
        for SortKey { descending, .. } in &order {
            // Pools have no numeric id here: every allowed key orders by name.
            let ord = a.name.cmp(&b.name);
            let ord = if *descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        a.name.cmp(&b.name)
    });
    let total_entries = pools.len();
    let usage = usage(&state).await?;
    let pools = pools
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|p| {
            let u = usage.get(&p.name);
            response(p, u)
        })
        .collect();
    Ok(Json(PoolCollectionResponse {
        pools,
        total_entries,
    }))
}

/// Create a pool (409 when the name exists).
#[utoipa::path(post, path = "/pools", tag = "Pool",
    request_body = PoolBody,
    responses(
        (status = 201, body = PoolResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn post_pool(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<PoolBody>,
) -> Result<(StatusCode, Json<PoolResponse>)> {
    user.require(Resource::Pool, Access::Write)?;
    body.check()?;
    let created = state
        .store
        .create_pool(&body.name, body.slots, body.description.as_deref())
        .await?;
    if !created {
        return Err(Error::Conflict(format!(
            "The Pool with name: `{}` already exists",
            body.name
        )));
    }
    Ok((StatusCode::CREATED, Json(find(&state, &body.name).await?)))
}

/// Get one pool with its slot usage.
#[utoipa::path(get, path = "/pools/{pool_name}", tag = "Pool",
    params(("pool_name" = String, Path)),
    responses(
        (status = 200, body = PoolResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_pool(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(pool_name): Path<String>,
) -> Result<Json<PoolResponse>> {
    user.require(Resource::Pool, Access::Read)?;
    Ok(Json(find(&state, &pool_name).await?))
}

/// Applies a patch to a stored pool: `default_pool` takes only `slots` and `include_deferred`,
/// named in `update_mask` (Airflow's rule). For other pools the fields present in the body are
/// written, or with `update_mask` only those it names; unlike Airflow, a body need not repeat
/// `name`, `slots` and `include_deferred` to change one field.
async fn update(
    state: &AppState,
    name: &str,
    body: &PoolPatchBody,
    mask: Option<&[String]>,
) -> Result<()> {
    let pool = state
        .store
        .get_pool(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    if name == DEFAULT_POOL {
        let allowed = mask.is_some_and(|m| {
            m.iter()
                .all(|f| matches!(f.trim(), "slots" | "include_deferred"))
        });
        if !allowed {
            return Err(Error::BadRequest(
                "Only slots and included_deferred can be modified on Default Pool".into(),
            ));
        }
    }
    check_team(&body.team_name)?;
    let wants = |field: &str| mask.is_none_or(|m| m.iter().any(|f| f.trim() == field));
    let mut slots = pool.slots;
    let mut description = pool.description;
    if let Some(s) = body.slots
        && wants("slots")
    {
        check_slots(s)?;
        slots = s;
    }
    if let Some(include) = body.include_deferred
        && wants("include_deferred")
    {
        check_include_deferred(include)?;
    }
    if let Some(d) = &body.description
        && wants("description")
    {
        description = d.clone();
    }
    if let Some(new_name) = &body.name
        && wants("name")
        && new_name != name
    {
        return Err(Error::BadRequest(
            "Invalid body, pool name from request body doesn't match uri parameter".into(),
        ));
    }
    state
        .store
        .set_pool(name, slots, description.as_deref())
        .await?;
    Ok(())
}

/// Update a pool; `update_mask` limits the change to the named fields.
#[utoipa::path(patch, path = "/pools/{pool_name}", tag = "Pool",
    params(("pool_name" = String, Path), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = PoolPatchBody,
    responses(
        (status = 200, body = PoolResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_pool(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(pool_name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    Body(body): Body<PoolPatchBody>,
) -> Result<Json<PoolResponse>> {
    user.require(Resource::Pool, Access::Write)?;
    if body.name.as_ref().is_some_and(|n| *n != pool_name) {
        return Err(Error::BadRequest(
            "Invalid body, pool name from request body doesn't match uri parameter".into(),
        ));
    }
    let mask = params::multi(&query, "update_mask");
    let mask = (!mask.is_empty()).then_some(mask.as_slice());
    update(&state, &pool_name, &body, mask).await?;
    Ok(Json(find(&state, &pool_name).await?))
}

/// Delete a pool; `default_pool` cannot be deleted.
#[utoipa::path(delete, path = "/pools/{pool_name}", tag = "Pool",
    params(("pool_name" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn delete_pool(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(pool_name): Path<String>,
) -> Result<StatusCode> {
    user.require(Resource::Pool, Access::Write)?;
    delete(&state, &pool_name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(state: &AppState, name: &str) -> Result<()> {
    if name == DEFAULT_POOL {
        return Err(Error::BadRequest("Default Pool can't be deleted".into()));
    }
    if !state.store.delete_pool(name).await? {
        return Err(not_found(name));
    }
    Ok(())
}

/// Create, update and delete pools in one request (also the import path). Each action reports
/// the names it changed and its errors; a failed action does not stop the next ones.
#[utoipa::path(patch, path = "/pools", tag = "Pool",
    request_body = BulkBody<PoolBody>,
    responses(
        (status = 200, body = BulkResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn bulk_pools(
    State(state): State<AppState>,
    user: CurrentUser,
    Body(body): Body<BulkBody<PoolBody>>,
) -> Result<Json<BulkResponse>> {
    user.require(Resource::Pool, Access::Write)?;
    Ok(Json(run_bulk(&Pools(&state), &body.actions).await?))
}

struct Pools<'a>(&'a AppState);

impl BulkTarget for Pools<'_> {
    type Entity = PoolBody;
    const NAMES: &'static str = "pools with these pool names";

    fn key(entity: &PoolBody) -> &String {
        &entity.name
    }

    async fn existing(&self) -> Result<HashSet<String>> {
        let all = self.0.store.list_pools().await?;
        Ok(all.into_iter().map(|p| p.name).collect())
    }

    async fn create(&self, entity: &PoolBody, overwrite: bool) -> Result<bool> {
        entity.check()?;
        let (name, slots, description) =
            (&entity.name, entity.slots, entity.description.as_deref());
        let store = &self.0.store;
        Ok(if overwrite {
            store
                .set_pool(name, slots, description)
                .await
                .map(|()| true)?
        } else {
            store.create_pool(name, slots, description).await?
        })
    }

    async fn update(&self, entity: &PoolBody, mask: Option<&[String]>) -> Result<()> {
        update(self.0, &entity.name, &PoolPatchBody::from(entity), mask).await
    }

    /// `default_pool` is refused, and a pool gone meanwhile is a 404 (unlike variables).
    async fn delete(&self, name: &str) -> Result<bool> {
        delete(self.0, name).await.map(|()| true)
    }
}
