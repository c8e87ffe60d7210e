//! What the variables, connections and pools endpoints share: the bulk request and response
//! shapes, masking of sensitive values, and the secrets layer every variable and connection
//! read or write goes through (so the API encrypts at rest exactly as the CLI does).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use updraft_secrets::Secrets;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(crate::variables::routes())
        .merge(crate::connections::routes())
        .merge(crate::pools::routes())
}

/// The metastore side of the secrets layer, with the configured Fernet keys. The environment
/// is left out on purpose: the API lists and edits what is stored, never `UPDRAFT_VAR_*` /
/// `UPDRAFT_CONN_*` values or mounted files, as Airflow's API does.
pub fn secrets(state: &AppState) -> Result<Secrets, Error> {
    Secrets::with_env(
        state.store.clone(),
        &state.config.core.fernet_key,
        state.config.secrets.files_dir.clone(),
        HashMap::new(),
    )
    .map_err(secrets_error)
}

/// Store failures keep their meaning; a value that cannot be decrypted, or an invalid key, is
/// an operator's problem: logged in full, answered with a bare 500 (never with the value).
pub fn secrets_error(e: updraft_secrets::Error) -> Error {
    match e {
        updraft_secrets::Error::Store(e) => Error::Store(e),
        updraft_secrets::Error::InvalidConnection { reason, .. } => {
            Error::validation(&["body"], reason)
        }
        other => Error::Internal(other.to_string()),
    }
}

/// Key names whose values are shown as `***` (Airflow's default sensitive names; a key is
/// sensitive when its lower-cased name contains one of them).
pub const SENSITIVE: &[&str] = &[
    "access_key",
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "connection_string",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "proxy",
    "proxy_password",
    "proxies",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
];

pub const MASK: &str = "***";

/// `extra` is `core.sensitive_var_conn_names` (lower case).
pub fn is_sensitive(name: &str, extra: &[String]) -> bool {
    let name = name.trim().to_lowercase();
    SENSITIVE.iter().any(|s| name.contains(s)) || extra.iter().any(|s| name.contains(s.as_str()))
}

/// Masks a JSON value the way Airflow's secrets masker does: under a sensitive name every
/// string (and nested container) becomes `***`, while numbers and booleans stay; otherwise the
/// keys of objects are checked one by one, at any depth.
pub fn redact(value: Value, name: Option<&str>, extra: &[String]) -> Value {
    if name.is_some_and(|n| is_sensitive(n, extra)) {
        return redact_all(value);
    }
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redact(v, Some(&k), extra);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| redact(v, name, extra)).collect())
        }
        other => other,
    }
}

fn redact_all(value: Value) -> Value {
    match value {
        Value::String(_) => json!(MASK),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, redact_all(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(redact_all).collect()),
        other => other,
    }
}

/// Masks a text that may hold JSON (a variable value, a connection's extra). JSON text is
/// masked inside; other text is masked whole when `name` is sensitive. Text that needs no
/// masking is returned unchanged, byte for byte.
pub fn redact_text(text: &str, name: Option<&str>, extra: &[String]) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let masked = redact(value.clone(), name, extra);
            if masked == value {
                text.to_string()
            } else {
                masked.to_string()
            }
        }
        Err(_) if name.is_some_and(|n| is_sensitive(n, extra)) => MASK.to_string(),
        Err(_) => text.to_string(),
    }
}

/// Distinguishes a field that is absent (`None`) from one sent as `null` (`Some(None)`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Multi-team mode does not exist here, so a team can never be named.
pub fn check_team(team_name: &Option<String>) -> Result<(), Error> {
    if team_name.is_some() {
        return Err(Error::validation(
            &["body", "team_name"],
            "team_name cannot be set when multi_team mode is disabled. Please contact your administrator.",
        ));
    }
    Ok(())
}

// ---- bulk -------------------------------------------------------------------------------------

/// What a `create` does with an entity that already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkActionOnExistence {
    #[default]
    Fail,
    Skip,
    Overwrite,
}

/// What an `update` or `delete` does with an entity that does not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkActionNotOnExistence {
    #[default]
    Fail,
    Skip,
}

/// One action of a bulk request, told apart by its `action` field.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum BulkAction<T> {
    Create {
        entities: Vec<T>,
        #[serde(default)]
        action_on_existence: BulkActionOnExistence,
    },
    Update {
        entities: Vec<T>,
        /// Only these fields are applied from each entity.
        #[serde(default)]
        update_mask: Option<Vec<String>>,
        #[serde(default)]
        action_on_non_existence: BulkActionNotOnExistence,
    },
    Delete {
        /// Keys (names, ids) of the entities to delete.
        entities: Vec<String>,
        #[serde(default)]
        action_on_non_existence: BulkActionNotOnExistence,
    },
}

/// Airflow's `BulkBody`: actions applied in order.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody<T> {
    pub actions: Vec<BulkAction<T>>,
}

/// Outcome of the actions of one kind: keys that succeeded, and errors as
/// `{"error": message, "status_code": code}`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct BulkActionResponse {
    pub success: Vec<String>,
    pub errors: Vec<Value>,
}

impl BulkActionResponse {
    pub fn error(&mut self, e: &Error) {
        let message = match e {
            // Never the cause of an internal failure: it may name tables or values.
            Error::Store(updraft_store::Error::NotFound(_) | updraft_store::Error::Conflict(_)) => {
                e.to_string()
            }
            Error::Store(_) | Error::Internal(_) => {
                tracing::error!(error = %e, "bulk action failed");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        self.errors
            .push(json!({"error": message, "status_code": e.status().as_u16()}));
    }
}

/// Airflow's `BulkResponse`: one entry per kind of action the request had, `null` otherwise.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct BulkResponse {
    pub create: Option<BulkActionResponse>,
    pub update: Option<BulkActionResponse>,
    pub delete: Option<BulkActionResponse>,
}

/// Keys in the `{'a', 'b'}` form Airflow's messages use.
pub fn key_set<'a>(keys: impl IntoIterator<Item = &'a String>) -> String {
    let keys: BTreeSet<&String> = keys.into_iter().collect();
    let inner: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// One kind of entity the bulk endpoints manage: how its key is read and how it is written.
/// The engine ([`run_bulk`]) owns the `action_on_existence` / `action_on_non_existence` rules
/// and the messages, so variables, connections and pools answer alike.
pub(crate) trait BulkTarget {
    type Entity;
    /// The plural phrase of the messages, e.g. `variables with these keys`.
    const NAMES: &'static str;
    fn key(entity: &Self::Entity) -> &String;
    /// Keys of every stored entity.
    async fn existing(&self) -> Result<HashSet<String>, Error>;
    /// Checks and writes one entity; `Ok(false)` when it exists and `overwrite` is off.
    async fn create(&self, entity: &Self::Entity, overwrite: bool) -> Result<bool, Error>;
    async fn update(&self, entity: &Self::Entity, mask: Option<&[String]>) -> Result<(), Error>;
    /// `Ok(false)` when there was nothing to delete.
    async fn delete(&self, key: &str) -> Result<bool, Error>;
}

/// Applies the actions in order. Each action sees the entities stored when it starts, reports
/// the keys it changed and its errors; a failed action does not stop the next ones.
pub(crate) async fn run_bulk<T: BulkTarget>(
    target: &T,
    actions: &[BulkAction<T::Entity>],
) -> Result<BulkResponse, Error> {
    let mut out = BulkResponse::default();
    for action in actions {
        let existing = target.existing().await?;
        match action {
            BulkAction::Create {
                entities,
                action_on_existence,
            } => {
                let results = out.create.get_or_insert_with(Default::default);
                bulk_create(target, &existing, entities, *action_on_existence, results).await;
            }
            BulkAction::Update {
                entities,
                update_mask,
                action_on_non_existence,
            } => {
                let results = out.update.get_or_insert_with(Default::default);
                let keys = entities.iter().map(T::key);
                if !all_exist::<T>(&existing, keys, *action_on_non_existence, results) {
                    continue;
                }
                for entity in entities.iter().filter(|e| existing.contains(T::key(e))) {
                    match target.update(entity, update_mask.as_deref()).await {
                        Ok(()) => results.success.push(T::key(entity).clone()),
                        Err(e) => results.error(&e),
                    }
                }
            }
            BulkAction::Delete {
                entities,
                action_on_non_existence,
            } => {
                let results = out.delete.get_or_insert_with(Default::default);
                if !all_exist::<T>(&existing, entities, *action_on_non_existence, results) {
                    continue;
                }
                for key in entities.iter().filter(|k| existing.contains(*k)) {
                    match target.delete(key).await {
                        Ok(true) => results.success.push(key.clone()),
                        Ok(false) => {}
                        Err(e) => results.error(&e),
                    }
                }
            }
        }
    }
    Ok(out)
}

/// False (with a 404 recorded) when keys are missing and the action must then fail.
fn all_exist<'a, T: BulkTarget>(
    existing: &HashSet<String>,
    keys: impl IntoIterator<Item = &'a String>,
    on_non_existence: BulkActionNotOnExistence,
    results: &mut BulkActionResponse,
) -> bool {
    let missing: Vec<&String> = keys
        .into_iter()
        .filter(|k| !existing.contains(*k))
        .collect();
    if on_non_existence == BulkActionNotOnExistence::Fail && !missing.is_empty() {
        results.error(&Error::NotFound(format!(
            "The {}: {} were not found.",
            T::NAMES,
            key_set(missing)
        )));
        return false;
    }
    true
}

async fn bulk_create<T: BulkTarget>(
    target: &T,
    existing: &HashSet<String>,
    entities: &[T::Entity],
    on_existence: BulkActionOnExistence,
    results: &mut BulkActionResponse,
) {
    let already = |keys: Vec<&String>| {
        Error::Conflict(format!(
            "The {}: {} already exist.",
            T::NAMES,
            key_set(keys)
        ))
    };
    let taken: Vec<&String> = entities
        .iter()
        .map(T::key)
        .filter(|k| existing.contains(*k))
        .collect();
    if on_existence == BulkActionOnExistence::Fail && !taken.is_empty() {
        results.error(&already(taken));
        return;
    }
    for entity in entities {
        let key = T::key(entity);
        if on_existence == BulkActionOnExistence::Skip && existing.contains(key) {
            continue;
        }
        let overwrite = on_existence == BulkActionOnExistence::Overwrite;
        match target.create(entity, overwrite).await {
            Ok(true) => results.success.push(key.clone()),
            // Created meanwhile, or twice in this request.
            Ok(false) if on_existence == BulkActionOnExistence::Skip => {}
            Ok(false) => results.error(&already(vec![key])),
            Err(e) => results.error(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_follows_key_names_at_any_depth() {
        assert!(is_sensitive("MY_API_KEY", &[]));
        assert!(is_sensitive("db_password", &[]));
        assert!(!is_sensitive("region", &[]));
        assert!(is_sensitive("Region_X", &["region".to_string()]));
        assert_eq!(redact_text("hunter2", Some("password"), &[]), "***");
        assert_eq!(redact_text("plain", Some("region"), &[]), "plain");
        let masked: Value = serde_json::from_str(&redact_text(
            r#"{"region": "eu", "auth": {"token": "t", "n": 1}, "secret": {"a": "x", "b": 2}}"#,
            None,
            &[],
        ))
        .unwrap();
        assert_eq!(
            masked,
            json!({"region": "eu", "auth": {"token": "***", "n": 1}, "secret": {"a": "***", "b": 2}})
        );
        // Text that needs no masking keeps its exact form.
        assert_eq!(redact_text(r#"{"a":1}"#, None, &[]), r#"{"a":1}"#);
    }

    #[test]
    fn key_sets_are_sorted_like_airflow_messages() {
        let keys = ["b".to_string(), "a".to_string()];
        assert_eq!(key_set(&keys), "{'a', 'b'}");
    }
}
