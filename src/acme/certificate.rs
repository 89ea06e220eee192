//! The facts about an issued certificate that renewal and `headland certs` need, read from
//! its DER once when it is loaded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::CertificateIdentifier;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone)]
pub struct CertificateFacts {
    /// DNS names from subjectAltName, lowercase, in certificate order.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The issuer's common name (or the whole issuer DN when it has none).
    pub issuer: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// The ARI identifier (RFC 9773 §4.1); `None` when the certificate has no AKI.
    pub ari_id: Option<CertificateIdentifier<'static>>,
}

// === impl CertificateFacts ===

impl CertificateFacts {
    pub fn read(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|error| format!("unreadable certificate: {error}"))?;
        let validity = cert.validity();
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let issuer = cert
            .issuer()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok().map(str::to_owned))
            .unwrap_or_else(|| cert.issuer().to_string());
        let validity_time =
            |at: i64| system_time(at).ok_or_else(|| format!("validity time {at} is out of range"));
        Ok(Self {
            names,
            not_before: validity_time(validity.not_before.timestamp())?,
            not_after: validity_time(validity.not_after.timestamp())?,
            issuer,
            serial: cert.raw_serial_as_string().replace(':', ""),
            ari_id: CertificateIdentifier::try_from(der)
                .ok()
                .map(CertificateIdentifier::into_owned),
        })
    }

    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether every name in `wanted` is on the certificate.
    pub fn covers(&self, wanted: &[String]) -> bool {
        wanted.iter().all(|name| self.names.contains(name))
    }
}

/// `None` when the platform's clock cannot represent the time: the certificate (from the CA
/// or from `state_dir`) is then refused as unusable rather than panicking the renewal task.
fn system_time(unix_seconds: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_times_are_converted_without_overflow() {
        assert_eq!(system_time(0), Some(UNIX_EPOCH));
        assert_eq!(system_time(60), Some(UNIX_EPOCH + Duration::from_secs(60)));
        assert_eq!(
            system_time(-60),
            UNIX_EPOCH.checked_sub(Duration::from_secs(60))
        );
        // Representable or not depends on the platform; it must never panic.
        let _ = system_time(i64::MAX);
        let _ = system_time(i64::MIN);
    }
}
