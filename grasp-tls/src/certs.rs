//! Node identities: loading and checking a node's certificate chain, key and
//! the domain's trust anchors, and making a domain CA and node certificates
//! (what `grasp-ca` runs).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use zeroize::Zeroizing;

use crate::CertError;

/// A node's identity as loaded: its chain (leaf first), key and the trust
/// anchors of its domain, all checked.
#[derive(Debug)]
pub struct NodeIdentity {
    /// Leaf first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The domain's trust anchors (CA certificates).
    pub anchors: Vec<CertificateDer<'static>>,
    /// The node's name: the leaf's first DNS subject alternative name.
    pub name: String,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, CertError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(path)?;
    let v: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if v.is_empty() {
        return Err(CertError::NoCertificate(path.to_path_buf()));
    }
    Ok(v)
}

fn parse<'a>(der: &'a CertificateDer<'_>, path: &Path) -> Result<X509Certificate<'a>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            why: format!("not an X.509 certificate: {e}"),
        })
}

fn system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// The first DNS name in a certificate's subject alternative names.
pub fn dns_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                san.general_names.iter().find_map(|g| match g {
                    GeneralName::DNSName(n) => Some((*n).to_string()),
                    _ => None,
                })
            }
            _ => None,
        })
}

/// Every signature algorithm webpki may use to check a chain.
pub(crate) static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
];

impl NodeIdentity {
    /// Loads and checks a node's identity: the chain in `cert` (PEM, leaf
    /// first), its key in `key` (PEM; refused when others can read it) and
    /// the trust anchors in `anchors` (PEM). Each misconfiguration has its
    /// own [`CertError`].
    pub fn load(cert: &Path, key: &Path, anchors: &Path) -> Result<Self, CertError> {
        check_private(key)?;
        let chain = certs(cert)?;
        let anchor_certs = certs(anchors)?;
        let key_bytes = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| CertError::Pem {
            path: key.to_path_buf(),
            why: format!("no private key: {e}"),
        })?;
        Self::check(
            chain,
            key_der,
            anchor_certs,
            cert,
            anchors,
            SystemTime::now(),
        )
    }

    /// The checks of [`load`](Self::load) on PEM text already in memory
    /// (certificate chain, key, anchors), at time `now`.
    pub fn from_pem(
        cert: &str,
        key: &str,
        anchors: &str,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        let pem = |what: &str, e: rustls_pki_types::pem::Error| CertError::Pem {
            path: PathBuf::from(what),
            why: e.to_string(),
        };
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem("certificate", e))?;
        let anchor_certs = CertificateDer::pem_slice_iter(anchors.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem("anchors", e))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| pem("key", e))?;
        Self::check(
            chain,
            key,
            anchor_certs,
            "certificate".as_ref(),
            "anchors".as_ref(),
            now,
        )
    }

    /// The checks of [`load`](Self::load) on material already in memory, at
    /// time `now`.
    pub fn check(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        anchors: Vec<CertificateDer<'static>>,
        cert_path: &Path,
        anchors_path: &Path,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        let Some(first) = chain.first() else {
            return Err(CertError::NoCertificate(cert_path.to_path_buf()));
        };
        let leaf = parse(first, cert_path)?;
        // The key belongs to the certificate.
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| CertError::BadKey(e.to_string()))?;
        let spki = signer
            .public_key()
            .ok_or_else(|| CertError::BadKey("cannot derive the public key".into()))?;
        if spki.as_ref() != leaf.public_key().raw {
            return Err(CertError::KeyMismatch(cert_path.to_path_buf()));
        }
        // Dates.
        let not_before = system_time(leaf.validity().not_before);
        let not_after = system_time(leaf.validity().not_after);
        if now < not_before {
            return Err(CertError::NotYetValid {
                path: cert_path.to_path_buf(),
                not_before,
            });
        }
        if now > not_after {
            return Err(CertError::Expired {
                path: cert_path.to_path_buf(),
                not_after,
            });
        }
        // Anchors must be CAs.
        for a in &anchors {
            let c = parse(a, anchors_path)?;
            if !c.is_ca() {
                return Err(CertError::AnchorNotCa(anchors_path.to_path_buf()));
            }
        }
        let name = dns_name(&leaf).ok_or_else(|| CertError::NoName(cert_path.to_path_buf()))?;
        // The chain leads to an anchor, for both TLS roles.
        verify_chain(&chain, &anchors, now).map_err(|why| CertError::Untrusted {
            path: cert_path.to_path_buf(),
            why,
        })?;
        Ok(NodeIdentity {
            chain,
            key,
            anchors,
            name,
            not_after,
        })
    }
}

/// Checks that `chain` (leaf first) leads to one of `anchors` at `now` and
/// is good for both TLS client and server authentication.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    anchors: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), String> {
    let tas: Vec<TrustAnchor<'_>> = anchors
        .iter()
        .map(|a| webpki::anchor_from_trusted_cert(a).map_err(|e| format!("trust anchor: {e:?}")))
        .collect::<Result<_, _>>()?;
    let first = chain.first().ok_or("no certificate")?;
    let leaf = webpki::EndEntityCert::try_from(first).map_err(|e| format!("{e:?}"))?;
    let t = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        leaf.verify_for_usage(ALGS, &tas, &chain[1..], t, usage, None, None)
            .map_err(|e| match e {
                webpki::Error::UnknownIssuer => {
                    "not signed by the domain's trust anchor".to_string()
                }
                webpki::Error::CertExpired { .. } => {
                    "a certificate in the chain has expired".into()
                }
                webpki::Error::RequiredEkuNotFoundContext(_) => {
                    "the certificate is not for both TLS client and server authentication".into()
                }
                other => format!("{other:?}"),
            })?;
    }
    Ok(())
}

/// Refuses a private-key file that group or others can read.
pub fn check_private(path: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// A new domain CA: `(certificate PEM, key PEM)`, valid `days` days.
pub fn new_ca(domain: &str, days: u32) -> Result<(String, Zeroizing<String>), CertError> {
    let gen = |e: rcgen::Error| CertError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    p.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("GRASP domain CA {domain}"),
    );
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, domain.to_string());
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, days);
    let cert = p.self_signed(&key).map_err(gen)?;
    Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
}

fn set_validity(p: &mut rcgen::CertificateParams, days: u32) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
    // A minute of slack for clocks slightly behind ours.
    p.not_before = now - Duration::from_secs(60);
    p.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

/// A node key and certificate signed by the CA, with `node` as its DNS
/// subject alternative name and both TLS usages: `(certificate PEM, key
/// PEM)`.
pub fn issue_node(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    node: &str,
    days: u32,
) -> Result<(String, Zeroizing<String>), CertError> {
    issue_node_with(ca_cert_pem, ca_key_pem, node, |p| set_validity(p, days))
}

/// As [`issue_node`], with the parameters adjusted by `f` (tests make
/// expired certificates this way).
pub fn issue_node_with(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    node: &str,
    f: impl FnOnce(&mut rcgen::CertificateParams),
) -> Result<(String, Zeroizing<String>), CertError> {
    let gen = |e: rcgen::Error| CertError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(gen)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(gen)?;
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let mut p = rcgen::CertificateParams::new(vec![node.to_string()]).map_err(gen)?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, node.to_string());
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, 365);
    f(&mut p);
    let cert = p.signed_by(&key, &issuer).map_err(gen)?;
    Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
}

/// What a certificate says, for humans (`grasp-ca inspect`).
pub fn describe(path: &Path) -> Result<String, CertError> {
    let mut out = String::new();
    for der in certs(path)? {
        let c = parse(&der, path)?;
        let v = c.validity();
        out.push_str(&format!(
            "subject    {}\nissuer     {}\nserial     {}\nvalid      {} .. {}{}\nCA         {}\nname (SAN) {}\nkey        {}\n\n",
            c.subject(),
            c.issuer(),
            c.raw_serial_as_string(),
            v.not_before,
            v.not_after,
            if v.is_valid() { "" } else { "  (NOT valid now)" },
            if c.is_ca() { "yes" } else { "no" },
            dns_name(&c).unwrap_or_else(|| "(none)".into()),
            c.public_key().algorithm.algorithm,
        ));
    }
    Ok(out)
}

/// Paths of a CA directory made by `grasp-ca init`.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.crt"), dir.join("ca.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Self {
            Dir {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, body: &str, mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let p = self.dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    #[test]
    fn a_good_identity_loads_and_each_misconfiguration_is_named() {
        let d = Dir::new();
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let (node, node_key) = issue_node(&ca, &ca_key, "node1.lab", 10).unwrap();
        let ca_p = d.write("ca.crt", &ca, 0o644);
        let cert_p = d.write("node.crt", &node, 0o644);
        let key_p = d.write("node.key", &node_key, 0o600);
        let id = NodeIdentity::load(&cert_p, &key_p, &ca_p).unwrap();
        assert_eq!(id.name, "node1.lab");
        assert!(id.not_after > SystemTime::now() + Duration::from_secs(9 * 86_400));

        // Missing file.
        let e = NodeIdentity::load(&d.dir.path().join("nope.crt"), &key_p, &ca_p).unwrap_err();
        assert!(matches!(e, CertError::Read { .. }), "{e}");
        // Key readable by others.
        let loose = d.write("loose.key", &node_key, 0o644);
        let e = NodeIdentity::load(&cert_p, &loose, &ca_p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // Wrong key for the certificate.
        let (_, other_key) = issue_node(&ca, &ca_key, "node2.lab", 10).unwrap();
        let other_p = d.write("other.key", &other_key, 0o600);
        let e = NodeIdentity::load(&cert_p, &other_p, &ca_p).unwrap_err();
        assert!(matches!(e, CertError::KeyMismatch(_)), "{e}");
        // Expired.
        let (old, old_key) = issue_node_with(&ca, &ca_key, "old.lab", |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
        .unwrap();
        let old_p = d.write("old.crt", &old, 0o644);
        let old_kp = d.write("old.key", &old_key, 0o600);
        let e = NodeIdentity::load(&old_p, &old_kp, &ca_p).unwrap_err();
        assert!(matches!(e, CertError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("grasp-ca issue"), "{e}");
        // Not signed by the anchor (another domain's CA).
        let (ca2, _) = new_ca("other", 30).unwrap();
        let ca2_p = d.write("ca2.crt", &ca2, 0o644);
        let e = NodeIdentity::load(&cert_p, &key_p, &ca2_p).unwrap_err();
        assert!(
            matches!(&e, CertError::Untrusted { why, .. } if why.contains("not signed by")),
            "{e}"
        );
        // A node certificate given as the anchor.
        let e = NodeIdentity::load(&cert_p, &key_p, &cert_p).unwrap_err();
        assert!(matches!(e, CertError::AnchorNotCa(_)), "{e}");
        // Not PEM at all.
        let junk = d.write("junk.crt", "hello", 0o644);
        let e = NodeIdentity::load(&junk, &key_p, &ca_p).unwrap_err();
        assert!(matches!(e, CertError::NoCertificate(_)), "{e}");
    }

    #[test]
    fn describe_says_what_a_certificate_is() {
        let d = Dir::new();
        let (ca, ca_key) = new_ca("lab", 30).unwrap();
        let (node, _) = issue_node(&ca, &ca_key, "node1.lab", 10).unwrap();
        let p = d.write("node.crt", &node, 0o644);
        let s = describe(&p).unwrap();
        assert!(s.contains("name (SAN) node1.lab"), "{s}");
        assert!(s.contains("CA         no"), "{s}");
        assert!(s.contains("GRASP domain CA lab"), "{s}");
        let p = d.write("ca.crt", &ca, 0o644);
        assert!(describe(&p).unwrap().contains("CA         yes"));
    }
}
