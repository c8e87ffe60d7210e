//! `updraft db ...`, `variables ...`, `pools ...`, `config ...`

use crate::output::{self, Record};
use crate::support::{confirm, connect, json_kind, open_store, redact};
use crate::{ConfigCommand, DbCommand, OnExisting, PoolsCommand, VariablesCommand};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Map, Value, json};
use std::path::Path;
use updraft_config::Config;

pub async fn db(cfg: Config, command: DbCommand) -> Result<()> {
    let store = connect(&cfg).await?;
    let url = redact(&cfg.database.url);
    match command {
        DbCommand::Migrate => {
            store.migrate().await?;
            let status = store.check().await?;
            println!(
                "database migrated: {} ({}), schema at migration {}",
                url, status.backend, status.applied_migrations
            );
        }
        DbCommand::Check => {
            let status = store.check().await?;
            println!(
                "database ok: {} ({}), schema at migration {} of {}",
                url, status.backend, status.applied_migrations, status.latest_migration
            );
        }
        DbCommand::Reset { yes } => {
            if !confirm(
                &format!("drop every table of {url} and recreate the schema? All data is lost"),
                yes,
            )? {
                eprintln!("cancelled, nothing was changed");
                return Ok(());
            }
            store.reset().await?;
            println!("database reset: {url}");
        }
    }
    Ok(())
}

pub async fn variables(cfg: Config, command: VariablesCommand) -> Result<()> {
    let store = open_store(&cfg).await?;
    // Values are encrypted at rest and read back in clear through the secrets resolver.
    let secrets = crate::cmd_connections::secrets(&cfg, store.clone())?;
    match command {
        VariablesCommand::Get { key, default, json } => {
            let value = match secrets.variable(&key).await? {
                Some(v) => v,
                None => match default {
                    Some(d) => d,
                    None => bail!("variable `{key}` does not exist"),
                },
            };
            if json {
                let parsed: Value = serde_json::from_str(&value)
                    .map_err(|e| anyhow!("variable `{key}` is not valid JSON: {e}"))?;
                println!("{}", serde_json::to_string_pretty(&parsed)?);
            } else {
                println!("{value}");
            }
        }
        VariablesCommand::Set {
            key,
            value,
            description,
            json,
        } => {
            check_variable_key(&key)?;
            let value = if json {
                let parsed: Value = serde_json::from_str(&value)
                    .map_err(|e| anyhow!("--json: the value is not valid JSON: {e}"))?;
                serde_json::to_string(&parsed)?
            } else {
                value
            };
            secrets
                .set_variable(&key, &value, description.as_deref())
                .await?;
            println!("variable `{key}` set");
        }
        VariablesCommand::List { show_values, out } => {
            let vars = crate::cmd_connections::clear_variables(&secrets).await?;
            let records: Vec<Record> = vars
                .iter()
                .map(|v| {
                    let r = Record::new().with("key", v.key.as_str());
                    if show_values {
                        r.with("val", v.value.as_str())
                            .with("description", json!(v.description))
                    } else {
                        r
                    }
                })
                .collect();
            output::print(&records, out.output)?;
        }
        VariablesCommand::Delete { key } => {
            if !store.delete_variable(&key).await? {
                bail!("variable `{key}` does not exist");
            }
            println!("variable `{key}` deleted");
        }
        VariablesCommand::Import {
            file,
            action_on_existing_key,
        } => {
            let entries = read_json_object(&file, "variables", r#"{"key": value}"#)?;
            let mut parsed = Vec::with_capacity(entries.len());
            for (key, v) in &entries {
                check_variable_key(key).with_context(|| format!("in {}", file.display()))?;
                parsed.push((key.clone(), variable_from_json(v)?));
            }
            let mut existing = Vec::new();
            for (key, _) in &parsed {
                if store.get_variable(key).await?.is_some() {
                    existing.push(key.clone());
                }
            }
            if action_on_existing_key == OnExisting::Fail && !existing.is_empty() {
                bail!(
                    "these variables already exist: {} (use --action-on-existing-key overwrite or skip)",
                    existing.join(", ")
                );
            }
            let mut updated = 0;
            for (key, (value, description)) in &parsed {
                if action_on_existing_key == OnExisting::Skip && existing.contains(key) {
                    continue;
                }
                secrets
                    .set_variable(key, value, description.as_deref())
                    .await?;
                updated += 1;
            }
            println!(
                "{updated} of {} variables successfully updated",
                parsed.len()
            );
            if action_on_existing_key == OnExisting::Skip && !existing.is_empty() {
                println!(
                    "skipped because they already exist: {}",
                    existing.join(", ")
                );
            }
        }
        VariablesCommand::Export { file } => {
            let vars = crate::cmd_connections::clear_variables(&secrets).await?;
            let mut map = Map::new();
            for v in &vars {
                map.insert(
                    v.key.clone(),
                    variable_to_json(&v.value, v.description.as_deref()),
                );
            }
            write_json(&file, &Value::Object(map))?;
            report_export(&file, vars.len(), "variables");
        }
    }
    Ok(())
}

fn check_variable_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 250 {
        bail!("invalid variable key `{key}`: must be 1 to 250 characters");
    }
    Ok(())
}

/// Airflow's import rules: a string is stored as it is, anything else as its JSON text; an
/// object with a `value` field carries the value and an optional `description`.
fn variable_from_json(v: &Value) -> Result<(String, Option<String>)> {
    let (value, description) = match v {
        Value::Object(m) if m.contains_key("value") => {
            let description = match m.get("description") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => bail!(
                    "variable description must be a string, got {}",
                    json_kind(other)
                ),
            };
            (&m["value"], description)
        }
        other => (other, None),
    };
    let text = match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other)?,
    };
    Ok((text, description))
}

/// The inverse of [`variable_from_json`]: JSON values are exported as JSON, other text as a
/// string, and the `{"value", "description"}` form is used when needed to round-trip.
fn variable_to_json(value: &str, description: Option<&str>) -> Value {
    let v = match serde_json::from_str::<Value>(value) {
        Ok(Value::String(_)) | Err(_) => Value::String(value.to_string()),
        Ok(parsed) => parsed,
    };
    let wraps_value = matches!(&v, Value::Object(m) if m.contains_key("value"));
    if description.is_some() || wraps_value {
        json!({"value": v, "description": description})
    } else {
        v
    }
}

pub async fn pools(cfg: Config, command: PoolsCommand) -> Result<()> {
    let store = open_store(&cfg).await?;
    match command {
        PoolsCommand::List { out } => {
            let mut pools = store.list_pools().await?;
            pools.sort_by(|a, b| a.name.cmp(&b.name));
            let records: Vec<Record> = pools.iter().map(pool_record).collect();
            output::print(&records, out.output)?;
        }
        PoolsCommand::Get { name, out } => {
            let pool = store
                .get_pool(&name)
                .await?
                .ok_or_else(|| anyhow!("pool `{name}` does not exist"))?;
            output::print(&[pool_record(&pool)], out.output)?;
        }
        PoolsCommand::Set {
            name,
            slots,
            description,
        } => {
            check_pool(&name, slots)?;
            store.set_pool(&name, slots, description.as_deref()).await?;
            println!("pool `{name}` set ({slots} slots)");
        }
        PoolsCommand::Delete { name } => {
            if !store.delete_pool(&name).await? {
                bail!("pool `{name}` does not exist");
            }
            println!("pool `{name}` deleted");
        }
        PoolsCommand::Import { file } => {
            let entries = read_json_object(
                &file,
                "pools",
                r#"{"name": {"slots": 4, "description": "..."}}"#,
            )?;
            let mut parsed = Vec::with_capacity(entries.len());
            for (name, v) in &entries {
                let fail = |msg: &str| {
                    anyhow!("invalid pools file {}: pool `{name}` {msg}", file.display())
                };
                let Value::Object(m) = v else {
                    return Err(fail(&format!(
                        "must be an object with `slots` and `description`, got {}",
                        json_kind(v)
                    )));
                };
                let slots = m
                    .get("slots")
                    .and_then(Value::as_i64)
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| fail("needs an integer `slots`"))?;
                let description = match m.get("description") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(fail("has a `description` that is not a string")),
                };
                check_pool(name, slots).map_err(|e| fail(&e.to_string()))?;
                parsed.push((name.clone(), slots, description));
            }
            for (name, slots, description) in &parsed {
                store.set_pool(name, *slots, description.as_deref()).await?;
            }
            println!("{} pools imported", parsed.len());
        }
        PoolsCommand::Export { file } => {
            let pools = store.list_pools().await?;
            let mut map = Map::new();
            for p in &pools {
                // `include_deferred` keeps the file importable by Airflow.
                map.insert(
                    p.name.clone(),
                    json!({
                        "description": p.description.clone().unwrap_or_default(),
                        "include_deferred": false,
                        "slots": p.slots,
                    }),
                );
            }
            write_json(&file, &Value::Object(map))?;
            report_export(&file, pools.len(), "pools");
        }
    }
    Ok(())
}

fn check_pool(name: &str, slots: i32) -> Result<()> {
    updraft_core::model::validate_key("pool name", name).map_err(|e| anyhow!(e))?;
    if slots < -1 {
        bail!("invalid slots {slots} for pool `{name}`: use a number >= 0, or -1 for unlimited");
    }
    Ok(())
}

fn pool_record(p: &updraft_store::Pool) -> Record {
    Record::new()
        .with("pool", p.name.as_str())
        .with("slots", p.slots)
        .with("description", json!(p.description))
}

pub fn config(cfg: Config, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::List { section, out } => {
            let entries = cfg.entries();
            if let Some(s) = &section
                && !entries.iter().any(|e| e.section == s)
            {
                let mut sections: Vec<&str> = entries.iter().map(|e| e.section).collect();
                sections.dedup();
                bail!("unknown section `{s}` (sections: {})", sections.join(", "));
            }
            let records: Vec<Record> = entries
                .iter()
                .filter(|e| section.as_deref().is_none_or(|s| s == e.section))
                .map(|e| {
                    // Listing is for looking around; `config get` prints the secret itself.
                    let value = if e.section == "database" && e.key == "url" {
                        redact(&e.value)
                    } else {
                        e.value.clone()
                    };
                    let r = Record::new()
                        .with("section", e.section)
                        .with("key", e.key)
                        .with("value", value)
                        .with("source", e.source.as_str());
                    if out.output == output::Format::Table {
                        r
                    } else {
                        r.with("description", e.description)
                    }
                })
                .collect();
            output::print(&records, out.output)?;
        }
        ConfigCommand::Get { section, key } => {
            let entry = cfg.get(&section, &key).ok_or_else(|| {
                anyhow!("unknown option `{section}.{key}` (see `updraft config list`)")
            })?;
            println!("{}", entry.value);
        }
    }
    Ok(())
}

pub(crate) fn read_json_object(
    file: &Path,
    what: &str,
    example: &str,
) -> Result<Map<String, Value>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("invalid {what} file {}: {e}", file.display()))?;
    match value {
        Value::Object(m) => Ok(m),
        other => bail!(
            "invalid {what} file {}: expected a JSON object like {example}, got {}",
            file.display(),
            json_kind(&other)
        ),
    }
}

/// Pretty JSON with sorted keys and 4-space indents, as Airflow writes its exports.
pub(crate) fn write_json(file: &Path, value: &Value) -> Result<()> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(value, &mut ser)?;
    buf.push(b'\n');
    if file == Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(&buf)?;
    } else {
        std::fs::write(file, &buf).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

pub(crate) fn report_export(file: &Path, n: usize, what: &str) {
    // With `-` the JSON went to stdout; keep stdout clean.
    if file == Path::new("-") {
        eprintln!("{n} {what} exported");
    } else {
        println!("{n} {what} exported to {}", file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_json_round_trips_like_airflow() {
        let cases = [
            (json!("plain text"), "plain text", None),
            (json!(42), "42", None),
            (json!({"a": [1, 2]}), r#"{"a":[1,2]}"#, None),
            (json!({"value": "x", "description": "d"}), "x", Some("d")),
            (json!({"value": {"k": 1}}), r#"{"k":1}"#, None),
        ];
        for (input, stored, desc) in cases {
            let (value, description) = variable_from_json(&input).unwrap();
            assert_eq!(value, stored, "{input}");
            assert_eq!(description.as_deref(), desc, "{input}");
            // Exporting what was stored and importing it again gives the same row.
            let exported = variable_to_json(&value, description.as_deref());
            assert_eq!(
                variable_from_json(&exported).unwrap(),
                (value.clone(), description.clone()),
                "{input} -> {exported}"
            );
        }
        // A stored object with a `value` field is wrapped so it survives the round trip.
        let exported = variable_to_json(r#"{"value":1}"#, None);
        assert_eq!(
            exported,
            json!({"value": {"value": 1}, "description": null})
        );
        // A string that happens to look like JSON text stays a string.
        assert_eq!(variable_to_json("\"quoted\"", None), json!("\"quoted\""));
        assert!(variable_from_json(&json!({"value": 1, "description": 2})).is_err());
    }

    #[test]
    fn pool_checks() {
        assert!(check_pool("etl", 4).is_ok());
        assert!(check_pool("etl", -1).is_ok());
        assert!(
            check_pool("etl", -2)
                .unwrap_err()
                .to_string()
                .contains("-1 for unlimited")
        );
        assert!(check_pool("bad name", 1).is_err());
    }
}
