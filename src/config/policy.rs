//! What porteiro accepts from outside whatever the config says: where keys
//! and metadata may be fetched from, and how small an RSA key may be. The
//! config checks what it is given against these, and so does the code that
//! fetches and loads keys at run time.

use jsonwebtoken::{DecodingKey, DecodingKeyKind};

/// Is this URL allowed for keys and metadata: `https`, or `http` to a
/// loopback address (development and tests)?
pub fn url_allowed(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => match parsed.host() {
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => Ok(()),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            _ => Err(format!("{url:?} must use https (plain http is allowed on loopback only)")),
        },
        _ => Err(format!("{url:?} must use https")),
    }
}

/// The smallest RSA modulus that verifies anything: 1024-bit keys are
/// within reach of a well-funded attacker (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// `Some(bits)` when `key` is an RSA key under [`MIN_RSA_BITS`], `Some(None)`
/// when it is an RSA key whose size cannot be read; `None` otherwise.
pub fn weak_rsa(key: &DecodingKey) -> Option<Option<usize>> {
    if key.family() != jsonwebtoken::AlgorithmFamily::Rsa {
        return None;
    }
    let bits = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => Some(modulus_bits(n)),
        // From a PEM: the PKCS#1 RSAPublicKey.
        DecodingKeyKind::SecretOrDer(der) => openssl::rsa::Rsa::public_key_from_der_pkcs1(der)
            .ok()
            .and_then(|rsa| usize::try_from(rsa.n().num_bits()).ok()),
    };
    bits.is_none_or(|b| b < MIN_RSA_BITS).then_some(bits)
}

/// Significant bits of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    n.first().map_or(0, |first| (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_or_loopback_only() {
        assert!(url_allowed("https://login.example.com/jwks").is_ok());
        assert!(url_allowed("http://127.0.0.1:9000/jwks").is_ok());
        assert!(url_allowed("http://localhost/jwks").is_ok());
        assert!(url_allowed("http://[::1]:80/jwks").is_ok());
        assert!(url_allowed("http://login.example.com/jwks").is_err());
        assert!(url_allowed("http://10.0.0.1/jwks").is_err());
        assert!(url_allowed("file:///etc/passwd").is_err());
    }

    #[test]
    fn modulus_sizes() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0, 1]), 1);
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x7F; 256]), 2047);
        let small = DecodingKey::from_rsa_raw_components(&[0x7F; 256], &[1, 0, 1]);
        assert_eq!(weak_rsa(&small), Some(Some(2047)));
        let fine = DecodingKey::from_rsa_raw_components(&[0x80; 256], &[1, 0, 1]);
        assert_eq!(weak_rsa(&fine), None);
        assert_eq!(weak_rsa(&DecodingKey::from_secret(b"k")), None);
        assert_eq!(weak_rsa(&DecodingKey::from_rsa_der(b"not der")), Some(None));
    }
}
