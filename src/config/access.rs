//! A route's access rules: client address lists (`allow`, `deny`), basic auth from an
//! htpasswd file, and forward-auth to an SSO service. All optional; a route without them is
//! open, as before.

use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::headers;
use super::raw::{RawBasicAuth, RawForwardAuth, RawRoute};
use super::upstream::TIMEOUT_LIMITS;

/// An SSO answers from memory; past this the user is better served by a 504 than a hang.
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The highest bcrypt cost accepted in an htpasswd file.
const MAX_BCRYPT_COST: u32 = 12;
/// The realm browsers show in their login box.
const DEFAULT_REALM: &str = "restricted";

/// Who may use a route. Default: everyone (no rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRules {
    /// Client addresses (after `[client_ip]`) allowed; empty = every address. Default: empty.
    pub allow: Vec<IpNet>,
    /// Client addresses refused with 403, whatever `allow` says. Default: empty.
    pub deny: Vec<IpNet>,
    pub basic_auth: Option<BasicAuth>,
    pub forward_auth: Option<ForwardAuth>,
}

/// `basic_auth = { htpasswd = "FILE", realm = "admin" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// `(user, bcrypt hash)` from the file, in file order.
    pub users: Vec<(String, String)>,
    /// Default: "restricted".
    pub realm: String,
}

/// `forward_auth = { url = "http://127.0.0.1:4180/oauth2/auth", copy_headers = [...] }`:
/// what nginx `auth_request` and Traefik `forwardAuth` do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query of the auth endpoint.
    pub path: String,
    /// Headers of a 2xx auth answer given to the upstream (the client's own are removed
    /// first, so that no client can claim a user). Default: none.
    pub copy_headers: Vec<HeaderName>,
    /// Connect, send and answer together; past it the client gets 504. Default: 5s.
    pub timeout: Duration,
    /// How long an allowed answer is reused for the same credentials (cookies and
    /// `Authorization`); zero asks the service every time. Default: 0s.
    pub cache: Duration,
}

pub(super) fn access_rules(
    scope: &Scope,
    raw: &RawRoute,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> AccessRules {
    let networks = |key: &str, list: &Option<Spanned<Vec<Spanned<String>>>>, sink: &mut _| {
        list.iter()
            .flat_map(|l| l.get_ref())
            .filter_map(|net| scope.network(key, net, "\"10.8.0.0/24\" or \"192.0.2.7\"", sink))
            .collect::<Vec<_>>()
    };
    let allow = networks("allow", &raw.allow, sink);
    if let Some(empty) = raw.allow.as_ref().filter(|l| l.get_ref().is_empty()) {
        sink.at(
            empty.span(),
            format!(
                "{} is empty, which would refuse everyone; leave it out to allow every address",
                scope.name("allow")
            ),
        );
    }
    let deny = networks("deny", &raw.deny, sink);
    AccessRules {
        allow,
        deny,
        basic_auth: raw
            .basic_auth
            .as_ref()
            .and_then(|b| basic_auth(scope, b.get_ref(), base_dir, sink)),
        forward_auth: raw
            .forward_auth
            .as_ref()
            .and_then(|f| forward_auth(scope, f, sink)),
    }
}

fn basic_auth(
    scope: &Scope,
    raw: &RawBasicAuth,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<BasicAuth> {
    let realm = match &raw.realm {
        Some(realm) if realm.get_ref().contains(['"', '\\']) || realm.get_ref().is_empty() => {
            sink.at(
                realm.span(),
                format!(
                    "{} must be non-empty, without '\"' or '\\'",
                    scope.name("basic_auth realm")
                ),
            );
            return None;
        }
        Some(realm) => realm.get_ref().clone(),
        None => DEFAULT_REALM.to_owned(),
    };
    let bytes = scope.file("basic_auth htpasswd", &raw.htpasswd, base_dir, sink)?;
    let file = raw.htpasswd.get_ref();
    let Ok(text) = String::from_utf8(bytes) else {
        sink.at(
            raw.htpasswd.span(),
            format!("htpasswd file \"{file}\" is not UTF-8 text"),
        );
        return None;
    };
    match parse_htpasswd(&text) {
        Ok(users) if users.is_empty() => {
            sink.at(
                raw.htpasswd.span(),
                format!("htpasswd file \"{file}\" has no users"),
            );
            None
        }
        Ok(users) => Some(BasicAuth { users, realm }),
        Err(problem) => {
            sink.at(
                raw.htpasswd.span(),
                format!("htpasswd file \"{file}\": {problem}"),
            );
            None
        }
    }
}

/// `user:hash` lines; blank lines and `#` comments are skipped. Only bcrypt hashes
/// (`htpasswd -B`) are accepted: the MD5, SHA-1 and crypt(3) formats htpasswd also writes
/// are cheap to brute-force from a leaked file.
fn parse_htpasswd(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut users: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line_no = number + 1;
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {line_no} is not \"user:hash\""));
        };
        if user.is_empty() {
            return Err(format!("line {line_no} has an empty user name"));
        }
        let bcrypt = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
        if !bcrypt || hash.len() != 60 {
            return Err(format!(
                "line {line_no}: user \"{user}\" does not have a bcrypt hash (create it with `htpasswd -B`)"
            ));
        }
        // `$2y$10$…`: the cost is 2^10 rounds. Every wrong login pays it, so a cost past 12
        // (about a quarter second) lets a few requests a second take a core.
        let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
        if cost.is_none_or(|cost| cost > MAX_BCRYPT_COST) {
            return Err(format!(
                "line {line_no}: user \"{user}\" has a bcrypt cost over {MAX_BCRYPT_COST} (use `htpasswd -B -C 10`)"
            ));
        }
        if users.iter().any(|(known, _)| known == user) {
            return Err(format!("line {line_no}: user \"{user}\" is listed twice"));
        }
        users.push((user.to_owned(), hash.to_owned()));
    }
    Ok(users)
}

fn forward_auth(
    scope: &Scope,
    raw: &Spanned<RawForwardAuth>,
    sink: &mut ErrorSink<'_>,
) -> Option<ForwardAuth> {
    let errors_before = sink.len();
    let fields = raw.get_ref();
    let url = &fields.url;
    let parsed = url.get_ref().parse::<http::Uri>().ok().and_then(|uri| {
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return None,
        };
        let host = uri.host()?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Some((https, host, port, path))
    });
    if parsed.is_none() {
        sink.at(
            url.span(),
            format!(
                "{} \"{}\" is not an http:// or https:// URL",
                scope.name("forward_auth url"),
                url.get_ref()
            ),
        );
    }
    let copy_headers: Vec<HeaderName> = fields
        .copy_headers
        .iter()
        .flatten()
        .filter_map(|name| {
            if let Ok(header) = HeaderName::from_bytes(name.get_ref().as_bytes()) {
                if headers::is_framing(&header) {
                    sink.at(
                        name.span(),
                        format!(
                            "{}: \"{}\" frames the request and cannot be copied",
                            scope.name("forward_auth copy_headers"),
                            name.get_ref()
                        ),
                    );
                    return None;
                }
            }
            HeaderName::from_bytes(name.get_ref().as_bytes())
                .map_err(|_| {
                    sink.at(
                        name.span(),
                        format!(
                            "{}: invalid header name \"{}\"",
                            scope.name("forward_auth copy_headers"),
                            name.get_ref()
                        ),
                    )
                })
                .ok()
        })
        .collect();
    let timeout = scope.duration(
        "forward_auth timeout",
        fields.timeout.as_ref(),
        DEFAULT_AUTH_TIMEOUT,
        TIMEOUT_LIMITS,
        sink,
    );
    let cache = scope.duration(
        "forward_auth cache",
        fields.cache.as_ref(),
        Duration::ZERO,
        Limits::any(),
        sink,
    );
    let (https, host, port, path) = parsed?;
    (sink.len() == errors_before).then_some(ForwardAuth {
        https,
        host,
        port,
        path,
        copy_headers,
        timeout,
        cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$05$Kq7Vq1Q8m7wJ8m5yXwH5UuOqf3xkq6r5Qm0m4b1N3sN3k6iXyJ1dS";

    #[test]
    fn htpasswd_takes_bcrypt_lines_and_skips_comments() {
        let text = format!("# admins\n\nalice:{HASH}\nbob:{HASH}\n");
        let users = parse_htpasswd(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].0, "bob");
    }

    #[test]
    fn htpasswd_refuses_weak_hashes_and_duplicates() {
        let costly = HASH.replace("$05$", "$13$");
        assert!(parse_htpasswd(&format!("alice:{costly}\n"))
            .unwrap_err()
            .contains("cost over 12"));
        let md5 = "alice:$apr1$x3bJmN0Q$PJeYQ8F5O0b3y6x2lb0qH/\n";
        assert!(parse_htpasswd(md5).unwrap_err().contains("htpasswd -B"));
        let twice = format!("alice:{HASH}\nalice:{HASH}\n");
        assert!(parse_htpasswd(&twice).unwrap_err().contains("twice"));
        assert!(parse_htpasswd("nocolon\n").unwrap_err().contains("line 1"));
    }
}
