//! The users page (`/users`, admins only): the accounts with their role, active flag and last
//! sign-in; create a user, change a role, reset a password, deactivate (or reactivate) and
//! delete a user.
//!
//! The API has no users route, so these handlers check the role themselves
//! ([`required_role`] of [`Resource::User`]), call the store's user methods and write an event
//! log row for every attempt, as the API's audit middleware does for its routes (Airflow's
//! operation ids `post_user`, `patch_user`, `delete_user`; the extra names what changed and
//! the outcome). Passwords are hashed off the async threads and never logged. An admin cannot
//! delete, deactivate or change the role of their own account, so the last admin cannot lock
//! everyone out by accident.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};
use updraft_api::{Access, Resource, Role};
use updraft_store::{NewAuditEvent, NewUser};

use super::admin::with_status;
use super::require;
use crate::WebState;
use crate::error::UiError;
use crate::render;
use crate::session::Session;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/role", post(change_role))
        .route("/users/password", post(reset_password))
        .route("/users/active", post(set_active))
        .route("/users/delete", post(delete))
}

/// Airflow's roles, least privileged first.
const ROLES: [&str; 4] = ["viewer", "user", "op", "admin"];

/// Records one attempt in the event log; losing the row is logged, not fatal (the change
/// happened or was refused either way).
async fn audit(web: &WebState, session: &Session, event: &str, path: &str, mut extra: Value) {
    if let Some(o) = extra.as_object_mut() {
        o.insert("method".into(), json!("POST"));
        o.insert("path".into(), json!(path));
    }
    let row = NewAuditEvent {
        at: Utc::now(),
        event: event.into(),
        owner: Some(session.username.clone()),
        dag_id: None,
        run_id: None,
        task_id: None,
        map_index: None,
        try_number: None,
        extra: Some(extra.to_string()),
    };
    if let Err(e) = web.store().log_event(&row).await {
        tracing::error!(error = %e, event, "cannot write the event log");
    }
}

/// 403 (logged as a refused attempt) unless the session may manage users.
async fn require_write(
    web: &WebState,
    session: &Session,
    event: &str,
    path: &str,
    target: &str,
) -> Result<(), UiError> {
    if let Err(e) = require(session, Resource::User, Access::Write) {
        audit(
            web,
            session,
            event,
            path,
            json!({"username": target, "status": 403}),
        )
        .await;
        return Err(e);
    }
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
}

async fn page(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    form: &CreateForm,
    error: Option<&str>,
) -> Result<Response, UiError> {
    let users: Vec<Value> = web
        .store()
        .list_users()
        .await?
        .into_iter()
        .map(|u| {
            json!({
                "username": u.username,
                "role": u.role,
                "email": u.email,
                "active": u.active,
                "created_at": u.created_at.to_rfc3339(),
                "last_login": u.last_login.map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    Ok(render::page(
        web,
        session,
        headers,
        "users.html",
        "users",
        context! {
            title => "Users",
            users => users,
            roles => ROLES,
            me => session.username,
            new => context! {
                username => form.username,
                role => if form.role.is_empty() { "viewer" } else { form.role.as_str() },
                email => form.email,
            },
            error => error,
        },
    ))
}

async fn list(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    require(&session, Resource::User, Access::Read)?;
    page(&web, &session, &headers, &CreateForm::default(), None).await
}

fn check_role(role: &str) -> Result<(), String> {
    if Role::parse(role).is_some() {
        Ok(())
    } else {
        Err(format!(
            "unknown role `{role}` (allowed: {})",
            ROLES.join(", ")
        ))
    }
}

/// The argon2 hash of `password`, computed on a blocking thread (it is slow on purpose).
async fn hash(password: String) -> Result<String, UiError> {
    tokio::task::spawn_blocking(move || updraft_crypto::password::hash(&password))
        .await
        .map_err(|e| UiError::Internal(format!("password hashing failed: {e}")))
}

/// `POST /users`: creates an active user.
async fn create(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CreateForm>,
) -> Result<Response, UiError> {
    const EVENT: &str = "post_user";
    let username = form.username.trim().to_string();
    require_write(&web, &session, EVENT, "/users", &username).await?;
    let problem = if username.is_empty() {
        Some("the username must not be empty".to_string())
    } else if form.password.is_empty() {
        Some("the password must not be empty".to_string())
    } else {
        check_role(&form.role).err()
    };
    let result = match problem {
        Some(p) => Err((StatusCode::UNPROCESSABLE_ENTITY, p)),
        None => {
            let user = NewUser {
                username: username.clone(),
                password_hash: hash(form.password.clone()).await?,
                role: form.role.clone(),
                email: Some(form.email.trim().to_string()).filter(|e| !e.is_empty()),
                first_name: None,
                last_name: None,
            };
            match web.store().create_user(&user).await {
                Ok(_) => Ok(()),
                Err(updraft_store::Error::Conflict(_)) => Err((
                    StatusCode::CONFLICT,
                    format!("a user named `{username}` already exists"),
                )),
                Err(updraft_store::Error::Invalid(m)) => Err((StatusCode::UNPROCESSABLE_ENTITY, m)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let status = result.as_ref().err().map_or(201, |(s, _)| s.as_u16());
    audit(
        &web,
        &session,
        EVENT,
        "/users",
        json!({"username": username, "role": form.role, "status": status}),
    )
    .await;
    match result {
        Ok(()) => Ok(render::flash_redirect(
            &web,
            "/users",
            true,
            &format!("user {username} created with role {}", form.role),
        )),
        Err((status, message)) => {
            let shown = CreateForm {
                password: String::new(),
                ..form
            };
            Ok(with_status(
                page(&web, &session, &headers, &shown, Some(&message)).await?,
                status,
            ))
        }
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    username: String,
    role: String,
}

/// Ends a change to an existing user: writes its event-log row (`fields` plus the outcome's
/// status) and shows the outcome as a flash on the users page.
async fn finish(
    web: &WebState,
    session: &Session,
    event: &str,
    path: &str,
    mut fields: serde_json::Value,
    result: Result<String, (u16, String)>,
) -> Response {
    fields["status"] = json!(result.as_ref().err().map_or(200, |(s, _)| *s));
    audit(web, session, event, path, fields).await;
    match result {
        Ok(message) => render::flash_redirect(web, "/users", true, &message),
        Err((_, message)) => render::flash_redirect(web, "/users", false, &message),
    }
}

/// A store error on an existing user: gone (404) or the page's failure.
fn missing(e: updraft_store::Error, username: &str) -> Result<(u16, String), UiError> {
    match e {
        updraft_store::Error::NotFound(_) => {
            Ok((404, format!("there is no user named `{username}`")))
        }
        other => Err(other.into()),
    }
}

async fn change_role(
    State(web): State<WebState>,
    session: Session,
    axum::Form(form): axum::Form<RoleForm>,
) -> Result<Response, UiError> {
    const PATH: &str = "/users/role";
    require_write(&web, &session, "patch_user", PATH, &form.username).await?;
    let result: Result<String, (u16, String)> = if form.username == session.username {
        Err((
            400,
            "you cannot change your own role; another admin can".to_string(),
        ))
    } else if let Err(m) = check_role(&form.role) {
        Err((422, m))
    } else {
        match web.store().set_user_role(&form.username, &form.role).await {
            Ok(()) => Ok(format!(
                "user {} now has the role {}",
                form.username, form.role
            )),
            Err(e) => Err(missing(e, &form.username)?),
        }
    };
    Ok(finish(
        &web,
        &session,
        "patch_user",
        PATH,
        json!({
            "username": form.username,
            "update_mask": ["role"],
            "role": form.role
        }),
        result,
    )
    .await)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    username: String,
    password: String,
}

async fn reset_password(
    State(web): State<WebState>,
    session: Session,
    axum::Form(form): axum::Form<PasswordForm>,
) -> Result<Response, UiError> {
    const PATH: &str = "/users/password";
    require_write(&web, &session, "patch_user", PATH, &form.username).await?;
    let result: Result<String, (u16, String)> = if form.password.is_empty() {
        Err((422, "the new password must not be empty".to_string()))
    } else {
        let hashed = hash(form.password.clone()).await?;
        match web.store().set_user_password(&form.username, &hashed).await {
            Ok(()) => Ok(format!("password of user {} reset", form.username)),
            Err(e) => Err(missing(e, &form.username)?),
        }
    };
    Ok(finish(
        &web,
        &session,
        "patch_user",
        PATH,
        json!({
            "username": form.username,
            "update_mask": ["password"]
        }),
        result,
    )
    .await)
}

#[derive(Deserialize)]
pub struct ActiveForm {
    username: String,
    active: bool,
}

/// `POST /users/active`: an inactive user can neither sign in nor use the API (their open
/// sessions stop working at their next request); reactivating restores the account as it was.
async fn set_active(
    State(web): State<WebState>,
    session: Session,
    axum::Form(form): axum::Form<ActiveForm>,
) -> Result<Response, UiError> {
    const PATH: &str = "/users/active";
    require_write(&web, &session, "patch_user", PATH, &form.username).await?;
    let result: Result<String, (u16, String)> = if form.username == session.username {
        Err((
            400,
            "you cannot deactivate your own account; another admin can".to_string(),
        ))
    } else {
        match web
            .store()
            .set_user_active(&form.username, form.active)
            .await
        {
            Ok(()) => Ok(format!(
                "user {} {}",
                form.username,
                if form.active {
                    "reactivated"
                } else {
                    "deactivated"
                }
            )),
            Err(e) => Err(missing(e, &form.username)?),
        }
    };
    Ok(finish(
        &web,
        &session,
        "patch_user",
        PATH,
        json!({
            "username": form.username,
            "update_mask": ["active"],
            "active": form.active
        }),
        result,
    )
    .await)
}

#[derive(Deserialize)]
pub struct UserForm {
    username: String,
}

async fn delete(
    State(web): State<WebState>,
    session: Session,
    axum::Form(form): axum::Form<UserForm>,
) -> Result<Response, UiError> {
    const PATH: &str = "/users/delete";
    require_write(&web, &session, "delete_user", PATH, &form.username).await?;
    let result: Result<String, (u16, String)> = if form.username == session.username {
        Err((
            400,
            "you cannot delete your own account; another admin can".to_string(),
        ))
    } else if web.store().delete_user(&form.username).await? {
        Ok(format!("user {} deleted", form.username))
    } else {
        Err((404, format!("there is no user named `{}`", form.username)))
    };
    Ok(finish(
        &web,
        &session,
        "delete_user",
        PATH,
        json!({"username": form.username}),
        result,
    )
    .await)
}
