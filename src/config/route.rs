//! `[[routes]]`: host pattern, path prefix, what answers (an upstream, a redirect, a static
//! site or a FastCGI server), the fallback, and the per-route limits. Every problem of a route is reported, not the first.

use std::collections::HashMap;
use std::path::Path;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{suggestion, Limits, Scope};
use super::raw::{RawFallback, RawRedirect, RawRoute};
use super::{access, headers, site};
use super::{
    Fallback, HostPattern, RateLimitConfig, Redirect, RouteAction, RouteConfig, UpstreamConfig,
};
use crate::host::normalize_host;

/// Plesk's nginx default, so that uploads that worked behind it keep working.
const DEFAULT_MAX_BODY_SIZE: u64 = 128 << 20;
/// A placeholder page served while the app is down is an outage, not content: 503 keeps
/// caches, crawlers and monitors from taking it for the real page.
const DEFAULT_FALLBACK_STATUS: u16 = 503;

pub(super) fn routes(
    raw: &[Spanned<RawRoute>],
    upstreams: &[UpstreamConfig],
    rate_limits: &[RateLimitConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Vec<RouteConfig> {
    let mut seen_places: HashMap<(HostPattern, String, bool), usize> = HashMap::new();
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for spanned in raw {
        let Some(route) = self::route(spanned, upstreams, rate_limits, base_dir, sink) else {
            continue;
        };
        let line = sink.line_of(spanned.span());
        let place = (route.host.clone(), route.path.clone(), route.exact);
        if let Some(first) = seen_places.insert(place, line) {
            sink.at(
                spanned.get_ref().host.span(),
                format!(
                    "route for host \"{}\" path \"{}\" duplicates the route at line {first}",
                    route.host, route.path
                ),
            );
        } else if let Some(name) = &spanned.get_ref().name {
            // Default names derive from host and path, so only explicit names can clash
            // without the places clashing too.
            if let Some(first) = seen_names.insert(route.name.clone(), line) {
                sink.at(
                    name.span(),
                    format!(
                        "route name \"{}\" is already used by the route at line {first}",
                        route.name
                    ),
                );
            }
        } else {
            seen_names.insert(route.name.clone(), line);
        }
        routes.push(route);
    }
    routes
}

/// Validates one route, reporting every problem in it; `None` if there was any.
fn route(
    spanned: &Spanned<RawRoute>,
    upstreams: &[UpstreamConfig],
    rate_limits: &[RateLimitConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<RouteConfig> {
    let raw = spanned.get_ref();
    let errors_before = sink.len();
    let host = host_pattern(&raw.host, sink);
    let path = match &raw.path {
        None => Some("/".to_owned()),
        Some(path) => route_path(path, sink),
    };
    let label = format!(
        "route \"{}\"",
        raw.name.as_ref().map_or_else(
            || format!("{}{}", raw.host.get_ref(), path.as_deref().unwrap_or("")),
            |n| n.get_ref().clone()
        )
    );
    let scope = Scope::new(format!("{label}: "));
    if let Some(name) = &raw.name {
        check_name(name, "route", sink);
    }
    let strip_prefix = raw.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
    let strip_root =
        (raw.upstream.is_some() || raw.static_site.is_some()) && path.as_deref() == Some("/");
    if let (Some(flag), true) = (&raw.strip_prefix, strip_root) {
        if *flag.get_ref() {
            sink.at(
                flag.span(),
                format!("{label}: strip_prefix needs a path other than \"/\""),
            );
        }
    }
    let action = action(spanned, &label, &scope, upstreams, base_dir, sink);
    let fallback = raw
        .fallback
        .as_ref()
        .filter(|_| raw.upstream.is_some())
        .and_then(|f| fallback(&scope, f, upstreams, base_dir, sink));
    let max_body_size = match &raw.max_body_size {
        None => Some(DEFAULT_MAX_BODY_SIZE),
        Some(size) => {
            let bytes = scope.size("max_body_size", Some(size), 0, Limits::any(), sink);
            // "0" is how the file says unlimited.
            (bytes != 0).then_some(bytes)
        }
    };
    let request_buffering = raw.request_buffering.as_ref().is_none_or(|b| *b.get_ref());
    let rate_limit = raw.rate_limit.as_ref().and_then(|name| {
        let wanted = name.get_ref();
        let found = rate_limits.iter().position(|l| &l.name == wanted);
        if found.is_none() {
            let hint = suggestion(wanted, rate_limits.iter().map(|l| l.name.as_str()));
            sink.at(
                name.span(),
                format!("unknown rate limit \"{wanted}\"{hint}"),
            );
        }
        found
    });
    let access = access::access_rules(&scope, raw, base_dir, sink);
    let headers = headers::header_rules(&scope, raw, sink);
    let exact = raw.exact.as_ref().is_some_and(|e| *e.get_ref());
    let compress = raw.compress.as_ref().is_some_and(|c| *c.get_ref());
    if sink.len() > errors_before {
        return None;
    }
    let (host, path, action) = (host?, path?, action?);
    let name = match &raw.name {
        Some(name) => name.get_ref().clone(),
        // Apart from the prefix route of the same path, which is named `{host}{path}`.
        None if exact => format!("{host}={path}"),
        None => format!("{host}{path}"),
    };
    Some(RouteConfig {
        name,
        host,
        path,
        strip_prefix,
        action,
        fallback,
        max_body_size,
        request_buffering,
        rate_limit,
        exact,
        access,
        headers,
        compress,
    })
}

/// What answers the route: exactly one of `upstream`, `redirect`, `static` and `fastcgi`.
/// Keys that only make sense for another kind of answer are refused, not ignored.
fn action(
    spanned: &Spanned<RawRoute>,
    label: &str,
    scope: &Scope,
    upstreams: &[UpstreamConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<RouteAction> {
    let raw = spanned.get_ref();
    let given = [
        raw.upstream.as_ref().map(|s| (s.span(), "upstream")),
        raw.redirect.as_ref().map(|s| (s.span(), "redirect")),
        raw.static_site.as_ref().map(|s| (s.span(), "static")),
        raw.fastcgi.as_ref().map(|s| (s.span(), "fastcgi")),
    ];
    let mut given = given.into_iter().flatten();
    let Some((_, first)) = given.next() else {
        sink.at(
            spanned.span(),
            format!("{label} needs an upstream, a redirect, static or fastcgi"),
        );
        return None;
    };
    if let Some((span, second)) = given.next() {
        sink.at(
            span,
            format!("{label} has both {first} and {second}; keep one"),
        );
        return None;
    }
    // Keys each kind of answer has no use for, and how messages name that kind: the keys
    // about forwarding, and for some kinds `strip_prefix` or `max_body_size` too.
    const PROXY_ONLY: [&str; 6] = [
        "request_buffering",
        "fallback",
        "request_headers",
        "response_headers",
        "cors",
        "compress",
    ];
    let (also_refused, kind): (&[&str], &str) = match first {
        "redirect" => (&["strip_prefix", "max_body_size"], "redirects"),
        "static" => (&["max_body_size"], "static sites"),
        "fastcgi" => (&["strip_prefix"], "fastcgi"),
        _ => (&[], ""),
    };
    let refused = |key: &&str| {
        first != "upstream" && (PROXY_ONLY.contains(key) || also_refused.contains(key))
    };
    let present = [
        raw.strip_prefix
            .as_ref()
            .map(|s| (s.span(), "strip_prefix")),
        raw.max_body_size
            .as_ref()
            .map(|s| (s.span(), "max_body_size")),
        raw.request_buffering
            .as_ref()
            .map(|s| (s.span(), "request_buffering")),
        raw.fallback.as_ref().map(|s| (s.span(), "fallback")),
        raw.request_headers
            .as_ref()
            .map(|s| (s.span(), "request_headers")),
        raw.response_headers
            .as_ref()
            .map(|s| (s.span(), "response_headers")),
        raw.cors.as_ref().map(|s| (s.span(), "cors")),
        raw.compress.as_ref().map(|s| (s.span(), "compress")),
    ];
    for (span, key) in present.into_iter().flatten() {
        if refused(&key) {
            sink.at(
                span,
                format!("{label}: {key} only applies to routes with an upstream, not {kind}"),
            );
        }
    }
    match (&raw.upstream, &raw.redirect, &raw.static_site, &raw.fastcgi) {
        (Some(name), ..) => {
            upstream_index(name, upstreams, sink).map(|upstream| RouteAction::Proxy { upstream })
        }
        (_, Some(redirect), ..) => self::redirect(scope, redirect, sink).map(RouteAction::Redirect),
        (_, _, Some(site), _) => {
            site::static_site(scope, site.get_ref(), base_dir, sink).map(RouteAction::Static)
        }
        (_, _, _, Some(fastcgi)) => {
            site::fastcgi(scope, fastcgi.get_ref(), base_dir, sink).map(RouteAction::FastCgi)
        }
        (None, None, None, None) => None,
    }
}

fn route_path(path: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<String> {
    let text = path.get_ref();
    let problem = if !text.starts_with('/') {
        Some("must start with '/'")
    } else if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else if text.contains(['?', '#']) {
        Some("must not contain '?' or '#' (routes match the path without its query)")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            sink.at(path.span(), format!("route path \"{text}\" {problem}"));
            None
        }
        None => Some(text.clone()),
    }
}

/// Upstream and route names appear in logs and metric labels: keep them plain.
fn check_name(name: &Spanned<String>, what: &str, sink: &mut ErrorSink<'_>) -> bool {
    let text = name.get_ref();
    let plain = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'*'));
    if !plain {
        sink.at(
            name.span(),
            format!(
                "{what} name \"{text}\" must be 1 to 64 letters, digits, '_', '-', '.', '/' or '*'"
            ),
        );
    }
    plain
}

fn host_pattern(host: &Spanned<String>, sink: &mut ErrorSink<'_>) -> Option<HostPattern> {
    let text = host.get_ref();
    if text == "*" {
        return Some(HostPattern::Any);
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, text.as_str()),
    };
    match normalize_host(name.as_bytes()) {
        Ok(name) if wildcard => Some(HostPattern::Wildcard(format!(".{name}"))),
        Ok(name) => Some(HostPattern::Exact(name.into_owned())),
        Err(error) => {
            sink.at(
                host.span(),
                format!("invalid route host \"{text}\": {error} (expected \"example.com\", \"*.example.com\" or \"*\")"),
            );
            None
        }
    }
}

fn upstream_index(
    name: &Spanned<String>,
    upstreams: &[UpstreamConfig],
    sink: &mut ErrorSink<'_>,
) -> Option<usize> {
    let wanted = name.get_ref();
    if let Some(index) = upstreams.iter().position(|u| &u.name == wanted) {
        return Some(index);
    }
    let hint = suggestion(wanted, upstreams.iter().map(|u| u.name.as_str()));
    sink.at(name.span(), format!("unknown upstream \"{wanted}\"{hint}"));
    None
}

/// `fallback = { static_dir = "DIR", status = 503 }`, `{ upstream = "NAME" }` or
/// `{ regions = true }`.
fn fallback(
    scope: &Scope,
    raw: &Spanned<RawFallback>,
    upstreams: &[UpstreamConfig],
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<Fallback> {
    let fallback = raw.get_ref();
    let regions = fallback.regions.as_ref().filter(|r| *r.get_ref());
    if let Some(off) = fallback.regions.as_ref().filter(|r| !*r.get_ref()) {
        sink.at(
            off.span(),
            format!(
                "{} regions can only be true (leave fallback out instead)",
                scope.name("fallback")
            ),
        );
        return None;
    }
    match (&fallback.static_dir, &fallback.upstream, regions) {
        (Some(dir), None, None) => {
            let errors_before = sink.len();
            let dir = scope.path("fallback static_dir", dir, base_dir, sink);
            let status = scope.integer(
                "fallback status",
                fallback.status.as_ref(),
                DEFAULT_FALLBACK_STATUS,
                &[200..=200, 500..=599],
                sink,
            );
            (sink.len() == errors_before)
                .then_some(dir)
                .flatten()
                .map(|dir| Fallback::StaticDir { dir, status })
        }
        (None, upstream, regions) if upstream.is_some() != regions.is_some() => {
            // Another pool, or another region's edge, answers with its own status.
            if let Some(status) = &fallback.status {
                sink.at(
                    status.span(),
                    format!("{} needs static_dir", scope.name("fallback status")),
                );
            }
            match upstream {
                Some(name) => upstream_index(name, upstreams, sink).map(Fallback::Upstream),
                None => Some(Fallback::Regions),
            }
        }
        (None, None, None) => {
            sink.at(
                raw.span(),
                format!(
                    "{} needs static_dir, upstream or regions = true",
                    scope.name("fallback")
                ),
            );
            None
        }
        _ => {
            sink.at(
                raw.span(),
                format!(
                    "{} has one of static_dir, upstream or regions = true, not several",
                    scope.name("fallback")
                ),
            );
            None
        }
    }
}

fn redirect(
    scope: &Scope,
    raw: &Spanned<RawRedirect>,
    sink: &mut ErrorSink<'_>,
) -> Option<Redirect> {
    let raw = raw.get_ref();
    let to = raw.to.get_ref();
    let after_scheme = to
        .strip_prefix("https://")
        .or_else(|| to.strip_prefix("http://"));
    let has_host = after_scheme.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    let scheme_ok = has_host || to.starts_with('/');
    if !scheme_ok || to.contains(|c: char| c.is_whitespace() || c.is_control()) {
        sink.at(
            raw.to.span(),
            format!(
                "redirect target \"{to}\" must be an http(s):// URL with a host, or a path starting with '/'"
            ),
        );
        return None;
    }
    let errors_before = sink.len();
    let code = scope.integer(
        "redirect code",
        raw.code.as_ref(),
        301,
        &[301..=301, 302..=302, 303..=303, 307..=307, 308..=308],
        sink,
    );
    if sink.len() > errors_before {
        return None;
    }
    let keep_path = raw.keep_path.unwrap_or(true);
    // The request path brings its own leading '/'.
    let to = if keep_path {
        to.trim_end_matches('/')
    } else {
        to
    };
    Some(Redirect {
        to: to.to_owned(),
        code,
        keep_path,
    })
}
