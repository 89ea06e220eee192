//! HTTPS: the certificate for each server name, chosen during the handshake from the current
//! snapshot, so certificates appear, change and disappear with a reload, no restart.
//!
//! Lookup order: the exact name (certificate files, then ACME), then the wildcard one level
//! up (`*.example.com` covers `a.example.com`, not `a.b.example.com`, as RFC 6125 §6.4.3
//! says; files, then ACME), then the configured default. No match: no certificate, and
//! rustls ends the handshake with an alert.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::acme::Acme;
use crate::config::TlsConfig;
use crate::snapshot::SnapshotCell;

/// Certificates by name, built once per snapshot.
#[derive(Debug, Default)]
pub struct CertIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// The rustls resolver behind every HTTPS listener.
pub struct SniResolver {
    snapshots: Arc<SnapshotCell>,
    acme: Arc<Acme>,
}

// === impl CertIndex ===

impl CertIndex {
    pub fn new(config: &TlsConfig) -> Self {
        let mut index = CertIndex::default();
        for certificate in &config.certificates {
            for name in &certificate.names {
                let key = Arc::clone(&certificate.key);
                match name.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.insert(suffix.to_owned(), key),
                    None => index.exact.insert(name.clone(), key),
                };
            }
        }
        index.default = config
            .default_certificate
            .and_then(|i| config.certificates.get(i))
            .map(|c| Arc::clone(&c.key));
        index
    }

    /// An index of certificates by their names, with no default (ACME certificates).
    pub fn from_keys<'a>(keys: impl Iterator<Item = (&'a [String], Arc<CertifiedKey>)>) -> Self {
        let mut index = CertIndex::default();
        for (names, key) in keys {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.insert(suffix.to_owned(), Arc::clone(&key)),
                    None => index.exact.insert(name.clone(), Arc::clone(&key)),
                };
            }
        }
        index
    }

    /// The certificate for `name` (lowercase): exact, then one-level wildcard.
    pub fn resolve_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.exact_name(name).or_else(|| self.wildcard_for(name))
    }

    pub fn exact_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.exact.get(name).cloned()
    }

    /// The `*.parent` certificate covering `name`, if any.
    pub fn wildcard_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }

    /// The certificate for `server_name` (lowercase), else the default, if any.
    pub fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        server_name
            .and_then(|name| self.resolve_name(name))
            .or_else(|| self.default.clone())
    }
}

// === impl SniResolver ===

impl SniResolver {
    pub fn new(snapshots: Arc<SnapshotCell>, acme: Arc<Acme>) -> Self {
        Self { snapshots, acme }
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls has already checked that the SNI is a DNS name; only its case may vary.
        let name = client_hello.server_name().map(str::to_ascii_lowercase);
        let found = choose(
            &self.snapshots.load().certs,
            &self.acme.certificates(),
            name.as_deref(),
        );
        if found.is_none() {
            tracing::info!(
                server_name = name.as_deref().unwrap_or("(none)"),
                "TLS handshake refused: no certificate for this name"
            );
        }
        found
    }
}

/// An exact name beats a wildcard whatever its source; at equal precision files (an
/// operator's explicit choice) come before ACME; then the default (from files).
fn choose(files: &CertIndex, acme: &CertIndex, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
    name.and_then(|name| {
        files
            .exact_name(name)
            .or_else(|| acme.exact_name(name))
            .or_else(|| files.wildcard_for(name))
            .or_else(|| acme.wildcard_for(name))
    })
    .or_else(|| files.resolve(None))
}

/// Settings for one HTTPS listener: TLS 1.2 and 1.3 only (Pingora's rustls default, whose
/// suites are all AEAD with forward secrecy), HTTP/2 preferred, HTTP/1.1 allowed.
pub fn listener_settings(resolver: Arc<SniResolver>) -> pingora::Result<TlsSettings> {
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(resolver);
    settings.enable_h2();
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let cert = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
        let der =
            rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.cert.der().clone()], signer))
    }

    #[test]
    fn an_exact_acme_certificate_beats_a_wildcard_file() {
        let (file_wildcard, acme_exact) = (key(), key());
        let mut files = CertIndex::default();
        files
            .wildcard
            .insert("example.com".into(), Arc::clone(&file_wildcard));
        let names = ["api.example.com".to_owned()];
        let acme = CertIndex::from_keys(std::iter::once((&names[..], Arc::clone(&acme_exact))));
        let api = choose(&files, &acme, Some("api.example.com")).unwrap();
        assert!(Arc::ptr_eq(&api, &acme_exact));
        let www = choose(&files, &acme, Some("www.example.com")).unwrap();
        assert!(Arc::ptr_eq(&www, &file_wildcard));
        assert!(choose(&files, &acme, Some("other.org")).is_none());
    }

    #[test]
    fn exact_then_one_level_wildcard_then_default() {
        let (exact, wild, default) = (key(), key(), key());
        let mut index = CertIndex::default();
        index
            .exact
            .insert("api.example.com".into(), Arc::clone(&exact));
        index
            .wildcard
            .insert("example.com".into(), Arc::clone(&wild));
        let pick = |index: &CertIndex, name: Option<&str>| index.resolve(name);
        assert!(Arc::ptr_eq(
            &pick(&index, Some("api.example.com")).unwrap(),
            &exact
        ));
        assert!(Arc::ptr_eq(
            &pick(&index, Some("www.example.com")).unwrap(),
            &wild
        ));
        assert!(
            pick(&index, Some("a.b.example.com")).is_none(),
            "wildcards cover one label"
        );
        assert!(pick(&index, Some("example.com")).is_none());
        assert!(pick(&index, None).is_none());
        index.default = Some(Arc::clone(&default));
        assert!(Arc::ptr_eq(
            &pick(&index, Some("other.org")).unwrap(),
            &default
        ));
        assert!(Arc::ptr_eq(&pick(&index, None).unwrap(), &default));
    }
}
