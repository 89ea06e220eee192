//! A route's header rules at run time: fields set or removed on the way to the upstream and
//! back, and CORS (preflights answered here, `Access-Control-*` on allowed origins' responses).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use super::pipeline::Reply;
use crate::config::{Cors, CorsOrigins, HeaderRules};

/// Applies `rules` (set, or remove when the value is `None`) to a request.
pub fn apply_to_request(
    rules: &[(HeaderName, Option<HeaderValue>)],
    request: &mut RequestHeader,
) -> Result<()> {
    for (name, value) in rules {
        match value {
            Some(value) => request.insert_header(name.clone(), value.clone())?,
            None => {
                request.remove_header(name);
            }
        }
    }
    Ok(())
}

/// Applies the response rules and, for an allowed origin, the CORS fields.
pub fn apply_to_response(
    rules: &HeaderRules,
    origin: Option<&HeaderValue>,
    response: &mut ResponseHeader,
) -> Result<()> {
    for (name, value) in &rules.response {
        match value {
            Some(value) => response.insert_header(name.clone(), value.clone())?,
            None => {
                response.remove_header(name);
            }
        }
    }
    if let Some(cors) = &rules.cors {
        if let Some(allowed) = allowed_origin(cors, origin) {
            response.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, allowed)?;
            if cors.credentials {
                response.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
            }
            if !cors.expose.is_empty() {
                response.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, join(&cors.expose))?;
            }
        }
        if matches!(cors.origins, CorsOrigins::List(_)) {
            // The answer differs by origin: caches must keep one per origin.
            response.append_header(VARY, "Origin")?;
        }
    }
    Ok(())
}

/// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`), answered
/// here with 204; the upstream never sees it. An origin that is not allowed gets the 204
/// without `Access-Control-*` fields, which the browser takes as a refusal.
pub fn preflight(cors: &Cors, request: &RequestHeader) -> Option<Reply> {
    let headers = &request.headers;
    if request.method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = headers.get(ORIGIN)?;
    let mut reply = Reply::text(204, String::new());
    if matches!(cors.origins, CorsOrigins::List(_)) {
        reply = reply.with(VARY, "Origin");
    }
    let Some(allowed) = allowed_origin(cors, Some(origin)) else {
        return Some(reply);
    };
    let methods: Vec<&str> = cors.methods.iter().map(Method::as_str).collect();
    reply = reply
        .with_header(ACCESS_CONTROL_ALLOW_ORIGIN, allowed)
        .with(ACCESS_CONTROL_ALLOW_METHODS, &methods.join(", "))
        .with(ACCESS_CONTROL_MAX_AGE, &cors.max_age.as_secs().to_string());
    if !cors.headers.is_empty() {
        reply = reply.with(ACCESS_CONTROL_ALLOW_HEADERS, &join(&cors.headers));
    }
    if cors.credentials {
        reply = reply.with(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    Some(reply)
}

/// The `Access-Control-Allow-Origin` value for this request's origin, if it is allowed.
fn allowed_origin(cors: &Cors, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match &cors.origins {
        CorsOrigins::Any => Some(HeaderValue::from_static("*")),
        CorsOrigins::List(list) => {
            let origin = origin?;
            let text = origin.to_str().ok()?.to_ascii_lowercase();
            list.contains(&text).then(|| origin.clone())
        }
    }
}

fn join(names: &[HeaderName]) -> String {
    let names: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors() -> Cors {
        Cors {
            origins: CorsOrigins::List(vec!["https://app.example.com".into()]),
            methods: vec![Method::GET, Method::POST],
            headers: vec![HeaderName::from_static("content-type")],
            expose: vec![],
            credentials: true,
            max_age: Duration::from_secs(600),
        }
    }

    fn preflight_from(origin: &str) -> RequestHeader {
        let mut request = RequestHeader::build("OPTIONS", b"/api", None).unwrap();
        request.insert_header("origin", origin).unwrap();
        request
            .insert_header("access-control-request-method", "POST")
            .unwrap();
        request
    }

    fn field<'a>(reply: &'a Reply, name: &str) -> Option<&'a HeaderValue> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_gets_the_fields() {
        let reply = preflight(&cors(), &preflight_from("https://App.example.com")).unwrap();
        assert_eq!(reply.status, 204);
        assert_eq!(
            field(&reply, "access-control-allow-origin").unwrap(),
            "https://App.example.com"
        );
        assert_eq!(
            field(&reply, "access-control-allow-methods").unwrap(),
            "GET, POST"
        );
        assert_eq!(
            field(&reply, "access-control-allow-credentials").unwrap(),
            "true"
        );
    }

    #[test]
    fn other_origins_and_plain_options_are_not_let_in() {
        let reply = preflight(&cors(), &preflight_from("https://evil.example")).unwrap();
        assert!(field(&reply, "access-control-allow-origin").is_none());
        let plain = RequestHeader::build("OPTIONS", b"/api", None).unwrap();
        assert!(preflight(&cors(), &plain).is_none());
    }
}
