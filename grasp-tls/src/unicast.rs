//! Unicast: mutual TLS 1.3 over the base's connections (TCP, or a fabric
//! pipe), as a [`StreamLayer`].
//!
//! Both ends present a certificate chain that must lead to one of the
//! domain's trust anchors and carry both TLS usages; the peer's identity is
//! the first DNS name of its certificate. The client side does not check
//! the server's name against the address it dialled (GRASP peers are found
//! by discovery, by address): membership of the domain is what is checked.
//! Sessions resume (TLS 1.3 tickets, kept per peer address) so repeated
//! sessions to one peer skip the full handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::FutureExt;
use grasp_acp::stream::{AsyncIo, LayeredIo, StreamLayer};
use grasp_engine::transport::AcpError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::FromDer;

use crate::certs::{verify_chain, NodeIdentity};
use crate::CertError;

/// ring, with TLS 1.3 suites whose hash is SHA-256 first (SHA-384 costs
/// more where SHA-512 has no hardware help, and this is paid on every
/// handshake).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    p.kx_groups = vec![
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    Arc::new(p)
}

/// Checks the server's chain against the domain anchors (not its name).
#[derive(Debug)]
struct DomainServerVerifier {
    anchors: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DomainServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs());
        verify_chain(&chain, &self.anchors, t).map_err(|why| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(CertError::Untrusted {
                    path: "peer".into(),
                    why,
                }),
            )))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS layer: mutual TLS 1.3 on every GRASP TCP connection.
#[derive(Clone)]
pub struct Layer {
    configs: Arc<std::sync::RwLock<Configs>>,
}

#[derive(Clone)]
struct Configs {
    server: tokio_rustls::TlsAcceptor,
    client: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer").finish_non_exhaustive()
    }
}

/// The name of the first DNS SAN of a peer's leaf certificate.
fn peer_name(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certs?.first()?;
    let (_, c) = x509_parser::prelude::X509Certificate::from_der(leaf).ok()?;
    crate::certs::dns_name(&c)
}

impl Layer {
    /// TLS 1.3 configurations for `identity` (ring provider, explicitly).
    pub fn new(identity: &NodeIdentity) -> Result<Self, CertError> {
        Ok(Layer {
            configs: Arc::new(std::sync::RwLock::new(Self::configs(identity)?)),
        })
    }

    /// Uses `identity` for every handshake from now on (a renewed
    /// certificate); sessions already up are not disturbed.
    pub fn reload(&self, identity: &NodeIdentity) -> Result<(), CertError> {
        let c = Self::configs(identity)?;
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = c;
        Ok(())
    }

    fn current(&self) -> Configs {
        self.configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn configs(identity: &NodeIdentity) -> Result<Configs, CertError> {
        let provider = provider();
        let tls_err = |e: rustls::Error| CertError::BadKey(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for a in &identity.anchors {
            roots
                .add(a.clone())
                .map_err(|e| CertError::Generate(format!("trust anchor: {e}")))?;
        }
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| CertError::Generate(format!("client verifier: {e}")))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(tls_err)?;
        // Stateless resumption tickets.
        server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(tls_err)?;
        server.send_tls13_tickets = 1;
        server.alpn_protocols = vec![crate::mux::ALPN.to_vec()];
        let verifier = Arc::new(DomainServerVerifier {
            anchors: identity.anchors.clone(),
            provider: provider.clone(),
        });
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(tls_err)?;
        client.alpn_protocols = vec![crate::mux::ALPN.to_vec()];
        Ok(Configs {
            server: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            client: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

fn tls_failed(peer: SocketAddr, e: std::io::Error) -> AcpError {
    AcpError::Auth(format!("TLS with {peer}: {e}"))
}

/// After either side's handshake: both ends must speak this backend's
/// framing ([`crate::mux`]); the peer's identity is its certificate name.
fn established(peer: SocketAddr, conn: &rustls::CommonState) -> Result<Option<String>, AcpError> {
    if conn.alpn_protocol() == Some(crate::mux::ALPN) {
        return Ok(peer_name(conn.peer_certificates()));
    }
    Err(AcpError::Auth(format!(
        "TLS with {peer}: the peer does not speak {} (another GRASP TLS mapping or version)",
        String::from_utf8_lossy(crate::mux::ALPN)
    )))
}

impl StreamLayer for Layer {
    /// The server side of a handshake over the base's bytes (TCP or a
    /// fabric pipe).
    fn accept(
        &self,
        io: Box<dyn AsyncIo>,
        peer: SocketAddr,
    ) -> BoxFuture<'static, Result<LayeredIo, AcpError>> {
        let acceptor = self.current().server;
        async move {
            let tls = acceptor.accept(io).await.map_err(|e| tls_failed(peer, e))?;
            let identity = established(peer, tls.get_ref().1)?;
            Ok(LayeredIo {
                io: Box::new(tls),
                identity,
            })
        }
        .boxed()
    }

    /// The client side of a handshake over the base's bytes.
    fn connect(
        &self,
        io: Box<dyn AsyncIo>,
        peer: SocketAddr,
    ) -> BoxFuture<'static, Result<LayeredIo, AcpError>> {
        let connector = self.current().client;
        async move {
            // Tickets are kept per server name: the peer's address.
            let name = ServerName::IpAddress(peer.ip().into());
            let tls = connector
                .connect(name, io)
                .await
                .map_err(|e| tls_failed(peer, e))?;
            let identity = established(peer, tls.get_ref().1)?;
            Ok(LayeredIo {
                io: Box::new(tls),
                identity,
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{issue_node, new_ca};
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn identity(ca: &str, ca_key: &str, node: &str) -> NodeIdentity {
        let (cert, key) = issue_node(ca, ca_key, node, 10).unwrap();
        NodeIdentity::from_pem(&cert, &key, ca, SystemTime::now()).unwrap()
    }

    async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
        let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn mutual_tls_with_identities_and_resumption() {
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let server = Layer::new(&identity(&ca, &ca_key, "server.lab")).unwrap();
        let client = Layer::new(&identity(&ca, &ca_key, "client.lab")).unwrap();
        let (l, addr) = listener().await;
        let srv = tokio::spawn(async move {
            let mut kinds = Vec::new();
            for _ in 0..2 {
                let (tcp, peer) = l.accept().await.unwrap();
                let tls = server.current().server.accept(tcp).await.unwrap();
                kinds.push(tls.get_ref().1.handshake_kind());
                assert_eq!(
                    peer_name(tls.get_ref().1.peer_certificates()).as_deref(),
                    Some("client.lab")
                );
                assert_eq!(peer.ip(), addr.ip());
                let mut tls = tls;
                let mut b = [0u8; 5];
                tls.read_exact(&mut b).await.unwrap();
                tls.write_all(&b).await.unwrap();
                tls.flush().await.unwrap();
            }
            kinds
        });
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let l = client.connect(Box::new(tcp), addr).await.unwrap();
            assert_eq!(l.identity.as_deref(), Some("server.lab"));
            let mut io = l.io;
            io.write_all(b"hello").await.unwrap();
            io.flush().await.unwrap();
            let mut b = [0u8; 5];
            io.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"hello");
        }
        let kinds = srv.await.unwrap();
        assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
        assert_eq!(kinds[1], Some(rustls::HandshakeKind::Resumed), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_reloaded_identity_is_used_for_new_handshakes() {
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let server = Layer::new(&identity(&ca, &ca_key, "old.lab")).unwrap();
        let client = Layer::new(&identity(&ca, &ca_key, "client.lab")).unwrap();
        let (l, addr) = listener().await;
        let s2 = server.clone();
        let srv = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, peer) = l.accept().await.unwrap();
                let s3 = s2.clone();
                tokio::spawn(async move {
                    let mut io = s3.accept(Box::new(tcp), peer).await.unwrap().io;
                    let mut b = [0u8; 1];
                    let _ = io.read(&mut b).await;
                });
            }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let first = client.connect(Box::new(tcp), addr).await.unwrap();
        assert_eq!(first.identity.as_deref(), Some("old.lab"));
        server.reload(&identity(&ca, &ca_key, "new.lab")).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let second = client.connect(Box::new(tcp), addr).await.unwrap();
        assert_eq!(second.identity.as_deref(), Some("new.lab"));
        drop((first, second));
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_certificate_is_refused() {
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let server = Layer::new(&identity(&ca, &ca_key, "server.lab")).unwrap();
        // An identity that was valid last year (loaded with last year's
        // clock, as a node whose certificate lapsed while running).
        let (cert, key) = crate::certs::issue_node_with(&ca, &ca_key, "old.lab", |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
        .unwrap();
        let then = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_593_561_600); // 2020-07-01
        let old = NodeIdentity::from_pem(&cert, &key, &ca, then).unwrap();
        let client = Layer::new(&old).unwrap();
        let (l, addr) = listener().await;
        let srv = tokio::spawn(async move {
            let (tcp, peer) = l.accept().await.unwrap();
            server.accept(Box::new(tcp), peer).await.is_ok()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        if let Ok(l) = client.connect(Box::new(tcp), addr).await {
            let mut io = l.io;
            let mut b = [0u8; 1];
            assert!(io.read(&mut b).await.map(|n| n == 0).unwrap_or(true));
        }
        assert!(!srv.await.unwrap(), "the server refused the expired client");
    }

    #[tokio::test]
    async fn strangers_are_refused() {
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let (ca2, ca2_key) = new_ca("other", 30).unwrap();
        let server = Layer::new(&identity(&ca, &ca_key, "server.lab")).unwrap();
        let stranger = Layer::new(&identity(&ca2, &ca2_key, "x.other")).unwrap();
        let (l, addr) = listener().await;
        let srv = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..3 {
                let (tcp, peer) = l.accept().await.unwrap();
                results.push(server.accept(Box::new(tcp), peer).await.is_ok());
            }
            results
        });
        // A node of another CA: both sides refuse.
        let tcp = TcpStream::connect(addr).await.unwrap();
        assert!(stranger.connect(Box::new(tcp), addr).await.is_err());
        // A TLS client with no certificate.
        let anon = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DomainServerVerifier {
                anchors: vec![CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()],
                provider: provider(),
            }))
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let r = tokio_rustls::TlsConnector::from(Arc::new(anon))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await;
        if let Ok(mut s) = r {
            // TLS 1.3: the server's refusal arrives after the client's
            // Finished; reading shows it.
            let mut b = [0u8; 1];
            assert!(s.read(&mut b).await.map(|n| n == 0).unwrap_or(true));
        }
        // A plaintext GRASP peer: an M_REQ_SYN straight on the socket.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x83, 0x04, 0x01, 0x82, 0x61, 0x78, 0x05])
            .await
            .unwrap();
        let results = srv.await.unwrap();
        assert_eq!(results, vec![false, false, false]);
    }
}
