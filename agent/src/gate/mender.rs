//! The one Mender management API call the gate makes: inventory search by `tend_branch`.
//!
//! `POST /api/management/v2/inventory/filters/search` is Mender's documented search (inventory
//! service, management API v2). The body holds the filter (`{scope: inventory, attribute:
//! tend_branch, type: $eq, value: <branch>}`), the page (`page`, from 1, and `per_page`) and the
//! attributes to return; the answer is a JSON list of `{id, attributes: [{name, scope, value}]}`
//! with the number of matching devices in `X-Total-Count`. The caller's credential is a personal
//! access token, sent as `Authorization: Bearer …`, as Mender's API documentation shows.
//!
//! TLS is rustls on *ring* with the system roots plus `--ca-file`, as tend's git fetches.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

pub const SEARCH_PATH: &str = "/api/management/v2/inventory/filters/search";
/// Devices per page: Mender's default is 20; fewer round trips, well below any server limit.
pub const PER_PAGE: usize = 100;
/// Guards against a server that never runs out of pages (10 million devices at 100 per page).
const MAX_PAGES: usize = 100_000;
/// The attributes the gate reads; asking for only these keeps pages small.
pub const ATTRIBUTES: &[&str] = &[
    "tend_branch",
    "tend_commit",
    "tend_status",
    "tend_last_run",
    "tend_error",
    "tend_suspended",
    "tend_wave",
    "tend_wave_applies_at",
    "tend_reverted_commit",
    "tend_revert_cause",
];

const TOKEN_FIX: &str = "create a personal access token in the Mender UI (your user menu → My \
profile → Personal access tokens) for a user allowed to read the device inventory, and export it \
as TEND_MENDER_TOKEN (in GitHub Actions: a repository secret passed in `env:`)";

#[derive(Debug, thiserror::Error)]
pub enum MenderError {
    #[error("Mender refused the access token (HTTP 401 at {url}): it is missing, malformed, expired or revoked. Fix: {TOKEN_FIX}")]
    BadToken { url: String },
    #[error("Mender denied the inventory search (HTTP 403 at {url}): {detail}. Fix: give the token's user a role that may read devices (RBAC), or use a token of such a user")]
    Forbidden { url: String, detail: String },
    #[error("{url} is not a Mender inventory search (HTTP 404). Fix: pass the server's base URL with --server (e.g. https://hosted.mender.io or https://eu.hosted.mender.io), without a path")]
    NotFound { url: String },
    #[error("Mender answered HTTP {status} at {url}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("cannot reach Mender at {url}: {cause}. Fix: {fix}")]
    Transport {
        url: String,
        cause: String,
        fix: String,
    },
    #[error("Mender's answer from {url} is not an inventory search result: {cause}")]
    Body { url: String, cause: String },
    #[error("{0}")]
    Setup(String),
}

/// One device from the search: its Mender id and its inventory attributes as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct WireDevice {
    id: String,
    #[serde(default)]
    attributes: Vec<WireAttribute>,
}

#[derive(Deserialize)]
struct WireAttribute {
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    value: Value,
}

pub struct Client {
    http: crate::net::Client,
    url: String,
    token: String,
}

impl Client {
    /// A client for the server at `server` (its base URL). Nothing is sent yet.
    pub fn new(
        server: &str,
        token: String,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, MenderError> {
        let base = server.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(MenderError::Setup(format!(
                "--server `{server}` is not an http(s) URL. Fix: pass the Mender server's base \
                 URL, e.g. https://hosted.mender.io"
            )));
        }
        let tls =
            crate::source::fetch::client_config(ca_file, "--ca-file").map_err(|e| tls_setup(&e))?;
        // The gate runs in CI, where the proxy comes from the environment as for any tool.
        let (proxy, no_proxy) =
            crate::net::proxy::from_env(base.starts_with("https://"), |k| std::env::var(k).ok());
        let http = crate::net::Client::new(
            tls,
            proxy.as_deref(),
            no_proxy.as_deref(),
            Duration::from_secs(20),
            timeout,
        )
        .map_err(|e| MenderError::Setup(format!("setting up the https client: {e}")))?;
        Ok(Client {
            http,
            url: format!("{base}{SEARCH_PATH}"),
            token,
        })
    }

    /// Every device whose inventory says it follows `branch`, over as many pages as it takes.
    pub fn devices_following(&self, branch: &str) -> Result<Vec<Device>, MenderError> {
        let mut devices: Vec<Device> = Vec::new();
        for page in 1..=MAX_PAGES {
            let (batch, total) = self.search_page(branch, page)?;
            let got = batch.len();
            for d in batch {
                // A device that moved between pages while we read must not count twice.
                if !devices.iter().any(|x| x.id == d.id) {
                    devices.push(d);
                }
            }
            let done = match total {
                Some(total) => got == 0 || page * PER_PAGE >= total,
                None => got < PER_PAGE,
            };
            if done {
                return Ok(devices);
            }
        }
        Err(MenderError::Body {
            url: self.url.clone(),
            cause: format!("more than {MAX_PAGES} pages"),
        })
    }

    fn search_page(
        &self,
        branch: &str,
        page: usize,
    ) -> Result<(Vec<Device>, Option<usize>), MenderError> {
        let body = search_body(branch, page);
        let headers = [
            format!("Authorization: Bearer {}", self.token),
            "Content-Type: application/json".to_string(),
            "Accept: application/json".to_string(),
        ];
        let resp = self
            .http
            .send("POST", &self.url, &headers, body.to_string().as_bytes())
            .map_err(|e| transport(&self.url, &e))?;
        let status = resp.status();
        let total = resp
            .header("x-total-count")
            .and_then(|v| v.trim().parse::<usize>().ok());
        // A page of 100 devices with six attributes is some tens of kilobytes.
        let bytes = resp
            .bytes(64 * 1024 * 1024)
            .map_err(|e| transport(&self.url, &e))?;
        let url = self.url.clone();
        match status {
            200 => Ok((
                parse_devices(&bytes).map_err(|cause| MenderError::Body { url, cause })?,
                total,
            )),
            401 => Err(MenderError::BadToken { url }),
            403 => Err(MenderError::Forbidden {
                url,
                detail: error_detail(&bytes),
            }),
            404 => Err(MenderError::NotFound { url }),
            status => Err(MenderError::Status {
                url,
                status,
                detail: error_detail(&bytes),
            }),
        }
    }
}

/// The search request: devices whose inventory `tend_branch` equals `branch`.
pub fn search_body(branch: &str, page: usize) -> Value {
    let attributes: Vec<Value> = ATTRIBUTES
        .iter()
        .map(|a| json!({"scope": "inventory", "attribute": a}))
        .collect();
    json!({
        "page": page,
        "per_page": PER_PAGE,
        "filters": [{"scope": "inventory", "attribute": "tend_branch", "type": "$eq", "value": branch}],
        "attributes": attributes,
    })
}

/// The devices of one page; inventory-scope attributes only, values as text.
pub fn parse_devices(bytes: &[u8]) -> Result<Vec<Device>, String> {
    let wire: Vec<WireDevice> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(wire
        .into_iter()
        .map(|d| Device {
            id: d.id,
            attributes: d
                .attributes
                .into_iter()
                .filter(|a| a.scope.is_empty() || a.scope == "inventory")
                .map(|a| {
                    let text = match a.value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (a.name, text)
                })
                .collect(),
        })
        .collect())
}

/// Mender's error body is `{"error": "...", "request_id": "..."}`; anything else is shown cut.
fn error_detail(bytes: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    match parsed.as_ref().and_then(|v| v["error"].as_str()) {
        Some(e) => e.to_string(),
        None => String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            .trim()
            .to_string(),
    }
}

fn tls_setup(e: &crate::source::fetch::FetchError) -> MenderError {
    match e {
        crate::source::fetch::FetchError::Tls { cause, fix, .. } => {
            MenderError::Setup(format!("{cause}. Fix: {fix}"))
        }
        other => MenderError::Setup(other.to_string()),
    }
}

/// A transport error with its cause and the likely fix.
fn transport(url: &str, e: &crate::net::HttpError) -> MenderError {
    let cause = e.to_string();
    let fix = if matches!(e, crate::net::HttpError::Tls(_)) {
        "check --server; for a server with a private CA, pass the CA with --ca-file"
    } else if e.is_timeout() {
        "check that the server is up and reachable from here; it did not answer in time"
    } else {
        "check --server, DNS, the network and proxy settings (https_proxy)"
    };
    MenderError::Transport {
        url: url.to_string(),
        cause,
        fix: fix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_filters_on_tend_branch_in_the_inventory_scope() {
        let b = search_body("canary", 3);
        assert_eq!(b["page"], 3);
        assert_eq!(b["per_page"], PER_PAGE);
        assert_eq!(
            b["filters"],
            json!([{"scope": "inventory", "attribute": "tend_branch", "type": "$eq", "value": "canary"}])
        );
        assert!(b["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"scope": "inventory", "attribute": "tend_commit"})));
    }

    #[test]
    fn devices_keep_inventory_attributes_as_text() {
        let body = br#"[{"id": "a1", "updated_ts": "2026-01-01T00:00:00Z", "attributes": [
            {"name": "tend_status", "scope": "inventory", "value": "ok"},
            {"name": "tend_failed", "scope": "inventory", "value": 0},
            {"name": "mac", "scope": "identity", "value": "00:11"}]},
            {"id": "b2"}]"#;
        let d = parse_devices(body).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].attributes["tend_status"], "ok");
        assert_eq!(d[0].attributes["tend_failed"], "0");
        assert!(!d[0].attributes.contains_key("mac"));
        assert!(d[1].attributes.is_empty());
        assert!(parse_devices(br#"{"error": "x"}"#).is_err());
    }

    #[test]
    fn mender_error_bodies_are_shown_by_their_message() {
        assert_eq!(
            error_detail(br#"{"error": "invalid filter", "request_id": "r"}"#),
            "invalid filter"
        );
        assert_eq!(
            error_detail(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn a_server_that_is_not_a_url_is_refused_before_any_request() {
        let e = Client::new("hosted.mender.io", "t".into(), None, Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not an http(s) URL") && e.contains("Fix:"),
            "{e}"
        );
    }
}
