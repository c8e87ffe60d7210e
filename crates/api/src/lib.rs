//! The REST API server: Airflow 3's public `/api/v2` and the SimpleAuthManager's
//! `POST /auth/token`, over the store.
//!
//! [`app`] builds the router without a socket (tests drive it with `oneshot`); [`serve`] runs it
//! on a listener until a shutdown signal. Wire types (DTOs) live here and are mapped by hand
//! from the store's types, so the JSON shape never leaks into the domain crates.
//!
//! Every `/api/v2` route is registered through `utoipa_axum::routes!`, which takes the path,
//! method, parameters and schemas from the handler's `#[utoipa::path]` attribute: the router
//! and the OpenAPI document served at `/api/v2/openapi.json` come from the same declaration and
//! cannot drift apart.

mod audit;
pub mod auth;
mod authorize;
mod config;
mod connections;
mod dag_runs;
mod dag_versions;
mod dags;
pub mod error;
mod event_logs;
pub mod execution;
mod json;
mod misc;
mod monitor;
mod openapi;
mod params;
mod pools;
mod resources;
mod task_deps;
mod task_instances;
mod task_logs;
mod tasks;
mod ts;
mod variables;
mod xcom;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use tokio::sync::watch;
use updraft_config::Config;
use updraft_store::DynStore;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Access, AuthConfig, CurrentUser, LoginLimiter, Resource, Role, required_role};
pub use error::Error;
/// Airflow's secrets masking of JSON by key name, for other views of the same data (the web UI).
pub use resources::redact;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    /// The effective configuration (paths, secrets settings, and `/api/v2/config`).
    pub config: Arc<Config>,
    pub auth: AuthConfig,
    pub limiter: Arc<LoginLimiter>,
    /// Reported by `/api/v2/version`.
    pub version: &'static str,
}

impl AppState {
    /// A state with the token lifetime from `config` and the default login limit (5 failures
    /// per user and address per minute).
    pub fn new(store: DynStore, config: Arc<Config>, secret: Vec<u8>) -> AppState {
        let jwt_expiration = config.api.jwt_expiration;
        AppState {
            store,
            config,
            auth: AuthConfig {
                secret: Arc::new(secret),
                jwt_expiration,
            },
            limiter: Arc::new(LoginLimiter::new(5, Duration::from_secs(60))),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Every `/api/v2` route with its OpenAPI description, before the state is attached.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(monitor::routes())
        .merge(dags::routes())
        .merge(dag_runs::routes())
        .merge(task_instances::routes())
        .merge(resources::routes())
        .merge(misc::routes())
}

/// The OpenAPI document of `/api/v2` (served at `/api/v2/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().split_for_parts();
    openapi::finish(&mut doc);
    doc
}

/// The whole HTTP application of the API alone.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The API with `extra` routes beside it (the web UI), under the same middleware: request
/// log, security headers, body limit and CORS.
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let (api, mut doc) = api_router().split_for_parts();
    openapi::finish(&mut doc);
    let doc = Arc::new(doc);
    let api = api
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize::check,
        ))
        // Outside the role check, so refused attempts are in the event log too.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ));
    Router::new()
        .route("/auth/token", post(auth::login))
        .nest("/api/v2", api)
        .nest("/execution", execution::router(state.clone()))
        .merge(extra)
        .fallback(|| async { Error::NotFound("not found".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors))
        .layer(axum::middleware::from_fn(trace))
        .with_state(state)
}

/// The Task Execution API alone at `/execution`: what `dags test` and `tasks test` serve
/// in-process for the tries of Python tasks (no `/api/v2`, no UI, no login).
pub fn execution_app(state: AppState) -> Router {
    Router::new()
        .nest("/execution", execution::router(state.clone()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// One log line per request, and the security headers every response carries.
async fn trace(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let mut response = next.run(request).await;
    // Responses are JSON for programs; these stop browsers from sniffing, framing or caching
    // them (tokens included).
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        // Pages of the web UI set their own (assets are cacheable, pages need a referrer
        // policy that keeps the Origin header on form posts).
        if !headers.contains_key(name) {
            headers.insert(name, axum::http::HeaderValue::from_static(value));
        }
    }
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// CORS as configured by `api.access_control_allow_*`: off (no headers at all, so browsers
/// refuse cross-origin calls) unless origins are listed. Preflights from an allowed origin are
/// answered here; anything else goes through, and only allowed origins get the headers.
async fn cors(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    use axum::http::{HeaderValue, Method, StatusCode, header};
    let api = &state.config.api;
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(String::from);
    let allowed = origin.as_deref().and_then(|o| {
        if api.access_control_allow_origins.iter().any(|a| a == "*") {
            Some("*".to_string())
        } else {
            api.access_control_allow_origins
                .iter()
                .any(|a| a == o)
                .then(|| o.to_string())
        }
    });
    let Some(allowed) = allowed.and_then(|a| HeaderValue::from_str(&a).ok()) else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let headers = r.headers_mut();
        for (name, list) in [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                &api.access_control_allow_methods,
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                &api.access_control_allow_headers,
            ),
        ] {
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                headers.insert(name, v);
            }
        }
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// Serves [`app`] on `listener` until `shutdown` turns true, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_router(listener, app(state), shutdown).await
}

/// Serves `router` (the API, or the API with the web UI) on `listener` until `shutdown`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
