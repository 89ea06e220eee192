//! What ACME leaves in `state_dir`, written so that a crash at any moment leaves either the
//! old file or the new one, never a mix: write a temporary file, fsync it, rename it over
//! the old one, fsync the directory.
//!
//! Layout: `acme/account-<hash of directory URL>.json` (the account key), and per certificate
//! `certs/<first name>.pem` holding the private key then the chain, in one file so that key
//! and certificate can never be swapped separately, and `certs/<first name>.failures.json`
//! with recent failed attempts, so a restart does not forget a back-off.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::certificate::CertificateFacts;
use super::AcmeError;

/// Owner-only: a certificate file holds its private key.
const PRIVATE_MODE: u32 = 0o600;

#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
}

/// A certificate as loaded from disk, ready to serve.
#[derive(Debug, Clone)]
pub struct StoredCertificate {
    pub key: Arc<CertifiedKey>,
    pub facts: CertificateFacts,
}

/// A file written but not yet in place. Dropping it without [`StagedFile::commit`] (the
/// process dying mid-write, a failed rename) leaves the previous file untouched.
#[derive(Debug)]
pub struct StagedFile {
    temporary: PathBuf,
    target: PathBuf,
}

// === impl CertStore ===

impl CertStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.to_path_buf(),
        }
    }

    pub fn account_path(&self, directory_url: &str) -> PathBuf {
        let short = directory_digest(directory_url);
        self.dir.join("acme").join(format!("account-{short}.json"))
    }

    pub fn certificate_path(&self, primary_name: &str) -> PathBuf {
        self.dir.join("certs").join(format!("{primary_name}.pem"))
    }

    pub fn failures_path(&self, primary_name: &str) -> PathBuf {
        self.dir
            .join("certs")
            .join(format!("{primary_name}.failures.json"))
    }

    /// Deletes temporaries that a crashed write left behind (their rename never happened).
    pub fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("certs")) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(".tmp.") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The stored certificate for `primary_name`; `Ok(None)` when there is none yet.
    pub fn load_certificate(
        &self,
        primary_name: &str,
    ) -> Result<Option<StoredCertificate>, AcmeError> {
        let path = self.certificate_path(primary_name);
        let pem = match fs::read(&path) {
            Ok(pem) => pem,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(AcmeError::Store { path, error }),
        };
        parse_bundle(&pem)
            .map(Some)
            .map_err(|reason| AcmeError::BadStoredCertificate { path, reason })
    }

    /// Writes key and chain as one file, atomically; returns what now serves.
    pub fn save_certificate(
        &self,
        primary_name: &str,
        key_pem: &str,
        chain_pem: &str,
    ) -> Result<StoredCertificate, AcmeError> {
        let bundle = bundle(key_pem, chain_pem);
        let stored =
            parse_bundle(bundle.as_bytes()).map_err(|reason| AcmeError::BadStoredCertificate {
                path: self.certificate_path(primary_name),
                reason,
            })?;
        self.write_certificate(primary_name, &bundle)?;
        Ok(stored)
    }

    /// Writes a bundle already checked with [`parse_bundle`], atomically.
    pub fn write_certificate(&self, primary_name: &str, bundle: &str) -> Result<(), AcmeError> {
        write_atomically(&self.certificate_path(primary_name), bundle.as_bytes())
    }
}

/// Key and chain as the one PEM file a certificate is stored as.
pub fn bundle(key_pem: &str, chain_pem: &str) -> String {
    format!("{}\n{}", key_pem.trim_end(), chain_pem)
}

/// A short, stable name for a CA directory URL (the first 8 bytes of its SHA-256, hex): the
/// account's file name in `state_dir` and its key in the cluster.
pub fn directory_digest(directory_url: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, directory_url.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses a bundle (private key and chain, PEM) and checks the key belongs to the leaf.
pub fn parse_bundle(pem: &[u8]) -> Result<StoredCertificate, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    let leaf = chain.first().ok_or("no certificate")?;
    let facts = CertificateFacts::read(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| "no private key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|error| format!("unusable private key: {error}"))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match()
        .map_err(|_| "the private key does not belong to the certificate")?;
    Ok(StoredCertificate {
        key: Arc::new(key),
        facts,
    })
}

/// Replaces `target` with `bytes` (mode 0600) so that readers and crashes see the old file
/// or the new one, never a partial one.
pub fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    stage(target, bytes)?.commit()
}

/// First half of [`write_atomically`]: the bytes are on disk (fsynced) beside `target`.
pub fn stage(target: &Path, bytes: &[u8]) -> Result<StagedFile, AcmeError> {
    let store_error = |error| AcmeError::Store {
        path: target.to_path_buf(),
        error,
    };
    let dir = target.parent().ok_or_else(|| {
        store_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no directory",
        ))
    })?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(store_error)?;
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let temporary = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_MODE)
        .open(&temporary)
        .map_err(store_error)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(store_error)?;
    Ok(StagedFile {
        temporary,
        target: target.to_path_buf(),
    })
}

// === impl StagedFile ===

impl StagedFile {
    /// Second half: rename over the target and make the rename itself durable.
    pub fn commit(self) -> Result<(), AcmeError> {
        let result =
            fs::rename(&self.temporary, &self.target).and_then(|()| match self.target.parent() {
                Some(dir) => File::open(dir)?.sync_all(),
                None => Ok(()),
            });
        result.map_err(|error| AcmeError::Store {
            path: self.target.clone(),
            error,
        })
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // After a commit the temporary is gone and this fails harmlessly.
        let _ = fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn issue(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.signing_key.serialize_pem(), cert.cert.pem())
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "headland-store-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saved_certificate_loads_back_with_owner_only_mode() {
        let store = CertStore::new(&temp_dir());
        let (key, chain) = issue("a.test");
        store.save_certificate("a.test", &key, &chain).unwrap();
        let loaded = store.load_certificate("a.test").unwrap().unwrap();
        assert_eq!(loaded.facts.names, vec!["a.test".to_owned()]);
        let mode = fs::metadata(store.certificate_path("a.test"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(store.load_certificate("missing.test").unwrap().is_none());
    }

    #[test]
    fn an_interrupted_write_leaves_the_previous_certificate() {
        let store = CertStore::new(&temp_dir());
        let (key, chain) = issue("a.test");
        let first = store.save_certificate("a.test", &key, &chain).unwrap();
        // The process dies after writing half of the new bundle, before the rename.
        let (new_key, new_chain) = issue("a.test");
        let bundle = format!("{new_key}\n{new_chain}");
        let staged = stage(
            &store.certificate_path("a.test"),
            &bundle.as_bytes()[..bundle.len() / 2],
        )
        .unwrap();
        std::mem::forget(staged);
        let loaded = store.load_certificate("a.test").unwrap().unwrap();
        assert_eq!(loaded.facts.serial, first.facts.serial);
        store.remove_stale_temporaries();
        let left: Vec<_> = fs::read_dir(store.dir.join("certs")).unwrap().collect();
        assert_eq!(left.len(), 1, "only the certificate remains: {left:?}");
    }

    #[test]
    fn a_bundle_whose_key_belongs_elsewhere_is_refused() {
        let (key, _) = issue("a.test");
        let (_, chain) = issue("a.test");
        let error = parse_bundle(format!("{key}\n{chain}").as_bytes()).unwrap_err();
        assert!(error.contains("does not belong"), "{error}");
    }
}
