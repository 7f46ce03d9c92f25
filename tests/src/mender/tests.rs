//! The double on its own, driven from the host with curl and openssl over real TLS: it refuses
//! what Mender's server refuses, so the real-client suite (tests/tests/mender.rs) can only pass
//! with a client that signs, authenticates and sends as Mender's API requires.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::run::{run, run_ok};

/// A device key made and used with openssl, as the Mender client does through libssl.
struct DeviceKey {
    pem: PathBuf,
    public: String,
}

impl DeviceKey {
    fn rsa(dir: &Path) -> DeviceKey {
        let pem = dir.join("device.pem");
        let mut gen = Command::new("openssl");
        gen.args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem);
        run_ok(gen, "openssl genpkey", Duration::from_secs(60)).unwrap();
        let mut public = Command::new("openssl");
        public.args(["pkey", "-pubout", "-in"]).arg(&pem);
        let public = run_ok(public, "openssl pkey", Duration::from_secs(60))
            .unwrap()
            .stdout;
        DeviceKey { pem, public }
    }

    /// base64(RSA PKCS#1 v1.5 SHA-256 signature of `data`): the `X-MEN-Signature`.
    fn sign(&self, data: &str) -> String {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "printf %s \"$1\" | openssl dgst -sha256 -sign \"$2\" | base64 -w0",
        ])
        .args(["sh", data])
        .arg(&self.pem);
        run_ok(c, "openssl dgst -sign", Duration::from_secs(60))
            .unwrap()
            .stdout
    }
}

/// curl against the double, trusting only the test CA.
struct Curl<'a> {
    server: &'a MenderServer,
    ca: PathBuf,
    out: PathBuf,
}

impl<'a> Curl<'a> {
    fn new(server: &'a MenderServer, dir: &Path) -> Curl<'a> {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, server.ca_pem()).unwrap();
        Curl {
            server,
            ca,
            out: dir.join("response"),
        }
    }

    /// (status, body) of `method path` with `headers` and an optional body.
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&str>,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "--cacert"])
            .arg(&self.ca)
            .arg("-o")
            .arg(&self.out)
            .args(["-w", "%{http_code}"]);
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        c.arg(format!("{}{path}", self.server.url()));
        let out = run_ok(c, &format!("curl {method} {path}"), Duration::from_secs(30)).unwrap();
        let body = std::fs::read_to_string(&self.out).unwrap_or_default();
        (out.stdout.trim().parse().unwrap(), body)
    }
}

#[test]
fn tls_is_real_and_only_the_test_ca_is_trusted() {
    let server = MenderServer::start().unwrap();
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null"])
        .arg(server.url() + AUTH_PATH);
    let out = run(c, "curl without the CA", Duration::from_secs(30)).unwrap();
    assert!(!out.success(), "trusted without the test CA:\n{out}");
    let d = tempfile::tempdir().unwrap();
    let curl = Curl::new(&server, d.path());
    assert_eq!(curl.call("GET", "/", &[], None).0, 404);
}

#[test]
fn auth_requests_are_refused_unless_signed_by_the_key_they_carry() {
    let server = MenderServer::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    let curl = Curl::new(&server, d.path());
    let key = DeviceKey::rsa(d.path());
    let body =
        serde_json::json!({"id_data": "{\"mac\":\"02:00:00:00:00:01\"}", "pubkey": key.public})
            .to_string();
    let header = |sig: &str| format!("X-MEN-Signature: {sig}");

    assert_eq!(
        curl.call("POST", AUTH_PATH, &[], Some(&body)).0,
        400,
        "no signature"
    );
    let other = key.sign(&body.replace(":01", ":02"));
    assert_eq!(
        curl.call("POST", AUTH_PATH, &[&header(&other)], Some(&body))
            .0,
        401
    );
    let not_id = body.replace("{\\\"mac\\\"", "[\\\"mac\\\"");
    assert_eq!(
        curl.call(
            "POST",
            AUTH_PATH,
            &[&header(&key.sign(&not_id))],
            Some(&not_id)
        )
        .0,
        400,
        "id_data must be a JSON object"
    );
    assert_eq!(server.auth_count(), 0);

    let good = header(&key.sign(&body));
    let (status, token) = curl.call("POST", AUTH_PATH, &[&good], Some(&body));
    assert_eq!(status, 200);
    let id = server.device_ids().pop().unwrap();
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["mender.device"], true);
    assert_eq!(curl.call("POST", AUTH_PATH, &[&good], Some(&body)).0, 200);
    assert_eq!(server.device_ids(), [id], "the same identity keeps its id");
    assert_eq!(server.auth_count(), 2);
    assert_eq!(
        server.auth_requests()[3].key,
        Some(KeyKind::Rsa { bits: 2048 })
    );
}

#[test]
fn inventory_put_replaces_patch_merges_and_both_need_a_valid_token() {
    let server = MenderServer::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    let curl = Curl::new(&server, d.path());
    let key = DeviceKey::rsa(d.path());
    let body =
        serde_json::json!({"id_data": "{\"mac\":\"02:00:00:00:00:03\"}", "pubkey": key.public})
            .to_string();
    let sig = format!("X-MEN-Signature: {}", key.sign(&body));
    let (_, token) = curl.call("POST", AUTH_PATH, &[&sig], Some(&body));
    let bearer = format!("Authorization: Bearer {token}");
    let forged = format!("Authorization: Bearer {token}x");

    assert_eq!(curl.call("PUT", INVENTORY_PATH, &[], Some("[]")).0, 401);
    assert_eq!(
        curl.call("PUT", INVENTORY_PATH, &[&forged], Some("[]")).0,
        401
    );
    let put = r#"[{"name":"a","value":"1"},{"name":"b","value":"2"}]"#;
    assert_eq!(
        curl.call("PUT", INVENTORY_PATH, &[&bearer], Some(put)).0,
        200
    );
    let patch = r#"[{"name":"b","value":"3"},{"name":"c","value":["x","y"]}]"#;
    assert_eq!(
        curl.call("PATCH", INVENTORY_PATH, &[&bearer], Some(patch))
            .0,
        200
    );
    let expected = BTreeMap::from([
        ("a".to_string(), Value::from("1")),
        ("b".to_string(), Value::from("3")),
        ("c".to_string(), serde_json::json!(["x", "y"])),
    ]);
    assert_eq!(server.attributes(), expected, "PATCH merges");
    let replace = r#"[{"name":"d","value":"4"}]"#;
    assert_eq!(
        curl.call("PUT", INVENTORY_PATH, &[&bearer], Some(replace))
            .0,
        200
    );
    assert_eq!(
        server.attributes().into_keys().collect::<Vec<_>>(),
        ["d"],
        "PUT replaces"
    );
    assert_eq!(
        curl.call("PUT", INVENTORY_PATH, &[&bearer], Some("{}")).0,
        400
    );
    assert_eq!(
        curl.call("POST", INVENTORY_PATH, &[&bearer], Some("[]")).0,
        405
    );
    let methods: Vec<String> = server
        .inventory_updates()
        .into_iter()
        .map(|u| u.method)
        .collect();
    assert_eq!(methods, ["PUT", "PATCH", "PUT"]);

    let next = "/api/devices/v1/deployments/device/deployments/next?artifact_name=a&device_type=t";
    assert_eq!(curl.call("GET", next, &[&bearer], None).0, 204);
    assert_eq!(curl.call("GET", next, &[], None).0, 401);
    assert_eq!(
        curl.call("POST", NEXT_V2_PATH, &[&bearer], Some("{}")).0,
        204
    );
    let (status, body) = curl.call(
        "GET",
        "/api/devices/v1/deviceconfig/configuration",
        &[&bearer],
        None,
    );
    assert!(
        status == 404 && body.contains("\"error\""),
        "{status} {body}"
    );
    let last = server.requests().pop().unwrap();
    assert_eq!(last.auth, Auth::Valid(server.device_ids()[0].clone()));
}

#[test]
fn uuids_are_version_4_and_distinct() {
    let (a, b) = (uuid_v4(), uuid_v4());
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
    assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
}

#[test]
fn attributes_take_strings_numbers_and_lists_only() {
    let ok = br#"[{"name":"a","value":"x"},{"name":"b","value":3},{"name":"c","value":["1","2"]}]"#;
    let attrs = parse_attributes(ok).unwrap();
    assert_eq!(attrs["c"], serde_json::json!(["1", "2"]));
    assert!(parse_attributes(br#"[{"name":"","value":"x"}]"#).is_err());
    assert!(parse_attributes(br#"[{"name":"a","value":{"k":1}}]"#).is_err());
    assert!(parse_attributes(br#"{"name":"a"}"#).is_err());
}
