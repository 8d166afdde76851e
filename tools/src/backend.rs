//! The one place a node's backend is built from its settings, for graspd,
//! the lab, the bench and the tests: [`bind`] stacks the chosen backend
//! on a base (the plain ACP's sockets or a fabric node) with
//! [`grasp_acp::secure::bind`]; each backend sizes its own overhead.

use std::sync::Arc;

use grasp_acp::secure::Base;
use grasp_engine::transport::{AcpTransport, InboundStream, Security};

/// A backend and its settings.
pub enum Spec {
    /// No security: the base alone (labs, DULL).
    None,
    /// QUADS under these keys.
    #[cfg(feature = "quads")]
    Quads(Box<grasp_quads::KeyRing>),
    /// graspy's legacy QUADS under this key (graspy interop only).
    #[cfg(feature = "quads")]
    LegacyQuads(grasp_quads::legacy::LegacyKey),
    /// TLS with this identity.
    #[cfg(feature = "tls")]
    Tls(Box<grasp_tls::NodeIdentity>),
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and key ids only, never key material.
        match self {
            Spec::None => f.write_str("Spec::None"),
            #[cfg(feature = "quads")]
            Spec::Quads(r) => write!(f, "Spec::Quads({:?})", r.ids()),
            #[cfg(feature = "quads")]
            Spec::LegacyQuads(k) => write!(f, "Spec::LegacyQuads({})", k.fingerprint()),
            #[cfg(feature = "tls")]
            Spec::Tls(id) => write!(f, "Spec::Tls({})", id.name),
        }
    }
}

impl Spec {
    /// The security the engine will see.
    pub fn security(&self) -> Security {
        match self {
            Spec::None => Security::None,
            #[cfg(feature = "quads")]
            Spec::Quads(_) | Spec::LegacyQuads(_) => Security::Quads,
            #[cfg(feature = "tls")]
            Spec::Tls(_) => Security::Tls,
        }
    }
}

/// A backend's own controls, kept beside the engine's view of it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Control {
    /// No security.
    Plain,
    /// QUADS (key changes, counters).
    #[cfg(feature = "quads")]
    Quads(Arc<grasp_quads::Transport>),
    /// Legacy QUADS.
    #[cfg(feature = "quads")]
    Legacy(Arc<grasp_quads::legacy::Transport>),
    /// TLS (reloads, counters).
    #[cfg(feature = "tls")]
    Tls(Arc<grasp_tls::Transport>),
}

/// A bound backend.
pub struct Bound {
    /// What the engine runs on.
    pub transport: Arc<dyn AcpTransport>,
    /// What arrives from the network.
    pub inbound: InboundStream,
    /// The backend's own controls.
    pub control: Control,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// Why a backend could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The sockets or the fabric node.
    #[error(transparent)]
    Base(#[from] grasp_acp::Error),
    /// The TLS identity cannot be used.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Cert(#[from] grasp_tls::CertError),
}

/// Stacks the backend `spec` names on `base`.
pub async fn bind(base: impl Into<Base>, spec: Spec) -> Result<Bound, BindError> {
    let base = base.into();
    Ok(match spec {
        Spec::None => {
            let (transport, inbound) = base.bind().await?;
            Bound {
                transport,
                inbound,
                control: Control::Plain,
            }
        }
        #[cfg(feature = "quads")]
        Spec::Quads(ring) => {
            let b = grasp_quads::Backend::new(*ring, grasp_quads::Config::default());
            let (t, inbound) = grasp_acp::secure::bind(base, b).await?;
            Bound {
                transport: t.clone(),
                inbound,
                control: Control::Quads(t),
            }
        }
        #[cfg(feature = "quads")]
        Spec::LegacyQuads(key) => {
            let (t, inbound) =
                grasp_acp::secure::bind(base, grasp_quads::legacy::Backend::new(key)).await?;
            Bound {
                transport: t.clone(),
                inbound,
                control: Control::Legacy(t),
            }
        }
        #[cfg(feature = "tls")]
        Spec::Tls(identity) => {
            let b = grasp_tls::Backend::new(&identity, grasp_tls::Config::default())?;
            let (t, inbound) = grasp_acp::secure::bind(base, b).await?;
            Bound {
                transport: t.clone(),
                inbound,
                control: Control::Tls(t),
            }
        }
    })
}
