//! The REST API server: Airflow 3's public `/api/v2` and the SimpleAuthManager's
//! `POST /auth/token`, over the store.
//!
//! [`app`] builds the router without a socket (tests drive it with `oneshot`); [`serve`] runs it
//! on a listener until a shutdown signal. Wire types (DTOs) live here and are mapped by hand
//! from the store's types, so the JSON shape never leaks into the domain crates.

pub mod auth;
mod dags;
pub mod error;
mod json;
mod monitor;
mod params;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::watch;
use updraft_store::DynStore;

pub use auth::{Access, AuthConfig, CurrentUser, LoginLimiter, Resource, Role, required_role};
pub use error::Error;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub auth: AuthConfig,
    pub limiter: Arc<LoginLimiter>,
    /// Reported by `/api/v2/version`.
    pub version: &'static str,
}

impl AppState {
    /// A state with the default login limit (5 failures per user and address per minute).
    pub fn new(store: DynStore, secret: Vec<u8>, jwt_expiration: Duration) -> AppState {
        AppState {
            store,
            auth: AuthConfig {
                secret: Arc::new(secret),
                jwt_expiration,
            },
            limiter: Arc::new(LoginLimiter::new(5, Duration::from_secs(60))),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/version", get(monitor::version))
        .route("/monitor/health", get(monitor::health))
        .route("/dags", get(dags::list))
        .route("/dags/{dag_id}", get(dags::get).patch(dags::patch));
    Router::new()
        .route("/auth/token", post(auth::login))
        .nest("/api/v2", api)
        .fallback(|| async { Error::NotFound("not found".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(trace))
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
        headers.insert(name, axum::http::HeaderValue::from_static(value));
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

/// Serves [`app`] on `listener` until `shutdown` turns true, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
