//! What a page answers when it cannot show what was asked: an HTML error page with the right
//! status, or a redirect to the login page. Internal details are logged, never shown.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No valid session: go to the login page and come back to `next` afterwards.
    #[error("sign in to continue")]
    LoginRequired { next: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A state-changing request without a valid CSRF token or from another site.
    #[error("this form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    Internal(String),
}

impl UiError {
    pub fn status(&self) -> StatusCode {
        match self {
            UiError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            UiError::Forbidden(_) | UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<updraft_store::Error> for UiError {
    fn from(e: updraft_store::Error) -> UiError {
        match e {
            updraft_store::Error::NotFound(what) => UiError::NotFound(what),
            other => UiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::LoginRequired { next } = &self {
            let target = format!("/login?next={}", crate::render::url_encode(next));
            return Redirect::to(&target).into_response();
        }
        let status = self.status();
        let message = match &self {
            UiError::Internal(detail) => {
                tracing::error!(error = %detail, "web page failed");
                "something went wrong on the server; the details are in its log".to_string()
            }
            other => other.to_string(),
        };
        let html = crate::render::error_page(status, &message);
        (status, Html(html)).into_response()
    }
}
