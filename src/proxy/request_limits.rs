//! Client-side limits on one request's header, checked before routing so that nothing of
//! an oversized request reaches an upstream: URI length (414), one header field's size,
//! all fields together and their count (431, RFC 6585 §5). nginx answers the same cases with
//! 414 and 400 (`large_client_header_buffers 4 8k`).
//!
//! Also the one repair of framing Pingora leaves to us: `Content-Length: 5, 5` is forwarded
//! as the single value RFC 9110 §8.6 asks for.

use http::header::CONTENT_LENGTH;
use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::config::HttpLimits;

/// A request refused by a limit: the status to answer, the metric label, the detail line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub limit: &'static str,
    pub detail: &'static str,
}

const URI_TOO_LONG: Rejection = Rejection {
    status: 414,
    limit: "uri_length",
    detail: "the request target is too long",
};
const FIELD_TOO_LARGE: Rejection = Rejection {
    status: 431,
    limit: "header_size",
    detail: "a request header field is too large",
};
const HEADER_TOO_LARGE: Rejection = Rejection {
    status: 431,
    limit: "header_size",
    detail: "the request header fields are too large together",
};
const TOO_MANY_FIELDS: Rejection = Rejection {
    status: 431,
    limit: "header_count",
    detail: "the request has too many header fields",
};
const BAD_CONTENT_LENGTH: Rejection = Rejection {
    status: 400,
    limit: "malformed_header",
    detail: "invalid Content-Length",
};

/// Checks `request` against `limits`. Sizes count a field as `name: value` without the
/// line ending, as nginx's buffers do.
pub fn check(request: &RequestHeader, limits: &HttpLimits) -> Result<(), Rejection> {
    let target_len = request.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > limits.max_uri_length {
        return Err(URI_TOO_LONG);
    }
    if request.headers.len() > limits.max_header_count {
        return Err(TOO_MANY_FIELDS);
    }
    let mut total = 0usize;
    for (name, value) in &request.headers {
        let field = name.as_str().len() + 2 + value.len();
        if field > limits.max_header_field_size {
            return Err(FIELD_TOO_LARGE);
        }
        total += field;
    }
    if total > limits.max_header_size {
        return Err(HEADER_TOO_LARGE);
    }
    Ok(())
}

/// RFC 9110 §8.6: a Content-Length that is a list of one value repeated (`5, 5`, or the
/// field sent twice) is replaced by that value; different values are an error (400).
/// Pingora reads the body by the first value, so the upstream must not see the list.
pub fn collapse_content_length(request: &mut RequestHeader) -> Result<(), Rejection> {
    let mut values = request.headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    let is_list = first.as_bytes().contains(&b',');
    if !is_list && values.next().is_none() {
        return Ok(());
    }
    let mut single: Option<u64> = None;
    for value in request.headers.get_all(CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| BAD_CONTENT_LENGTH)?;
        for item in text.split(',') {
            let length = item.trim().parse::<u64>().map_err(|_| BAD_CONTENT_LENGTH)?;
            if single.is_some_and(|seen| seen != length) {
                return Err(BAD_CONTENT_LENGTH);
            }
            single = Some(length);
        }
    }
    let Some(length) = single else {
        return Err(BAD_CONTENT_LENGTH);
    };
    request
        .insert_header(CONTENT_LENGTH, HeaderValue::from(length))
        .map_err(|_| BAD_CONTENT_LENGTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn each_limit_has_its_status() {
        let limits = HttpLimits::default();
        let long = "a".repeat(limits.max_uri_length);
        assert_eq!(
            check(&request(&format!("/{long}"), &[]), &limits),
            Err(URI_TOO_LONG)
        );
        let field = "v".repeat(limits.max_header_field_size);
        assert_eq!(
            check(&request("/", &[("x-big", &field)]), &limits),
            Err(FIELD_TOO_LARGE)
        );
        let half = "v".repeat(limits.max_header_field_size / 2);
        let many: Vec<(String, &str)> =
            (0..10).map(|i| (format!("x-{i}"), half.as_str())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(check(&request("/", &many), &limits), Err(HEADER_TOO_LARGE));
        let count: Vec<String> = (0..=limits.max_header_count)
            .map(|i| format!("x-{i}"))
            .collect();
        let count: Vec<(&str, &str)> = count.iter().map(|n| (n.as_str(), "1")).collect();
        assert_eq!(check(&request("/", &count), &limits), Err(TOO_MANY_FIELDS));
        assert_eq!(check(&request("/ok", &[("host", "a")]), &limits), Ok(()));
    }

    #[test]
    fn a_repeated_content_length_is_forwarded_once() {
        let mut listed = request("/", &[("content-length", "5, 5")]);
        collapse_content_length(&mut listed).unwrap();
        let values: Vec<_> = listed.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(values, [&HeaderValue::from(5u64)]);

        let mut twice = request("/", &[("content-length", "5"), ("content-length", "5")]);
        collapse_content_length(&mut twice).unwrap();
        assert_eq!(twice.headers.get_all(CONTENT_LENGTH).iter().count(), 1);

        let mut differing = request("/", &[("content-length", "5, 6")]);
        assert_eq!(
            collapse_content_length(&mut differing),
            Err(BAD_CONTENT_LENGTH)
        );
        let mut junk = request("/", &[("content-length", "5, x")]);
        assert_eq!(collapse_content_length(&mut junk), Err(BAD_CONTENT_LENGTH));
    }
}
