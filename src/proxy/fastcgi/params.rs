//! The CGI variables of one request (RFC 3875 §4.1), as nginx's `fastcgi_params` sets them
//! plus `SCRIPT_FILENAME`, `PATH_INFO` and `HTTPS`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use pingora::http::RequestHeader;

use super::script::Script;

/// What the variables are made of besides the request itself.
pub(super) struct Origin<'a> {
    pub root: &'a Path,
    /// The client as `client_ip` resolved it (behind a trusted proxy, the real client).
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// The listener the request came in on.
    pub server: Option<SocketAddr>,
    /// The request's host, normalised.
    pub host: &'a str,
    pub https: bool,
    /// The length of the body that will be sent on `FCGI_STDIN`.
    pub content_length: u64,
}

/// Name-value pairs for `FCGI_PARAMS`.
pub(super) fn build(
    request: &RequestHeader,
    script: &Script,
    origin: &Origin<'_>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(24 + request.headers.len());
    let mut set =
        |name: &str, value: &[u8]| params.push((name.as_bytes().to_vec(), value.to_vec()));
    let uri = &request.uri;
    let filename = script.filename.as_os_str().as_encoded_bytes();
    let root = origin.root.as_os_str().as_encoded_bytes();
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SERVER_SOFTWARE", b"headland");
    set("REQUEST_METHOD", request.method.as_str().as_bytes());
    set("QUERY_STRING", uri.query().unwrap_or("").as_bytes());
    set(
        "REQUEST_URI",
        uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
    );
    set("DOCUMENT_URI", script.name.as_bytes());
    set("DOCUMENT_ROOT", root);
    set("SCRIPT_NAME", script.name.as_bytes());
    set("SCRIPT_FILENAME", filename);
    set("PATH_INFO", script.path_info.as_bytes());
    set("SERVER_PROTOCOL", protocol(request.version).as_bytes());
    set(
        "REQUEST_SCHEME",
        if origin.https { b"https" } else { b"http" },
    );
    if origin.https {
        set("HTTPS", b"on");
    }
    // PHP's `cgi.force_redirect` wants this, as nginx's `fastcgi_params` sets it.
    set("REDIRECT_STATUS", b"200");
    let client_ip = origin
        .client_ip
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    set("REMOTE_ADDR", client_ip.as_bytes());
    let client_port = origin
        .client_port
        .map(|p| p.to_string())
        .unwrap_or_default();
    set("REMOTE_PORT", client_port.as_bytes());
    let server_ip = origin
        .server
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    set("SERVER_ADDR", server_ip.as_bytes());
    let server_port = origin
        .server
        .map(|a| a.port().to_string())
        .unwrap_or_default();
    set("SERVER_PORT", server_port.as_bytes());
    set("SERVER_NAME", origin.host.as_bytes());
    let content_type = request.headers.get(http::header::CONTENT_TYPE);
    set(
        "CONTENT_TYPE",
        content_type.map_or(&b""[..], |v| v.as_bytes()),
    );
    // Empty without a body, as nginx sends it.
    let length = if origin.content_length > 0 {
        origin.content_length.to_string()
    } else {
        String::new()
    };
    set("CONTENT_LENGTH", length.as_bytes());
    for (name, value) in header_params(request) {
        set(&name, &value);
    }
    params
}

/// `HTTP_*` for each request header, repeated headers joined as one (`; ` for cookies,
/// RFC 6265 §5.4; `, ` otherwise, RFC 9110 §5.3).
///
/// Left out: `Content-Type` and `Content-Length` (they have their own variables), names with
/// '_' (nginx's `underscores_in_headers off`: `X_Real_IP` would otherwise pass for
/// `X-Real-IP`) and `Proxy` (httpoxy, CVE-2016-5385: PHP would read it as `HTTP_PROXY`).
fn header_params(request: &RequestHeader) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in request.headers.iter() {
        let name = name.as_str();
        let skipped = name.contains('_')
            || name == "content-type"
            || name == "content-length"
            || name == "proxy";
        if skipped {
            continue;
        }
        let variable = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match out.iter_mut().find(|(known, _)| *known == variable) {
            Some((_, joined)) => {
                joined.extend_from_slice(if name == "cookie" { b"; " } else { b", " });
                joined.extend_from_slice(value.as_bytes());
            }
            None => out.push((variable, value.as_bytes().to_vec())),
        }
    }
    out
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn value<'a>(params: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn cgi_variables_of_a_request() {
        let mut request = RequestHeader::build("POST", b"/index.php/a%20b?x=1", None).unwrap();
        request
            .insert_header("host", "cms.example.com:8080")
            .unwrap();
        request
            .insert_header("content-type", "application/x-www-form-urlencoded")
            .unwrap();
        request.append_header("cookie", "a=1").unwrap();
        request.append_header("cookie", "b=2").unwrap();
        request.insert_header("proxy", "http://evil").unwrap();
        request.insert_header("x_real_ip", "1.2.3.4").unwrap();
        let script = Script {
            filename: PathBuf::from("/srv/cms/public/index.php"),
            name: "/index.php".into(),
            path_info: "/a b".into(),
        };
        let origin = Origin {
            root: Path::new("/srv/cms/public"),
            client_ip: Some("203.0.113.9".parse().unwrap()),
            client_port: Some(40000),
            server: Some("127.0.0.1:8080".parse().unwrap()),
            host: "cms.example.com",
            https: true,
            content_length: 3,
        };
        let params = build(&request, &script, &origin);
        assert_eq!(value(&params, "REQUEST_URI"), Some("/index.php/a%20b?x=1"));
        assert_eq!(value(&params, "QUERY_STRING"), Some("x=1"));
        assert_eq!(value(&params, "PATH_INFO"), Some("/a b"));
        assert_eq!(
            value(&params, "SCRIPT_FILENAME"),
            Some("/srv/cms/public/index.php")
        );
        assert_eq!(value(&params, "HTTPS"), Some("on"));
        assert_eq!(value(&params, "REMOTE_ADDR"), Some("203.0.113.9"));
        assert_eq!(value(&params, "SERVER_PORT"), Some("8080"));
        assert_eq!(value(&params, "CONTENT_LENGTH"), Some("3"));
        assert_eq!(value(&params, "HTTP_HOST"), Some("cms.example.com:8080"));
        assert_eq!(value(&params, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(value(&params, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(value(&params, "HTTP_PROXY"), None);
        assert_eq!(value(&params, "HTTP_X_REAL_IP"), None);
    }
}
