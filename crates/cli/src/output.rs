//! Printing lists of records as a table, JSON, YAML or plain tab-separated text (`-o`).

use anyhow::Result;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with a header (for people).
    Table,
    /// A JSON array of objects.
    Json,
    /// A YAML list of mappings.
    Yaml,
    /// Tab-separated values without a header (for `cut`/`awk`).
    Plain,
}

/// `-o/--output` for every command that lists things.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// One row: named fields in column order (a JSON map would sort them).
#[derive(Debug, Clone, Default)]
pub struct Record(pub Vec<(&'static str, Value)>);

impl Record {
    pub fn new() -> Self {
        Record(Vec::new())
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.0.push((key, value.into()));
        self
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// How a value reads in a table cell: Airflow's Python spellings for null and booleans, compact
/// JSON for structures.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

pub fn print(records: &[Record], format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write_records(&mut out, records, format)?;
    out.flush()?;
    Ok(())
}

pub fn write_records(out: &mut impl Write, records: &[Record], format: Format) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, records)?;
            writeln!(out)?;
        }
        Format::Yaml => {
            if records.is_empty() {
                writeln!(out, "[]")?;
            } else {
                serde_yaml::to_writer(&mut *out, records)?;
            }
        }
        Format::Plain => {
            for r in records {
                let cells: Vec<String> = r.0.iter().map(|(_, v)| plain_cell(v)).collect();
                writeln!(out, "{}", cells.join("\t"))?;
            }
        }
        Format::Table => {
            if records.is_empty() {
                writeln!(out, "No data found")?;
                return Ok(());
            }
            let headers: Vec<&str> = records[0].0.iter().map(|(k, _)| *k).collect();
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| r.0.iter().map(|(_, v)| one_line(&cell(v))).collect())
                .collect();
            write!(out, "{}", table(&headers, &rows))?;
        }
    }
    Ok(())
}

fn plain_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => one_line(&cell(other)),
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', "\\n").replace('\t', " ")
}

/// Airflow's table style: `col | col` over a `====+====` rule.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        parts.join(" | ").trim_end().to_string() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    out.push_str(
        &widths
            .iter()
            .map(|w| "=".repeat(*w))
            .collect::<Vec<_>>()
            .join("=+="),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(records: &[Record], f: Format) -> String {
        let mut buf = Vec::new();
        write_records(&mut buf, records, f).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn formats_keep_column_order() {
        let rows = vec![
            Record::new()
                .with("zeta", "a")
                .with("alpha", Value::Null)
                .with("on", true),
            Record::new()
                .with("zeta", "longer")
                .with("alpha", 3)
                .with("on", false),
        ];
        assert_eq!(
            render(&rows, Format::Table),
            "zeta   | alpha | on\n=======+=======+======\na      | None  | True\nlonger | 3     | False\n"
        );
        let json: Value = serde_json::from_str(&render(&rows, Format::Json)).unwrap();
        assert_eq!(json[0], json!({"zeta": "a", "alpha": null, "on": true}));
        assert!(
            render(&rows, Format::Json).find("zeta") < render(&rows, Format::Json).find("alpha")
        );
        assert_eq!(
            render(&rows, Format::Plain),
            "a\t\tTrue\nlonger\t3\tFalse\n"
        );
        let yaml: Value = serde_yaml::from_str(&render(&rows, Format::Yaml)).unwrap();
        assert_eq!(yaml[1]["alpha"], json!(3));
    }

    #[test]
    fn empty_lists() {
        assert_eq!(render(&[], Format::Table), "No data found\n");
        assert_eq!(render(&[], Format::Json).trim(), "[]");
        assert_eq!(render(&[], Format::Yaml).trim(), "[]");
        assert_eq!(render(&[], Format::Plain), "");
    }
}
