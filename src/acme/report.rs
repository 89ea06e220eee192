//! `headland certs`: the certificate status of the running instance, as a table, from the
//! admin API; when the instance is not reachable, what `state_dir` holds.

use std::fmt::Write;

use super::store::parse_bundle;
use super::CertStatus;
use crate::admin::client::send;
use crate::config::Config;

/// The report to print, or why there is none.
pub fn certificates(config: &Config) -> Result<String, String> {
    let Some(admin) = config.listen.admin else {
        return Ok(stored(config));
    };
    // Peers other than loopback need the token to read /certs (see `admin`).
    let token = config.admin_token.as_ref().map(|token| token.0.as_slice());
    match send(admin, "GET", "/certs", token) {
        Ok((200, body)) => {
            let status: Vec<CertStatus> = serde_json::from_str(&body)
                .map_err(|e| format!("unexpected answer from {admin}: {e}"))?;
            Ok(table(&status))
        }
        Ok((code, body)) => Err(format!("GET /certs answered {code}: {body}")),
        Err(error) => Ok(format!(
            "(the admin API at {admin} is not reachable: {error}; showing state_dir)\n{}",
            stored(config)
        )),
    }
}

/// Asks the running instance to renew one ACME certificate now.
pub fn renew(config: &Config, name: &str) -> Result<String, String> {
    let (Some(admin), Some(token)) = (config.listen.admin, &config.admin_token) else {
        return Err("renewing needs [listen] admin and admin_token_file".to_owned());
    };
    match send(
        admin,
        "POST",
        &format!("/certs/renew?name={name}"),
        Some(&token.0),
    ) {
        Ok((202, _)) => Ok(format!(
            "renewal of {name} requested; `headland certs` shows its progress"
        )),
        Ok((code, body)) => Err(format!("renewal refused ({code}): {body}")),
        Err(error) => Err(format!("cannot reach the admin API at {admin}: {error}")),
    }
}

fn table(status: &[CertStatus]) -> String {
    let mut out = String::from("NAMES\tSOURCE\tSTATE\tISSUER\tEXPIRES\tNEXT RENEWAL\tLAST ERROR\n");
    for cert in status {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            cert.names.join(","),
            cert.source,
            cert.state,
            cert.issuer.as_deref().unwrap_or("-"),
            time(cert.not_after),
            time(cert.next_renewal),
            cert.last_error.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// ACME certificates as stored, for when the instance is down.
fn stored(config: &Config) -> String {
    let Some(acme) = &config.acme else {
        return "no [acme] section: certificates come from files only\n".to_owned();
    };
    let store = super::store::CertStore::new(&config.node.state_dir);
    let status: Vec<CertStatus> = acme
        .certificates
        .iter()
        .filter_map(|names| {
            let primary = names.first()?;
            let stored = std::fs::read(store.certificate_path(primary))
                .ok()
                .and_then(|pem| parse_bundle(&pem).ok());
            Some(CertStatus {
                names: names.clone(),
                source: "acme".to_owned(),
                state: if stored.is_some() {
                    "stored"
                } else {
                    "missing"
                }
                .to_owned(),
                issuer: stored.as_ref().map(|s| s.facts.issuer.clone()),
                not_after: stored.as_ref().map(|s| super::unix(s.facts.not_after)),
                next_renewal: None,
                last_error: None,
                failures: 0,
            })
        })
        .collect();
    table(&status)
}

/// The running instance's answer is data from outside this process: a time beyond what a
/// calendar date can hold shows as "invalid" instead of overflowing.
fn time(unix: Option<u64>) -> String {
    let Some(secs) = unix else {
        return "-".to_owned();
    };
    i64::try_from(secs)
        .ok()
        .and_then(|secs| chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0))
        .map_or_else(
            || "invalid".to_owned(),
            |at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_of_range_show_as_invalid() {
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(Some(u64::MAX)), "invalid");
        assert_eq!(time(Some(i64::MAX as u64)), "invalid");
    }
}
