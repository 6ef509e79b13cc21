//! The HTTP side of the MCP transport: who may post (credential, origin)
//! and what (media types, size).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;

use crate::error::ApiError;

/// The 401 of a missing or bad credential, with the challenge RFC 6750
/// asks for (and MCP clients look for).
pub(super) fn unauthorized(error: &ApiError) -> HttpResponse {
    let mut response = error.error_response();
    let challenge = if error.code == "missing_credentials" {
        "Bearer realm=\"agentry\"".to_owned()
    } else {
        format!(
            "Bearer realm=\"agentry\", error=\"invalid_token\", error_description=\"{}\"",
            error.code
        )
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Browsers send `Origin`; a page of another origin must not drive an
/// agent's tools with credentials it found. Only the origin of the public
/// URL is ours: comparing with `Host` would admit DNS rebinding (the
/// attacker's name, pointed at our address, is then both the origin and
/// the host). Clients that are not browsers send no `Origin`.
pub(super) fn check_origin(request: &HttpRequest, public_url: &str) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let sent = origin.to_str().ok().and_then(serialized_origin);
    if sent.is_some() && sent == serialized_origin(public_url) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "origin_not_allowed",
        "this origin may not call the MCP endpoint",
    ))
}

/// The origin of a URL as a browser serialises it: lower-case scheme and
/// host, the port only when it is not the scheme's default. `None` for
/// what is not an http(s) URL (an opaque `null` origin among them).
fn serialized_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = match authority.rsplit_once(':') {
        Some((host, port)) if port == default_port => host.to_owned(),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

pub(super) fn check_accept(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(accept) = request.headers().get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().unwrap_or_default().to_ascii_lowercase();
    let takes_json = accept.split(',').any(|range| {
        let range = range.split(';').next().unwrap_or_default().trim();
        matches!(range, "application/json" | "application/*" | "*/*")
    });
    if takes_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this server answers application/json; accept it",
        ))
    }
}

pub(super) fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the message as 'content-type: application/json'",
        ))
    }
}

/// The body, refused once it passes `limit` bytes.
pub(super) async fn read_limited(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|error| ApiError::bad_request("invalid_body", error.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a message may be at most {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_as_browsers_serialise_them() {
        let ours = serialized_origin("https://Agentry.example:443/base/");
        assert_eq!(ours.as_deref(), Some("https://agentry.example"));
        assert_eq!(serialized_origin("https://agentry.example"), ours);
        assert_eq!(
            serialized_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_ne!(serialized_origin("http://agentry.example"), ours, "scheme");
        assert_ne!(
            serialized_origin("https://agentry.example:8443"),
            ours,
            "port"
        );
        assert_eq!(serialized_origin("null"), None);
        assert_eq!(serialized_origin("file:///etc"), None);
        assert_eq!(serialized_origin("https://user@agentry.example"), None);
    }

    #[test]
    fn only_the_public_origin_passes_whatever_the_host_says() {
        let public = "https://agentry.example";
        let with = |origin: &str, host: &str| {
            let request = actix_web::test::TestRequest::default()
                .insert_header((header::ORIGIN, origin))
                .insert_header((header::HOST, host))
                .to_http_request();
            check_origin(&request, public).is_ok()
        };
        assert!(with("https://agentry.example", "agentry.example"));
        // DNS rebinding: the attacker's name is both origin and host.
        assert!(!with("http://evil.example:8080", "evil.example:8080"));
        assert!(!with("http://agentry.example", "agentry.example"));
        let without = actix_web::test::TestRequest::default().to_http_request();
        assert!(check_origin(&without, public).is_ok(), "not a browser");
    }
}
