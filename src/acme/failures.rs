//! Recent failed orders for one certificate, kept in `state_dir` so that a restart keeps
//! backing off instead of hammering the CA. The file is data from disk: a value that the
//! task never writes is treated as a corrupt file, never trusted into time arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::schedule;
use super::store::CertStore;

/// Consecutive failures for a certificate, kept on disk so a restart keeps backing off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Failures {
    pub count: u32,
    /// Unix seconds; no attempt before this.
    pub not_before: u64,
    pub last_error: Option<String>,
}

// === impl Failures ===

impl Failures {
    /// What `state_dir` remembers of recent failures for `primary`. A file that cannot be
    /// parsed, or whose back-off time is out of range (beyond what `failed` ever writes,
    /// or beyond what the clock can hold), is corrupt: logged and ignored, so the
    /// certificate is evaluated afresh instead of waiting forever or panicking the task.
    pub fn load(primary: &str, store: &CertStore, now: SystemTime) -> Self {
        let path = store.failures_path(primary);
        let Ok(json) = std::fs::read(&path) else {
            return Self::default();
        };
        Self::from_json(&json, now).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "failures file is unreadable or holds a back-off time out of range; ignoring it as corrupt");
            Self::default()
        })
    }

    /// Failures as `failed` writes them (to disk or etcd); `None` when unreadable or out of
    /// range.
    pub fn from_json(json: &[u8], now: SystemTime) -> Option<Self> {
        let latest = now.checked_add(schedule::MAX_WAIT)?;
        serde_json::from_slice::<Self>(json)
            .ok()
            .filter(|f| f.not_before_time().is_some_and(|at| at <= latest))
    }

    /// `not_before` as a time; `None` when the clock cannot represent it.
    pub fn not_before_time(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.not_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (std::path::PathBuf, CertStore) {
        let dir = std::env::temp_dir().join(format!(
            "headland-failures-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let store = CertStore::new(&dir);
        (dir, store)
    }

    fn unix(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_huge_back_off_time_makes_the_file_corrupt_not_a_panic() {
        let (dir, store) = temp_store();
        let now = SystemTime::now();
        let huge = [u64::MAX, u64::MAX / 2, unix(now) + 100 * 365 * 86_400];
        for not_before in huge {
            let json = format!(r#"{{"count":3,"not_before":{not_before},"last_error":"boom"}}"#);
            std::fs::write(store.failures_path("a.test"), json).unwrap();
            let failures = Failures::load("a.test", &store, now);
            assert_eq!(failures.count, 0, "{not_before}");
            assert_eq!(failures.not_before, 0, "{not_before}");
        }
        for garbage in ["{", r#"{"count":1,"not_before":-5,"last_error":null}"#] {
            std::fs::write(store.failures_path("a.test"), garbage).unwrap();
            assert_eq!(Failures::load("a.test", &store, now).count, 0, "{garbage}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_sane_back_off_survives_a_restart() {
        let (dir, store) = temp_store();
        let now = SystemTime::now();
        let in_an_hour = unix(now) + 3600;
        let json = format!(r#"{{"count":2,"not_before":{in_an_hour},"last_error":null}}"#);
        std::fs::write(store.failures_path("a.test"), json).unwrap();
        let failures = Failures::load("a.test", &store, now);
        assert_eq!(failures.count, 2);
        assert_eq!(failures.not_before_time().map(unix), Some(in_an_hour));
        assert_eq!(Failures::load("missing.test", &store, now).count, 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
