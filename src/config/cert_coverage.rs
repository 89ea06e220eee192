//! Whether every host a route serves over HTTPS has a certificate with its name. Without one
//! the handshake falls back to the default certificate (a name mismatch every browser
//! refuses) or is refused, which shows only at runtime; with `redirect_http` the host's
//! plain-HTTP clients are sent there too. `headland check` says so up front.

use toml::Spanned;

use super::error::ErrorSink;
use super::raw::RawRoute;
use super::{AcmeChallenge, AcmeConfig, ListenConfig, TlsConfig};

/// Warns about route hosts no certificate covers; an error for a wildcard host when only
/// HTTP-01 could get its certificate, which no CA issues for wildcards (RFC 8555 §7.1.3).
pub fn check(
    routes: &[Spanned<RawRoute>],
    listen: &ListenConfig,
    (tls, acme): (&TlsConfig, Option<&AcmeConfig>),
    sink: &mut ErrorSink<'_>,
) {
    if listen.https.is_empty() {
        return;
    }
    let names: Vec<&str> = tls
        .certificates
        .iter()
        .flat_map(|c| c.names.iter())
        .chain(acme.iter().flat_map(|a| a.certificates.iter().flatten()))
        .map(String::as_str)
        .collect();
    let redirected = if tls.redirect_http {
        "; redirect_http sends its plain-HTTP clients there too"
    } else {
        ""
    };
    let mut seen = std::collections::HashSet::new();
    for route in routes {
        let raw_host = &route.get_ref().host;
        let host = raw_host.get_ref().to_ascii_lowercase();
        if host == "*" || !seen.insert(host.clone()) || covered(&host, &names) {
            continue;
        }
        let span = raw_host.span();
        match (host.starts_with("*."), acme.map(|a| a.challenge)) {
            (true, Some(AcmeChallenge::Http01)) => sink.at(span, format!(
                "route host \"{host}\" is a wildcard, and no certificate file covers it: ACME over HTTP-01 cannot obtain wildcard certificates; set [acme] challenge = \"dns-01\" and list \"{host}\" in a [[certificates]] names, or give a cert_file and key_file"
            )),
            (true, Some(AcmeChallenge::Dns01)) => sink.warn_at(span, format!(
                "no certificate covers route host \"{host}\": HTTPS clients get the default certificate{redirected}; list \"{host}\" in a [[certificates]] names (DNS-01 obtains wildcards)"
            )),
            _ => sink.warn_at(span, format!(
                "no certificate covers route host \"{host}\": HTTPS clients get the default certificate{redirected}; add a [[certificates]] entry with its name, or an [acme] section"
            )),
        }
    }
}

/// Whether a certificate name covers `host`: the same name, or a wildcard one label up
/// (`*.example.com` covers `a.example.com`, not `a.b.example.com`, RFC 6125 §6.4.3). A
/// route host given as an IP address never gets a certificate from these names, and is
/// left to the default certificate without a warning.
fn covered(host: &str, names: &[&str]) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return true;
    }
    let parent_wildcard = host
        .trim_start_matches("*.")
        .split_once('.')
        .map(|(_, parent)| format!("*.{parent}"));
    names.iter().any(|name| {
        *name == host || (!host.starts_with("*.") && Some(*name) == parent_wildcard.as_deref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_name_covers_one_label_and_only_a_host_below_it() {
        let names = ["*.example.com", "shop.test"];
        assert!(covered("a.example.com", &names));
        assert!(covered("*.example.com", &names));
        assert!(covered("shop.test", &names));
        assert!(!covered("a.b.example.com", &names));
        assert!(!covered("example.com", &names));
        assert!(
            !covered("*.b.example.com", &names),
            "a wildcard host needs its own wildcard"
        );
        assert!(covered("127.0.0.1", &[]));
    }
}
