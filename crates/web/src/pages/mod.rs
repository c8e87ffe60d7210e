//! The pages, one module per area; each exposes `routes()`.

mod actions;
mod admin;
mod browse;
mod dag;
mod dags;
mod task_instance;
mod users;

use axum::Router;

use crate::WebState;

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
