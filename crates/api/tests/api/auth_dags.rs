//! Login, tokens, roles, `/dags`, monitor routes and response headers.

use super::common::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;
use updraft_api::{AppState, app};

#[tokio::test]
async fn login_issues_a_token_for_the_right_password_only() {
    let env = env().await;
    add_user(
        &env.store,
        "eve",
        "op",
        &updraft_crypto::password::hash("s3cret"),
    )
    .await;

    let (status, body) = call(
        &env.state,
        "POST",
        "/auth/token",
        None,
        Some(json!({"username": "eve", "password": "s3cret"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = updraft_crypto::jwt::verify(token, SECRET, Utc::now().timestamp()).unwrap();
    assert_eq!(claims["sub"], "eve");
    assert_eq!(claims["role"], "op");
    let exp = claims["exp"].as_i64().unwrap() - Utc::now().timestamp();
    assert!((3500..=3600).contains(&exp), "exp in {exp}s");
    // The token opens the API.
    let (status, _) = call(&env.state, "GET", "/api/v2/dags", Some(token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        env.store
            .get_user("eve")
            .await
            .unwrap()
            .unwrap()
            .last_login
            .is_some()
    );

    // Form bodies work too, as in Airflow.
    let req = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=eve&password=s3cret"))
        .unwrap();
    assert_eq!(send(&env.state, req).await.0, StatusCode::CREATED);

    let wrong = call(
        &env.state,
        "POST",
        "/auth/token",
        None,
        Some(json!({"username": "eve", "password": "nope"})),
    )
    .await;
    let unknown = call(
        &env.state,
        "POST",
        "/auth/token",
        None,
        Some(json!({"username": "nobody", "password": "s3cret"})),
    )
    .await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    // An unknown name and a wrong password look the same.
    assert_eq!(wrong, unknown);
    assert!(wrong.1["detail"].is_string());
}

#[tokio::test]
async fn failed_logins_are_limited_per_user() {
    let env = env().await;
    add_user(
        &env.store,
        "eve",
        "op",
        &updraft_crypto::password::hash("s3cret"),
    )
    .await;
    add_user(
        &env.store,
        "sam",
        "op",
        &updraft_crypto::password::hash("other"),
    )
    .await;
    let login = |user: &'static str, pw: &'static str| {
        call(
            &env.state,
            "POST",
            "/auth/token",
            None,
            Some(json!({"username": user, "password": pw})),
        )
    };
    for _ in 0..5 {
        assert_eq!(login("eve", "wrong").await.0, StatusCode::UNAUTHORIZED);
    }
    // Locked now, even with the right password.
    let (status, body) = login("eve", "s3cret").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Another user is not affected.
    assert_eq!(login("sam", "other").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_login_bodies_are_422_with_a_useful_message() {
    let env = env().await;
    let (status, body) = call(
        &env.state,
        "POST",
        "/auth/token",
        None,
        Some(json!({"username": "eve"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["loc"], json!(["body"]));
    assert!(
        body["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{body}"
    );

    let req = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, body) = send(&env.state, req).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("invalid json")
    );

    let big = "x".repeat(updraft_api::BODY_LIMIT + 1);
    let (status, _) = call(
        &env.state,
        "POST",
        "/auth/token",
        None,
        Some(json!({"username": big, "password": "p"})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn missing_invalid_expired_and_orphaned_tokens_are_401() {
    let env = env().await;
    let cases = [
        (None, "no header"),
        (Some("garbage".to_string()), "not a jwt"),
        (Some(token_for("admin", -5)), "expired"),
        (Some(token_for("ghost", 60)), "unknown user"),
        (
            Some(updraft_crypto::jwt::sign(
                &json!({"sub": "admin", "exp": Utc::now().timestamp() + 60}),
                b"another-secret",
            )),
            "wrong secret",
        ),
    ];
    for (token, why) in cases {
        let (status, body) = call(&env.state, "GET", "/api/v2/dags", token.as_deref(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(body["detail"].is_string(), "{why}: {body}");
    }
    // A deleted user's token stops working at once.
    let token = token_for("viewer", 60);
    assert_eq!(
        call(&env.state, "GET", "/api/v2/dags", Some(&token), None)
            .await
            .0,
        StatusCode::OK
    );
    env.store.delete_user("viewer").await.unwrap();
    assert_eq!(
        call(&env.state, "GET", "/api/v2/dags", Some(&token), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn role_matrix() {
    let env = env().await;
    const OK: u16 = 200;
    const NO: u16 = 401;
    const FB: u16 = 403;
    // (method, uri, body, [anonymous, viewer, user, op, admin])
    let routes: Vec<(&str, &str, Option<Value>, [u16; 5])> = vec![
        ("GET", "/api/v2/version", None, [OK, OK, OK, OK, OK]),
        ("GET", "/api/v2/monitor/health", None, [OK, OK, OK, OK, OK]),
        ("GET", "/api/v2/dags", None, [NO, OK, OK, OK, OK]),
        ("GET", "/api/v2/dags/alpha", None, [NO, OK, OK, OK, OK]),
        (
            "PATCH",
            "/api/v2/dags/alpha",
            Some(json!({"is_paused": true})),
            [NO, FB, OK, OK, OK],
        ),
    ];
    for (method, uri, body, expected) in routes {
        for (who, want) in [
            None,
            Some("viewer"),
            Some("user"),
            Some("op"),
            Some("admin"),
        ]
        .into_iter()
        .zip(expected)
        {
            let token = who.map(|w| token_for(w, 60));
            let (status, resp) =
                call(&env.state, method, uri, token.as_deref(), body.clone()).await;
            assert_eq!(status.as_u16(), want, "{method} {uri} as {who:?}: {resp}");
        }
    }
}

#[tokio::test]
async fn dags_list_paginates_orders_and_filters() {
    let env = env().await;
    let all = get(&env, "/api/v2/dags").await;
    assert_eq!(all["total_entries"], 3);
    assert_eq!(ids(&all), ["alpha", "beta_report", "gamma"]);

    let page = get(&env, "/api/v2/dags?limit=1&offset=1").await;
    assert_eq!(page["total_entries"], 3);
    assert_eq!(ids(&page), ["beta_report"]);
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?offset=5").await),
        Vec::<&str>::new()
    );

    let desc = get(&env, "/api/v2/dags?order_by=-dag_id").await;
    assert_eq!(ids(&desc), ["gamma", "beta_report", "alpha"]);

    let pat = get(&env, "/api/v2/dags?dag_id_pattern=A_P").await;
    assert_eq!(ids(&pat), ["alpha"]);
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?dag_id_pattern=ph%7Cmm").await),
        ["alpha", "gamma"]
    );
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?dag_id_pattern=~").await).len(),
        3
    );

    let tagged = get(&env, "/api/v2/dags?tags=etl").await;
    assert_eq!(ids(&tagged), ["alpha", "gamma"]);
    assert_eq!(tagged["total_entries"], 2);
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?tags=report&tags=daily").await),
        ["alpha", "beta_report"]
    );
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?tags=etl&tags=daily&tags_match_mode=all").await),
        ["alpha"]
    );
    assert_eq!(ids(&get(&env, "/api/v2/dags?paused=true").await), ["alpha"]);
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?paused=false&limit=1").await),
        ["beta_report"]
    );
    assert_eq!(
        ids(&get(&env, "/api/v2/dags?owners=ann").await),
        ["alpha", "beta_report"]
    );

    let admin = token_for("admin", 60);
    let (status, body) = call(
        &env.state,
        "GET",
        "/api/v2/dags?order_by=secret",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(
        &env.state,
        "GET",
        "/api/v2/dags?limit=x",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "limit"]));
    let (status, _) = call(
        &env.state,
        "GET",
        "/api/v2/dags?paused=maybe",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn dag_response_has_airflow_fields() {
    let env = env().await;
    let dag = get(&env, "/api/v2/dags/beta_report").await;
    assert_eq!(dag["dag_id"], "beta_report");
    assert_eq!(dag["dag_display_name"], "beta_report");
    assert_eq!(dag["is_paused"], false);
    assert_eq!(dag["is_stale"], false);
    assert_eq!(dag["owners"], json!(["bob", "ann"]));
    assert_eq!(
        dag["tags"],
        json!([{"name": "report", "dag_id": "beta_report"}])
    );
    assert_eq!(dag["timetable_summary"], "None");
    // No repeating schedule: not periodic, nothing to backfill.
    assert_eq!(dag["timetable_periodic"], false);
    assert_eq!(dag["is_backfillable"], false);
    assert_eq!(dag["timetable_partitioned"], false);
    assert_eq!(dag["relative_fileloc"], "beta_report.yaml");
    assert!(dag["max_active_runs"].is_u64());
    assert!(dag["max_active_tasks"].is_u64());
    assert!(dag.get("description").is_some());
    assert!(dag["last_parsed_time"].is_string());

    let (status, body) = call(
        &env.state,
        "GET",
        "/api/v2/dags/nope",
        Some(&token_for("viewer", 60)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn patch_pauses_checks_the_mask_and_writes_the_audit_log() {
    let env = env().await;
    let user = token_for("user", 60);
    let (status, body) = call(
        &env.state,
        "PATCH",
        "/api/v2/dags/gamma?update_mask=is_paused",
        Some(&user),
        Some(json!({"is_paused": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_paused"], true);
    assert!(env.store.get_dag("gamma").await.unwrap().unwrap().is_paused);
    let events = env.store.list_events(10, 0).await.unwrap();
    let event = events
        .iter()
        .find(|e| e.event == "patch_dag")
        .expect("audit event");
    assert_eq!(event.owner.as_deref(), Some("user"));
    assert_eq!(event.dag_id.as_deref(), Some("gamma"));

    let (status, _) = call(
        &env.state,
        "PATCH",
        "/api/v2/dags/gamma?update_mask=description",
        Some(&user),
        Some(json!({"is_paused": false})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &env.state,
        "PATCH",
        "/api/v2/dags/gamma",
        Some(&user),
        Some(json!({"is_paused": false, "owner": "me"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"][0]["msg"].as_str().unwrap().contains("owner"),
        "{body}"
    );
    let (status, _) = call(
        &env.state,
        "PATCH",
        "/api/v2/dags/gamma",
        Some(&user),
        Some(json!({"is_paused": "yes please"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing above changed the DAG.
    assert!(env.store.get_dag("gamma").await.unwrap().unwrap().is_paused);

    let (status, _) = call(
        &env.state,
        "PATCH",
        "/api/v2/dags/nope",
        Some(&user),
        Some(json!({"is_paused": true})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_and_version_are_public_and_shaped_like_airflow() {
    let env = env().await;
    let (status, health) = call(&env.state, "GET", "/api/v2/monitor/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["metadatabase"]["status"], "healthy");
    assert_eq!(health["scheduler"]["status"], "unhealthy");
    assert!(
        health["scheduler"]
            .get("latest_scheduler_heartbeat")
            .is_some()
    );

    assert!(
        env.store
            .acquire_lease("scheduler", "host:1", Duration::from_secs(30), Utc::now())
            .await
            .unwrap()
    );
    let (_, health) = call(&env.state, "GET", "/api/v2/monitor/health", None, None).await;
    assert_eq!(health["scheduler"]["status"], "healthy");
    let beat = |health: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            health["scheduler"]["latest_scheduler_heartbeat"]
                .as_str()
                .expect("heartbeat"),
        )
        .unwrap()
        .with_timezone(&Utc)
    };
    // The heartbeat is the lease's last renewal: just now.
    assert!(
        (Utc::now() - beat(&health)).num_seconds().abs() < 5,
        "{health}"
    );
    // A lease nobody renewed: the scheduler died without releasing it.
    env.store
        .release_lease("scheduler", "host:1")
        .await
        .unwrap();
    let long_ago = Utc::now() - chrono::Duration::minutes(5);
    assert!(
        env.store
            .acquire_lease("scheduler", "host:2", Duration::from_secs(30), long_ago)
            .await
            .unwrap()
    );
    let (_, health) = call(&env.state, "GET", "/api/v2/monitor/health", None, None).await;
    assert_eq!(health["scheduler"]["status"], "unhealthy");
    // ... and its last heartbeat is when it last renewed.
    assert!(
        (beat(&health) - long_ago).num_seconds().abs() < 2,
        "{health}"
    );

    let (status, version) = call(&env.state, "GET", "/api/v2/version", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["git_version"], Value::Null);

    let (status, body) = call(&env.state, "GET", "/api/v2/nothing-here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let env = env().await;
    for uri in ["/api/v2/version", "/api/v2/dags", "/nowhere"] {
        let res = app(env.state.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(h["x-frame-options"], "DENY", "{uri}");
        assert_eq!(h["cache-control"], "no-store", "{uri}");
    }
}

async fn with_origin(state: &AppState, method: &str, origin: &str) -> axum::http::Response<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri("/api/v2/dags")
        .header(header::ORIGIN, origin);
    if method == "OPTIONS" {
        req = req.header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET");
    }
    app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_is_off_by_default_and_limited_to_configured_origins() {
    let env = env().await;
    let res = with_origin(&env.state, "GET", "https://evil.example").await;
    assert!(
        !res.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    let res = with_origin(&env.state, "OPTIONS", "https://evil.example").await;
    assert!(
        !res.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    let mut config = (*env.state.config).clone();
    config.api.access_control_allow_origins = vec!["https://tools.example".into()];
    let state = AppState {
        config: std::sync::Arc::new(config),
        ..env.state.clone()
    };
    let res = with_origin(&state, "OPTIONS", "https://tools.example").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://tools.example"
    );
    assert!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    // The actual call still needs a token; CORS only lets the browser read the answer.
    let res = with_origin(&state, "GET", "https://tools.example").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://tools.example"
    );
    let res = with_origin(&state, "GET", "https://evil.example").await;
    assert!(
        !res.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}
