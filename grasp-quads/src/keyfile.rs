//! Key files: the master secret of a domain with its derivation record,
//! written atomically with mode 0600, refused when others can read them.
//!
//! ```toml
//! # GRASP QUADS key file. Secret: keep it mode 0600.
//! format = "grasp-quads-key-v1"
//! domain = "lab"
//! key_id = "3f2a9c0d51e7b604"
//! kdf = "argon2id"
//! m_kib = 65536
//! t = 3
//! p = 1
//! master = "…64 hex digits…"
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{DomainKey, KdfParams, KeyId, MasterSecret};
use crate::Error;

const FORMAT: &str = "grasp-quads-key-v1";

/// What a key file holds.
#[derive(Debug)]
pub struct KeyFile {
    /// The domain name (the salt is bound to it).
    pub domain: String,
    /// argon2id parameters the master secret was derived with.
    pub params: KdfParams,
    /// The master secret.
    pub master: MasterSecret,
}

impl KeyFile {
    /// The key this file describes.
    pub fn key(&self) -> DomainKey {
        DomainKey::from_master(&self.master)
    }
}

#[derive(Serialize, Deserialize)]
struct Raw {
    format: String,
    domain: String,
    key_id: String,
    kdf: String,
    m_kib: u32,
    t: u32,
    p: u32,
    master: String,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.master.zeroize();
    }
}

/// Writes `kf` to `path` atomically (a temporary file in the same directory,
/// mode 0600 from creation, then renamed). Refuses to replace an existing
/// file unless `force`.
pub fn write_key_file(path: &Path, kf: &KeyFile, force: bool) -> Result<KeyId, Error> {
    let shown = path.display().to_string();
    if path.exists() && !force {
        return Err(Error::Exists(shown));
    }
    let id = kf.key().id();
    let raw = Raw {
        format: FORMAT.into(),
        domain: kf.domain.clone(),
        key_id: id.to_string(),
        kdf: "argon2id".into(),
        m_kib: kf.params.m_kib,
        t: kf.params.t,
        p: kf.params.p,
        master: hex::encode(kf.master.expose()),
    };
    let body = Zeroizing::new(format!(
        "# GRASP QUADS key file. Secret: keep it mode 0600.\n{}",
        toml::to_string(&raw).map_err(|e| Error::Config(format!("encoding the key file: {e}")))?
    ));
    write_secret_file(path, body.as_bytes(), force)?;
    Ok(id)
}

/// Writes `body` to `path` atomically: a temporary file in the same
/// directory, mode 0600 from its creation, synced, then renamed over `path`.
/// Refuses to replace an existing file unless `force`.
pub fn write_secret_file(path: &Path, body: &[u8], force: bool) -> Result<(), Error> {
    let shown = path.display().to_string();
    if path.exists() && !force {
        return Err(Error::Exists(shown));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let io = |source| Error::Io {
        path: shown.clone(),
        source,
    };
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let res = f
        .write_all(body)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Reads a secret file, refusing one readable by group or others (with the
/// `chmod` that fixes it in the error).
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: shown.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: shown.clone(),
        source,
    })?;
    Ok(Zeroizing::new(text))
}

/// Reads a key file, refusing one readable by group or others, and checks
/// that its key id matches its secret.
pub fn read_key_file(path: &Path) -> Result<KeyFile, Error> {
    let shown = path.display().to_string();
    let bad = |why: String| Error::BadKeyFile {
        path: shown.clone(),
        why,
    };
    let text = read_secret_file(path)?;
    let raw: Raw =
        toml::from_str(&text).map_err(|e| bad(format!("not a key file: {}", e.message())))?;
    if raw.format != FORMAT {
        return Err(bad(format!("format {:?}, expected {FORMAT:?}", raw.format)));
    }
    if raw.kdf != "argon2id" {
        return Err(bad(format!("kdf {:?}, expected \"argon2id\"", raw.kdf)));
    }
    let params = KdfParams {
        m_kib: raw.m_kib,
        t: raw.t,
        p: raw.p,
    };
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(&raw.master, &mut bytes[..])
        .map_err(|_| bad("master is not 64 hex digits".into()))?;
    let master = MasterSecret::from_bytes(*bytes);
    let kf = KeyFile {
        domain: raw.domain.clone(),
        params,
        master,
    };
    let want: KeyId = raw.key_id.parse()?;
    if kf.key().id() != want {
        return Err(bad(format!(
            "key id {want} does not match the secret (the file is damaged)"
        )));
    }
    Ok(kf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyFile {
        KeyFile {
            domain: "lab".into(),
            params: KdfParams::default(),
            master: MasterSecret::from_bytes([9; 32]),
        }
    }

    #[test]
    fn write_read_mode_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("quads.key");
        let id = write_key_file(&p, &sample(), false).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = read_key_file(&p).unwrap();
        assert_eq!(back.key().id(), id);
        assert_eq!(back.domain, "lab");
        assert_eq!(back.params, KdfParams::default());
        // No overwrite without force.
        assert!(matches!(
            write_key_file(&p, &sample(), false),
            Err(Error::Exists(_))
        ));
        write_key_file(&p, &sample(), true).unwrap();
        // Group-readable: refused with the fix in the message.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_key_file(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A damaged secret is caught by the key id.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("0909", "0a09")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_key_file(&p).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        // Not a key file at all.
        std::fs::write(&p, "hello").unwrap();
        assert!(matches!(read_key_file(&p), Err(Error::BadKeyFile { .. })));
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
