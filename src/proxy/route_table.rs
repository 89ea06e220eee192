//! The routing index: host → path prefix → route, precomputed once per snapshot.
//!
//! Lookup cost depends on the request (labels in its host, distinct prefix lengths of the
//! matching host), never on how many routes exist: exact hosts and wildcard suffixes are hash
//! lookups, and path prefixes are probed by length, longest first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{HostPattern, Redirect, RouteAction, RouteConfig};
use crate::upstream::Pool;

/// One `[[routes]]` entry, resolved.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub prefix: String,
    pub strip_prefix: bool,
    pub target: RouteTarget,
    pub fallback_static_dir: Option<PathBuf>,
    pub max_body_size: Option<u64>,
}

#[derive(Debug)]
pub enum RouteTarget {
    Proxy(Arc<Pool>),
    Redirect(Redirect),
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, PathTable>,
    /// Keyed by the suffix with its leading dot (`.example.com`).
    wildcard: HashMap<String, PathTable>,
    any: Option<PathTable>,
}

/// Path prefixes of one host pattern.
#[derive(Debug, Default)]
struct PathTable {
    by_prefix: HashMap<String, usize>,
    /// Distinct prefix lengths, longest first.
    lengths: Vec<usize>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Indexes `routes`; `pools[i]` is the pool of upstream `i` in the same config.
    pub fn new(configs: &[RouteConfig], pools: &[Arc<Pool>]) -> Self {
        let mut table = RouteTable::default();
        for config in configs {
            let target = match &config.action {
                RouteAction::Proxy { upstream } => match pools.get(*upstream) {
                    Some(pool) => RouteTarget::Proxy(Arc::clone(pool)),
                    // Validation resolved every name, so this cannot happen; skip rather than panic.
                    None => continue,
                },
                RouteAction::Redirect(redirect) => RouteTarget::Redirect(redirect.clone()),
            };
            let index = table.routes.len();
            table.routes.push(Route {
                name: config.name.clone(),
                prefix: config.path.clone(),
                strip_prefix: config.strip_prefix,
                target,
                fallback_static_dir: config.fallback_static_dir.clone(),
                max_body_size: config.max_body_size,
            });
            let paths = match &config.host {
                HostPattern::Exact(host) => table.exact.entry(host.clone()).or_default(),
                HostPattern::Wildcard(suffix) => table.wildcard.entry(suffix.clone()).or_default(),
                HostPattern::Any => table.any.get_or_insert_with(PathTable::default),
            };
            paths.insert(&config.path, index);
        }
        table
    }

    /// The route for a normalised host (lowercase, no port) and a request path: the exact
    /// host first, then wildcards from the longest suffix, then `*`; within a host, the
    /// longest matching path prefix. A host whose routes match no prefix falls through to the
    /// next, less specific host pattern.
    pub fn lookup(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(found) = self.exact.get(host).and_then(|t| t.lookup(path)) {
            return Some(found);
        }
        if !self.wildcard.is_empty() {
            let suffixes = host
                .match_indices('.')
                .filter_map(|(dot, _)| host.get(dot..));
            for suffix in suffixes {
                if let Some(found) = self.wildcard.get(suffix).and_then(|t| t.lookup(path)) {
                    return Some(found);
                }
            }
        }
        self.any.as_ref().and_then(|t| t.lookup(path))
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

// === impl PathTable ===

impl PathTable {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.by_prefix.insert(prefix.to_owned(), route);
        if let Err(at) = self.lengths.binary_search_by(|len| prefix.len().cmp(len)) {
            self.lengths.insert(at, prefix.len());
        }
    }

    fn lookup(&self, path: &str) -> Option<usize> {
        self.lengths
            .iter()
            .filter_map(|len| path.get(..*len))
            .find_map(|prefix| self.by_prefix.get(prefix).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Redirect;

    fn route(host: HostPattern, path: &str) -> RouteConfig {
        RouteConfig {
            name: format!("{host}{path}"),
            host,
            path: path.to_owned(),
            strip_prefix: false,
            action: RouteAction::Redirect(Redirect {
                to: "/".into(),
                code: 301,
                keep_path: true,
            }),
            fallback_static_dir: None,
            max_body_size: None,
        }
    }

    fn name<'a>(table: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        table
            .lookup(host, path)
            .and_then(|i| table.get(i))
            .map(|r| r.name.as_str())
    }

    #[test]
    fn exact_then_longest_wildcard_then_any_then_longest_prefix() {
        let table = RouteTable::new(
            &[
                route(HostPattern::Exact("example.com".into()), "/"),
                route(HostPattern::Exact("example.com".into()), "/swarm/"),
                route(HostPattern::Exact("example.com".into()), "/swarm/admin/"),
                route(HostPattern::Wildcard(".example.com".into()), "/"),
                route(HostPattern::Wildcard(".eu.example.com".into()), "/"),
                route(HostPattern::Exact("api.example.com".into()), "/v1/"),
                route(HostPattern::Any, "/"),
            ],
            &[],
        );
        assert_eq!(name(&table, "example.com", "/x"), Some("example.com/"));
        assert_eq!(
            name(&table, "example.com", "/swarm/x"),
            Some("example.com/swarm/")
        );
        assert_eq!(
            name(&table, "example.com", "/swarm/admin/x"),
            Some("example.com/swarm/admin/")
        );
        assert_eq!(name(&table, "a.example.com", "/"), Some("*.example.com/"));
        assert_eq!(
            name(&table, "x.eu.example.com", "/"),
            Some("*.eu.example.com/")
        );
        assert_eq!(
            name(&table, "api.example.com", "/v1/users"),
            Some("api.example.com/v1/")
        );
        // The exact host has no route for this path: fall through to the wildcard.
        assert_eq!(
            name(&table, "api.example.com", "/other"),
            Some("*.example.com/")
        );
        assert_eq!(name(&table, "elsewhere.org", "/"), Some("*/"));
    }

    #[test]
    fn no_match_without_catch_all() {
        let table = RouteTable::new(&[route(HostPattern::Exact("a.com".into()), "/app/")], &[]);
        assert_eq!(table.lookup("a.com", "/"), None);
        assert_eq!(table.lookup("b.com", "/app/"), None);
    }
}
