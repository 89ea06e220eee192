//! `[[webhooks]]`: where state-change events are POSTed, signed with a shared secret.

use std::path::Path;

use toml::Spanned;

use super::error::ErrorSink;
use super::field::Scope;
use super::raw::RawWebhook;

/// Events a webhook can subscribe to.
pub const EVENT_NAMES: [&str; 6] = [
    "upstream.down",
    "upstream.up",
    "region.down",
    "region.up",
    "cert.renewed",
    "cert.failed",
];

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Shown in logs; never contains the secret.
    pub url: String,
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// HMAC-SHA256 key for `X-Headland-Signature`. Default: none (unsigned).
    pub secret: Option<Vec<u8>>,
    /// Subscribed event names. Default: all.
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of every log line and error message.
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .field("events", &self.events)
            .finish()
    }
}

pub fn webhook(
    raw: &Spanned<RawWebhook>,
    base_dir: &Path,
    sink: &mut ErrorSink<'_>,
) -> Option<WebhookConfig> {
    let raw = raw.get_ref();
    let errors_before = sink.len();
    let url = raw.url.get_ref();
    let parsed = parse_url(url);
    if parsed.is_none() {
        sink.at(
            raw.url.span(),
            format!("webhook url \"{url}\" must be http:// or https:// with a host, e.g. \"https://hooks.example.com/headland\""),
        );
    }
    let scope = Scope::new("webhook ");
    let secret = raw
        .secret_file
        .as_ref()
        .and_then(|file| scope.secret("secret_file", file, base_dir, sink))
        .map(|secret| secret.0);
    let events = match &raw.events {
        None => EVENT_NAMES.iter().map(|e| (*e).to_owned()).collect(),
        Some(events) => {
            let choices = EVENT_NAMES.map(|name| (name, Some(name)));
            events
                .iter()
                .filter_map(|event| scope.choice("event", Some(event), None, &choices, sink))
                .map(str::to_owned)
                .collect()
        }
    };
    if sink.len() > errors_before {
        return None;
    }
    let (https, host, port, path) = parsed?;
    Some(WebhookConfig {
        url: url.clone(),
        https,
        host,
        port,
        path,
        secret,
        events,
    })
}

/// `http[s]://host[:port][/path]` → (https, host, port, path).
fn parse_url(url: &str) -> Option<(bool, String, u16, String)> {
    let (https, rest) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("http://")?),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let uri: http::uri::Authority = authority.parse().ok()?;
    let host = uri
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() || authority.contains('@') {
        return None;
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((https, host, port, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://hooks.example.com/headland?x=1"),
            Some((
                true,
                "hooks.example.com".into(),
                443,
                "/headland?x=1".into()
            ))
        );
        assert_eq!(
            parse_url("http://127.0.0.1:9000"),
            Some((false, "127.0.0.1".into(), 9000, "/".into()))
        );
        assert_eq!(
            parse_url("http://[::1]:9/x"),
            Some((false, "::1".into(), 9, "/x".into()))
        );
        assert_eq!(parse_url("ftp://x"), None);
        assert_eq!(parse_url("https://"), None);
        assert_eq!(parse_url("https://user:pw@x.com/"), None);
    }
}
