//! Which device this is. The id picks `devices/<id>.yaml`, so it must be stable and never a path.
//!
//! Order: the command line, the config, the `sub` claim of the Mender device JWT (from the Mender
//! client's D-Bus auth API, cached once known so offline runs keep it), then /etc/machine-id.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tend_roles::child::Finished;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no device id: /etc/machine-id is missing or empty under {root}, Mender gave none, and none is configured; set `device: {{id: …}}` in /etc/tend/tend.yaml or pass --device")]
    Missing { root: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdSource {
    Flag,
    Config,
    Mender,
    MenderCache,
    MachineId,
}

/// Asks the Mender client for its device JWT. None when there is no Mender client, no system bus,
/// or the device is not authorized yet.
pub type MenderLookup<'a> = &'a dyn Fn() -> Option<String>;

pub fn device_id(
    root: &Path,
    flag: Option<&str>,
    configured: Option<&str>,
    mender: MenderLookup,
    cached: Option<&str>,
) -> Result<(String, IdSource), IdentityError> {
    let (id, source) = if let Some(id) = flag {
        (id.to_string(), IdSource::Flag)
    } else if let Some(id) = configured {
        (id.to_string(), IdSource::Config)
    } else if let Some(id) = mender() {
        (id, IdSource::Mender)
    } else if let Some(id) = cached {
        (id.to_string(), IdSource::MenderCache)
    } else {
        let id = std::fs::read_to_string(root.join("etc/machine-id"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::Missing {
                root: root.display().to_string(),
            })?;
        (id, IdSource::MachineId)
    };
    check_device_id(&id).map_err(IdentityError::Invalid)?;
    Ok((id, source))
}

/// The Mender device id over D-Bus: io.mender.Authentication1.GetJwtToken at
/// /io/mender/AuthenticationManager on the system bus (the `mender` daemon in client 3.x,
/// mender-auth in 4.x), through busctl so that the static binary needs no D-Bus library.
pub fn mender_device_id_via_dbus() -> Option<String> {
    let mut cmd = Command::new("busctl");
    cmd.args([
        "--system",
        "--json=short",
        "--timeout=5",
        "call",
        "io.mender.AuthenticationManager",
        "/io/mender/AuthenticationManager",
        "io.mender.Authentication1",
        "GetJwtToken",
    ])
    .stdin(Stdio::null());
    // busctl has its own timeout; this bounds a wedged bus as well.
    let out = match tend_roles::child::run(cmd, Duration::from_secs(8)).ok()? {
        Finished::Exited(out) if out.status.success() => out,
        _ => return None,
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let jwt = v["data"][0].as_str()?;
    jwt_subject(jwt)
}

/// The `sub` claim of a JWT. The signature is not checked: the token comes from the local Mender
/// client over the system bus, and the id only selects which device file to read.
pub fn jwt_subject(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"]
        .as_str()
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Device ids come from machine-id, Mender or config: more characters are allowed, never a path.
pub fn check_device_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "device id '{id}' may only use letters, digits and '-_.:@', and may not start with '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Option<String> {
        None
    }

    #[test]
    fn flag_beats_config_beats_mender_beats_cache_beats_machine_id() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/machine-id"), "0123abcd\n").unwrap();
        let mender = || Some("4f2a-mender".to_string());
        let p = d.path();
        assert_eq!(
            device_id(p, None, None, &none, None).unwrap(),
            ("0123abcd".into(), IdSource::MachineId)
        );
        assert_eq!(
            device_id(p, None, None, &none, Some("cached")).unwrap(),
            ("cached".into(), IdSource::MenderCache)
        );
        assert_eq!(
            device_id(p, None, None, &mender, Some("cached")).unwrap(),
            ("4f2a-mender".into(), IdSource::Mender)
        );
        assert_eq!(
            device_id(p, None, Some("cfg"), &mender, None).unwrap(),
            ("cfg".into(), IdSource::Config)
        );
        assert_eq!(
            device_id(p, Some("flag"), Some("cfg"), &mender, None).unwrap(),
            ("flag".into(), IdSource::Flag)
        );
        assert!(
            device_id(p, Some("../etc"), None, &none, None).is_err(),
            "a path is never an id"
        );
    }

    #[test]
    fn missing_machine_id_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = device_id(d.path(), None, None, &none, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("machine-id") && e.contains("--device"), "{e}");
    }

    #[test]
    fn jwt_subject_is_read_from_the_payload() {
        // {"sub":"0c5b5d9c-8d2b-4b1e-9d57-3a5a1d2f6e7a","mender.device":true}
        let payload = "eyJzdWIiOiIwYzViNWQ5Yy04ZDJiLTRiMWUtOWQ1Ny0zYTVhMWQyZjZlN2EiLCJtZW5kZXIuZGV2aWNlIjp0cnVlfQ";
        let jwt = format!("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.c2ln");
        assert_eq!(
            jwt_subject(&jwt).as_deref(),
            Some("0c5b5d9c-8d2b-4b1e-9d57-3a5a1d2f6e7a")
        );
        assert_eq!(jwt_subject("not a jwt"), None);
    }
}
