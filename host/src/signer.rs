//! Signed slices: the host signs every principal slice with an Ed25519 key, so a browser
//! or an edge function that loads one (`loadSlice` in the JS package) can tell it came
//! from this host, unchanged, for the principal it expects, and not past its expiry.
//!
//! A signed slice is `{"slice": <text>, "alg": "EdDSA", "key_id", "signature"}`: `slice`
//! is the slice as JSON text (principal, account, revision, policy hash, `issued` and
//! `expires` in Unix seconds, policy and facts) and `signature` the Ed25519 signature,
//! base64url without padding, of the UTF-8 bytes of [`DOMAIN`] followed by that text.
//! The public keys are served as a JWKS at `GET /v1/slice-keys`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use serde_json::{Value, json};
use std::path::Path;

/// What every signed message starts with, so a slice signature can mean nothing else;
/// its version is the slice format's. Version 2 carries relations read only through
/// `count(...)` as numbers (the facts' `counts`), which a reader of version 1 would take
/// for no subjects at all: it refuses the signature rather than decide on them.
pub const DOMAIN: &str = "clearance.slice.v2\n";

/// The host's slice-signing key.
pub struct SliceSigner {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl std::fmt::Debug for SliceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

fn key_id(key: &ed25519_dalek::SigningKey) -> String {
    let digest = crate::runtime::sha256_hex(key.verifying_key().as_bytes());
    format!("slice-{}", digest.get(..16).unwrap_or(&digest))
}

impl SliceSigner {
    /// A signer with a fresh key, for a host configured with none: its public half is
    /// served at `GET /v1/slice-keys`, and slices signed before a restart no longer
    /// verify.
    pub fn generate() -> Result<SliceSigner, String> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| format!("no randomness from the system: {e}"))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        Ok(SliceSigner {
            kid: key_id(&key),
            key,
        })
    }

    /// The key in a PKCS#8 DER file (as `openssl genpkey -algorithm ed25519 -outform DER`
    /// writes it).
    pub fn from_file(path: &Path) -> Result<SliceSigner, String> {
        let der = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der).map_err(|e| {
            format!(
                "{}: not an Ed25519 private key in PKCS#8 DER: {e}",
                path.display()
            )
        })?;
        Ok(SliceSigner {
            kid: key_id(&key),
            key,
        })
    }

    /// The key's id, named in every signed slice.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS.
    pub fn jwks(&self) -> Value {
        let x = URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes());
        json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig" }] })
    }

    /// The signed envelope of a slice given as JSON text.
    pub fn sign(&self, slice: String) -> Value {
        let mut message = Vec::with_capacity(DOMAIN.len() + slice.len());
        message.extend_from_slice(DOMAIN.as_bytes());
        message.extend_from_slice(slice.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(&message).to_bytes());
        json!({ "slice": slice, "alg": "EdDSA", "key_id": self.kid, "signature": signature })
    }

    /// Whether `signature` (base64url) signs `slice` under this key: for tests and for
    /// tools that check a slice they were given.
    pub fn verify(&self, slice: &str, signature: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        let mut message = DOMAIN.as_bytes().to_vec();
        message.extend_from_slice(slice.as_bytes());
        self.key
            .verifying_key()
            .verify_strict(&message, &sig)
            .is_ok()
    }
}
