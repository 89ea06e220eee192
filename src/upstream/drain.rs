//! Servers an operator took out of rotation (`POST /upstreams/POOL/SERVER/drain`): they get
//! no new requests while the ones already on them finish. The list is this node's own (pools
//! are local) and lives in `state_dir/drained.json`, so a drain outlasts reloads, restarts
//! and binary upgrades until it is undone.
//!
//! The flag itself is on each `UpstreamServer`, where `Pool::select` reads it with one
//! atomic load. A server keeps its flag across reloads because snapshots share it; a server
//! new to a pool (a reload that adds it back, a host name's new address) gets it from here
//! when the snapshot or the address list that holds it is applied.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::Pool;

const FILE_NAME: &str = "drained.json";

/// One drained server: the pool and the name given to the drain call (an address, a
/// `unix:` path, or a `NAME:PORT` that stands for all of its addresses).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Drained {
    pub upstream: String,
    pub server: String,
}

/// The drained servers and the file that keeps them.
#[derive(Debug)]
pub struct Drains {
    /// `None` keeps drains in memory only (tests, tools).
    file: Option<PathBuf>,
    drained: Mutex<BTreeSet<Drained>>,
}

/// What a drain or undrain call did.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainChange {
    /// The servers the name matched now (labels); empty when the pool no longer has it.
    Applied(Vec<String>),
    /// No such pool, or no such server in it (and none drained under that name).
    Unknown,
}

// === impl Drains ===

impl Drains {
    /// The drains kept in `state_dir`. An unreadable or broken file is reported and read as
    /// empty: serving with every server beats not serving.
    pub fn load(state_dir: &Path) -> Self {
        let file = state_dir.join(FILE_NAME);
        let drained = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Vec<Drained>>(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %file.display(), %error, "ignoring the drained-server list");
                Vec::new()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "cannot read the drained-server list");
                Vec::new()
            }
        };
        for entry in &drained {
            tracing::info!(upstream = %entry.upstream, server = %entry.server, "server stays drained");
        }
        Self {
            file: Some(file),
            drained: Mutex::new(drained.into_iter().collect()),
        }
    }

    /// No file behind it.
    pub fn in_memory() -> Self {
        Self {
            file: None,
            drained: Mutex::default(),
        }
    }

    /// Every drain, in order.
    pub fn list(&self) -> Vec<Drained> {
        self.drained
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets every server's flag in `pools` from the list.
    pub fn apply<'a>(&self, pools: impl IntoIterator<Item = &'a std::sync::Arc<Pool>>) {
        let Ok(drained) = self.drained.lock() else {
            return;
        };
        for pool in pools {
            for server in &pool.servers {
                let wanted = drained
                    .iter()
                    .any(|d| d.upstream == pool.name && server.is_named(&d.server));
                server.set_drained(wanted);
            }
        }
    }

    /// Drains (`drain = true`) or undrains `server` of `pool`, writes the list, and only then
    /// changes the servers: a drain that could not be kept is not made.
    pub fn set(
        &self,
        pool: Option<&Pool>,
        upstream: &str,
        server: &str,
        drain: bool,
    ) -> Result<DrainChange, String> {
        let Ok(mut drained) = self.drained.lock() else {
            return Err("the drained-server list is unavailable".to_owned());
        };
        let entry = Drained {
            upstream: upstream.to_owned(),
            server: server.to_owned(),
        };
        let matched: Vec<_> = pool
            .map(|pool| {
                pool.servers
                    .load()
                    .iter()
                    .filter(|s| s.is_named(server))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Undrain also clears a name the pool lost since, so that it cannot come back drained.
        let clears_a_lost_name = !drain && drained.contains(&entry);
        if matched.is_empty() && !clears_a_lost_name {
            return Ok(DrainChange::Unknown);
        }
        let mut next = drained.clone();
        if drain {
            next.insert(entry);
        } else {
            next.remove(&entry);
        }
        if next != *drained {
            self.save(&next)?;
            *drained = next;
        }
        for s in &matched {
            // Another drain name may still cover this server (its address and its NAME:PORT).
            let still = drained
                .iter()
                .any(|d| d.upstream == upstream && s.is_named(&d.server));
            s.set_drained(still);
        }
        Ok(DrainChange::Applied(
            matched.iter().map(|s| s.label.clone()).collect(),
        ))
    }

    fn save(&self, drained: &BTreeSet<Drained>) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let list: Vec<&Drained> = drained.iter().collect();
        let mut bytes = serde_json::to_vec_pretty(&list).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        crate::acme::store::write_atomically(file, &bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::sync::Arc;

    fn pool() -> Arc<Pool> {
        let text = "[upstreams.app]\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n";
        let config = config::parse(text, "test.toml", Path::new("/")).unwrap();
        Arc::new(Pool::new(&config.upstreams[0], None))
    }

    #[test]
    fn a_drain_is_written_before_it_applies_and_read_back_after_a_restart() {
        let dir = crate::testing::temp_dir("drains");
        let drains = Drains::load(&dir);
        let app = pool();
        let change = drains.set(Some(&app), "app", "127.0.0.1:2", true).unwrap();
        assert_eq!(change, DrainChange::Applied(vec!["127.0.0.1:2".to_owned()]));
        let servers = app.servers.load();
        assert!(!servers[0].is_drained() && servers[1].is_drained());
        assert!(!servers[1].is_usable() && servers[1].is_healthy());

        // A restart: a fresh pool gets the flag from the file.
        let again = Drains::load(&dir);
        let fresh = pool();
        again.apply([&fresh]);
        assert!(fresh.servers.load()[1].is_drained());
        assert_eq!(
            again.set(Some(&fresh), "app", "127.0.0.1:9", true).unwrap(),
            DrainChange::Unknown
        );
        again
            .set(Some(&fresh), "app", "127.0.0.1:2", false)
            .unwrap();
        assert!(!fresh.servers.load()[1].is_drained());
        assert!(Drains::load(&dir).list().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_drain_that_cannot_be_kept_is_not_made() {
        let dir = crate::testing::temp_dir("drains");
        let blocker = dir.join("file");
        std::fs::write(&blocker, "").unwrap();
        // state_dir is a file: the list cannot be written under it.
        let drains = Drains::load(&blocker);
        let app = pool();
        assert!(drains.set(Some(&app), "app", "127.0.0.1:1", true).is_err());
        assert!(!app.servers.load()[0].is_drained());
        assert!(drains.list().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn undrain_clears_a_server_the_pool_no_longer_has() {
        let drains = Drains::in_memory();
        let app = pool();
        drains.set(Some(&app), "app", "127.0.0.1:1", true).unwrap();
        assert_eq!(
            drains.set(None, "app", "127.0.0.1:1", false).unwrap(),
            DrainChange::Applied(vec![])
        );
        assert!(drains.list().is_empty());
    }
}
