use super::*;
use serde_json::json;
use std::collections::HashMap;

const ARMORED: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZm9vYmFyFgkrBgEEAdpHDwEBB0A=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
/// An old-format public-key packet header (tag 6, two-byte length) and some body.
const BINARY: &[u8] = &[0x99, 0x00, 0x33, 0x04, 0x66, 0x6f, 0x6f];

struct Files(HashMap<&'static str, Vec<u8>>);
impl Sources for Files {
    fn file(&self, name: &str) -> Result<crate::spec::Content, String> {
        self.0
            .get(name)
            .map(|b| b.as_slice().into())
            .ok_or_else(|| format!("roles/test/files/{name} does not exist"))
    }
    fn template(&self, name: &str) -> Result<crate::spec::Content, String> {
        Err(format!("no template {name}"))
    }
}

fn files() -> Files {
    Files(HashMap::from([
        ("test.asc", ARMORED.as_bytes().to_vec()),
        ("test.gpg", BINARY.to_vec()),
        (
            "pubring.kbx",
            b"\0\0\0\x20\x01\x01\0\0KBXf\0\0\0\0".to_vec(),
        ),
    ]))
}

fn base() -> serde_json::Value {
    json!({"name": "tend-test", "uris": "http://127.0.0.1:8080/debian", "suites": ["bookworm"], "components": "main", "key": "test.asc"})
}

fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    if value.is_null() {
        v.as_object_mut().unwrap().remove(key);
    } else {
        v[key] = value;
    }
    v
}

fn source(spec: serde_json::Value) -> AptSource {
    from_spec(parse_spec(spec).unwrap(), &files()).unwrap()
}

fn err(spec: serde_json::Value) -> SpecError {
    (TYPE.build)(spec, &files())
        .err()
        .expect("the spec must be refused")
}

fn text(s: &AptSource) -> String {
    String::from_utf8(s.desired.as_ref().unwrap().sources.clone()).unwrap()
}

#[test]
fn writes_a_canonical_sources_file_naming_its_keyring() {
    let s = source(with(
        with(base(), "architectures", json!("arm64 armhf")),
        "types",
        json!(["deb", "deb-src"]),
    ));
    assert_eq!(
        text(&s),
        "# Managed by tend: changes made here are overwritten.\n\
         Types: deb deb-src\n\
         URIs: http://127.0.0.1:8080/debian\n\
         Suites: bookworm\n\
         Components: main\n\
         Architectures: arm64 armhf\n\
         Signed-By: /etc/apt/keyrings/tend-test.asc\n"
    );
    let parsed = deb822::parse(&text(&s)).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(
        parsed[0].get("Signed-By"),
        Some("/etc/apt/keyrings/tend-test.asc")
    );
    assert_eq!(Resource::id(&s), "tend-test");
}

#[test]
fn binary_keys_go_to_gpg_and_exact_path_suites_take_no_components() {
    let s = source(with(
        with(
            with(base(), "key", json!("test.gpg")),
            "suites",
            json!("./"),
        ),
        "components",
        json!(null),
    ));
    let d = s.desired.as_ref().unwrap();
    assert!(!d.armored);
    assert_eq!(d.keyring, BINARY);
    assert!(
        text(&s).contains("Suites: ./\nSigned-By: /etc/apt/keyrings/tend-test.gpg\n"),
        "{}",
        text(&s)
    );
}

#[test]
fn inline_armored_keys_are_trimmed_to_one_final_newline() {
    let inline = format!("\n  {}\n\n", ARMORED.trim());
    let s = source(with(
        with(base(), "key", json!(null)),
        "key_content",
        json!(inline),
    ));
    assert_eq!(s.desired.as_ref().unwrap().keyring, ARMORED.as_bytes());
}

#[test]
fn bad_names_and_shapes_are_refused_with_a_fix() {
    for bad in ["Tend", "-x", "a/b", "x y", ""] {
        let e = err(with(base(), "name", json!(bad)));
        assert_eq!(e.key.as_deref(), Some("apt_source"), "{bad}");
    }
    let cases = [
        (with(base(), "uris", json!(null)), "uris"),
        (with(base(), "uris", json!("127.0.0.1/debian")), "uris"),
        (with(base(), "suites", json!([])), "suites"),
        (with(base(), "suites", json!(["bookworm", "./"])), "suites"),
        (with(base(), "suites", json!([12])), "suites"),
        (with(base(), "components", json!(null)), "components"),
        (
            with(
                with(base(), "suites", json!("dists/x/")),
                "components",
                json!("main"),
            ),
            "components",
        ),
        (with(base(), "types", json!("rpm")), "types"),
        (
            with(base(), "architectures", json!(["ARM64"])),
            "architectures",
        ),
        (with(base(), "signed_by", json!("/x")), "signed_by"),
    ];
    for (spec, key) in cases {
        let e = err(spec.clone());
        assert_eq!(e.key.as_deref(), Some(key), "{spec}: {}", e.message);
    }
}

#[test]
fn the_key_is_required_once_and_must_be_a_public_key() {
    let e = err(with(base(), "key", json!(null)));
    assert_eq!(e.key.as_deref(), Some("key"));
    assert!(e.message.contains("key_content"), "{}", e.message);
    let e = err(with(base(), "key_content", json!(ARMORED)));
    assert!(e.message.contains("not both"), "{}", e.message);
    let e = err(with(base(), "key", json!("missing.asc")));
    assert!(
        e.message.contains("missing.asc") && e.message.contains("does not exist"),
        "{}",
        e.message
    );
    assert!(err(with(base(), "key", json!("pubring.kbx")))
        .message
        .contains("keybox"));
    let private =
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n";
    let e = err(with(
        with(base(), "key", json!(null)),
        "key_content",
        json!(private),
    ));
    assert!(e.message.contains("PRIVATE"), "{}", e.message);
    let e = err(with(
        with(base(), "key", json!(null)),
        "key_content",
        json!("mDMEZm9v"),
    ));
    assert_eq!(e.key.as_deref(), Some("key_content"));
    assert!(e.message.contains("ASCII-armored"), "{}", e.message);
    let unterminated = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmDMEZm9v\n";
    assert!(err(with(
        with(base(), "key", json!(null)),
        "key_content",
        json!(unterminated)
    ))
    .message
    .contains("END PGP"));
    assert!(
        (TYPE.build)(json!({"name": "old", "state": "absent"}), &files()).is_ok(),
        "absent needs no key"
    );
}

fn root() -> (tempfile::TempDir, Host) {
    let d = tempfile::tempdir().unwrap();
    let host = Host::new(d.path());
    (d, host)
}

#[test]
fn converged_when_both_files_match_byte_for_byte() {
    let (d, host) = root();
    let s = source(base());
    let actual = s.read(&host).unwrap();
    let change = s.diff(&actual, &host).unwrap();
    assert_eq!(
        change.summary,
        "create /etc/apt/keyrings/tend-test.asc, create /etc/apt/sources.list.d/tend-test.sources"
    );
    assert!(
        change
            .diff
            .as_deref()
            .unwrap()
            .contains("+Signed-By: /etc/apt/keyrings/tend-test.asc"),
        "{:?}",
        change.diff
    );

    fs::create_dir_all(d.path().join("etc/apt/keyrings")).unwrap();
    fs::create_dir_all(d.path().join("etc/apt/sources.list.d")).unwrap();
    fs::write(d.path().join("etc/apt/keyrings/tend-test.asc"), ARMORED).unwrap();
    fs::write(
        d.path().join("etc/apt/sources.list.d/tend-test.sources"),
        text(&s),
    )
    .unwrap();
    assert!(s.diff(&s.read(&host).unwrap(), &host).is_none());

    let edited = text(&s).replace("main", "main contrib");
    fs::write(
        d.path().join("etc/apt/sources.list.d/tend-test.sources"),
        edited,
    )
    .unwrap();
    let change = s.diff(&s.read(&host).unwrap(), &host).unwrap();
    assert_eq!(
        change.summary,
        "update /etc/apt/sources.list.d/tend-test.sources"
    );
    assert!(change.diff.unwrap().contains("-Components: main contrib"));
}

#[test]
fn a_key_format_change_removes_the_stale_keyring() {
    let (d, host) = root();
    fs::create_dir_all(d.path().join("etc/apt/keyrings")).unwrap();
    fs::write(d.path().join("etc/apt/keyrings/tend-test.gpg"), BINARY).unwrap();
    let s = source(base());
    let change = s.diff(&s.read(&host).unwrap(), &host).unwrap();
    assert!(
        change
            .summary
            .ends_with("remove /etc/apt/keyrings/tend-test.gpg"),
        "{}",
        change.summary
    );
}

#[test]
fn a_source_apt_cannot_use_is_rolled_back() {
    let (d, host) = root();
    let old_sources = "Types: deb\nURIs: http://old.example/debian\nSuites: bookworm\nComponents: main\nSigned-By: /etc/apt/keyrings/tend-test.gpg\n";
    fs::create_dir_all(d.path().join("etc/apt/keyrings")).unwrap();
    fs::create_dir_all(d.path().join("etc/apt/sources.list.d")).unwrap();
    fs::write(d.path().join("etc/apt/keyrings/tend-test.gpg"), BINARY).unwrap();
    fs::write(
        d.path().join("etc/apt/sources.list.d/tend-test.sources"),
        old_sources,
    )
    .unwrap();
    let s = source(base());
    let actual = s.read(&host).unwrap();
    // No apt inside this tempdir root: the update of the new source fails, as a bad key would.
    let e = s.apply(actual, &host).unwrap_err().to_string();
    assert!(e.starts_with("apt cannot use this source: `apt-get update (of /etc/apt/sources.list.d/tend-test.sources only)`"), "{e}");
    assert!(e.ends_with("the previous files were put back"), "{e}");
    assert_eq!(
        fs::read_to_string(d.path().join("etc/apt/sources.list.d/tend-test.sources")).unwrap(),
        old_sources
    );
    assert_eq!(
        fs::read(d.path().join("etc/apt/keyrings/tend-test.gpg")).unwrap(),
        BINARY
    );
    assert!(!d.path().join("etc/apt/keyrings/tend-test.asc").exists());
    assert!(
        !host.flags().apt_sources_changed,
        "the device is back to its previous sources"
    );
}

#[test]
fn absent_removes_both_files_without_apt() {
    let (d, host) = root();
    fs::create_dir_all(d.path().join("etc/apt/keyrings")).unwrap();
    fs::create_dir_all(d.path().join("etc/apt/sources.list.d")).unwrap();
    fs::write(d.path().join("etc/apt/keyrings/old.asc"), ARMORED).unwrap();
    fs::write(
        d.path().join("etc/apt/sources.list.d/old.sources"),
        "Types: deb\n",
    )
    .unwrap();
    let s = source(json!({"name": "old", "state": "absent"}));
    let actual = s.read(&host).unwrap();
    assert_eq!(
        s.diff(&actual, &host).unwrap().summary,
        "remove /etc/apt/sources.list.d/old.sources, remove /etc/apt/keyrings/old.asc"
    );
    assert_eq!(s.apply(actual, &host).unwrap(), Applied::Done);
    assert!(!d.path().join("etc/apt/keyrings/old.asc").exists());
    assert!(!d.path().join("etc/apt/sources.list.d/old.sources").exists());
    assert!(s.diff(&s.read(&host).unwrap(), &host).is_none());
}
