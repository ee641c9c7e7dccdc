//! Secrets in config: `env:NAME`, `file:/path`, or a literal (with a warning).

use std::fmt;

/// Secret bytes. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// How a secret was written in the file.
pub enum Resolved {
    Secret(Secret),
    /// A literal: usable, but it lives in the config file.
    Literal(Secret),
}

/// Resolves a secret reference. The error is a message for the key's error.
pub fn resolve(value: &str) -> Result<Resolved, String> {
    if let Some(name) = value.strip_prefix("env:") {
        return match std::env::var_os(name) {
            Some(v) if !v.is_empty() => Ok(Resolved::Secret(Secret(v.into_encoded_bytes()))),
            Some(_) => Err(format!("environment variable {name} is empty")),
            None => Err(format!("environment variable {name} is not set")),
        };
    }
    if let Some(path) = value.strip_prefix("file:") {
        let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        // Files written by editors and `echo` end in a newline that is not part of the secret.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(format!("{path} is empty"));
        }
        return Ok(Resolved::Secret(Secret(bytes)));
    }
    if value.is_empty() {
        return Err("secret is empty".into());
    }
    Ok(Resolved::Literal(Secret(value.as_bytes().to_vec())))
}
