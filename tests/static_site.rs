//! `static` routes through the real binary: index files, the trailing-slash redirect, no
//! listings, validators and 304, single ranges and 416, precompressed siblings, GET and
//! HEAD only, `strip_prefix`, and no way out of the root by `..` or a symlink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use support::{get, request, scratch_dir, Headland};

/// A site in a scratch directory (removed with the proxy), beside a directory it must not
/// reveal.
fn site() -> std::path::PathBuf {
    let dir = scratch_dir();
    let root = dir.join("site");
    let outside = dir.join("outside");
    for sub in ["docs", "empty"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
    std::fs::write(root.join("app.js"), "console.log('plain');\n").unwrap();
    // What a build step's gzip and brotli would leave; the bytes are checked, not decoded.
    std::fs::write(root.join("app.js.gz"), b"\x1f\x8bgzip bytes").unwrap();
    std::fs::write(root.join("app.js.br"), b"brotli bytes").unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("linkdir")).unwrap();
    std::os::unix::fs::symlink(root.join("index.html"), root.join("inner.html")).unwrap();
    root
}

fn start(root: &Path) -> Headland {
    let dir = root.parent().unwrap().to_path_buf();
    let root = root.display();
    let body = format!(
        r#"
[[routes]]
host = "site.test"
static = {{ root = "{root}" }}

[[routes]]
host = "site.test"
path = "/manual/"
strip_prefix = true
static = {{ root = "{root}/docs", index = "index.html" }}
"#
    );
    Headland::start_in(dir, &body, "", "")
}

fn with_headers(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n{headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn index_files_redirects_and_no_listing() {
    let root = site();
    let proxy = start(&root);

    let home = get(proxy.http, "site.test", "/").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.text(), "<h1>home</h1>\n");
    assert_eq!(
        home.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(home.header("etag").is_some());
    assert!(home.header("last-modified").is_some());

    let docs = get(proxy.http, "site.test", "/docs?lang=en").await;
    assert_eq!(docs.status, 301);
    assert_eq!(docs.header("location"), Some("/docs/?lang=en"));
    let docs = get(proxy.http, "site.test", "/docs/").await;
    assert_eq!(docs.text(), "<h1>docs</h1>\n");
    let manual = get(proxy.http, "site.test", "/manual/index.html").await;
    assert_eq!(manual.text(), "<h1>docs</h1>\n");

    assert_eq!(get(proxy.http, "site.test", "/empty/").await.status, 403);
    assert_eq!(
        get(proxy.http, "site.test", "/nothing.html").await.status,
        404
    );

    let post = "POST /index.html HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let post = request(proxy.http, post).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    let head = "HEAD /big.bin HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    let head = request(proxy.http, head).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("100000"));
    assert!(head.body.is_empty());

    let big = get(proxy.http, "site.test", "/big.bin").await;
    assert_eq!(big.body, std::fs::read(root.join("big.bin")).unwrap());
}

#[tokio::test]
async fn validators_and_ranges() {
    let root = site();
    let proxy = start(&root);
    let first = get(proxy.http, "site.test", "/index.html").await;
    let etag = first.header("etag").unwrap().to_owned();
    let modified = first.header("last-modified").unwrap().to_owned();

    let cached = request(
        proxy.http,
        &with_headers("/index.html", &format!("If-None-Match: {etag}\r\n")),
    )
    .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));
    let cached = request(
        proxy.http,
        &with_headers("/index.html", &format!("If-Modified-Since: {modified}\r\n")),
    )
    .await;
    assert_eq!(cached.status, 304);
    let stale = request(
        proxy.http,
        &with_headers("/index.html", "If-None-Match: \"other\"\r\n"),
    )
    .await;
    assert_eq!(stale.status, 200);

    let part = request(
        proxy.http,
        &with_headers("/big.bin", "Range: bytes=10-19\r\n"),
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 10-19/100000"));
    let big = std::fs::read(root.join("big.bin")).unwrap();
    assert_eq!(part.body, &big[10..20]);
    let tail = request(proxy.http, &with_headers("/big.bin", "Range: bytes=-5\r\n")).await;
    assert_eq!(tail.body, &big[99_995..]);
    let beyond = request(
        proxy.http,
        &with_headers("/big.bin", "Range: bytes=200000-\r\n"),
    )
    .await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */100000"));
}

#[tokio::test]
async fn precompressed_siblings_for_clients_that_accept_them() {
    let root = site();
    let proxy = start(&root);

    let gzip = request(
        proxy.http,
        &with_headers("/app.js", "Accept-Encoding: gzip\r\n"),
    )
    .await;
    assert_eq!(gzip.status, 200);
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(
        gzip.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(gzip.header("vary"), Some("Accept-Encoding"));
    assert_eq!(gzip.body, b"\x1f\x8bgzip bytes");

    let br = request(
        proxy.http,
        &with_headers("/app.js", "Accept-Encoding: gzip, deflate, br\r\n"),
    )
    .await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.body, b"brotli bytes");

    let refused = request(
        proxy.http,
        &with_headers("/app.js", "Accept-Encoding: gzip;q=0\r\n"),
    )
    .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.text(), "console.log('plain');\n");
    let plain = get(proxy.http, "site.test", "/app.js").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
}

#[tokio::test]
async fn nothing_outside_the_root() {
    let root = site();
    let proxy = start(&root);

    assert_eq!(get(proxy.http, "site.test", "/leak.txt").await.status, 404);
    assert_eq!(
        get(proxy.http, "site.test", "/linkdir/secret.txt")
            .await
            .status,
        404
    );
    for path in [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/docs/..%2f..%2foutside/secret.txt",
        "/docs%2f..%2f..%2foutside%2fsecret.txt",
    ] {
        let escape = get(proxy.http, "site.test", path).await;
        assert!(
            matches!(escape.status, 400 | 404),
            "{path}: {}",
            escape.status
        );
        assert!(!escape.text().contains("secret"), "{path}");
    }
    // A symlink that stays inside the root is followed.
    let inner = get(proxy.http, "site.test", "/inner.html").await;
    assert_eq!(inner.status, 200);
    assert_eq!(inner.text(), "<h1>home</h1>\n");
}
