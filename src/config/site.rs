//! Routes answered from a local directory: `static = { .. }` (nginx `root`) and
//! `fastcgi = { .. }` (nginx `fastcgi_pass` in front of PHP-FPM).
//!
//! Whether the directories exist is not checked here: as with nginx's `root`, a site may be
//! deployed after Headland starts, and a missing file is a 404 at request time.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::{Limits, Scope};
use super::raw::{RawFastCgi, RawStaticSite};
use super::upstream::parse_server_addr;
use super::{FastCgiServer, FastCgiSite, StaticSite};

/// nginx's `index` default.
const DEFAULT_STATIC_INDEX: &str = "index.html";
/// What a PHP site's directories run.
const DEFAULT_FASTCGI_INDEX: &str = "index.php";
/// nginx's `fastcgi_read_timeout` default.
const DEFAULT_FASTCGI_TIMEOUT: Duration = Duration::from_secs(60);

/// `static = { root = "DIR", index = "index.html" }`.
pub(super) fn static_site(
    scope: &Scope,
    raw: &RawStaticSite,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<StaticSite> {
    let errors_before = sink.len();
    let root = scope.path("static root", &raw.root, base_dir, sink);
    let index = index_name(
        scope,
        "static index",
        raw.index.as_ref(),
        DEFAULT_STATIC_INDEX,
        sink,
    );
    if sink.len() > errors_before {
        return None;
    }
    Some(StaticSite { root: root?, index })
}

/// `fastcgi = { server = "unix:/run/php/php-fpm.sock" | "IP:PORT", root = "DIR", .. }`.
pub(super) fn fastcgi(
    scope: &Scope,
    raw: &RawFastCgi,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<FastCgiSite> {
    let errors_before = sink.len();
    let server = server(scope, &raw.server, base_dir, sink);
    let root = scope.path("fastcgi root", &raw.root, base_dir, sink);
    let index = index_name(
        scope,
        "fastcgi index",
        raw.index.as_ref(),
        DEFAULT_FASTCGI_INDEX,
        sink,
    );
    let front_controller = raw.front_controller.as_ref().and_then(|raw| {
        let text = raw.get_ref();
        let script = text.strip_prefix('/').unwrap_or_default();
        let plain = script
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', '\0', '%']));
        if plain && script.ends_with(".php") {
            return Some(text.clone());
        }
        sink.at(
            raw.span(),
            format!(
                "{} \"{text}\" must be a .php script path starting with '/', such as \"/index.php\"",
                scope.name("fastcgi front_controller")
            ),
        );
        None
    });
    let timeout = scope.duration(
        "fastcgi timeout",
        raw.timeout.as_ref(),
        DEFAULT_FASTCGI_TIMEOUT,
        Limits::at_least(Duration::from_millis(1)),
        sink,
    );
    if sink.len() > errors_before {
        return None;
    }
    Some(FastCgiSite {
        server: server?,
        root: root?,
        index,
        front_controller,
        timeout,
    })
}

fn server(
    scope: &Scope,
    raw: &Spanned<String>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<FastCgiServer> {
    let text = raw.get_ref();
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.is_empty() {
            return Some(FastCgiServer::Unix(base_dir.join(path)));
        }
    } else if let Some(addr) = parse_server_addr(text) {
        return Some(FastCgiServer::Tcp(addr));
    }
    sink.at(
        raw.span(),
        format!(
            "{} \"{text}\" must be IP:PORT, localhost:PORT or unix:/path/to/socket",
            scope.name("fastcgi server")
        ),
    );
    None
}

/// A file name (no '/'), as nginx's `index` takes.
fn index_name(
    scope: &Scope,
    key: &str,
    raw: Option<&Spanned<String>>,
    default: &str,
    sink: &mut ErrorSink<'_>,
) -> String {
    let Some(raw) = raw else {
        return default.to_owned();
    };
    let text = raw.get_ref();
    let plain =
        !text.is_empty() && text != "." && text != ".." && !text.contains(['/', '\\', '\0', '%']);
    if !plain {
        sink.at(
            raw.span(),
            format!(
                "{} \"{text}\" must be a file name such as \"{default}\"",
                scope.name(key)
            ),
        );
    }
    text.clone()
}
