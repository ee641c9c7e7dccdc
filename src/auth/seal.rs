//! Authenticated encryption of porteiro's own tokens (session cookies, login
//! state): XChaCha20-Poly1305 with keys derived by HKDF-SHA256 from
//! `session.secret`, one distinct info string per purpose so a value sealed
//! for one purpose never opens as another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::config::Secret;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// What a sealed value is for; each purpose has its own key.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    Session,
    LoginState,
    /// A refresh token (and a refresh's result) kept in the store.
    RefreshToken,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"porteiro/v1/session-cookie",
            Purpose::LoginState => b"porteiro/v1/login-state",
            Purpose::RefreshToken => b"porteiro/v1/refresh-token",
        }
    }
}

/// Seals with the current secret; opens with the current or any previous one.
pub struct Sealer {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(current: &Secret, previous: &[Secret], purpose: Purpose) -> Sealer {
        let ciphers = std::iter::once(current)
            .chain(previous)
            .map(|secret| {
                let mut key = [0u8; 32];
                // HKDF-Expand cannot fail for a 32-byte output.
                let _ = Hkdf::<Sha256>::new(Some(b"porteiro"), secret.expose()).expand(purpose.info(), &mut key);
                XChaCha20Poly1305::new(&key.into())
            })
            .collect();
        Sealer { ciphers }
    }

    /// Encrypts `plaintext`, binding it to `aad` (e.g. the cookie name).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<String> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let cipher = self.ciphers.first()?;
        let ciphertext = cipher.encrypt(nonce, Payload { msg: plaintext, aad }).ok()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts a sealed value; `None` for anything tampered, truncated,
    /// sealed with an unknown key or for another `aad`.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < 1 + NONCE_LEN + 16 || raw[0] != VERSION {
            return None;
        }
        let nonce = XNonce::from_slice(&raw[1..1 + NONCE_LEN]);
        let msg = &raw[1 + NONCE_LEN..];
        self.ciphers.iter().find_map(|c| c.decrypt(nonce, Payload { msg, aad }).ok())
    }
}

/// A random, URL-safe identifier with `bytes` of entropy.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(c: u8) -> Secret {
        Secret::new(vec![c; 32])
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = Sealer::new(&secret(1), &[], Purpose::Session);
        let sealed = old.seal(b"c", b"hello").unwrap();
        assert_eq!(old.open(b"c", &sealed).as_deref(), Some(&b"hello"[..]));
        let rotated = Sealer::new(&secret(2), &[secret(1)], Purpose::Session);
        assert_eq!(rotated.open(b"c", &sealed).as_deref(), Some(&b"hello"[..]));
        let forgotten = Sealer::new(&secret(2), &[], Purpose::Session);
        assert_eq!(forgotten.open(b"c", &sealed), None);
    }

    #[test]
    fn tampering_purpose_and_aad_are_refused() {
        let s = Sealer::new(&secret(1), &[], Purpose::Session);
        let sealed = s.seal(b"c", b"hello").unwrap();
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(b"c", std::str::from_utf8(&bytes).unwrap()), None);
        assert_eq!(s.open(b"c", &sealed[..sealed.len() - 4]), None);
        assert_eq!(s.open(b"other", &sealed), None);
        let state = Sealer::new(&secret(1), &[], Purpose::LoginState);
        assert_eq!(state.open(b"c", &sealed), None);
        assert_eq!(s.open(b"c", "not base64!"), None);
    }

    #[test]
    fn ids_are_unique_and_sized() {
        let a = random_id(16);
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_id(16));
    }
}
