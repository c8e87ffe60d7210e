//! A connection in clear text and Airflow's two text forms: the URI
//! (`conn-type://login:password@host:port/schema?k=v`) and the JSON object.

use crate::Error;
use serde_json::{Map, Value};

/// A connection with its password and extra in clear text. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ConnectionValue {
    pub conn_id: String,
    pub conn_type: String,
    pub description: Option<String>,
    pub host: Option<String>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub port: Option<i32>,
    /// JSON text, usually an object.
    pub extra: Option<String>,
}

impl std::fmt::Debug for ConnectionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionValue")
            .field("conn_id", &self.conn_id)
            .field("conn_type", &self.conn_type)
            .field("host", &self.host)
            .field("schema", &self.schema)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("port", &self.port)
            .field("extra", &self.extra.as_ref().map(|_| "***"))
            .finish()
    }
}

const EXTRA_KEY: &str = "__extra__";

fn invalid(conn_id: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConnection {
        conn_id: conn_id.to_string(),
        reason: reason.into(),
    }
}

/// Airflow's scheme normalisation: `-` becomes `_`, `postgresql` becomes `postgres`.
fn normalize_conn_type(scheme: &str) -> String {
    let t = scheme.replace('-', "_");
    if t == "postgresql" {
        "postgres".into()
    } else {
        t
    }
}

impl ConnectionValue {
    /// The URI or JSON form, told apart by a leading `{` like Airflow does.
    pub fn parse(conn_id: &str, text: &str) -> Result<ConnectionValue, Error> {
        if text.trim_start().starts_with('{') {
            Self::from_json(conn_id, text)
        } else {
            Self::from_uri(conn_id, text)
        }
    }

    /// `conn-type://login:password@host:port/schema?k1=v1&k2=v2`; components are
    /// percent-decoded, query values JSON-decoded when they parse, `__extra__` holds the whole
    /// extra, and `conn-type://protocol://host` keeps the protocol in the host.
    pub fn from_uri(conn_id: &str, uri: &str) -> Result<ConnectionValue, Error> {
        let uri = uri.trim();
        let (scheme, mut rest) = uri
            .split_once("://")
            .ok_or_else(|| invalid(conn_id, "a connection URI must look like conn-type://[login[:password]@]host[:port][/schema][?extra]"))?;
        if scheme.is_empty() {
            return Err(invalid(
                conn_id,
                "the URI has no connection type before `://`",
            ));
        }
        let mut protocol = None;
        if let Some((proto, after)) = rest.split_once("://") {
            if proto.contains('@') || proto.contains(':') || after.contains("://") {
                return Err(invalid(
                    conn_id,
                    "a URI may have at most two schemes (conn-type://protocol://host), with no `@` or `:` between them",
                ));
            }
            protocol = Some(proto);
            rest = after;
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (before_query, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (login, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((l, p)) => (Some(decode(l, false)), Some(decode(p, false))),
                None => (Some(decode(u, false)), None),
            },
        };
        let (host, port) = split_port(conn_id, hostport)?;
        // Airflow reads the host through urlsplit's `hostname`, which lower-cases it.
        let host = host
            .filter(|h| !h.is_empty())
            .map(|h| decode(&h.to_lowercase(), false));
        let host = match (protocol, host) {
            (Some(p), Some(h)) => Some(format!("{p}://{h}")),
            (_, h) => h,
        };
        let schema = path.map(|p| decode(p, false)).filter(|s| !s.is_empty());
        let extra = match query {
            None | Some("") => None,
            Some(q) => Some(query_to_extra(conn_id, q)?),
        };
        Ok(ConnectionValue {
            conn_id: conn_id.to_string(),
            conn_type: normalize_conn_type(scheme),
            description: None,
            host,
            schema,
            login: login.filter(|s| !s.is_empty()),
            password: password.filter(|s| !s.is_empty()),
            port,
            extra,
        })
    }

    /// `{"conn_type", "description", "host", "login", "password", "schema", "port", "extra"}`;
    /// `extra` may be an object or a JSON string.
    pub fn from_json(conn_id: &str, text: &str) -> Result<ConnectionValue, Error> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| invalid(conn_id, format!("the connection is not valid JSON: {e}")))?;
        Self::from_json_value(conn_id, &value)
    }

    /// Like [`ConnectionValue::from_json`], from a parsed value (import files).
    pub fn from_json_value(conn_id: &str, value: &Value) -> Result<ConnectionValue, Error> {
        let Value::Object(map) = value else {
            return Err(invalid(conn_id, "a JSON connection must be an object"));
        };
        let allowed = [
            "conn_id",
            "conn_type",
            "description",
            "host",
            "login",
            "password",
            "schema",
            "port",
            "extra",
        ];
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(
                conn_id,
                format!("unknown field `{k}` (allowed: {})", allowed.join(", ")),
            ));
        }
        let text = |k: &str| -> Result<Option<String>, Error> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(
                    conn_id,
                    format!("field `{k}` must be a string, got {other}"),
                )),
            }
        };
        let conn_type = text("conn_type")?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(conn_id, "field `conn_type` is required"))?;
        let port = match map.get("port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| invalid(conn_id, format!("port {n} is not an integer")))?,
            ),
            Some(Value::String(s)) => Some(
                s.parse()
                    .map_err(|_| invalid(conn_id, format!("port `{s}` is not an integer")))?,
            ),
            Some(other) => return Err(invalid(conn_id, format!("port {other} is not an integer"))),
        };
        let extra = match map.get("extra") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                serde_json::from_str::<Value>(s)
                    .map_err(|e| invalid(conn_id, format!("extra is not valid JSON: {e}")))?;
                Some(s.clone())
            }
            Some(v @ Value::Object(_)) => Some(v.to_string()),
            Some(other) => {
                return Err(invalid(
                    conn_id,
                    format!("extra must be an object or a JSON string, got {other}"),
                ));
            }
        };
        Ok(ConnectionValue {
            conn_id: conn_id.to_string(),
            conn_type: normalize_conn_type(&conn_type),
            description: text("description")?,
            host: text("host")?,
            schema: text("schema")?,
            login: text("login")?,
            password: text("password")?,
            port,
            extra,
        })
    }

    /// Airflow's export JSON object (without `conn_id`); `extra` stays a string like Airflow's
    /// `connections export`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "conn_type": self.conn_type,
            "description": self.description,
            "host": self.host,
            "login": self.login,
            "password": self.password,
            "schema": self.schema,
            "port": self.port,
            "extra": self.extra,
        })
    }

    /// The URI form; parsing it with [`ConnectionValue::from_uri`] gives this connection back
    /// (except the description, which URIs do not carry).
    pub fn get_uri(&self) -> String {
        let mut uri = format!("{}://", self.conn_type.replace('_', "-"));
        let mut host = self.host.clone().unwrap_or_default();
        if let Some((proto, rest)) = host.split_once("://") {
            uri.push_str(proto);
            uri.push_str("://");
            host = rest.to_string();
        }
        if self.login.is_some() || self.password.is_some() {
            uri.push_str(&encode(self.login.as_deref().unwrap_or(""), false));
            if let Some(p) = &self.password {
                uri.push(':');
                uri.push_str(&encode(p, false));
            }
            uri.push('@');
        }
        uri.push_str(&encode(&host, false));
        if let Some(port) = self.port {
            uri.push_str(&format!(":{port}"));
        }
        if let Some(schema) = &self.schema {
            uri.push('/');
            uri.push_str(&encode(schema, false));
        }
        if let Some(extra) = &self.extra {
            uri.push_str(if self.schema.is_some() { "?" } else { "/?" });
            uri.push_str(&extra_to_query(extra));
        }
        uri
    }
}

fn split_port(conn_id: &str, hostport: &str) -> Result<(Option<String>, Option<i32>), Error> {
    // An IPv6 literal keeps its colons inside brackets.
    let (host, port) = if let Some(end) = hostport.strip_prefix('[').and_then(|s| s.find(']')) {
        let host = &hostport[..end + 2];
        (host, hostport[end + 2..].strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().map(i32::from).map_err(|_| {
            invalid(
                conn_id,
                format!("port `{p}` is not a number from 0 to 65535"),
            )
        })?),
    };
    Ok((Some(host.to_string()), port))
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k, true), decode(v, true)),
            None => (decode(p, true), String::new()),
        })
        .collect()
}

fn query_to_extra(conn_id: &str, q: &str) -> Result<String, Error> {
    let pairs = query_pairs(q);
    if let Some((_, v)) = pairs.iter().find(|(k, _)| k == EXTRA_KEY) {
        if pairs.len() > 1 {
            return Err(invalid(
                conn_id,
                "`__extra__` holds the whole extra: no other query parameter is allowed with it",
            ));
        }
        serde_json::from_str::<Value>(v)
            .map_err(|e| invalid(conn_id, format!("`__extra__` is not valid JSON: {e}")))?;
        return Ok(v.clone());
    }
    let mut map = Map::new();
    for (k, v) in pairs {
        let value = serde_json::from_str::<Value>(&v).unwrap_or(Value::String(v));
        map.insert(k, value);
    }
    Ok(Value::Object(map).to_string())
}

/// Query parameters when they parse back to the same extra, `__extra__=<json>` otherwise.
fn extra_to_query(extra: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(extra) {
        let query: Vec<String> = map
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{}={}", encode(k, true), encode(&text, true))
            })
            .collect();
        let query = query.join("&");
        if !map.is_empty()
            && serde_json::from_str::<Value>(&query_to_extra("", &query).unwrap_or_default())
                .is_ok_and(|v| v == Value::Object(map.clone()))
        {
            return query;
        }
    }
    format!("{EXTRA_KEY}={}", encode(extra, true))
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (Python's
/// `quote(s, safe="")`); in a query a space becomes `+` like `urlencode`.
pub fn encode(s: &str, query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if query => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decoding; invalid escapes stay as they are, bytes that are not UTF-8 are replaced.
pub fn decode(s: &str, query: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
            {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if query => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(uri: &str) -> ConnectionValue {
        ConnectionValue::from_uri("c", uri).unwrap()
    }

    #[test]
    fn parses_airflow_uris() {
        let c = conn(
            "postgresql://user:p%40ss%3Aw%2Fd@DB.example.com:5432/my%20db?sslmode=require&timeout=5",
        );
        assert_eq!(c.conn_type, "postgres");
        assert_eq!(c.login.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some("p@ss:w/d"));
        assert_eq!(c.host.as_deref(), Some("db.example.com"));
        assert_eq!(c.port, Some(5432));
        assert_eq!(c.schema.as_deref(), Some("my db"));
        let extra: Value = serde_json::from_str(c.extra.as_deref().unwrap()).unwrap();
        assert_eq!(
            extra,
            serde_json::json!({"sslmode": "require", "timeout": 5})
        );

        let c = conn("google-cloud-platform://?__extra__=%7B%22a%22%3A%5B1%2C2%5D%7D");
        assert_eq!(c.conn_type, "google_cloud_platform");
        assert_eq!(c.host, None);
        assert_eq!(c.extra.as_deref(), Some(r#"{"a":[1,2]}"#));

        let c = conn("http://https://user:pw@example.com/path");
        assert_eq!(c.conn_type, "http");
        assert_eq!(c.host.as_deref(), Some("https://example.com"));
        assert_eq!(c.schema.as_deref(), Some("path"));

        assert!(ConnectionValue::from_uri("c", "no scheme").is_err());
        assert!(ConnectionValue::from_uri("c", "a://b://c://d").is_err());
        assert!(ConnectionValue::from_uri("c", "a://h:99999").is_err());
    }

    #[test]
    fn uri_round_trips_special_characters() {
        let cases = [
            ConnectionValue {
                conn_id: "c".into(),
                conn_type: "postgres".into(),
                host: Some("db.local".into()),
                login: Some("us er@x".into()),
                password: Some("p@ss:/?#&=+%é ✓".into()),
                port: Some(5432),
                schema: Some("sch/ema".into()),
                extra: Some(r#"{"sslmode":"require","q":"a&b=c d"}"#.into()),
                ..Default::default()
            },
            ConnectionValue {
                conn_id: "c".into(),
                conn_type: "aws".into(),
                // Not representable as query parameters: nested values, a string that looks
                // like a number.
                extra: Some(r#"{"region":"eu","n":"5","nested":{"a":[1,"x"]}}"#.into()),
                ..Default::default()
            },
            ConnectionValue {
                conn_id: "c".into(),
                conn_type: "http".into(),
                host: Some("https://api.example.com".into()),
                password: Some("only-password".into()),
                ..Default::default()
            },
        ];
        for c in cases {
            let uri = c.get_uri();
            let back = ConnectionValue::from_uri("c", &uri).unwrap();
            let norm = |e: &Option<String>| {
                e.as_deref()
                    .map(|e| serde_json::from_str::<Value>(e).unwrap())
            };
            assert_eq!(norm(&back.extra), norm(&c.extra), "{uri}");
            assert_eq!(
                ConnectionValue {
                    extra: None,
                    ..back
                },
                ConnectionValue {
                    extra: None,
                    ..c.clone()
                },
                "{uri}"
            );
        }
    }

    #[test]
    fn json_form_round_trips() {
        let text = r#"{"conn_type":"postgresql","host":"h","login":"l","password":"p\"w","schema":"s","port":"5432","extra":{"a":1}}"#;
        let c = ConnectionValue::from_json("x", text).unwrap();
        assert_eq!(c.conn_type, "postgres");
        assert_eq!(c.port, Some(5432));
        assert_eq!(c.password.as_deref(), Some("p\"w"));
        assert_eq!(c.extra.as_deref(), Some(r#"{"a":1}"#));
        let back = ConnectionValue::from_json_value("x", &c.to_json()).unwrap();
        assert_eq!(back, c);
        assert!(ConnectionValue::from_json("x", r#"{"host":"h"}"#).is_err());
        assert!(ConnectionValue::from_json("x", r#"{"conn_type":"a","hots":"h"}"#).is_err());
        assert!(ConnectionValue::parse("x", r#" {"conn_type":"a"}"#).is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = conn("postgres://u:hunter2@h/s?token=abc");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
    }
}
