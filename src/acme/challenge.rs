//! HTTP-01 answers (RFC 8555 §8.3): token → key authorization, held in memory while an
//! order is being validated and served by the proxy at `/.well-known/acme-challenge/TOKEN`.

use std::collections::HashMap;
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
