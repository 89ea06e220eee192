//! The routing configuration the nodes share through etcd (`headland cluster push FILE`).
//!
//! Pushed text is everything but the node-local sections: `[node]`, `[listen]` and `[cluster]`
//! stay in each node's own file. A node runs the shared text followed by its local sections
//! (the rest of its local file is ignored while a shared configuration exists), validated
//! like any reload: a text that fails on this node changes nothing and its errors are
//! reported, located in the pushed file. The last good shared text is kept in `state_dir`,
//! so a node that starts while etcd is down runs what it ran before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::config::{self, Config, ConfigError};

/// The etcd path of the shared routing configuration.
pub const ROUTING: &str = "config/routing";

/// Sections that only the local file may hold.
const LOCAL: [&str; 3] = ["node", "listen", "cluster"];

/// How errors in the shared text name their file.
pub const SOURCE_NAME: &str = "etcd:config/routing";

/// The shared text in use, if there is one.
#[derive(Default)]
pub struct SharedConfig {
    text: ArcSwapOption<String>,
}

// === impl SharedConfig ===

impl SharedConfig {
    pub fn new(text: Option<String>) -> Self {
        Self {
            text: ArcSwapOption::new(text.map(Arc::new)),
        }
    }

    pub fn text(&self) -> Option<Arc<String>> {
        self.text.load_full()
    }

    pub fn set(&self, text: Option<String>) {
        self.text.store(text.map(Arc::new));
    }
}

/// `file:line:col: message` for every node-local section header in `shared`.
pub fn local_sections_in(shared: &str, file: &str) -> Vec<String> {
    shared
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let header = line.trim_start();
            let name = header
                .strip_prefix('[')?
                .split([']', '.'])
                .next()?
                .trim()
                .trim_matches('"');
            LOCAL.contains(&name).then(|| {
                let column = line.len() - header.len() + 1;
                format!(
                    "{file}:{}:{column}: [{name}] is node-local: keep it in each node's own file, not in the shared configuration",
                    index + 1
                )
            })
        })
        .collect()
}

/// The configuration text a node runs: `shared`, then the node-local sections of the local
/// file (so that line numbers in errors are those of the pushed file).
pub fn compose(local_text: &str, shared: &str) -> Result<String, String> {
    let local: toml::Table = local_text
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let kept: toml::Table = local
        .into_iter()
        .filter(|(key, _)| LOCAL.contains(&key.as_str()))
        .collect();
    let local_part = toml::to_string(&kept).map_err(|e| e.to_string())?;
    Ok(format!(
        "{shared}\n\n# --- the node-local sections of this node's own file ---\n{local_part}"
    ))
}

/// Reads the local file at `path` and validates what the node runs: the file alone, or
/// with `shared`, the shared text and the file's node-local sections. Also returns the local
/// file's text.
pub fn load(path: &Path, shared: Option<&str>) -> Result<(Config, String), ConfigError> {
    let Some(shared) = shared else {
        return config::load_with_text(path);
    };
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let local = std::fs::read_to_string(path).map_err(read_error)?;
    let composed = compose(&local, shared).map_err(|e| read_error(std::io::Error::other(e)))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let config = config::parse(&composed, SOURCE_NAME, base_dir).map_err(ConfigError::Invalid)?;
    Ok((config, local))
}

/// At start: the shared text from etcd (bounded by `[cluster] timeout`), else the last good
/// one this node kept, else none. Runs before the server's runtime exists, so on its own.
pub fn fetch_at_start(config: &Config) -> Option<String> {
    let cluster_config = config.cluster.as_ref()?;
    let cache = cache_path(&config.node.state_dir);
    let from_etcd = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .and_then(|runtime| {
            runtime.block_on(async {
                let cluster = super::Cluster::new(cluster_config.clone(), &config.node.name).ok()?;
                match cluster.get(ROUTING).await {
                    Ok(stored) => Some(stored.map(|s| String::from_utf8_lossy(&s.value).into_owned())),
                    Err(error) => {
                        tracing::warn!(%error, "etcd unreachable at start; using the shared configuration this node kept");
                        None
                    }
                }
            })
        });
    match from_etcd {
        Some(text) => text,
        None => std::fs::read_to_string(cache).ok(),
    }
}

/// Keeps `text` as the last good shared configuration (or forgets it when none is shared).
pub fn remember(state_dir: &Path, text: Option<&str>) {
    let path = cache_path(state_dir);
    let result = match text {
        Some(text) => {
            crate::acme::store::write_atomically(&path, text.as_bytes()).map_err(|e| e.to_string())
        }
        None => match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.to_string()),
            _ => Ok(()),
        },
    };
    if let Err(error) = result {
        tracing::warn!(%error, "cannot keep the shared configuration in state_dir; a start with etcd down will use the local file");
    }
}

/// Where the last good shared text is kept.
pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster-routing.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sections_are_refused_with_their_place() {
        let shared =
            "[upstreams.app]\nservers = []\n\n  [listen]\nhttp = []\n[node.x]\n[[routes]]\n";
        let errors = local_sections_in(shared, "routing.toml");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("routing.toml:4:3: [listen] is node-local"));
        assert!(errors[1].starts_with("routing.toml:6:1: [node] is node-local"));
    }

    #[test]
    fn a_composed_text_keeps_the_shared_lines_and_the_local_sections_only() {
        let local = "[node]\nname = \"a\"\n\n[upstreams.old]\nservers = []\n";
        let shared = "[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n";
        let composed = compose(local, shared).unwrap();
        assert!(composed.starts_with(shared));
        let table: toml::Table = composed.parse().unwrap();
        assert_eq!(table["node"]["name"].as_str(), Some("a"));
        assert!(table["upstreams"].get("old").is_none());
        assert!(table["upstreams"].get("app").is_some());
    }
}
