//! A route's access rules at run time: client address lists and basic auth. Both answer
//! before anything reaches the upstream (403, 401). Forward-auth lives in `forward_auth`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use ipnet::IpNet;
use ring::digest;
use tokio::sync::Semaphore;

use crate::config::BasicAuth;

/// Remembered logins per route; past this the memory starts over (every login pays one
/// bcrypt check again), so a flood of distinct valid logins cannot grow it.
const VERIFIED_CAPACITY: usize = 4096;
/// A remembered login is checked against the hash again after this long.
const VERIFIED_FOR: Duration = Duration::from_secs(300);

/// `allow` and `deny`, as in nginx: a denied address is refused whatever `allow` says; with
/// an `allow` list, only addresses on it get through.
#[derive(Debug, Default)]
pub struct AddressRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// Basic auth against an htpasswd file's bcrypt hashes.
#[derive(Debug)]
pub struct BasicAuthCheck {
    users: HashMap<String, String>,
    /// Any user's hash: a login with an unknown name is checked against it, so that it takes
    /// as long as a wrong password and does not tell which names exist.
    decoy: String,
    /// `WWW-Authenticate` for 401 answers.
    pub challenge: HeaderValue,
    /// SHA-256 of `Authorization` values that passed, with when they did. bcrypt costs tens
    /// of milliseconds by design; a browser sends the header with every request.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

/// What basic auth made of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Valid,
    /// No credentials, or wrong ones: 401 with the challenge.
    Refused,
    /// Every bcrypt slot stayed taken (a flood of logins): 503, try again.
    Busy,
}

/// How long a login waits for a bcrypt slot before it is turned away.
const SLOT_WAIT: Duration = Duration::from_secs(2);

// === impl AddressRules ===

impl AddressRules {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Option<Self> {
        (!allow.is_empty() || !deny.is_empty()).then_some(Self { allow, deny })
    }

    /// Whether `client` may use the route. An unknown client address (a Unix-socket peer)
    /// is refused by any list.
    pub fn admits(&self, client: Option<IpAddr>) -> bool {
        let Some(client) = client.map(canonical) else {
            return false;
        };
        if self.deny.iter().any(|net| net.contains(&client)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client))
    }
}

/// `::ffff:192.0.2.7`, as a dual-stack listener reports IPv4 peers, compares as 192.0.2.7.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

// === impl BasicAuthCheck ===

impl BasicAuthCheck {
    pub fn new(config: &BasicAuth) -> Option<Self> {
        let decoy = config.users.first()?.1.clone();
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", config.realm);
        Some(Self {
            users: config.users.iter().cloned().collect(),
            decoy,
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or(HeaderValue::from_static("Basic")),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Checks an `Authorization` header. The bcrypt comparison runs on the blocking pool so
    /// that it never stalls the other requests of this worker.
    ///
    /// `slots` bounds the bcrypt checks running at once, process-wide: a flood of made-up
    /// logins then costs at most that many cores, and waits or is turned away beyond it.
    pub async fn check(&self, authorization: Option<&HeaderValue>, slots: &Semaphore) -> Login {
        let Some(header) = authorization else {
            return Login::Refused;
        };
        let key = fingerprint(header.as_bytes());
        if self.remembers(&key) {
            return Login::Valid;
        }
        let Some((user, password)) = credentials(header) else {
            return Login::Refused;
        };
        let hash = self
            .users
            .get(&user)
            .cloned()
            .unwrap_or_else(|| self.decoy.clone());
        let known = self.users.contains_key(&user);
        let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, slots.acquire()).await else {
            return Login::Busy;
        };
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if !(known && matches) {
            return Login::Refused;
        }
        self.remember(key);
        Login::Valid
    }

    fn remembers(&self, key: &[u8; 32]) -> bool {
        let Ok(verified) = self.verified.lock() else {
            return false;
        };
        verified
            .get(key)
            .is_some_and(|since| since.elapsed() < VERIFIED_FOR)
    }

    fn remember(&self, key: [u8; 32]) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(key, Instant::now());
        }
    }
}

/// `Basic base64(user:password)` (RFC 7617 §2); the scheme name is case-insensitive.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let text = header.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

pub(super) fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()))
            })
            .collect()
    }

    #[test]
    fn deny_wins_and_allow_limits() {
        let rules = AddressRules::new(nets(&["10.8.0.0/24"]), nets(&["10.8.0.66"])).unwrap();
        assert!(rules.admits(Some("10.8.0.5".parse().unwrap())));
        assert!(!rules.admits(Some("10.8.0.66".parse().unwrap())));
        assert!(!rules.admits(Some("192.0.2.1".parse().unwrap())));
        assert!(rules.admits(Some("::ffff:10.8.0.5".parse().unwrap())));
        assert!(!rules.admits(None));
        let deny_only = AddressRules::new(vec![], nets(&["192.0.2.0/24"])).unwrap();
        assert!(deny_only.admits(Some("198.51.100.1".parse().unwrap())));
        assert!(AddressRules::new(vec![], vec![]).is_none());
    }

    #[test]
    fn credentials_follow_rfc_7617() {
        let header = HeaderValue::from_static("basic YWxpY2U6czNjcjp0");
        assert_eq!(
            credentials(&header),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(credentials(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(credentials(&HeaderValue::from_static("Basic !!")), None);
    }

    #[tokio::test]
    async fn a_login_is_checked_against_the_hash() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let check = BasicAuthCheck::new(&BasicAuth {
            users: vec![("alice".into(), hash)],
            realm: "admin".into(),
        })
        .unwrap();
        let good = HeaderValue::from_static("Basic YWxpY2U6czNjcmV0");
        let wrong = HeaderValue::from_static("Basic YWxpY2U6bm9wZQ==");
        let stranger = HeaderValue::from_static("Basic Ym9iOnMzY3JldA==");
        let slots = Semaphore::new(1);
        assert_eq!(check.check(Some(&good), &slots).await, Login::Valid);
        assert_eq!(check.check(Some(&good), &slots).await, Login::Valid);
        assert_eq!(check.check(Some(&wrong), &slots).await, Login::Refused);
        assert_eq!(check.check(Some(&stranger), &slots).await, Login::Refused);
        assert_eq!(check.check(None, &slots).await, Login::Refused);
        let _taken = slots.acquire().await.unwrap();
        let other = HeaderValue::from_static("Basic YWxpY2U6b3RoZXI=");
        assert_eq!(check.check(Some(&other), &slots).await, Login::Busy);
        assert_eq!(check.challenge, "Basic realm=\"admin\", charset=\"UTF-8\"");
    }
}
