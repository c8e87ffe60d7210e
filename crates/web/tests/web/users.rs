//! The users page: admins list, create, change roles, reset passwords and delete users; every
//! change and refused attempt is in the event log; nobody else gets in.

use axum::http::StatusCode;
use updraft_store::EventFilter;

use crate::common::*;

async fn events(e: &Env) -> Vec<(String, Option<String>, String)> {
    let page = e
        .store
        .query_events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    page.events
        .into_iter()
        .map(|ev| (ev.event, ev.owner, ev.extra.unwrap_or_default()))
        .collect()
}

fn flash(page: &Page) -> String {
    let cookie = page.cookie("updraft_flash").unwrap_or_default();
    let payload = cookie
        .trim_start_matches("updraft_flash=")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn admins_list_and_create_users() {
    let e = env().await;
    e.store
        .record_login("op", chrono::Utc::now())
        .await
        .unwrap();
    let admin = browser("admin");
    let page = get(&e.app, "/users", Some(&admin)).await;
    assert_eq!(page.status, StatusCode::OK);
    for name in ["viewer", "user", "op", "admin"] {
        assert!(
            page.body.contains(&format!("data-user=\"{name}\"")),
            "{name}"
        );
    }
    let year = chrono::Utc::now().format("%Y-").to_string();
    let op_row = &page.body[page.body.find("data-user=\"op\"").unwrap()..];
    let op_row = &op_row[..op_row.find("</tr>").unwrap()];
    assert!(op_row.contains(&year), "last login shown: {op_row}");
    assert!(
        page.body.contains("href=\"/users\""),
        "admins get the nav link"
    );

    let done = post(
        &e.app,
        "/users",
        &admin,
        &[
            ("username", "dora"),
            ("role", "op"),
            ("password", "correct horse"),
            ("email", "dora@example.com"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(flash(&done).contains("user dora created with role op"));
    let dora = e.store.get_user("dora").await.unwrap().unwrap();
    assert_eq!(dora.role, "op");
    assert!(dora.active);
    assert_eq!(dora.email.as_deref(), Some("dora@example.com"));
    assert!(updraft_crypto::password::verify(
        "correct horse",
        &dora.password_hash
    ));
    let log = events(&e).await;
    assert!(
        log.iter().any(|(ev, owner, extra)| ev == "post_user"
            && owner.as_deref() == Some("admin")
            && extra.contains("\"dora\"")
            && extra.contains("201")
            && !extra.contains("correct horse")),
        "{log:?}"
    );

    // Taken names and bad input come back with the message and the input, not the password.
    let again = post(
        &e.app,
        "/users",
        &admin,
        &[
            ("username", "dora"),
            ("role", "viewer"),
            ("password", "pw-typed-once"),
        ],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already exists"));
    assert!(!again.body.contains("pw-typed-once"));
    let bad_role = post(
        &e.app,
        "/users",
        &admin,
        &[("username", "eve"), ("role", "root"), ("password", "x")],
    )
    .await;
    assert_eq!(bad_role.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_role.body.contains("unknown role"));
    assert!(bad_role.body.contains("value=\"eve\""));
    let no_password = post(
        &e.app,
        "/users",
        &admin,
        &[("username", "eve"), ("role", "viewer"), ("password", "")],
    )
    .await;
    assert_eq!(no_password.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.store.get_user("eve").await.unwrap().is_none());
}

#[tokio::test]
async fn admins_change_roles_reset_passwords_and_delete_users() {
    let e = env().await;
    let admin = browser("admin");
    let done = post(
        &e.app,
        "/users/role",
        &admin,
        &[("username", "viewer"), ("role", "op")],
    )
    .await;
    assert_eq!(done.location(), "/users");
    assert_eq!(
        e.store.get_user("viewer").await.unwrap().unwrap().role,
        "op"
    );

    post(
        &e.app,
        "/users/password",
        &admin,
        &[("username", "user"), ("password", "new secret")],
    )
    .await;
    let user = e.store.get_user("user").await.unwrap().unwrap();
    assert!(updraft_crypto::password::verify(
        "new secret",
        &user.password_hash
    ));

    let done = post(&e.app, "/users/delete", &admin, &[("username", "user")]).await;
    assert!(flash(&done).contains("user user deleted"));
    assert!(e.store.get_user("user").await.unwrap().is_none());
    let gone = post(&e.app, "/users/delete", &admin, &[("username", "nobody")]).await;
    assert!(flash(&gone).contains("no user named"));

    let log = events(&e).await;
    let names: Vec<&str> = log.iter().map(|(ev, _, _)| ev.as_str()).collect();
    assert_eq!(
        names,
        ["patch_user", "patch_user", "delete_user", "delete_user"]
    );
    assert!(
        log.iter()
            .all(|(_, owner, _)| owner.as_deref() == Some("admin"))
    );
    assert!(log[0].2.contains("\"role\""));
    assert!(log[1].2.contains("\"password\"") && !log[1].2.contains("new secret"));
    assert!(log[3].2.contains("404"));

    // The audit log page shows them with the admin's name.
    let page = get(&e.app, "/audit-log?event=user", Some(&admin)).await;
    assert!(page.body.contains("<td class=\"owner\">admin</td>"));
    assert!(page.body.contains("<code>delete_user</code>"));
}

#[tokio::test]
async fn a_deactivated_user_is_signed_out_until_reactivated() {
    let e = env().await;
    let admin = browser("admin");
    let op = browser("op");
    assert_eq!(
        get(&e.app, "/pools", Some(&op)).await.status,
        StatusCode::OK
    );
    let done = post(
        &e.app,
        "/users/active",
        &admin,
        &[("username", "op"), ("active", "false")],
    )
    .await;
    assert!(flash(&done).contains("user op deactivated"));
    assert!(!e.store.get_user("op").await.unwrap().unwrap().active);
    let page = get(&e.app, "/users", Some(&admin)).await;
    assert!(page.body.contains("aria-label=\"Reactivate op\""));
    // The open session no longer works.
    let refused = get(&e.app, "/pools", Some(&op)).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert!(refused.location().starts_with("/login"));

    post(
        &e.app,
        "/users/active",
        &admin,
        &[("username", "op"), ("active", "true")],
    )
    .await;
    assert!(e.store.get_user("op").await.unwrap().unwrap().active);
    assert_eq!(
        get(&e.app, "/pools", Some(&op)).await.status,
        StatusCode::OK
    );

    let done = post(
        &e.app,
        "/users/active",
        &admin,
        &[("username", "admin"), ("active", "false")],
    )
    .await;
    assert!(flash(&done).contains("cannot deactivate your own account"));
    assert!(e.store.get_user("admin").await.unwrap().unwrap().active);
    let log = events(&e).await;
    assert_eq!(log.len(), 3);
    assert!(log[0].2.contains("\"active\":false") && log[0].2.contains("200"));
    assert!(log[2].2.contains("400"));
}

#[tokio::test]
async fn an_admin_cannot_delete_or_demote_themself() {
    let e = env().await;
    let admin = browser("admin");
    let page = get(&e.app, "/users", Some(&admin)).await;
    assert!(!page.body.contains("aria-label=\"Delete admin\""));
    let done = post(
        &e.app,
        "/users/role",
        &admin,
        &[("username", "admin"), ("role", "viewer")],
    )
    .await;
    assert!(flash(&done).contains("cannot change your own role"));
    let done = post(&e.app, "/users/delete", &admin, &[("username", "admin")]).await;
    assert!(flash(&done).contains("cannot delete your own account"));
    let me = e.store.get_user("admin").await.unwrap().unwrap();
    assert_eq!(me.role, "admin");
}

#[tokio::test]
async fn only_admins_manage_users() {
    let e = env().await;
    for role in ["viewer", "user", "op"] {
        let b = browser(role);
        let page = get(&e.app, "/users", Some(&b)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{role}");
        assert!(!page.body.contains("data-user="));
        let nav = get(&e.app, "/pools", Some(&b)).await;
        assert!(!nav.body.contains("href=\"/users\""), "{role}");
        for (path, fields) in [
            (
                "/users",
                vec![
                    ("username", "mallory"),
                    ("role", "admin"),
                    ("password", "x"),
                ],
            ),
            ("/users/role", vec![("username", role), ("role", "admin")]),
            (
                "/users/password",
                vec![("username", "admin"), ("password", "taken-over")],
            ),
            ("/users/delete", vec![("username", "admin")]),
            (
                "/users/active",
                vec![("username", "admin"), ("active", "false")],
            ),
        ] {
            let page = post(&e.app, path, &b, &fields).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} {path}");
        }
        assert_eq!(e.store.get_user(role).await.unwrap().unwrap().role, role);
    }
    assert!(e.store.get_user("mallory").await.unwrap().is_none());
    let admin = e.store.get_user("admin").await.unwrap().unwrap();
    assert!(admin.password_hash == "x" && admin.active, "unchanged");
    // The refused attempts are in the event log, with who tried.
    let log = events(&e).await;
    assert_eq!(log.len(), 15);
    assert!(log.iter().all(|(_, _, extra)| extra.contains("403")));
    assert!(
        log.iter()
            .any(|(ev, owner, _)| ev == "delete_user" && owner.as_deref() == Some("op"))
    );
}
