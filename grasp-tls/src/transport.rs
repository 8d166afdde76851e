//! The TLS [`AcpTransport`]: the plain ACP's sockets with mutual TLS on
//! every TCP connection ([`TlsLayer`]) and signed multicasts
//! ([`Multicast`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use grasp_engine::transport::{
    AcpError, AcpTransport, Channel, Inbound, InboundStream, Interface, Security, TransportStats,
};
use grasp_engine::wire::Locator;
use tracing::{debug, info};

use crate::multicast::{McStats, Multicast};
use crate::unicast::TlsLayer;
use crate::{CertError, NodeIdentity};

/// Room for the multicast envelope (certificate, signature, header).
pub const MULTICAST_OVERHEAD: usize = 2048;

/// GRASP over mutual TLS (unicast) and signed multicast.
pub struct TlsTransport {
    inner: Arc<grasp_acp::plain::Transport>,
    layer: Arc<TlsLayer>,
    multicast: Arc<Multicast>,
    name: std::sync::RwLock<String>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// Errors binding the TLS transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The certificates or key.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The sockets.
    #[error(transparent)]
    Acp(#[from] grasp_acp::Error),
}

/// Binds the plain ACP's sockets with TLS for `identity`.
pub async fn bind_plain(
    config: grasp_acp::plain::Config,
    identity: &NodeIdentity,
) -> Result<(Arc<TlsTransport>, InboundStream), BindError> {
    let layer = Arc::new(TlsLayer::new(identity)?);
    let multicast = Arc::new(Multicast::new(identity)?);
    let max = config.max_message_size + MULTICAST_OVERHEAD;
    let (inner, inbound) = grasp_acp::plain::bind(
        config
            .layer(layer.clone() as Arc<dyn grasp_acp::stream::StreamLayer>)
            .max_message_size(max),
    )
    .await?;
    info!(node = %identity.name, "TLS transport up (mutual TLS 1.3, signed multicast)");
    let mc = multicast.clone();
    let inbound = inbound
        .filter_map(move |i| {
            let out = match i {
                Inbound::Datagram(mut d) => match mc.verify(SystemTime::now(), &d.msg) {
                    Ok(m) => {
                        d.msg = Bytes::from(m);
                        Some(Inbound::Datagram(d))
                    }
                    Err(reason) => {
                        debug!(%reason, src = %d.src, "multicast dropped");
                        None
                    }
                },
                other => Some(other),
            };
            futures::future::ready(out)
        })
        .boxed();
    Ok((
        Arc::new(TlsTransport {
            inner,
            layer,
            multicast,
            name: std::sync::RwLock::new(identity.name.clone()),
        }),
        inbound,
    ))
}

impl TlsTransport {
    /// This node's name (from its certificate).
    pub fn name(&self) -> String {
        self.name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses a renewed identity from now on: new TLS handshakes present it
    /// and multicasts are signed with it; open sessions carry on.
    pub fn reload(&self, identity: &NodeIdentity) -> Result<(), CertError> {
        self.layer.reload(identity)?;
        self.multicast.reload(identity)?;
        *self.name.write().unwrap_or_else(|e| e.into_inner()) = identity.name.clone();
        info!(node = %identity.name, "TLS identity reloaded");
        Ok(())
    }

    /// Reloads from the files whenever one of them changes (checked every
    /// `every`); a change that does not load is logged and the old identity
    /// kept. A daemon can also call [`reload`](Self::reload) on SIGHUP. The
    /// task ends when the transport is dropped.
    pub fn watch_files(
        self: &Arc<Self>,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        anchors: std::path::PathBuf,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let (cert2, key2, anchors2) = (cert.clone(), key.clone(), anchors.clone());
        let stamp = move || {
            [&cert, &key, &anchors].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        };
        tokio::spawn(async move {
            let mut last = stamp();
            loop {
                tokio::time::sleep(every).await;
                let Some(t) = weak.upgrade() else { return };
                let now = stamp();
                if now == last {
                    continue;
                }
                last = now;
                match NodeIdentity::load(&cert2, &key2, &anchors2) {
                    Ok(id) => {
                        if let Err(e) = t.reload(&id) {
                            tracing::warn!(error = %e, "renewed identity not usable; keeping the old one");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewed identity does not load; keeping the old one")
                    }
                }
            }
        })
    }

    /// The signed-multicast counters.
    pub fn multicast_stats(&self) -> McStats {
        self.multicast.stats()
    }
}

impl AcpTransport for TlsTransport {
    fn security(&self) -> Security {
        Security::Tls
    }

    fn interfaces(&self) -> Vec<Interface> {
        self.inner.interfaces()
    }

    fn node_locator(&self) -> Locator {
        self.inner.node_locator()
    }

    fn max_message_size(&self) -> usize {
        self.inner
            .max_message_size()
            .saturating_sub(MULTICAST_OVERHEAD)
    }

    fn send_multicast(&self, ifindex: u32, msg: Bytes) -> BoxFuture<'_, Result<(), AcpError>> {
        match self.multicast.sign(SystemTime::now(), &msg) {
            Ok(signed) => self.inner.send_multicast(ifindex, Bytes::from(signed)),
            Err(e) => futures::future::ready(Err(AcpError::Auth(format!("signing: {e}")))).boxed(),
        }
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'_, Result<Channel, AcpError>> {
        self.inner.connect(peer)
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.inner.stats();
        let m = self.multicast.stats();
        let dropped: u64 = m.dropped.iter().sum();
        s.multicast_received = s.multicast_received.saturating_sub(dropped);
        s.multicast_dropped_other += dropped;
        s
    }
}
