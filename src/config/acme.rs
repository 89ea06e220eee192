//! `[acme]`: where certificates come from when no file is given, and which names get one.
//!
//! Every exact host a route serves gets its own certificate unless a `[[certificates]]` file
//! already covers it; file-less `[[certificates]]` entries group names into one certificate.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::ErrorSink;
use super::raw::RawAcme;
use super::{HostPattern, RouteConfig, TlsConfig};

const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL. Default: Let's Encrypt production.
    pub directory: String,
    /// `mailto:` addresses the CA may write to about the account. Default: none.
    pub contact: Vec<String>,
    /// A PEM root the CA's own HTTPS endpoint chains to, for private CAs (pebble, step-ca).
    /// Default: none (the platform's trust store).
    pub ca_root: Option<PathBuf>,
    /// The certificates to obtain and keep renewed; each is a list of names, the first one
    /// naming it in `state_dir` and in `headland certs`.
    pub certificates: Vec<Vec<String>>,
}

pub fn acme(
    raw: &Spanned<RawAcme>,
    tls: &TlsConfig,
    routes: &[RouteConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> AcmeConfig {
    let acme = raw.get_ref();
    let directory = match &acme.directory {
        None => LETS_ENCRYPT.to_owned(),
        Some(directory) => match directory.get_ref().as_str() {
            "letsencrypt" => LETS_ENCRYPT.to_owned(),
            "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_owned(),
            url if url.starts_with("https://") && url.parse::<http::Uri>().is_ok() => {
                url.to_owned()
            }
            other => {
                sink.at(directory.span(), format!("acme directory \"{other}\" must be \"letsencrypt\", \"letsencrypt-staging\" or an https:// URL"));
                String::new()
            }
        },
    };
    let contact = acme
        .contact
        .iter()
        .flatten()
        .filter_map(|contact| {
            let text = contact.get_ref();
            let valid = text.strip_prefix("mailto:").is_some_and(|a| a.contains('@'));
            if !valid {
                sink.at(contact.span(), format!("acme contact \"{text}\" must be a mailto: address, e.g. \"mailto:ops@example.com\""));
            }
            valid.then(|| text.clone())
        })
        .collect();
    if let Some(challenge) = &acme.challenge {
        match challenge.get_ref().as_str() {
            "http-01" => {}
            "dns-01" => sink.at(challenge.span(), "acme challenge \"dns-01\" needs the embedded DNS server, which is not available yet; use \"http-01\""),
            other => sink.at(challenge.span(), format!("acme challenge \"{other}\" must be \"http-01\"")),
        }
    }
    let ca_root = acme
        .ca_root
        .as_ref()
        .and_then(|path| super::validate::non_empty_path(path, "acme ca_root", base_dir, sink));
    if let (Some(path), Some(raw_path)) = (&ca_root, &acme.ca_root) {
        if let Err(error) = std::fs::metadata(path) {
            sink.at(
                raw_path.span(),
                format!(
                    "cannot read acme ca_root \"{}\": {error}",
                    raw_path.get_ref()
                ),
            );
        }
    }
    AcmeConfig {
        directory,
        contact,
        ca_root,
        certificates: managed_certificates(tls, routes),
    }
}

/// File-less `[[certificates]]` entries first, then one certificate per exact route host
/// that no certificate (file or ACME) covers yet.
fn managed_certificates(tls: &TlsConfig, routes: &[RouteConfig]) -> Vec<Vec<String>> {
    let mut certificates = tls.acme_certificates.clone();
    let covered = |name: &str, certificates: &[Vec<String>]| {
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        let matches = |n: &String| n == name || Some(n) == wildcard.as_ref();
        tls.certificates.iter().any(|c| c.names.iter().any(matches))
            || certificates.iter().flatten().any(matches)
    };
    for route in routes {
        let HostPattern::Exact(host) = &route.host else {
            continue;
        };
        // An IP literal cannot get a certificate over HTTP-01 from a public CA.
        if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        if !covered(host, &certificates) {
            certificates.push(vec![host.clone()]);
        }
    }
    certificates
}
