//! The web UI: server-rendered HTML pages for people, served by `api-server` and `standalone`
//! at `/`, beside the REST API and sharing its users, roles and store.
//!
//! Shape of a page: a handler takes a [`session::Session`] (the signed-in user, from the
//! session cookie; anonymous visitors are sent to `/login`), reads what it shows from the store
//! or, for anything the API already answers, from the API router called in-process
//! ([`api_call`]), and renders an embedded Jinja template ([`render`]). Every state-changing
//! request goes through the API router in-process with the user's own token, so the UI can do
//! nothing the user could not do with the API: the same role checks, validation and event log.
//! Buttons a role may not use are hidden by the templates from the `can` flags; the server
//! check is the API's.
//!
//! Browser security: the session cookie is `HttpOnly`, `SameSite=Lax`, `Secure` behind TLS;
//! every non-GET request needs a CSRF token bound to the session ([`csrf`]) and, when the
//! browser sends one, a same-site `Origin`; pages carry a strict Content-Security-Policy (no
//! inline scripts or styles), so the small scripts in `assets/` are the only code that runs.

mod api_call;
mod assets;
mod csrf;
mod error;
mod gantt;
mod graph_layout;
mod markdown;
mod pages;
mod params_form;
mod render;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use updraft_api::AppState;

pub use error::UiError;

/// What the UI handlers share; cheap to clone.
#[derive(Clone)]
pub struct WebState {
    inner: Arc<Inner>,
}

struct Inner {
    api: AppState,
    /// The REST API alone, called in-process for actions and API-shaped reads.
    api_router: Router,
}

impl WebState {
    pub fn new(api: AppState) -> WebState {
        let api_router = updraft_api::app(api.clone());
        WebState {
            inner: Arc::new(Inner { api, api_router }),
        }
    }

    pub fn api(&self) -> &AppState {
        &self.inner.api
    }

    pub fn store(&self) -> &updraft_store::DynStore {
        &self.inner.api.store
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.inner.api.auth.secret
    }
}

/// The API and the web UI together: what `api-server` and `standalone` serve.
pub fn app(state: AppState) -> Router {
    let web = WebState::new(state.clone());
    updraft_api::app_with(state, ui_router(web))
}

/// The UI's routes with their middleware (CSRF check, page headers).
fn ui_router(web: WebState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dags") }))
        .route(
            "/login",
            get(session::login_page).post(session::login_submit),
        )
        .route("/logout", post(session::logout))
        .route("/static/{file}", get(assets::serve))
        .merge(pages::routes())
        .route("/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            csrf::check,
        ))
        .layer(axum::middleware::from_fn(page_headers))
        .with_state(web)
}

/// Paths nobody serves: JSON for API clients (as the API's own 404), a page for people.
async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    if ["/api/", "/auth/", "/execution/"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        return updraft_api::Error::NotFound("not found".into()).into_response();
    }
    UiError::NotFound("there is no page at this address".into()).into_response()
}

/// The Content-Security-Policy of every page: only this server's scripts, styles and images
/// (no inline code), no framing, forms only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // Same-origin form posts keep their Origin header (with `no-referrer` browsers send
    // `Origin: null`), and no URL leaves the site in a Referer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
