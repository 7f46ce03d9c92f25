//! Git over https: `git http-backend` as CGI behind lighttpd, on 127.0.0.1.
//!
//! lighttpd writes its access log in batches (about once a second), so the log is read behind a
//! barrier: a request to a marker URL on a second, plain-http port of the same server. Requests
//! are logged in completion order, so once the marker is in the log, everything a test did
//! before it is too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{free_port, require, Daemon, TestCa};

/// One logged request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Response body bytes.
    pub body_bytes: u64,
    /// Bytes received, headers included.
    pub bytes_in: u64,
    /// Bytes sent, headers included.
    pub bytes_out: u64,
}

impl AccessEntry {
    /// A POST to git-upload-pack: the protocol-v2 `ls-refs` or `fetch` command.
    pub fn is_upload_pack_post(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/git-upload-pack")
    }
}

pub struct HttpsGitServer {
    dir: tempfile::TempDir,
    port: u16,
    plain_port: u16,
    access_log: PathBuf,
    markers: AtomicU64,
    _daemon: Daemon,
}

impl HttpsGitServer {
    /// Serves the repos below `project_root` at `https://127.0.0.1:<port>/git/<name>`, with a
    /// certificate from `ca`.
    pub fn start(project_root: &Path, ca: &TestCa) -> Result<HttpsGitServer> {
        Self::start_with(project_root, ca, None)
    }

    /// As [`HttpsGitServer::start`], and `/git` asks for HTTP Basic authentication as
    /// `(user, password)`, as a forge does for a deploy token.
    pub fn start_with(
        project_root: &Path,
        ca: &TestCa,
        basic_auth: Option<(&str, &str)>,
    ) -> Result<HttpsGitServer> {
        let lighttpd = require("lighttpd")?;
        let backend = Path::new("/usr/lib/git-core/git-http-backend");
        if !backend.is_file() {
            bail!("{} is missing: install git", backend.display());
        }
        let dir = tempfile::tempdir()?;
        let (cert, key) = ca.issue_server(dir.path())?;
        let root = project_root.canonicalize()?;
        let userfile = dir.path().join("users");
        if let Some((user, password)) = basic_auth {
            std::fs::write(&userfile, format!("{user}:{password}\n"))?;
        }
        // The port may be taken between choosing and binding it: try a few.
        let mut last_err = None;
        for _ in 0..3 {
            let (port, plain_port) = (free_port()?, free_port()?);
            let conf = dir.path().join("lighttpd.conf");
            let access_log = dir.path().join("access.log");
            let error_log = dir.path().join("error.log");
            std::fs::write(
                &conf,
                config(&Config {
                    docroot: dir.path(),
                    port,
                    plain_port,
                    cert: &cert,
                    key: &key,
                    access_log: &access_log,
                    error_log: &error_log,
                    backend,
                    project_root: &root,
                    userfile: basic_auth.map(|_| userfile.as_path()),
                }),
            )?;
            let mut cmd = Command::new(&lighttpd);
            cmd.arg("-D")
                .arg("-f")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log"))?);
            match Daemon::start("lighttpd", cmd, port, &error_log) {
                Ok(daemon) => {
                    return Ok(HttpsGitServer {
                        dir,
                        port,
                        plain_port,
                        access_log,
                        markers: AtomicU64::new(0),
                        _daemon: daemon,
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("lighttpd did not start")))
    }

    /// lighttpd's CPU time so far, with the git processes it ran and reaped.
    pub fn cpu(&self) -> Duration {
        super::cpu_of(self._daemon.pid())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The https URL of repo `name` (a directory below the project root).
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/git/{name}", self.port)
    }

    /// The directory lighttpd serves static files from (at `https://127.0.0.1:<port>/<name>`; a
    /// `.pointer` file with `ETag` and `Last-Modified`, and `304` to a matching conditional GET).
    pub fn docroot(&self) -> &Path {
        self.dir.path()
    }

    /// The https URL of static file `name` in [`HttpsGitServer::docroot`].
    pub fn file_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// Every request so far, in completion order.
    pub fn requests(&self) -> Result<Vec<AccessEntry>> {
        let n = self.markers.fetch_add(1, Ordering::SeqCst);
        let marker = format!("/tend-log-barrier-{n}");
        let mut conn = TcpStream::connect(("127.0.0.1", self.plain_port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(conn, "GET {marker} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let entries: Vec<AccessEntry> = text.lines().filter_map(parse).collect();
            if let Some(pos) = entries.iter().position(|e| e.path == marker) {
                return Ok(entries[..pos]
                    .iter()
                    .filter(|e| !e.path.starts_with("/tend-log-barrier-"))
                    .cloned()
                    .collect());
            }
            if Instant::now() > deadline {
                bail!(
                    "the access log {} never showed {marker}",
                    self.access_log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// lighttpd's error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

struct Config<'a> {
    docroot: &'a Path,
    port: u16,
    plain_port: u16,
    cert: &'a Path,
    key: &'a Path,
    access_log: &'a Path,
    error_log: &'a Path,
    backend: &'a Path,
    project_root: &'a Path,
    /// `user:password` lines; None: no authentication.
    userfile: Option<&'a Path>,
}

fn config(c: &Config<'_>) -> String {
    let (auth_modules, auth) = match c.userfile {
        Some(users) => (
            r#""mod_auth", "mod_authn_file", "#,
            format!(
                r#"auth.backend = "plain"
auth.backend.plain.userfile = "{}"
auth.require = ("/git" => ("method" => "basic", "realm" => "fleet", "require" => "valid-user"))
"#,
                users.display()
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        r#"server.document-root = "{docroot}"
server.bind = "127.0.0.1"
server.port = {port}
server.modules = ({auth_modules}"mod_alias", "mod_setenv", "mod_cgi", "mod_accesslog", "mod_openssl")
{auth}
server.errorlog = "{error_log}"
ssl.engine = "enable"
ssl.pemfile = "{cert}"
ssl.privkey = "{key}"
$SERVER["socket"] == "127.0.0.1:{plain_port}" {{
  ssl.engine = "disable"
}}
accesslog.filename = "{access_log}"
accesslog.format = "%m\t%U\t%q\t%>s\t%b\t%I\t%O"
alias.url = ("/git" => "{backend}")
# lighttpd sends ETag and Last-Modified (and answers 304) only for a file of a known type.
mimetype.assign = (".pointer" => "text/plain")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{project_root}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#,
        docroot = c.docroot.display(),
        port = c.port,
        plain_port = c.plain_port,
        error_log = c.error_log.display(),
        cert = c.cert.display(),
        key = c.key.display(),
        access_log = c.access_log.display(),
        backend = c.backend.display(),
        project_root = c.project_root.display(),
    )
}

fn parse(line: &str) -> Option<AccessEntry> {
    let f: Vec<&str> = line.split('\t').collect();
    let num = |s: &str| s.trim().parse::<u64>().unwrap_or(0);
    Some(AccessEntry {
        method: f.first()?.to_string(),
        path: f.get(1)?.to_string(),
        query: f.get(2)?.to_string(),
        status: f.get(3)?.trim().parse().ok()?,
        body_bytes: num(f.get(4)?),
        bytes_in: num(f.get(5)?),
        bytes_out: num(f.get(6)?),
    })
}

impl std::fmt::Display for AccessEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}{}{} {} body={} in={} out={}",
            self.method,
            self.path,
            if self.query.is_empty() { "" } else { "?" },
            self.query,
            self.status,
            self.body_bytes,
            self.bytes_in,
            self.bytes_out
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_parse() {
        let e = parse("POST\t/git/fleet.git/git-upload-pack\t\t200\t50\t414\t311").unwrap();
        assert!(e.is_upload_pack_post());
        assert_eq!(
            (e.status, e.body_bytes, e.bytes_in, e.bytes_out),
            (200, 50, 414, 311)
        );
        let e = parse("GET\t/git/fleet.git/info/refs\tservice=git-upload-pack\t200\t147\t240\t438")
            .unwrap();
        assert!(!e.is_upload_pack_post());
        assert_eq!(e.query, "service=git-upload-pack");
        assert!(parse("garbage").is_none());
    }
}
