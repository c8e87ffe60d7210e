//! A throwaway `updraft standalone` on 127.0.0.1 (a port of its own choosing) for browser
//! sessions: its home, web UI address and generated admin password.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result, err};

/// `updraft standalone` with `UPDRAFT_HOME=home`; killed when dropped.
pub struct Standalone {
    child: Child,
    binary: PathBuf,
    home: PathBuf,
    env: Vec<(String, String)>,
    /// The web UI, e.g. `http://127.0.0.1:40123/`.
    pub url: String,
    /// The password standalone generated for `admin`.
    pub password: String,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Standalone {
    /// Starts `binary standalone --host 127.0.0.1 --port 0` with a clean environment plus `env`,
    /// and waits (up to a minute) until it printed its web UI address and saved the admin
    /// password. Its stderr goes to `home/standalone.log`.
    pub fn start(binary: &Path, home: &Path, env: &[(&str, &str)]) -> Result<Standalone> {
        std::fs::create_dir_all(home)
            .map_err(|e| Error(format!("cannot create {}: {e}", home.display())))?;
        let log_path = home.join("standalone.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error(format!("cannot create {}: {e}", log_path.display())))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cmd = base_command(binary, home, &env);
        cmd.args(["standalone", "--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .map_err(|e| Error(format!("cannot start {}: {e}", binary.display())))?;
        let mut server = Standalone {
            child,
            binary: binary.to_path_buf(),
            home: home.to_path_buf(),
            env,
            url: String::new(),
            password: String::new(),
        };
        let password_file = home.join("standalone_admin_password.txt");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = server.log();
            let url = text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("web ui:")
                    .map(|u| u.trim().to_string())
            });
            let password = std::fs::read_to_string(&password_file)
                .ok()
                .map(|p| p.trim().to_string());
            if let (Some(url), Some(password)) = (url, password)
                && !password.is_empty()
            {
                server.url = url;
                server.password = password;
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return err(format!("updraft standalone exited ({status}):\n{text}"));
            }
            if Instant::now() > deadline {
                return err(format!(
                    "updraft standalone did not start within 60 s:\n{text}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `url` joined with a path such as `/dags`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), path)
    }

    /// Signs `browser` in on this server's login form; waits for the page behind it.
    pub fn sign_in(&self, browser: &crate::Browser, username: &str, password: &str) -> Result<()> {
        let wait = Duration::from_secs(30);
        browser.goto(&self.at("/login"))?;
        let user = browser.wait_for("input#username", wait)?;
        user.clear()?;
        user.send_keys(username)?;
        browser.find("input#password")?.send_keys(password)?;
        browser
            .find("form.login-form button[type=submit]")?
            .click()?;
        browser.wait_for_url("the page after signing in", wait, |u| !u.contains("/login"))?;
        Ok(())
    }

    /// What standalone has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("standalone.log")).unwrap_or_default()
    }

    /// Runs another `updraft` command against the same home and database.
    pub fn updraft(&self, args: &[&str]) -> Result<Output> {
        base_command(&self.binary, &self.home, &self.env)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error(format!("cannot run updraft {args:?}: {e}")))
    }

    /// Like [`Standalone::updraft`], but a non-zero exit is an error carrying its output;
    /// returns stdout.
    pub fn updraft_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.updraft(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return err(format!(
                "updraft {args:?} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(stdout)
    }
}

/// A command with a clean environment, so a developer's own `UPDRAFT__*` cannot leak in.
fn base_command(binary: &Path, home: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("UPDRAFT_HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}
