//! The pages, one module per area; each exposes `routes()`.

mod actions;
mod admin;
mod browse;
mod dag;
mod dags;
mod task_instance;
mod users;

use axum::Router;
use updraft_api::{Access, Resource, required_role};

use crate::WebState;
use crate::error::UiError;
use crate::session::Session;

/// An id as one segment of a URL path.
pub use crate::render::path_segment as seg;

/// Rows per page of every list.
pub const PAGE_SIZE: i64 = 25;

pub fn routes() -> Router<WebState> {
    Router::new()
        .merge(dags::routes())
        .merge(dag::routes())
        .merge(actions::routes())
        .merge(task_instance::routes())
        .merge(admin::routes())
        .merge(users::routes())
        .merge(browse::routes())
}

/// The query string `pairs` make, for links that keep a page's filters (`?a=1&b=2&`, ready
/// for one more pair).
pub fn query_base(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = format!("{path}?");
    for (k, v) in pairs {
        if !v.is_empty() {
            out.push_str(&format!("{k}={}&", crate::render::url_encode(v)));
        }
    }
    out
}

/// A LIKE pattern matching names that contain `text` literally (`%`, `_` and `\` escaped).
pub fn contains_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// 403 unless the session's role may do `access` on `resource`.
pub fn require(session: &Session, resource: Resource, access: Access) -> Result<(), UiError> {
    let needed = required_role(resource, access);
    if session.role >= needed {
        Ok(())
    } else {
        Err(UiError::Forbidden(format!(
            "this page needs the role `{}`; you have `{}`",
            needed.as_str(),
            session.role.as_str()
        )))
    }
}

/// The page count of `total` rows.
pub fn page_count(total: i64) -> i64 {
    ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1)
}
