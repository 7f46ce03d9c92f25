//! A Mender server double: the device-facing API, on 127.0.0.1 over TLS, for the real Mender
//! client in a test device.
//!
//! It does what Mender's published device API does, and checks what the real server checks:
//! - `POST /api/devices/v1/authentication/auth_requests`: a JSON body `{id_data, pubkey,
//!   tenant_token?}` (`id_data` is itself a JSON object in a string) signed in `X-MEN-Signature`
//!   with the device key; the signature is verified against `pubkey` (400 when the body or header
//!   is malformed, 401 when the signature is wrong). The device is accepted at once, as a
//!   preauthorized one is: 200 with a JWT whose `sub` is the device id, a UUID assigned on the
//!   identity's first request and kept for it.
//! - `PUT` / `PATCH /api/devices/v1/inventory/device/attributes` with that JWT as a Bearer token:
//!   a JSON list of `{name, value}`; PUT replaces the device's inventory, PATCH merges into it
//!   (the client tries PUT and falls back to PATCH on 405, as servers older than 2.6 only had it).
//! - `GET /api/devices/v1/…/deployments/next` and `POST /api/devices/v2/…/deployments/next`:
//!   204, no deployment.
//! - `POST /api/management/v2/inventory/filters/search` with a personal access token: the
//!   management API's inventory search, paged, with `X-Total-Count` (see `management`).
//! - Anything else (deviceconfig, deviceconnect, which need add-ons this server does not run):
//!   404 with Mender's JSON error body. Device endpoints without a valid token: 401.
//!
//! Every request is recorded (method, path, status, whether its token was valid), so tests assert
//! on what the client actually sent, and on what it did not.

mod management;
mod sig;
mod tls;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::Value;

pub use sig::KeyKind;

pub const AUTH_PATH: &str = "/api/devices/v1/authentication/auth_requests";
pub const INVENTORY_PATH: &str = "/api/devices/v1/inventory/device/attributes";
pub const NEXT_V1_PATH: &str = "/api/devices/v1/deployments/device/deployments/next";
pub const NEXT_V2_PATH: &str = "/api/devices/v2/deployments/device/deployments/next";
pub use management::{rfc3339, SEARCH_PATH};

/// Longer than Go's idle-connection timeout (90 s), so the client, not the server, closes idle
/// keep-alive connections, as with a real server.
const IDLE: Duration = Duration::from_secs(120);

/// The token a request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Absent,
    /// Issued by this server and not expired; the device id.
    Valid(String),
    /// A personal access token this server issued, unexpired and not revoked; the user.
    User(String),
    Invalid,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string, without `?` (the v1 deployments/next call carries the artifact there).
    pub query: String,
    pub status: u16,
    pub auth: Auth,
}

#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub id_data: String,
    pub key: Option<KeyKind>,
    /// The device id, when accepted.
    pub device_id: Option<String>,
    /// Why it was refused.
    pub refused: Option<String>,
}

#[derive(Clone, Debug)]
pub struct InventoryUpdate {
    /// PUT or PATCH.
    pub method: String,
    pub device_id: String,
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Default)]
struct State {
    /// Identity (the parsed `id_data`, serialized) → device id.
    devices: BTreeMap<String, String>,
    /// Device id → its inventory.
    inventory: BTreeMap<String, BTreeMap<String, Value>>,
    last_sender: Option<String>,
    requests: Vec<Request>,
    auth_requests: Vec<AuthRequest>,
    updates: Vec<InventoryUpdate>,
    /// TLS and protocol failures, for diagnosing a client that never gets through.
    connection_errors: Vec<String>,
    /// Device id → when its inventory last changed (Unix seconds).
    updated: BTreeMap<String, u64>,
    /// Users whose personal access tokens are valid (revoking removes the user).
    users: BTreeSet<String>,
    /// The bodies of accepted inventory searches, oldest first.
    searches: Vec<Value>,
}

struct Shared {
    state: Mutex<State>,
    jwt: sig::Jwt,
    tls: Arc<rustls::ServerConfig>,
}

pub struct MenderServer {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl MenderServer {
    /// Generates the certificates and serves on an ephemeral loopback port until dropped.
    pub fn start() -> Result<MenderServer> {
        let certs = tls::Certs::generate()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            jwt: sig::Jwt::new(random_bytes()?),
            tls: certs.config,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (shared.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared2.clone();
                thread::spawn(move || serve_connection(conn, &shared));
            }
        });
        Ok(MenderServer {
            addr,
            ca_pem: certs.ca_pem,
            shared,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The `ServerURL` for mender.conf: `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that signed the server certificate, PEM: the device's `ServerCertificate`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    pub fn auth_requests(&self) -> Vec<AuthRequest> {
        self.state().auth_requests.clone()
    }

    /// How many auth requests were accepted.
    pub fn auth_count(&self) -> usize {
        self.state()
            .auth_requests
            .iter()
            .filter(|a| a.device_id.is_some())
            .count()
    }

    /// Every accepted inventory PUT and PATCH, oldest first.
    pub fn inventory_updates(&self) -> Vec<InventoryUpdate> {
        self.state().updates.clone()
    }

    /// The inventory of the device that sent inventory last (empty before any).
    pub fn attributes(&self) -> BTreeMap<String, Value> {
        let s = self.state();
        s.last_sender
            .as_ref()
            .and_then(|id| s.inventory.get(id))
            .cloned()
            .unwrap_or_default()
    }

    /// A personal access token for `user`, valid for a day (until [`MenderServer::revoke`]).
    pub fn personal_access_token(&self, user: &str) -> String {
        self.state().users.insert(user.to_string());
        self.shared
            .jwt
            .issue_user(user, &uuid_v4(), unix_now(), 86_400)
    }

    /// Revokes every personal access token of `user`.
    pub fn revoke(&self, user: &str) {
        self.state().users.remove(user);
    }

    /// Sets a device's whole inventory, as its client's PUT would (the device need not exist
    /// otherwise): a fleet for management API tests without a client per device.
    pub fn set_inventory(&self, device_id: &str, attributes: BTreeMap<String, Value>) {
        let mut s = self.state();
        s.inventory.insert(device_id.to_string(), attributes);
        s.updated.insert(device_id.to_string(), unix_now());
    }

    /// The bodies of the inventory searches the server answered (200), oldest first.
    pub fn searches(&self) -> Vec<Value> {
        self.state().searches.clone()
    }

    /// The ids the server assigned, in identity order.
    pub fn device_ids(&self) -> Vec<String> {
        self.state().devices.values().cloned().collect()
    }

    /// Polls until `done(self)` holds; fails after `timeout` with the request log.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&MenderServer) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        while !done(self) {
            if started.elapsed() > timeout {
                bail!(
                    "Mender double: no {what} within {timeout:?}\n{}",
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(started.elapsed())
    }

    /// The request log and connection errors, for failure messages.
    pub fn describe(&self) -> String {
        let s = self.state();
        let mut out = String::from("requests:\n");
        for r in &s.requests {
            out.push_str(&format!(
                "  {} {} -> {} ({:?})\n",
                r.method, r.path, r.status, r.auth
            ));
        }
        for a in &s.auth_requests {
            out.push_str(&format!(
                "  auth request {} key {:?}: {}\n",
                a.id_data,
                a.key,
                a.refused.as_deref().unwrap_or("accepted")
            ));
        }
        for e in &s.connection_errors {
            out.push_str(&format!("  connection error: {e}\n"));
        }
        out
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Drop for MenderServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(tcp: TcpStream, shared: &Shared) {
    let _ = tcp.set_read_timeout(Some(IDLE));
    let Ok(conn) = rustls::ServerConnection::new(shared.tls.clone()) else {
        return;
    };
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let req = match wire::read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                // Clients close idle connections without close_notify; that is not an error.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                ) {
                    shared.lock().connection_errors.push(e.to_string());
                }
                break;
            }
        };
        let resp = shared.handle(&req);
        let stream = reader.get_mut();
        let written = wire::write_response(
            stream,
            resp.status,
            resp.content_type,
            &resp.headers,
            &resp.body,
            req.keep_alive,
        );
        if written.is_err() || !req.keep_alive {
            break;
        }
    }
    let stream = reader.get_mut();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, req: &wire::HttpRequest) -> Response {
        let auth = self.check_token(req);
        let resp = match (req.method.as_str(), req.path.as_str()) {
            ("POST", AUTH_PATH) => self.authenticate(req),
            (_, AUTH_PATH) => error(405, "method not allowed"),
            ("PUT" | "PATCH", INVENTORY_PATH) => match &auth {
                Auth::Valid(id) => self.update_inventory(&req.method, id, &req.body),
                _ => unauthorized(),
            },
            (_, INVENTORY_PATH) => error(405, "method not allowed"),
            ("POST", SEARCH_PATH) => self.search(req, &auth),
            (_, SEARCH_PATH) => error(405, "method not allowed"),
            ("GET", NEXT_V1_PATH) | ("POST", NEXT_V2_PATH) => match &auth {
                Auth::Valid(_) => Response {
                    status: 204,
                    content_type: "application/json",
                    headers: Vec::new(),
                    body: Vec::new(),
                },
                _ => unauthorized(),
            },
            _ => error(404, "Resource not found"),
        };
        self.lock().requests.push(Request {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            status: resp.status,
            auth,
        });
        resp
    }

    fn check_token(&self, req: &wire::HttpRequest) -> Auth {
        if req.path == AUTH_PATH {
            // Its Authorization header carries the tenant token, not a device token.
            return Auth::Absent;
        }
        let Some(value) = req.header("authorization") else {
            return Auth::Absent;
        };
        let token = value.strip_prefix("Bearer ").unwrap_or("").trim();
        if let Some(id) = self.jwt.subject(token, unix_now()) {
            if self.lock().devices.values().any(|d| *d == id) {
                return Auth::Valid(id);
            }
        }
        match self.jwt.user_subject(token, unix_now()) {
            Some(user) if self.lock().users.contains(&user) => Auth::User(user),
            _ => Auth::Invalid,
        }
    }

    fn authenticate(&self, req: &wire::HttpRequest) -> Response {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return self.refuse_auth(String::new(), None, 400, format!("body: {e}")),
        };
        let id_data = body["id_data"].as_str().unwrap_or_default().to_string();
        let identity = match serde_json::from_str::<Value>(&id_data) {
            Ok(Value::Object(map)) if !map.is_empty() => Value::Object(map).to_string(),
            _ => {
                let why = "id_data must be a non-empty JSON object in a string".to_string();
                return self.refuse_auth(id_data, None, 400, why);
            }
        };
        let Some(pubkey) = body["pubkey"].as_str() else {
            return self.refuse_auth(id_data, None, 400, "pubkey is missing".into());
        };
        let Some(signature) = req.header("x-men-signature") else {
            let why = "missing request signature header".to_string();
            return self.refuse_auth(id_data, None, 400, why);
        };
        let key = match sig::verify_auth_request(pubkey, &req.body, signature) {
            Ok(key) => key,
            Err(why) => return self.refuse_auth(id_data, None, 401, why),
        };
        let mut state = self.lock();
        let device_id = match state.devices.get(&identity) {
            Some(id) => id.clone(),
            None => {
                let id = uuid_v4();
                state.devices.insert(identity, id.clone());
                id
            }
        };
        let token = self.jwt.issue(&device_id, &uuid_v4(), unix_now());
        state.auth_requests.push(AuthRequest {
            id_data,
            key: Some(key),
            device_id: Some(device_id),
            refused: None,
        });
        Response {
            status: 200,
            content_type: "application/jwt",
            headers: Vec::new(),
            body: token.into_bytes(),
        }
    }

    fn refuse_auth(
        &self,
        id_data: String,
        key: Option<KeyKind>,
        status: u16,
        why: String,
    ) -> Response {
        let resp = error(status, &why);
        self.lock().auth_requests.push(AuthRequest {
            id_data,
            key,
            device_id: None,
            refused: Some(why),
        });
        resp
    }

    fn update_inventory(&self, method: &str, device_id: &str, body: &[u8]) -> Response {
        let attributes = match parse_attributes(body) {
            Ok(a) => a,
            Err(why) => return error(400, &why),
        };
        let mut state = self.lock();
        let inventory = state.inventory.entry(device_id.to_string()).or_default();
        if method == "PUT" {
            inventory.clear();
        }
        inventory.extend(attributes.clone());
        state.last_sender = Some(device_id.to_string());
        state.updated.insert(device_id.to_string(), unix_now());
        state.updates.push(InventoryUpdate {
            method: method.to_string(),
            device_id: device_id.to_string(),
            attributes,
        });
        Response {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// `[{name, value, description?}]`, values being strings, numbers or lists of them.
fn parse_attributes(body: &[u8]) -> Result<BTreeMap<String, Value>, String> {
    let list: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("attributes are not a JSON list: {e}"))?;
    let mut out = BTreeMap::new();
    for item in list {
        let name = item["name"].as_str().filter(|n| !n.is_empty());
        let Some(name) = name else {
            return Err(format!("attribute without a name: {item}"));
        };
        let value = &item["value"];
        let scalar = |v: &Value| v.is_string() || v.is_number();
        let ok = scalar(value) || value.as_array().is_some_and(|a| a.iter().all(scalar));
        if !ok {
            return Err(format!("attribute {name}: bad value {value}"));
        }
        out.insert(name.to_string(), value.clone());
    }
    Ok(out)
}

fn unauthorized() -> Response {
    error(401, "Unauthorized")
}

/// Mender's error body.
fn error(status: u16, message: &str) -> Response {
    let body = serde_json::json!({"error": message, "request_id": uuid_v4()});
    Response {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A random (version 4) UUID, as Mender assigns device ids.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = random_bytes().unwrap_or_else(|_| {
        // Unique enough for ids within one test process when /dev/urandom is unreadable.
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        n.to_le_bytes()
    });
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests;
