//! `updraft users`: accounts for the API server.

use super::*;

/// Accounts: created with a generated password printed once, listed without hashes, roles
/// checked against Airflow's, passwords reset, users deleted.
#[test]
fn users_lifecycle() {
    let home = Home::new();
    let out = home
        .run(&[
            "users",
            "create",
            "-u",
            "alice",
            "-r",
            "Op",
            "--generate-password",
        ])
        .ok();
    let password = out.stdout.trim().to_string();
    assert_eq!(password.len(), 20, "{password:?}");
    home.run(&[
        "users", "create", "-u", "bob", "-r", "viewer", "-p", "s3cret!",
    ])
    .ok();
    let listed = home.run(&["users", "list", "-o", "json"]).ok();
    let users = listed.json();
    assert_eq!(users[0]["username"], "alice");
    assert_eq!(users[0]["role"], "op");
    assert_eq!(users[1]["role"], "viewer");
    assert!(!listed.stdout.contains("argon2"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&password));
    let dup = home
        .run(&["users", "create", "-u", "alice", "-r", "admin", "-p", "x"])
        .fails(1);
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
    let bad = home
        .run(&[
            "users",
            "create",
            "-u",
            "carol",
            "-r",
            "superuser",
            "-p",
            "x",
        ])
        .fails(1);
    assert!(
        bad.stderr.contains("allowed: viewer, user, op, admin"),
        "{}",
        bad.stderr
    );
    let none = home
        .run(&["users", "create", "-u", "carol", "-r", "user"])
        .fails(1);
    assert!(
        none.stderr.contains("--generate-password"),
        "{}",
        none.stderr
    );
    let reset = home
        .run(&[
            "users",
            "reset-password",
            "-u",
            "bob",
            "--generate-password",
        ])
        .ok();
    assert_eq!(reset.stdout.trim().len(), 20);
    home.run(&["users", "reset-password", "-u", "nobody", "-p", "x"])
        .fails(1);
    home.run(&["users", "delete", "-u", "bob"]).ok();
    home.run(&["users", "delete", "-u", "bob"]).fails(1);
    let users = home.run(&["users", "list", "-o", "json"]).ok().json();
    assert_eq!(users.as_array().unwrap().len(), 1);
}
