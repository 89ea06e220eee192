//! `[tls]` and `[[certificates]]`: how HTTPS listeners behave and which certificate answers
//! which server name. Certificate files are read and checked here, so a broken or
//! mismatched certificate is a located config error, never a failed handshake later.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use toml::Spanned;

use super::error::ErrorSink;
use super::field::Scope;
use super::raw::{RawCertificate, RawTls};
use crate::host::normalize_host;

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Answer plain-HTTP requests with a 308 to HTTPS (ACME challenge paths excepted).
    /// Default: false.
    pub redirect_http: bool,
    /// `Strict-Transport-Security` value sent on HTTPS responses. Default: none.
    pub hsts: Option<String>,
    pub certificates: Vec<StaticCertificate>,
    /// `[[certificates]]` entries without files: names to obtain over ACME, one certificate
    /// per entry, in file order.
    pub acme_certificates: Vec<Vec<String>>,
    /// Index into `certificates` for clients that send no (or an unknown) server name.
    /// Default: none (such handshakes fail).
    pub default_certificate: Option<usize>,
    /// The CAs (DER) other regions' edges' certificates chain to, for `fallback = { regions =
    /// true }`. Default: none, meaning the platform's trust store (public ACME certificates).
    pub edge_ca: Option<Vec<Vec<u8>>>,
}

/// A certificate chain and key from files, for the names it was checked against.
#[derive(Debug, Clone)]
pub struct StaticCertificate {
    /// Lowercase; `*.example.com` for wildcards.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

pub fn tls(
    raw: &RawTls,
    certificates: &[Spanned<RawCertificate>],
    https_listeners: usize,
    acme_configured: bool,
    acme_wildcards: bool,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> TlsConfig {
    let hsts = raw.hsts.as_ref().and_then(|hsts| {
        let value = hsts.get_ref();
        let valid = value.starts_with("max-age=") && http::HeaderValue::from_str(value).is_ok();
        if !valid {
            sink.at(hsts.span(), format!("hsts \"{value}\" must be a header value starting with max-age=, e.g. \"max-age=31536000; includeSubDomains\""));
        }
        valid.then(|| value.clone())
    });
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut loaded = Vec::new();
    let mut acme_certificates = Vec::new();
    for raw_certificate in certificates {
        let line = sink.line_of(raw_certificate.span());
        let raw = raw_certificate.get_ref();
        let names = match (&raw.cert_file, &raw.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let Some(certificate) = certificate(raw, cert_file, key_file, base_dir, sink)
                else {
                    continue;
                };
                let names = certificate.names.clone();
                loaded.push(certificate);
                names
            }
            (None, None) => match acme_names(
                raw,
                (acme_configured, acme_wildcards),
                raw_certificate.span(),
                sink,
            ) {
                Some(names) => {
                    acme_certificates.push(names.clone());
                    names
                }
                None => continue,
            },
            (Some(file), None) | (None, Some(file)) => {
                sink.at(file.span(), "a certificate needs both cert_file and key_file (or neither, to obtain it over ACME)");
                continue;
            }
        };
        for (name, span) in names.iter().zip(raw.names.iter().map(Spanned::span)) {
            match seen.iter().find(|(other, _)| other == name) {
                Some((_, first)) => sink.at(span, format!("certificate name \"{name}\" is already served by the certificate at line {first}")),
                None => seen.push((name.clone(), line)),
            }
        }
    }
    let default_certificate = raw.default_certificate.as_ref().and_then(|name| {
        let wanted = name.get_ref().to_ascii_lowercase();
        let found = loaded.iter().position(|c| c.names.contains(&wanted));
        if found.is_none() {
            sink.at(
                name.span(),
                format!(
                    "default_certificate \"{wanted}\" is not a name of any [[certificates]] entry"
                ),
            );
        }
        found
    });
    if https_listeners > 0 && certificates.is_empty() && !acme_configured {
        sink.at(0..0, "listen.https needs certificates: add [acme] to obtain them, or [[certificates]] entries with cert_file and key_file");
    }
    let edge_ca = raw
        .edge_ca_file
        .as_ref()
        .and_then(|file| edge_ca(file, base_dir, sink));
    TlsConfig {
        redirect_http: raw.redirect_http.unwrap_or(false),
        hsts,
        certificates: loaded,
        acme_certificates,
        default_certificate,
        edge_ca,
    }
}

/// `edge_ca_file`: PEM certificates that parse as X.509 (Pingora's connector would panic on
/// one that does not).
fn edge_ca(
    file: &Spanned<String>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<Vec<Vec<u8>>> {
    let pem = Scope::default().file("edge_ca_file", file, base_dir, sink)?;
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect();
    let parsed = certificates
        .iter()
        .all(|der| x509_parser::parse_x509_certificate(der).is_ok());
    if certificates.is_empty() || !parsed {
        sink.at(
            file.span(),
            format!(
                "edge_ca_file \"{}\" must hold PEM CA certificates",
                file.get_ref()
            ),
        );
        return None;
    }
    Some(certificates)
}

/// A file-less `[[certificates]]` entry: names for ACME. Wildcards need DNS-01: HTTP-01
/// cannot prove control of a whole subtree (RFC 8555 §7.1.3).
fn acme_names(
    raw: &RawCertificate,
    (acme_configured, wildcards_allowed): (bool, bool),
    span: std::ops::Range<usize>,
    sink: &mut ErrorSink<'_>,
) -> Option<Vec<String>> {
    let errors_before = sink.len();
    if !acme_configured {
        sink.at(span.clone(), "certificate has no cert_file and key_file, so it would be obtained over ACME, but there is no [acme] section");
    }
    if raw.names.is_empty() {
        sink.at(span, "certificate needs at least one name in names");
    }
    let names: Vec<String> = raw
        .names
        .iter()
        .filter_map(|name| certificate_name(name, sink))
        .collect();
    for (name, raw_name) in names.iter().zip(&raw.names) {
        if name.starts_with("*.") && !wildcards_allowed {
            sink.at(raw_name.span(), format!("certificate name \"{name}\" is a wildcard: ACME wildcards need [acme] challenge = \"dns-01\"; list the names, or give cert_file and key_file"));
        }
    }
    (sink.len() == errors_before).then_some(names)
}

fn certificate(
    raw: &RawCertificate,
    cert_file: &Spanned<String>,
    key_file: &Spanned<String>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<StaticCertificate> {
    let errors_before = sink.len();
    let names: Vec<String> = raw
        .names
        .iter()
        .filter_map(|name| certificate_name(name, sink))
        .collect();
    if raw.names.is_empty() {
        sink.at(
            cert_file.span(),
            "certificate needs at least one name in names",
        );
    }
    let files = Scope::default();
    let chain = files
        .file("cert_file", cert_file, base_dir, sink)
        .and_then(|pem| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if chain.is_empty() {
                sink.at(
                    cert_file.span(),
                    format!(
                        "cert_file \"{}\" holds no PEM certificate",
                        cert_file.get_ref()
                    ),
                );
                return None;
            }
            Some(chain)
        });
    let key = files
        .file("key_file", key_file, base_dir, sink)
        .and_then(|pem| {
            let parsed = PrivateKeyDer::from_pem_slice(&pem)
                .ok()
                .and_then(|der| any_supported_type(&der).ok());
            if parsed.is_none() {
                sink.at(
                    key_file.span(),
                    format!(
                        "key_file \"{}\" holds no usable private key (PEM, PKCS#8, RSA or EC)",
                        key_file.get_ref()
                    ),
                );
            }
            parsed
        });
    let (chain, key) = (chain?, key?);
    let certified = CertifiedKey::new(chain, key);
    if certified.keys_match().is_err() {
        sink.at(
            key_file.span(),
            format!(
                "key_file \"{}\" does not belong to the certificate in cert_file",
                key_file.get_ref()
            ),
        );
    }
    for (name, span) in names.iter().zip(raw.names.iter().map(Spanned::span)) {
        if !covers(&certified, name) {
            sink.at(
                span,
                format!(
                    "the certificate in \"{}\" is not valid for \"{name}\"",
                    cert_file.get_ref()
                ),
            );
        }
    }
    if sink.len() > errors_before {
        return None;
    }
    Some(StaticCertificate {
        names,
        key: Arc::new(certified),
    })
}

/// `example.com` or `*.example.com`, lowercased.
fn certificate_name(name: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<String> {
    let text = name.get_ref();
    let (wildcard, host) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    match normalize_host(host.as_bytes()) {
        Ok(host) if !host.starts_with('[') => Some(if wildcard {
            format!("*.{host}")
        } else {
            host.into_owned()
        }),
        _ => {
            sink.at(name.span(), format!("certificate name \"{text}\" must be a DNS name such as \"example.com\" or \"*.example.com\""));
            None
        }
    }
}

/// Whether the leaf certificate is valid for `name` (for a wildcard, for a name under it).
fn covers(certified: &CertifiedKey, name: &str) -> bool {
    let probe = match name.strip_prefix("*.") {
        Some(suffix) => format!("headland-name-check.{suffix}"),
        None => name.to_owned(),
    };
    let Ok(server_name) = ServerName::try_from(probe) else {
        return false;
    };
    let Some(leaf) = certified.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .map(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok())
        .unwrap_or(false)
}
