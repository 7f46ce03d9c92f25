//! The two cryptographic checks of the device API: an auth request's `X-MEN-Signature`, and the
//! JWT the double hands out and later accepts.
//!
//! The signature check follows Mender's deviceauth (`VerifyAuthReqSign`): the header is the
//! standard base64 of a signature over the exact request body, made with the private half of the
//! `pubkey` the body carries (PEM "PUBLIC KEY", i.e. SubjectPublicKeyInfo). RSA keys sign with
//! PKCS#1 v1.5 over SHA-256, ECDSA keys sign the SHA-256 digest (ASN.1 DER `r, s`), Ed25519 keys
//! sign the body itself. Checking it for real is what proves the client's key handling, so a
//! double that accepted any header would prove nothing.
//!
//! The JWT is HS256 with a per-server secret: well-formed (header, claims, MAC), verifiable by the
//! double, and opaque to the device, as Mender's RS256 tokens are. tend only reads its `sub`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

/// The kind of device key an auth request was signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

/// Verifies `signature_b64` over `body` with the PEM public key `pubkey_pem`; returns the key
/// kind, or why the request must be refused.
pub fn verify_auth_request(
    pubkey_pem: &str,
    body: &[u8],
    signature_b64: &str,
) -> Result<KeyKind, String> {
    let der = public_key_der(pubkey_pem)?;
    let sig = STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| format!("X-MEN-Signature is not base64: {e}"))?;
    let digest = Sha256::digest(body);
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&der) {
        let scheme = rsa::Pkcs1v15Sign::new::<Sha256>();
        key.verify(scheme, &digest, &sig)
            .map_err(|e| format!("RSA signature verification failed: {e}"))?;
        return Ok(KeyKind::Rsa {
            bits: key.size() * 8,
        });
    }
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
        let sig = p256::ecdsa::Signature::from_der(&sig)
            .map_err(|e| format!("ECDSA signature is not DER: {e}"))?;
        key.verify_prehash(&digest, &sig)
            .map_err(|e| format!("ECDSA P-256 signature verification failed: {e}"))?;
        return Ok(KeyKind::EcdsaP256);
    }
    if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
        let sig = p384::ecdsa::Signature::from_der(&sig)
            .map_err(|e| format!("ECDSA signature is not DER: {e}"))?;
        key.verify_prehash(&digest, &sig)
            .map_err(|e| format!("ECDSA P-384 signature verification failed: {e}"))?;
        return Ok(KeyKind::EcdsaP384);
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
        let sig = ed25519_dalek::Signature::from_slice(&sig)
            .map_err(|e| format!("Ed25519 signature has the wrong length: {e}"))?;
        key.verify(body, &sig)
            .map_err(|e| format!("Ed25519 signature verification failed: {e}"))?;
        return Ok(KeyKind::Ed25519);
    }
    Err("unsupported public key type (RSA, ECDSA P-256/P-384 and Ed25519 are)".into())
}

/// The DER inside a PEM "PUBLIC KEY" block (deviceauth refuses any other block type).
fn public_key_der(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem
        .find(BEGIN)
        .ok_or("pubkey is not a PEM \"PUBLIC KEY\" block")?
        + BEGIN.len();
    let len = pem[start..].find(END).ok_or("pubkey PEM has no END line")?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|e| format!("pubkey PEM body is not base64: {e}"))
}

/// Who a token is for: Mender marks device tokens and user tokens with different claims.
#[derive(Clone, Copy)]
enum Kind {
    Device,
    User,
}

impl Kind {
    fn claim(self) -> &'static str {
        match self {
            Kind::Device => "mender.device",
            Kind::User => "mender.user",
        }
    }
}

/// Issues and checks HS256 JWTs.
pub struct Jwt {
    secret: [u8; 32],
}

impl Jwt {
    pub fn new(secret: [u8; 32]) -> Jwt {
        Jwt { secret }
    }

    /// A token for `device_id`, valid for a day, with the claims Mender's deviceauth sets.
    pub fn issue(&self, device_id: &str, jti: &str, now: u64) -> String {
        self.sign(Kind::Device, device_id, jti, now, 86_400)
    }

    /// A personal access token for the user `user_id`, valid for `ttl` seconds: a JWT as
    /// Mender's useradm issues it (`mender.user: true`, no `mender.device`).
    pub fn issue_user(&self, user_id: &str, jti: &str, now: u64, ttl: u64) -> String {
        self.sign(Kind::User, user_id, jti, now, ttl)
    }

    fn sign(&self, kind: Kind, sub: &str, jti: &str, now: u64, ttl: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let mut claims = serde_json::json!({
            "jti": jti,
            "sub": sub,
            "iss": "Mender",
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        });
        claims[kind.claim()] = serde_json::Value::Bool(true);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let mac = URL_SAFE_NO_PAD.encode(self.mac(signing_input.as_bytes()));
        format!("{signing_input}.{mac}")
    }

    /// The `sub` of a device token this issuer signed that has not expired at `now`.
    pub fn subject(&self, token: &str, now: u64) -> Option<String> {
        self.verified(token, now, Kind::Device)
    }

    /// The `sub` of a user token (a personal access token) this issuer signed, unexpired.
    pub fn user_subject(&self, token: &str, now: u64) -> Option<String> {
        self.verified(token, now, Kind::User)
    }

    fn verified(&self, token: &str, now: u64, kind: Kind) -> Option<String> {
        let (signing_input, mac) = token.rsplit_once('.')?;
        if URL_SAFE_NO_PAD.decode(mac).ok()? != self.mac(signing_input.as_bytes()) {
            return None;
        }
        let claims = URL_SAFE_NO_PAD
            .decode(signing_input.split('.').nth(1)?)
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
        if claims["exp"].as_u64()? <= now || claims[kind.claim()] != true {
            return None;
        }
        claims["sub"].as_str().map(str::to_string)
    }

    /// HMAC-SHA256 (RFC 2104), small enough to write out rather than add a crate for.
    fn mac(&self, message: &[u8]) -> Vec<u8> {
        const BLOCK: usize = 64;
        let mut key = [0u8; BLOCK];
        key[..self.secret.len()].copy_from_slice(&self.secret);
        let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Generates a key with the host's openssl (as Mender's client does, through libssl) and
    /// signs `body` the way the client does for that key type.
    fn openssl_signed(dir: &Path, genkey: &[&str], raw: bool, body: &[u8]) -> (String, String) {
        let key = dir.join("key.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let key_s = key.to_str().unwrap();
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genkey);
        args.extend(["-out", key_s]);
        run(&args);
        let pubkey = String::from_utf8(run(&["pkey", "-in", key_s, "-pubout"])).unwrap();
        let body_path = dir.join("body");
        std::fs::write(&body_path, body).unwrap();
        let body_s = body_path.to_str().unwrap();
        let sig = if raw {
            run(&["pkeyutl", "-sign", "-rawin", "-inkey", key_s, "-in", body_s])
        } else {
            run(&["dgst", "-sha256", "-sign", key_s, body_s])
        };
        (pubkey, STANDARD.encode(sig))
    }

    const BODY: &[u8] = br#"{"id_data":"{\"mac\":\"02:00:00:7e:4d:01\"}","pubkey":"..."}"#;

    #[test]
    fn rsa_ecdsa_and_ed25519_signatures_are_checked_as_deviceauth_does() {
        let d = tempfile::tempdir().unwrap();
        let cases: [(&[&str], bool, KeyKind); 4] = [
            (
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                false,
                KeyKind::Rsa { bits: 2048 },
            ),
            (
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                false,
                KeyKind::EcdsaP256,
            ),
            (
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
                false,
                KeyKind::EcdsaP384,
            ),
            (&["-algorithm", "ED25519"], true, KeyKind::Ed25519),
        ];
        for (genkey, raw, kind) in cases {
            let (pubkey, sig) = openssl_signed(d.path(), genkey, raw, BODY);
            assert_eq!(verify_auth_request(&pubkey, BODY, &sig), Ok(kind));
            let mut tampered = BODY.to_vec();
            tampered[10] ^= 1;
            assert!(
                verify_auth_request(&pubkey, &tampered, &sig).is_err(),
                "{kind:?}: a changed body must not verify"
            );
        }
    }

    #[test]
    fn a_signature_by_another_key_or_garbage_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let (pubkey, _) = openssl_signed(d.path(), &ec, false, BODY);
        let (_, other_sig) = openssl_signed(d.path(), &ec, false, BODY);
        assert!(verify_auth_request(&pubkey, BODY, &other_sig).is_err());
        assert!(verify_auth_request(&pubkey, BODY, "not base64!").is_err());
        assert!(verify_auth_request("-----BEGIN RSA PUBLIC KEY-----", BODY, "AA==").is_err());
    }

    #[test]
    fn tokens_verify_only_with_their_secret_and_until_they_expire() {
        let jwt = Jwt::new([7; 32]);
        let token = jwt.issue("5f1e-device", "jti-1", 1_000);
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(jwt.subject(&token, 1_001).as_deref(), Some("5f1e-device"));
        assert_eq!(jwt.subject(&token, 1_000 + 86_400), None, "expired");
        assert_eq!(Jwt::new([8; 32]).subject(&token, 1_001), None, "other key");
        let forged = token.replacen('.', ".e30.", 1);
        assert_eq!(jwt.subject(&forged, 1_001), None);
        // A device token is no personal access token, and the other way round.
        assert_eq!(jwt.user_subject(&token, 1_001), None);
        let pat = jwt.issue_user("ops", "jti-2", 1_000, 60);
        assert_eq!(jwt.user_subject(&pat, 1_001).as_deref(), Some("ops"));
        assert_eq!(jwt.subject(&pat, 1_001), None);
        assert_eq!(jwt.user_subject(&pat, 1_060), None, "expired");
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // Key "Jefe" padded with zeros is the same HMAC key as "Jefe" (keys shorter than a
        // block are zero-padded), so the 32-byte secret form reproduces the RFC vector.
        let mut secret = [0u8; 32];
        secret[..4].copy_from_slice(b"Jefe");
        let mac = Jwt::new(secret).mac(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
