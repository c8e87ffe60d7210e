//! The UI's stylesheet and scripts, embedded in the binary and served under names that carry
//! a hash of their content, so browsers may cache them forever and still get a new version
//! after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::UiError;

struct Asset {
    /// `app.css` → served as `app.<hash>.css`.
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
];

/// Logical name → served name.
static SERVED: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = hex::encode(&Sha256::digest(a.body.as_bytes())[..6]);
            let (stem, ext) = a.name.rsplit_once('.').expect("assets have an extension");
            (a.name, format!("{stem}.{hash}.{ext}"))
        })
        .collect()
});

/// The URL of an asset by its logical name (`app.css`), for templates.
pub fn url(name: &str) -> String {
    SERVED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, served)| format!("/static/{served}"))
        .unwrap_or_else(|| format!("/static/{name}"))
}

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let found = SERVED
        .iter()
        .position(|(_, served)| *served == file)
        .map(|i| &ASSETS[i]);
    let Some(asset) = found else {
        return UiError::NotFound("no such file".into()).into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
