//! Challenge answers, held in memory while an order is being validated: HTTP-01 (RFC 8555
//! §8.3), token → key authorization, served by the proxy at
//! `/.well-known/acme-challenge/TOKEN`; and DNS-01 (§8.4), TXT values at
//! `_acme-challenge.NAME`, served by the embedded DNS server.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Clone, Default)]
pub struct Http01Tokens {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

// === impl Http01Tokens ===

impl Http01Tokens {
    pub fn insert(&self, token: &str, key_authorization: &str) {
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.insert(token.to_owned(), key_authorization.to_owned());
        }
    }

    pub fn remove(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.remove(token);
        }
    }

    /// The key authorization for a request path, if it is a challenge we are answering.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.tokens.read().ok()?.get(token).cloned()
    }
}

/// DNS-01 TXT values by owner name (lowercase, no trailing dot). A name can hold two values
/// at once: a certificate for `example.com` and `*.example.com` validates both there.
#[derive(Debug, Clone, Default)]
pub struct Dns01Records {
    records: Arc<RwLock<BTreeMap<String, Vec<String>>>>,
    /// Bumped on every change, so the DNS server knows to rebuild what it serves.
    generation: Arc<AtomicU64>,
}

// === impl Dns01Records ===

impl Dns01Records {
    pub fn insert(&self, name: &str, value: &str) {
        if let Ok(mut records) = self.records.write() {
            let values = records.entry(name.to_owned()).or_default();
            // One RRset never holds the same record twice (RFC 2181 §5).
            if !values.iter().any(|v| v == value) {
                values.push(value.to_owned());
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn remove(&self, name: &str, value: &str) {
        if let Ok(mut records) = self.records.write() {
            if let Some(values) = records.get_mut(name) {
                values.retain(|v| v != value);
                if values.is_empty() {
                    records.remove(name);
                }
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every (name, values) pair being served now.
    pub fn all(&self) -> Vec<(String, Vec<String>)> {
        self.records
            .read()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_known_tokens_under_the_challenge_path() {
        let tokens = Http01Tokens::default();
        tokens.insert("abc", "abc.thumb");
        assert_eq!(
            tokens.answer("/.well-known/acme-challenge/abc").as_deref(),
            Some("abc.thumb")
        );
        assert_eq!(tokens.answer("/.well-known/acme-challenge/abd"), None);
        assert_eq!(tokens.answer("/abc"), None);
        tokens.remove("abc");
        assert_eq!(tokens.answer("/.well-known/acme-challenge/abc"), None);
    }
}
