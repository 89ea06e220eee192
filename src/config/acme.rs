//! `[acme]`: where certificates come from when no file is given, and which names get one.
//!
//! Every exact host a route serves gets its own certificate unless a `[[certificates]]` file
//! already covers it; file-less `[[certificates]]` entries group names into one certificate.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::ErrorSink;
use super::field::Scope;
use super::raw::RawAcme;
use super::{DnsConfig, HostPattern, ListenConfig, RouteConfig, TlsConfig};

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
    /// How the CA checks control of a name. Default: HTTP-01.
    pub challenge: AcmeChallenge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A file at `/.well-known/acme-challenge/` on port 80, answered by the proxy.
    Http01,
    /// A TXT record at `_acme-challenge.NAME`, answered by the embedded DNS server; the only
    /// way to get wildcard certificates.
    Dns01,
}

pub fn acme(
    raw: &Spanned<RawAcme>,
    tls: &TlsConfig,
    routes: &[RouteConfig],
    (listen, dns): (&ListenConfig, &DnsConfig),
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
    let scope = Scope::new("acme ");
    let challenge = scope.choice(
        "challenge",
        acme.challenge.as_ref(),
        AcmeChallenge::Http01,
        &[
            ("http-01", AcmeChallenge::Http01),
            ("dns-01", AcmeChallenge::Dns01),
        ],
        sink,
    );
    let ca_root = acme
        .ca_root
        .as_ref()
        .and_then(|path| scope.path("ca_root", path, base_dir, sink));
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
    let certificates = managed_certificates(tls, routes);
    let span = acme.challenge.as_ref().map_or(raw.span(), Spanned::span);
    match challenge {
        AcmeChallenge::Dns01 => check_dns01(&certificates, (&listen.dns, dns), span, sink),
        // Without a plain listener every validation would fail, and failed validations
        // count against the CA's limits.
        AcmeChallenge::Http01 if listen.http.is_empty() => sink.at(span, "acme challenge \"http-01\" is answered on the plain HTTP listener (port 80 as the CA sees it): set [listen] http, or use challenge = \"dns-01\""),
        AcmeChallenge::Http01 => {}
    }
    AcmeConfig {
        directory,
        contact,
        ca_root,
        certificates,
        challenge,
    }
}

/// DNS-01 answers come from our own DNS server: it must listen, and every name must be in
/// one of its zones (whose NS records must point at this node).
fn check_dns01(
    certificates: &[Vec<String>],
    (listen, dns): (&[std::net::SocketAddr], &DnsConfig),
    span: std::ops::Range<usize>,
    sink: &mut ErrorSink<'_>,
) {
    if listen.is_empty() {
        sink.at(
            span.clone(),
            "acme challenge \"dns-01\" is answered by the embedded DNS server: set [listen] dns",
        );
    }
    for name in certificates.iter().flatten() {
        let base = name.trim_start_matches("*.");
        let in_zone = dns
            .zones
            .iter()
            .any(|zone| base == zone.origin || base.ends_with(&format!(".{}", zone.origin)));
        if !in_zone {
            sink.at(span.clone(), format!("acme challenge \"dns-01\": \"{name}\" is in none of the [dns.zones], so this node cannot publish its TXT record"));
        }
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
