//! HTTP/1.1 upgrades (WebSocket): the proxy has the upstream's connection
//! once it answers `101`, the listener has the client's once that `101` is
//! written. An [`UpgradeSlot`] in the request's extensions carries the
//! first to the second, which then runs the [`tunnel`].

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::proxy::upstream::Upgraded;

/// Where the proxy leaves the upstream side of an upgraded connection.
#[derive(Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<Upgraded>>>);

impl UpgradeSlot {
    pub(crate) fn fill(&self, upstream: Upgraded) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(upstream);
    }

    /// The upstream side, when the answer was `101`.
    pub fn take(&self) -> Option<Upgraded> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Copies bytes both ways between an upgraded client and upstream.
pub async fn tunnel<C: AsyncRead + AsyncWrite + Unpin>(mut client: C, mut upstream: Upgraded) {
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended");
    }
}

/// Reads into `buf` from `prefix`, bytes received before the socket was
/// handed over (they come first). `false`: the prefix is used up, read the
/// socket.
pub fn read_prefix(prefix: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if prefix.is_empty() {
        return false;
    }
    let n = prefix.len().min(buf.remaining());
    buf.put_slice(&prefix[..n]);
    prefix.advance(n);
    true
}
