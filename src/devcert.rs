//! `porteiro dev-cert`: a self-signed certificate for local HTTPS.

use std::path::{Path, PathBuf};

/// Writes `gateway.crt` and `gateway.key` (PEM) into `dir` for the given
/// host names / IP addresses. Returns the two paths.
pub fn write(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let cert =
        rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| format!("cannot make a certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let crt = dir.join("gateway.crt");
    let key = dir.join("gateway.key");
    std::fs::write(&crt, cert.cert.pem()).map_err(|e| format!("cannot write {}: {e}", crt.display()))?;
    write_private(&key, cert.key_pair.serialize_pem().as_bytes())?;
    Ok((crt, key))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
