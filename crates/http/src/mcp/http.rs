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
/// agent's tools with credentials it found (DNS rebinding). Clients that
/// are not browsers send none.
pub(super) fn check_origin(request: &HttpRequest, public_url: &str) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let authority = |url: &str| {
        url.split_once("://").map(|(_, rest)| {
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_ascii_lowercase);
    let from = authority(origin);
    if from.is_some() && (from == host || from == authority(public_url)) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "origin_not_allowed",
        "this origin may not call the MCP endpoint",
    ))
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
