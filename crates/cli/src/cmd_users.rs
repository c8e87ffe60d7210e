//! `updraft users`: accounts for the API server and web UI, with Airflow's role names.

use crate::UsersCommand;
use crate::dates::iso_opt;
use crate::output::{self, Record};
use crate::support::open_store;
use anyhow::{Result, bail};
use serde_json::json;
use updraft_config::Config;
use updraft_store::NewUser;

/// Airflow's roles, from least to most privileged.
pub const ROLES: [&str; 4] = ["viewer", "user", "op", "admin"];

/// Accepts Airflow's spelling (`Admin`, `Op`, ...) as well as lowercase.
fn parse_role(role: &str) -> Result<String> {
    let lower = role.to_ascii_lowercase();
    if ROLES.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        bail!("unknown role `{role}` (allowed: {})", ROLES.join(", "))
    }
}

/// The password to set: given, or generated and printed once.
fn password(given: Option<String>, generate: bool) -> Result<(String, bool)> {
    match (given, generate) {
        (Some(_), true) => bail!("give either --password or --generate-password, not both"),
        (Some(p), false) if p.is_empty() => bail!("the password must not be empty"),
        (Some(p), false) => Ok((p, false)),
        (None, true) => Ok((updraft_crypto::password::generate(), true)),
        (None, false) => bail!("a password is needed: --password PASSWORD or --generate-password"),
    }
}

fn user_record(u: &updraft_store::User) -> Record {
    Record::new()
        .with("username", u.username.as_str())
        .with("role", u.role.as_str())
        .with("email", json!(u.email))
        .with("first_name", json!(u.first_name))
        .with("last_name", json!(u.last_name))
        .with("active", u.active)
        .with("created_at", iso_opt(Some(u.created_at)))
        .with("last_login", iso_opt(u.last_login))
}

pub async fn users(cfg: Config, command: UsersCommand) -> Result<()> {
    let store = open_store(&cfg).await?;
    match command {
        UsersCommand::Create {
            username,
            role,
            email,
            firstname,
            lastname,
            password: given,
            generate_password,
        } => {
            let role = parse_role(&role)?;
            let (password, generated) = password(given, generate_password)?;
            store
                .create_user(&NewUser {
                    username: username.clone(),
                    password_hash: updraft_crypto::password::hash(&password),
                    role: role.clone(),
                    email,
                    first_name: firstname,
                    last_name: lastname,
                })
                .await?;
            eprintln!("user `{username}` created with role {role}");
            if generated {
                // Printed once, on stdout only, so it can be captured; it is stored hashed.
                println!("{password}");
            }
        }
        UsersCommand::List { out } => {
            let users = store.list_users().await?;
            let records: Vec<Record> = users.iter().map(user_record).collect();
            output::print(&records, out.output)?;
        }
        UsersCommand::Delete { username } => {
            if !store.delete_user(&username).await? {
                bail!("user `{username}` does not exist");
            }
            eprintln!("user `{username}` deleted");
        }
        UsersCommand::ResetPassword {
            username,
            password: given,
            generate_password,
        } => {
            let (password, generated) = password(given, generate_password)?;
            store
                .set_user_password(&username, &updraft_crypto::password::hash(&password))
                .await?;
            eprintln!("password of user `{username}` reset");
            if generated {
                println!("{password}");
            }
        }
    }
    Ok(())
}
