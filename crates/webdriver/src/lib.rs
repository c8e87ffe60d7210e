//! Test support for the web UI: a small, blocking W3C WebDriver client that drives a real
//! headless Chromium through `chromedriver`, and [`Standalone`], a throwaway `updraft
//! standalone` on 127.0.0.1 with its own home. Used by the browser tests of the `updraft`
//! binary, by the screenshot program and by the first-paint benchmark; never by the shipped
//! binary.
//!
//! The client speaks HTTP/1.1 over a plain `TcpStream` (one connection per command, loopback
//! only), so it adds no HTTP or async stack to the build.

pub mod demo;
mod http;
mod standalone;

pub use standalone::Standalone;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// W3C WebDriver codes of special keys, for [`Browser::press`] and [`Element::send_keys`].
pub mod keys {
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const SPACE: &str = "\u{E00D}";
}

/// Installed before any script of a page runs; collects what a user would only see in the
/// browser's console.
const RECORD_ERRORS: &str = "
window.__updraftPageErrors = [];
document.addEventListener('securitypolicyviolation', e => window.__updraftPageErrors.push(
  'CSP ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') + ' at ' +
  (e.sourceFile || '') + ':' + e.lineNumber + ' ' + (e.sample || '')));
window.addEventListener('error', e => window.__updraftPageErrors.push(
  'error ' + e.message + ' at ' + (e.filename || '') + ':' + (e.lineno || '')));
window.addEventListener('unhandledrejection', e => window.__updraftPageErrors.push(
  'unhandled rejection ' + e.reason));
";

/// Everything that can go wrong talking to the browser, with enough context to act on.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

/// Where `chromedriver` and `chromium` are: `UPDRAFT_CHROMEDRIVER` / `UPDRAFT_CHROMIUM` (as
/// printed by `scripts/browser.sh`), else the first of each on `PATH`. `None` when either is
/// missing.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        let path = std::env::var_os("PATH")?;
        names.iter().find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    };
    Some((
        find("UPDRAFT_CHROMEDRIVER", &["chromedriver"])?,
        find(
            "UPDRAFT_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        )?,
    ))
}

/// Options for [`Browser::launch`].
#[derive(Clone, Debug)]
pub struct Options {
    pub width: u32,
    pub height: u32,
    /// `prefers-color-scheme` to emulate: `"light"`, `"dark"`, or `None` for the default.
    pub color_scheme: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            width: 1280,
            height: 900,
            color_scheme: Some("light"),
        }
    }
}

/// A headless Chromium session behind its own `chromedriver` child; both end when dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http::request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts `chromedriver --port=0` and a headless Chromium session with a fresh profile.
    pub fn launch(options: &Options) -> Result<Browser> {
        let Some((driver_bin, chromium)) = find_browser() else {
            return err(
                "chromedriver or chromium not found (run scripts/browser.sh, or set \
                 UPDRAFT_CHROMEDRIVER and UPDRAFT_CHROMIUM)",
            );
        };
        let mut driver = Command::new(&driver_bin)
            .args(["--port=0", "--allowed-ips=127.0.0.1", "--log-level=SEVERE"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error(format!("cannot start {}: {e}", driver_bin.display())))?;
        // "ChromeDriver was started successfully on port 41481." names the port it chose.
        let stdout = driver.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(port) = digits.parse::<u16>() {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
                // Keep draining so the driver never blocks on a full pipe.
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => port,
            Err(_) => {
                let _ = driver.kill();
                let _ = driver.wait();
                return err(format!(
                    "{} did not report its port within 20 s",
                    driver_bin.display()
                ));
            }
        };
        let profile = tempfile::Builder::new()
            .prefix("updraft-chromium-")
            .tempdir()
            .map_err(|e| Error(format!("cannot create a browser profile dir: {e}")))?;
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            "--force-color-profile=srgb".into(),
            format!("--window-size={},{}", options.width, options.height),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 30000, "script": 30000, "implicit": 0},
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        // The driver may need a moment before it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            match http::request(port, "POST", "/session", Some(&caps)) {
                Ok(answer) => break answer,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return err(format!("cannot reach chromedriver: {e}")),
            }
        };
        let value = unwrap_answer("new session", created)?;
        browser.session = value["sessionId"]
            .as_str()
            .ok_or_else(|| Error(format!("new session: no sessionId in {value}")))?
            .to_string();
        // The window size flag is only a hint in headless mode; set the viewport exactly.
        browser.set_window_size(options.width, options.height)?;
        if let Some(scheme) = options.color_scheme {
            browser.cdp(
                "Emulation.setEmulatedMedia",
                json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
            )?;
        }
        Ok(browser)
    }

    /// One WebDriver command on this session; returns its `value`.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let full = format!("/session/{}{path}", self.session);
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, b) => b,
        };
        let answer = http::request(self.port, method, &full, body.as_ref())
            .map_err(|e| Error(format!("{method} {path}: {e}")))?;
        unwrap_answer(&format!("{method} {path}"), answer)
    }

    /// Runs a Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
    pub fn cdp(&self, command: &str, params: Value) -> Result<Value> {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": command, "params": params})),
        )
    }

    pub fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )?;
        Ok(())
    }

    /// Navigates and waits for the load event.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({"url": url})))?;
        Ok(())
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn title(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/title", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// The current DOM serialised, for failure messages.
    pub fn source(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/source", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// The first element matching a CSS selector, or an error naming the selector.
    pub fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Element::from_value(self, &v)
    }

    /// Every element matching a CSS selector (possibly none).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        elements(self, &v)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Like [`Browser::execute`], but the script calls `arguments[arguments.length - 1](value)`
    /// when done (for `fetch` and other promises).
    pub fn execute_async(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The text of the open `alert`/`confirm` dialog, or an error when none is open.
    pub fn alert_text(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/alert/text", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// Presses OK on the open dialog.
    pub fn accept_alert(&self) -> Result<()> {
        self.cmd("POST", "/alert/accept", None)?;
        Ok(())
    }

    /// Presses Cancel on the open dialog.
    pub fn dismiss_alert(&self) -> Result<()> {
        self.cmd("POST", "/alert/dismiss", None)?;
        Ok(())
    }

    /// From the next navigation on, every page records its Content-Security-Policy violations,
    /// uncaught script errors and unhandled promise rejections; read them with
    /// [`Browser::page_errors`].
    pub fn record_page_errors(&self) -> Result<()> {
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": RECORD_ERRORS}),
        )?;
        Ok(())
    }

    /// What the current page recorded since it loaded (see [`Browser::record_page_errors`]).
    pub fn page_errors(&self) -> Result<Vec<String>> {
        let v = self.execute("return window.__updraftPageErrors || null;", vec![])?;
        let Some(list) = v.as_array() else {
            return err("this page does not record errors (call record_page_errors first)");
        };
        Ok(list
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// Types `keys` on the keyboard into whatever has the focus (W3C key codes such as
    /// [`keys::TAB`] and [`keys::ENTER`] work too).
    pub fn press(&self, keys: &str) -> Result<()> {
        let mut actions = Vec::new();
        for c in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )?;
        self.cmd("DELETE", "/actions", None)?;
        Ok(())
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.cmd("GET", "/screenshot", None)?;
        base64_decode(v.as_str().unwrap_or(""))
            .ok_or_else(|| Error("screenshot: not base64".into()))
    }

    /// Polls `probe` every 100 ms until it yields a value or `timeout` passes. Errors from the
    /// probe count as "not yet" (the page may be mid-navigation); the last one is reported.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Browser) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match probe(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = e.0,
            }
            if Instant::now() >= deadline {
                let url = self.current_url().unwrap_or_default();
                let mut msg = format!("timed out after {timeout:?} waiting for {what} on {url}");
                if !last.is_empty() {
                    msg.push_str(&format!(" (last error: {last})"));
                }
                return err(msg);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until an element matches `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>> {
        let id = self.wait(&format!("`{css}`"), timeout, |b| {
            Ok(b.find_all(css)?.first().map(|e| e.id.clone()))
        })?;
        Ok(Element { browser: self, id })
    }

    /// Waits until the page's URL satisfies `pred`; returns it.
    pub fn wait_for_url(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait(what, timeout, |b| {
            let url = b.current_url()?;
            Ok(pred(&url).then_some(url))
        })
    }
}

fn unwrap_answer(what: &str, (status, body): (u16, Vec<u8>)) -> Result<Value> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        Error(format!(
            "{what}: HTTP {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        ))
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status != 200 {
        let message = value["message"].as_str().unwrap_or("");
        // chromedriver appends a long stack trace; the first line says what happened.
        let message = message.lines().next().unwrap_or("");
        return err(format!(
            "{what}: {} ({status}): {message}",
            value["error"].as_str().unwrap_or("error")
        ));
    }
    Ok(value)
}

fn elements<'a>(browser: &'a Browser, v: &Value) -> Result<Vec<Element<'a>>> {
    v.as_array()
        .ok_or_else(|| Error(format!("expected a list of elements, got {v}")))?
        .iter()
        .map(|e| Element::from_value(browser, e))
        .collect()
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl<'a> Element<'a> {
    fn from_value(browser: &'a Browser, v: &Value) -> Result<Element<'a>> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| Error(format!("expected an element, got {v}")))?;
        Ok(Element {
            browser,
            id: id.to_string(),
        })
    }

    /// This element as a script argument for [`Browser::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ELEMENT_KEY: self.id})
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value> {
        let path = if what.is_empty() {
            format!("/element/{}", self.id)
        } else {
            format!("/element/{}/{what}", self.id)
        };
        self.browser.cmd(method, &path, body)
    }

    pub fn click(&self) -> Result<()> {
        self.cmd("POST", "click", None)?;
        Ok(())
    }

    /// Types `text` into the element (appends to what it holds).
    pub fn send_keys(&self, text: &str) -> Result<()> {
        self.cmd("POST", "value", Some(json!({"text": text})))?;
        Ok(())
    }

    pub fn clear(&self) -> Result<()> {
        self.cmd("POST", "clear", None)?;
        Ok(())
    }

    /// The rendered text.
    pub fn text(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "text", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// An attribute, `None` when absent.
    pub fn attr(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .cmd("GET", &format!("attribute/{name}"), None)?
            .as_str()
            .map(String::from))
    }

    /// A DOM property (e.g. `value`, `checked`).
    pub fn prop(&self, name: &str) -> Result<Value> {
        self.cmd("GET", &format!("property/{name}"), None)
    }

    pub fn is_displayed(&self) -> Result<bool> {
        Ok(self
            .cmd("GET", "displayed", None)?
            .as_bool()
            .unwrap_or(false))
    }

    pub fn find(&self, css: &str) -> Result<Element<'a>> {
        let v = self.cmd(
            "POST",
            "element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Element::from_value(self.browser, &v)
    }

    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'a>>> {
        let v = self.cmd(
            "POST",
            "elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        elements(self.browser, &v)
    }
}

/// Standard base64 (with padding) to bytes; `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert!(base64_decode("Zm9").is_none());
        assert!(base64_decode("Zm9*").is_none());
    }
}
