//! Signing in and out, the session cookie's attributes, CSRF and origin checks, and the
//! headers every page carries.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use crate::common::*;

#[tokio::test]
async fn anonymous_visitors_are_sent_to_login_and_back() {
    let e = env().await;
    let page = get(&e.app, "/dags?tag=etl", None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/login?next=/dags%3Ftag%3Detl");
    let root = get(&e.app, "/", None).await;
    assert_eq!(root.location(), "/dags");
}

#[tokio::test]
async fn login_with_the_form_sets_a_safe_session_cookie() {
    let e = env().await;
    let hash = updraft_crypto::password::hash("correct horse");
    add_user(&e.store, "ann", "viewer", &hash).await;

    let form = get(&e.app, "/login?next=/dags%3Ftag%3Detl", None).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"password\""));
    let login_cookie = form.cookie("updraft_login").expect("login cookie");
    let csrf = input_value(&form.body, "csrf_token").unwrap();

    let submit = |password: &'static str, csrf: String| {
        let body = serde_urlencoded::to_string([
            ("username", "ann"),
            ("password", password),
            ("next", "/dags?tag=etl"),
            ("csrf_token", csrf.as_str()),
        ])
        .unwrap();
        Request::builder()
            .method("POST")
            .uri("/login")
            .header("host", "ui.test")
            .header("origin", "http://ui.test")
            .header(header::COOKIE, login_cookie.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };

    let wrong = send(&e.app, submit("wrong", csrf.clone())).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("wrong username or password"));
    assert!(wrong.cookie("updraft_session").is_none());

    let forged = send(&e.app, submit("correct horse", "forged".into())).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.cookie("updraft_session").is_none());

    let ok = send(&e.app, submit("correct horse", csrf)).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/dags?tag=etl");
    let set = ok
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("updraft_session="))
        .unwrap();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Lax"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    assert!(!set.contains("Secure"), "plain http on loopback: {set}");

    // The cookie opens the pages.
    let cookie = ok.cookie("updraft_session").unwrap();
    let browser = Browser {
        cookie,
        csrf: String::new(),
    };
    let dags = get(&e.app, "/dags", Some(&browser)).await;
    assert_eq!(dags.status, StatusCode::OK);
    assert!(dags.body.contains("ann"));
}

#[tokio::test]
async fn cookies_are_secure_behind_tls() {
    let e = env().await;
    let req = Request::builder()
        .uri("/login")
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let page = send(&e.app, req).await;
    let set = page.set_cookies().join("\n");
    assert!(
        set.contains("updraft_login=") && set.contains("; Secure"),
        "{set}"
    );
}

#[tokio::test]
async fn open_redirects_are_refused() {
    let e = env().await;
    let b = browser("viewer");
    for next in ["//evil.example", "https://evil.example", "/\\evil.example"] {
        let page = get(&e.app, &format!("/login?next={next}"), Some(&b)).await;
        assert_eq!(page.location(), "/", "{next}");
    }
}

#[tokio::test]
async fn every_post_needs_the_session_csrf_token_and_a_same_site_origin() {
    let e = env().await;
    let b = browser("admin");
    let missing = {
        let req = Request::builder()
            .method("POST")
            .uri("/dags/gamma/pause")
            .header("host", "ui.test")
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("paused=true"))
            .unwrap();
        send(&e.app, req).await
    };
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("did not come from this site"));

    // A token from another session does not fit this one.
    let other = browser("admin");
    let stolen = post(
        &e.app,
        "/dags/gamma/pause",
        &b,
        &[("paused", "true"), ("csrf_token", &other.csrf)],
    )
    .await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);

    let cross = {
        let body = format!("paused=true&csrf_token={}", b.csrf);
        let req = Request::builder()
            .method("POST")
            .uri("/dags/gamma/pause")
            .header("host", "ui.test")
            .header("origin", "http://evil.example")
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        send(&e.app, req).await
    };
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(!e.store.get_dag("gamma").await.unwrap().unwrap().is_paused);

    // The header form of the token works for scripts.
    let req = Request::builder()
        .method("POST")
        .uri("/dags/gamma/pause")
        .header("host", "ui.test")
        .header("x-csrf-token", &b.csrf)
        .header(header::COOKIE, &b.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("paused=true"))
        .unwrap();
    let ok = send(&e.app, req).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(e.store.get_dag("gamma").await.unwrap().unwrap().is_paused);
}

#[tokio::test]
async fn sign_out_revokes_the_session() {
    let e = env().await;
    let b = browser("viewer");
    assert_eq!(get(&e.app, "/dags", Some(&b)).await.status, StatusCode::OK);
    let out = post(&e.app, "/logout", &b, &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    assert!(
        out.set_cookies()
            .iter()
            .any(|c| c.starts_with("updraft_session=;") && c.contains("Max-Age=0"))
    );
    // The old cookie, replayed, no longer opens anything: not the pages, not the API (as a
    // bearer token), and not on another server process sharing the database.
    let again = get(&e.app, "/dags", Some(&b)).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let other_replica = updraft_web::app(e.state.clone());
    assert_eq!(
        get(&other_replica, "/dags", Some(&b)).await.status,
        StatusCode::SEE_OTHER
    );
    let token = b.cookie.trim_start_matches("updraft_session=");
    let req = Request::builder()
        .uri("/api/v2/dags")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&e.app, req).await.status, StatusCode::UNAUTHORIZED);
    // Another session of the same user is unaffected.
    let other = browser("viewer");
    assert_eq!(
        get(&e.app, "/dags", Some(&other)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_deleted_user_loses_the_session_at_once() {
    let e = env().await;
    let b = browser("op");
    assert_eq!(get(&e.app, "/dags", Some(&b)).await.status, StatusCode::OK);
    e.store.delete_user("op").await.unwrap();
    assert_eq!(
        get(&e.app, "/dags", Some(&b)).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy() {
    let e = env().await;
    let page = get(&e.app, "/dags", Some(&browser("viewer"))).await;
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers[header::REFERRER_POLICY], "same-origin");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    // No inline script or style in the page itself.
    assert!(!page.body.contains("<script>"));
    assert!(!page.body.contains("style="));
}

#[tokio::test]
async fn assets_are_embedded_and_cached_by_content_hash() {
    let e = env().await;
    let page = get(&e.app, "/login", None).await;
    let at = page.body.find("/static/app.").unwrap();
    let href: String = page.body[at..].chars().take_while(|c| *c != '"').collect();
    assert!(href.ends_with(".css"), "{href}");
    let css = get(&e.app, &href, None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        css.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(css.body.contains("prefers-color-scheme: dark"));
    assert_eq!(
        get(&e.app, "/static/app.css", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_paths_get_a_page_for_people_and_json_for_programs() {
    let e = env().await;
    let page = get(&e.app, "/no/such/page", Some(&browser("viewer"))).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("<!doctype html>"));
    let api = get(&e.app, "/api/v2/no-such-thing", None).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.body.starts_with('{'), "{}", api.body);
}
