//! Private keys leave a node only sealed: AES-256-GCM (ring) under the operator's
//! `seal_key_file`, with the etcd key the value is stored at as associated data, so a value
//! copied to another key (another certificate's) does not open.
//!
//! Format: `v1:` + hex(nonce ‖ ciphertext ‖ tag), text so that `etcdctl get` shows it whole.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: &str = "v1:";

/// The sealing key, from `[cluster] seal_key_file`.
pub struct SealKey {
    key: LessSafeKey,
    random: SystemRandom,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    #[error("the seal key must be 32 bytes")]
    KeyLength,
    #[error("no random bytes for a nonce")]
    Random,
    #[error("not a sealed value (expected \"v1:\" and hex)")]
    Format,
    #[error("cannot open the sealed value: another seal_key_file, or a value moved between keys")]
    Open,
}

// === impl SealKey ===

impl SealKey {
    pub fn new(bytes: &[u8]) -> Result<Self, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::KeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// Seals `plain` for storage at `at`. A fresh random nonce each time: 2^32 seals per key
    /// keep the collision chance negligible, far beyond any certificate count.
    pub fn seal(&self, at: &str, plain: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(at.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = String::with_capacity(VERSION.len() + 2 * (NONCE_LEN + sealed.len()));
        out.push_str(VERSION);
        for byte in nonce.iter().chain(&sealed) {
            out.push_str(&format!("{byte:02x}"));
        }
        Ok(out)
    }

    /// Opens what `seal` wrote for the same `at`.
    pub fn open(&self, at: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let hex = sealed.strip_prefix(VERSION).ok_or(SealError::Format)?;
        let mut bytes = decode_hex(hex.as_bytes()).ok_or(SealError::Format)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Format);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(at.as_bytes()),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

/// Bytes written as hex digits (either case); `None` for anything else.
pub fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    // `from_str_radix` alone would also take a sign ("+f").
    if !text.len().is_multiple_of(2) || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_at_its_place() {
        let key = SealKey::new(&[7; 32]).unwrap();
        let sealed = key.seal("/h/acme/cert/a", b"private key").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("private"));
        assert_eq!(key.open("/h/acme/cert/a", &sealed).unwrap(), b"private key");
        assert_eq!(key.open("/h/acme/cert/b", &sealed), Err(SealError::Open));
        let other = SealKey::new(&[8; 32]).unwrap();
        assert_eq!(other.open("/h/acme/cert/a", &sealed), Err(SealError::Open));
        // Two seals of the same bytes differ (fresh nonce).
        assert_ne!(sealed, key.seal("/h/acme/cert/a", b"private key").unwrap());
    }

    #[test]
    fn malformed_values_are_refused_not_panicked_on() {
        let key = SealKey::new(&[7; 32]).unwrap();
        for bad in [
            "", "v1:", "v1:0", "v1:zz", "v1:+f", "v2:00", "v1:0011", "v1:é0",
        ] {
            assert!(key.open("k", bad).is_err(), "{bad:?}");
        }
        assert_eq!(SealKey::new(&[0; 16]).err(), Some(SealError::KeyLength));
    }
}
