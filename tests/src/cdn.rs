//! A CDN edge on 127.0.0.1: nginx's `proxy_cache` in front of an origin's static files (the
//! stage pointers and bundles in the https git server's docroot), with the test CA.
//!
//! The fleet-scale load test (tend-bench scale, docs/scale.md) needs a real caching proxy to show
//! what a CDN does to the origin's load: how many of a fleet's conditional GETs reach the origin
//! at all, and whether a new bundle is fetched from it once or once per device. nginx answers a
//! device's `If-None-Match` from its cache (`304`) and revalidates with the origin at most once
//! per `max_age` (`proxy_cache_revalidate`, `proxy_cache_lock`: one request for a stampede).
//! A bundle's name carries its commits and a piece of its hash, so a name never changes content:
//! the edge keeps a bundle a day without revalidating (lighttpd sends no `ETag` for a `.bundle`,
//! so there is nothing to revalidate with), and fetches each from the origin once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::gitserver::{free_port, require, Daemon, TestCa};

/// One logged request at the edge.
#[derive(Clone, Debug)]
pub struct EdgeEntry {
    pub path: String,
    pub status: u16,
    /// Request line, headers and body, as received.
    pub bytes_in: u64,
    /// Status line, headers and body, as sent.
    pub bytes_out: u64,
    /// HIT, MISS, REVALIDATED, EXPIRED, UPDATING, STALE, or `-` (not cacheable).
    pub cache: String,
}

pub struct Cdn {
    dir: tempfile::TempDir,
    port: u16,
    daemon: Daemon,
}

impl Cdn {
    /// An edge for `https://127.0.0.1:<origin_port>`, which it verifies with `ca`; a response is
    /// fresh for `max_age`, then revalidated with the origin.
    pub fn start(origin_port: u16, ca: &TestCa, max_age: Duration) -> Result<Cdn> {
        let nginx = require("nginx")?;
        let dir = tempfile::tempdir()?;
        let (cert, key) = ca.issue_server(dir.path())?;
        for sub in ["cache", "tmp"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        let port = free_port()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            config(
                dir.path(),
                port,
                origin_port,
                &cert,
                &key,
                ca.cert(),
                max_age,
            ),
        )?;
        let error_log = dir.path().join("error.log");
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?);
        let daemon = Daemon::start("nginx", cmd, port, &error_log)?;
        Ok(Cdn { dir, port, daemon })
    }

    /// The edge's URL of the origin's static file `name`.
    pub fn file_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// The edge's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// nginx's CPU time so far (its single process does the work: `master_process off`).
    pub fn cpu(&self) -> Duration {
        crate::gitserver::cpu_of(self.daemon.pid())
    }

    /// nginx's error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Every request logged so far. nginx writes a line when the response is sent, and the
    /// callers read after their clients have finished, so the log is complete.
    pub fn requests(&self) -> Result<Vec<EdgeEntry>> {
        let log = self.dir.path().join("access.log");
        let text =
            std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        Ok(text.lines().filter_map(parse).collect())
    }
}

fn parse(line: &str) -> Option<EdgeEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [path, status, bytes_in, bytes_out, cache] = f[..] else {
        return None;
    };
    Some(EdgeEntry {
        path: path.to_string(),
        status: status.parse().ok()?,
        bytes_in: bytes_in.parse().ok()?,
        bytes_out: bytes_out.parse().ok()?,
        cache: cache.to_string(),
    })
}

fn config(
    dir: &Path,
    port: u16,
    origin_port: u16,
    cert: &Path,
    key: &Path,
    ca: &Path,
    max_age: Duration,
) -> String {
    let d = dir.display();
    let (cert, key, ca) = (cert.display(), key.display(), ca.display());
    let secs = max_age.as_secs().max(1);
    let tmp: PathBuf = dir.join("tmp");
    let tmp = tmp.display();
    // Both locations fetch from the origin the same way; they differ in how long a copy lasts.
    let upstream = format!(
        "proxy_pass https://127.0.0.1:{origin_port};\n\
         proxy_ssl_trusted_certificate {ca}; proxy_ssl_verify on; proxy_ssl_name localhost;\n\
         proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
         proxy_cache edge; proxy_cache_lock on;\n"
    );
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         log_format edge '$uri $status $request_length $bytes_sent $upstream_cache_status';\n\
         access_log {d}/access.log edge;\n\
         client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;\n\
         fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;\n\
         proxy_cache_path {d}/cache keys_zone=edge:4m max_size=1g inactive=1d;\n\
         server {{\n\
         listen 127.0.0.1:{port} ssl;\n\
         ssl_certificate {cert}; ssl_certificate_key {key};\n\
         location ~ \\.bundle$ {{\n{upstream}proxy_cache_valid 200 1d;\n}}\n\
         location / {{\n{upstream}\
         proxy_cache_valid 200 {secs}s; proxy_cache_revalidate on; proxy_cache_use_stale updating;\n\
         }}\n}}\n}}\n"
    )
}
