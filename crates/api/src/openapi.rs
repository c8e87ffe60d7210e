//! The frame of the OpenAPI document; the paths and schemas come from the handlers'
//! `#[utoipa::path]` attributes and the DTOs' `ToSchema` derives.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};

/// Name of the bearer-token scheme operations refer to.
pub const BEARER: &str = "HTTPBearer";

pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Updraft REST API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Airflow 3 compatible `/api/v2`. Obtain a token with `POST /auth/token` \
                     and send it as `Authorization: Bearer <token>`.",
                ))
                .build(),
        )
        .build()
}

/// Adds what the routes share: the `/api/v2` prefix and the bearer scheme, which every operation
/// needs unless it declares `security(())` (the public monitor routes).
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    // Paths are written relative to `/api/v2` by the handlers; the document names them in
    // full, as Airflow's does.
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            if op.security.is_none() {
                op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new::<
                    &str,
                    [&str; 0],
                    &str,
                >(BEARER, [])]);
            }
        }
        doc.paths.paths.insert(format!("/api/v2{path}"), item);
    }
}
