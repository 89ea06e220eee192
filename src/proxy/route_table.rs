//! The routing index: host → path prefix → route, precomputed once per snapshot.
//!
//! Lookup cost depends on the request (labels in its host, distinct prefix lengths of the
//! matching host), never on how many routes exist: exact hosts and wildcard suffixes are hash
//! lookups, and path prefixes are probed by length, longest first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::access::{AddressRules, BasicAuthCheck};
use super::forward_auth::ForwardAuthCheck;
use crate::config::{
    Fallback, FastCgiSite, HeaderRules, HostPattern, Redirect, RouteAction, RouteConfig, StaticSite,
};
use crate::ratelimit::Limiter;
use crate::upstream::Pool;

/// One `[[routes]]` entry, resolved.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub prefix: String,
    pub strip_prefix: bool,
    pub target: RouteTarget,
    pub fallback: Option<RouteFallback>,
    pub max_body_size: Option<u64>,
    pub rate_limit: Option<Arc<Limiter>>,
    /// Read request bodies whole before an upstream connection is taken.
    pub request_buffering: bool,
    pub addresses: Option<AddressRules>,
    pub basic_auth: Option<BasicAuthCheck>,
    pub forward_auth: Option<ForwardAuthCheck>,
    pub headers: HeaderRules,
    pub compress: bool,
}

/// What answers when the route's pool cannot.
#[derive(Debug)]
pub enum RouteFallback {
    StaticDir {
        dir: PathBuf,
        status: u16,
    },
    Pool(Arc<Pool>),
    /// The nearest other region's edge that is up, over HTTPS.
    Regions,
}

#[derive(Debug)]
pub enum RouteTarget {
    Proxy(Arc<Pool>),
    Redirect(Redirect),
    /// Its root canonicalized, so that files can be checked to lie under it.
    Static(StaticSite),
    /// Its root canonicalized, as for `Static`.
    FastCgi(FastCgiSite),
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
    /// `exact = true` routes: the path and nothing below it. Checked first.
    exact: HashMap<String, usize>,
    /// `/swarm` for a prefix route `/swarm/` when no route has `/swarm` itself: answered with
    /// a redirect to the slash, as nginx does for its proxied locations.
    add_slash: HashMap<String, usize>,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Route(usize),
    /// The path is this prefix route's prefix without its final slash: redirect to it.
    AddSlash(usize),
}

// === impl RouteTable ===

impl RouteTable {
    /// Indexes `routes`; `pools[i]` is the pool of upstream `i` in the same config.
    pub fn new(configs: &[RouteConfig], pools: &[Arc<Pool>], limiters: &[Arc<Limiter>]) -> Self {
        let mut table = RouteTable::default();
        for config in configs {
            let target = match &config.action {
                RouteAction::Proxy { upstream } => match pools.get(*upstream) {
                    Some(pool) => RouteTarget::Proxy(Arc::clone(pool)),
                    // Validation resolved every name, so this cannot happen; skip rather than panic.
                    None => continue,
                },
                RouteAction::Redirect(redirect) => RouteTarget::Redirect(redirect.clone()),
                RouteAction::Static(site) => RouteTarget::Static(StaticSite {
                    root: canonical_root(&site.root),
                    ..site.clone()
                }),
                RouteAction::FastCgi(site) => RouteTarget::FastCgi(FastCgiSite {
                    root: canonical_root(&site.root),
                    ..site.clone()
                }),
            };
            let index = table.routes.len();
            table.routes.push(Route {
                name: config.name.clone(),
                prefix: config.path.clone(),
                strip_prefix: config.strip_prefix,
                target,
                fallback: match &config.fallback {
                    None => None,
                    Some(Fallback::StaticDir { dir, status }) => Some(RouteFallback::StaticDir {
                        dir: dir.clone(),
                        status: *status,
                    }),
                    Some(Fallback::Upstream(index)) => {
                        pools.get(*index).cloned().map(RouteFallback::Pool)
                    }
                    Some(Fallback::Regions) => Some(RouteFallback::Regions),
                },
                max_body_size: config.max_body_size,
                rate_limit: config.rate_limit.and_then(|i| limiters.get(i)).cloned(),
                request_buffering: config.request_buffering,
                addresses: AddressRules::new(
                    config.access.allow.clone(),
                    config.access.deny.clone(),
                ),
                basic_auth: config
                    .access
                    .basic_auth
                    .as_ref()
                    .and_then(BasicAuthCheck::new),
                forward_auth: config
                    .access
                    .forward_auth
                    .clone()
                    .map(ForwardAuthCheck::new),
                headers: config.headers.clone(),
                compress: config.compress,
            });
            let paths = match &config.host {
                HostPattern::Exact(host) => table.exact.entry(host.clone()).or_default(),
                HostPattern::Wildcard(suffix) => table.wildcard.entry(suffix.clone()).or_default(),
                HostPattern::Any => table.any.get_or_insert_with(PathTable::default),
            };
            if config.exact {
                paths.exact.insert(config.path.clone(), index);
            } else {
                paths.insert(&config.path, index);
            }
        }
        let tables = table.exact.values_mut().chain(table.wildcard.values_mut());
        for paths in tables.chain(table.any.as_mut()) {
            paths.index_slashless();
        }
        table
    }

    /// The route for a normalised host (lowercase, no port) and a request path: the exact
    /// host first, then wildcards from the longest suffix, then `*`; within a host, the
    /// longest matching path prefix. A host whose routes match no prefix falls through to the
    /// next, less specific host pattern.
    pub fn lookup(&self, host: &str, path: &str) -> Option<usize> {
        match self.find(host, path)? {
            Found::Route(index) => Some(index),
            Found::AddSlash(_) => None,
        }
    }

    /// As `lookup`, also finding the paths that only lack their route's final slash.
    pub fn find(&self, host: &str, path: &str) -> Option<Found> {
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

    /// The route a request matched, if it matched one.
    pub fn matched(&self, index: Option<usize>) -> Option<&Route> {
        self.routes.get(index?)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

// === impl RouteTarget ===

impl RouteTarget {
    /// The `upstream` label of metrics and access log lines for targets without a pool.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            RouteTarget::Static(_) => Some("static"),
            RouteTarget::FastCgi(_) => Some("fastcgi"),
            RouteTarget::Proxy(_) | RouteTarget::Redirect(_) => None,
        }
    }
}

/// A site root with symlinks resolved; as configured while it does not exist yet (every
/// file is then missing, and a reload after it appears picks the real path up).
fn canonical_root(root: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

// === impl PathTable ===

impl PathTable {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.by_prefix.insert(prefix.to_owned(), route);
        if let Err(at) = self.lengths.binary_search_by(|len| prefix.len().cmp(len)) {
            self.lengths.insert(at, prefix.len());
        }
    }

    fn lookup(&self, path: &str) -> Option<Found> {
        // Both maps are empty for most hosts: the common lookup pays two length checks.
        if !self.exact.is_empty() {
            if let Some(&index) = self.exact.get(path) {
                return Some(Found::Route(index));
            }
        }
        if !self.add_slash.is_empty() && !path.ends_with('/') {
            if let Some(&index) = self.add_slash.get(path) {
                return Some(Found::AddSlash(index));
            }
        }
        self.lengths
            .iter()
            .filter_map(|len| path.get(..*len))
            .find_map(|prefix| self.by_prefix.get(prefix).copied())
            .map(Found::Route)
    }

    fn index_slashless(&mut self) {
        for (prefix, &index) in &self.by_prefix {
            let Some(bare) = prefix.strip_suffix('/').filter(|b| !b.is_empty()) else {
                continue;
            };
            if !self.by_prefix.contains_key(bare) && !self.exact.contains_key(bare) {
                self.add_slash.insert(bare.to_owned(), index);
            }
        }
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
            fallback: None,
            max_body_size: None,
            request_buffering: true,
            rate_limit: None,
            exact: false,
            access: Default::default(),
            headers: Default::default(),
            compress: false,
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

    /// The index must agree with the obvious definition: among routes whose host pattern
    /// matches and whose prefix starts the path, take the most specific host (exact, then
    /// longest wildcard, then `*`) that has any match, then the longest prefix.
    fn reference<'a>(routes: &'a [RouteConfig], host: &str, path: &str) -> Option<&'a str> {
        let host_rank = |pattern: &HostPattern| match pattern {
            HostPattern::Exact(h) if h == host => Some(usize::MAX),
            HostPattern::Wildcard(suffix) if host.ends_with(suffix.as_str()) => Some(suffix.len()),
            HostPattern::Any => Some(0),
            _ => None,
        };
        routes
            .iter()
            .filter(|r| path.starts_with(&r.path))
            .filter_map(|r| host_rank(&r.host).map(|rank| (rank, r.path.len(), r)))
            .max_by_key(|(rank, len, _)| (*rank, *len))
            .map(|(_, _, r)| r.name.as_str())
    }

    #[test]
    fn index_agrees_with_the_reference_on_random_tables() {
        use rand::seq::IndexedRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let labels = ["a", "b", "api", "eu", "example", "com", "x"];
        let segments = ["", "api", "v1", "swarm", "s", "admin"];
        let random_host = |rng: &mut rand::rngs::StdRng| {
            let n = rng.random_range(1..=4);
            (0..n)
                .map(|_| *labels.choose(rng).unwrap())
                .collect::<Vec<_>>()
                .join(".")
        };
        let random_path = |rng: &mut rand::rngs::StdRng| {
            let n = rng.random_range(0..=3);
            let mut path: String = (0..n)
                .map(|_| format!("/{}", segments.choose(rng).unwrap()))
                .collect();
            if path.is_empty() || rng.random_bool(0.5) {
                path.push('/');
            }
            path
        };
        for _ in 0..200 {
            let mut configs = Vec::new();
            let mut places = std::collections::HashSet::new();
            for _ in 0..rng.random_range(1..30) {
                let host = match rng.random_range(0..10) {
                    0 => HostPattern::Any,
                    1..=3 => HostPattern::Wildcard(format!(".{}", random_host(&mut rng))),
                    _ => HostPattern::Exact(random_host(&mut rng)),
                };
                let path = random_path(&mut rng);
                if places.insert((host.clone(), path.clone())) {
                    configs.push(route(host, &path));
                }
            }
            let table = RouteTable::new(&configs, &[], &[]);
            for _ in 0..50 {
                let host = random_host(&mut rng);
                let path = random_path(&mut rng) + "tail";
                assert_eq!(
                    name(&table, &host, &path),
                    reference(&configs, &host, &path),
                    "host {host} path {path} routes {configs:#?}"
                );
            }
        }
    }

    #[test]
    fn exact_paths_and_the_missing_slash() {
        let host = || HostPattern::Exact("a.com".into());
        let mut health = route(host(), "/health");
        health.exact = true;
        let table = RouteTable::new(
            &[
                route(host(), "/"),
                route(host(), "/swarm/"),
                health,
                route(host(), "/api"),
                route(host(), "/api/"),
            ],
            &[],
            &[],
        );
        assert_eq!(table.find("a.com", "/health"), Some(Found::Route(2)));
        // An exact route covers nothing below it.
        assert_eq!(table.find("a.com", "/health/x"), Some(Found::Route(0)));
        assert_eq!(table.find("a.com", "/swarm"), Some(Found::AddSlash(1)));
        assert_eq!(table.find("a.com", "/swarm/x"), Some(Found::Route(1)));
        // `/api` has a route of its own: no redirect.
        assert_eq!(table.find("a.com", "/api"), Some(Found::Route(3)));
        assert_eq!(table.lookup("a.com", "/swarm"), None);
    }

    #[test]
    fn no_match_without_catch_all() {
        let table = RouteTable::new(
            &[route(HostPattern::Exact("a.com".into()), "/app/")],
            &[],
            &[],
        );
        assert_eq!(table.lookup("a.com", "/"), None);
        assert_eq!(table.lookup("b.com", "/app/"), None);
    }
}
