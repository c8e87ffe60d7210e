//! `/api/v2/config`: the effective configuration, for admins only, with every secret hidden.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use updraft_config::{ConfigEntry, SECRET_OPTIONS};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::params;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_config))
        .routes(routes!(get_config_value))
}

/// What a hidden value reads as (Airflow's placeholder).
const HIDDEN: &str = "< hidden >";

#[derive(Serialize, ToSchema)]
pub struct ConfigOption {
    key: String,
    value: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigSection {
    name: String,
    options: Vec<ConfigOption>,
}

/// Airflow's `Config`.
#[derive(Serialize, ToSchema)]
pub struct Config {
    sections: Vec<ConfigSection>,
}

/// Whether an option's value must not leave the server: the declared secrets, a database URL
/// that can carry a password (in its user info or its query), and anything named like a
/// credential, so a secret added later without being declared is still hidden.
fn is_sensitive(section: &str, key: &str) -> bool {
    SECRET_OPTIONS.contains(&(section, key))
        || (section, key) == ("database", "url")
        || [
            "password",
            "secret",
            "token",
            "fernet",
            "credential",
            "private",
        ]
        .iter()
        .any(|word| key.contains(word))
}

fn option(entry: &ConfigEntry) -> ConfigOption {
    let value = if is_sensitive(entry.section, entry.key) {
        HIDDEN.to_string()
    } else {
        entry.value.clone()
    };
    ConfigOption {
        key: entry.key.to_string(),
        value,
    }
}

fn sections(entries: &[ConfigEntry]) -> Vec<ConfigSection> {
    let mut out: Vec<ConfigSection> = Vec::new();
    for entry in entries {
        match out.last_mut() {
            Some(section) if section.name == entry.section => section.options.push(option(entry)),
            _ => out.push(ConfigSection {
                name: entry.section.to_string(),
                options: vec![option(entry)],
            }),
        }
    }
    out
}

/// The ini-like text Airflow answers `text/plain` with.
fn as_text(config: &Config) -> String {
    let mut out = String::new();
    for section in &config.sections {
        out.push_str(&format!("[{}]\n", section.name));
        for o in &section.options {
            out.push_str(&format!("{} = {}\n", o.key, o.value));
        }
        out.push('\n');
    }
    out
}

fn respond(config: Config, headers: &HeaderMap) -> Response {
    if crate::misc::wants_text(headers) {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            as_text(&config),
        )
            .into_response();
    }
    Json(config).into_response()
}

/// The effective configuration, or one section of it; JSON or, when `Accept` asks for it,
/// `text/plain`.
#[utoipa::path(get, path = "/config", tag = "Config",
    params(("section" = Option<String>, Query)),
    responses(
        (status = 200, content((Config = "application/json"), (String = "text/plain"))),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_config(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response> {
    user.require(Resource::Configuration, Access::Read)?;
    let mut entries = state.config.entries();
    if let Some(section) = params::single(&query, "section") {
        entries.retain(|e| e.section == section);
        if entries.is_empty() {
            return Err(Error::NotFound(format!("section `{section}` not found")));
        }
    }
    Ok(respond(
        Config {
            sections: sections(&entries),
        },
        &headers,
    ))
}

/// One option of the configuration.
#[utoipa::path(get, path = "/config/section/{section}/option/{option}", tag = "Config",
    params(("section" = String, Path), ("option" = String, Path)),
    responses(
        (status = 200, content((Config = "application/json"), (String = "text/plain"))),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_config_value(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((section, option)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    user.require(Resource::Configuration, Access::Read)?;
    let entry = state.config.get(&section, &option).ok_or_else(|| {
        Error::NotFound(format!(
            "option `{option}` of section `{section}` not found"
        ))
    })?;
    Ok(respond(
        Config {
            sections: sections(std::slice::from_ref(&entry)),
        },
        &headers,
    ))
}
