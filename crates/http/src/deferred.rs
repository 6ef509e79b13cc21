//! Request bodies read after the caller has been judged.
//!
//! actix runs all of a handler's extractors at once, and the first to fail
//! answers. A body that fails fast (not JSON, too large) would then be
//! answered 400, 413 or 415 while the credential beside it was still being
//! looked up, and a refused caller would hear about its body instead of
//! its credential. A [`Deferred`] body is only taken off the connection
//! when the handler reads it, after its credential and permission checks,
//! so every refusal of the caller comes first.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use crate::error::ApiError;

/// A body extractor `T` (e.g. `web::Json<_>`) run only by [`Deferred::read`].
pub(crate) struct Deferred<T> {
    body: Body<T>,
}

enum Body<T> {
    /// Still on the connection.
    Pending {
        request: HttpRequest,
        payload: Payload,
        body: PhantomData<T>,
    },
    /// Already parsed by someone else: an MCP tool call carries its body
    /// as the call's arguments.
    Ready(T),
}

impl<T: FromRequest> FromRequest for Deferred<T> {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self {
            body: Body::Pending {
                request: request.clone(),
                payload: payload.take(),
                body: PhantomData,
            },
        }))
    }
}

impl<T> Deferred<T> {
    /// A body that was parsed already.
    pub(crate) fn ready(body: T) -> Self {
        Self {
            body: Body::Ready(body),
        }
    }
}

impl<T: FromRequest> Deferred<T> {
    /// Reads and parses the body, answering as `T` would have.
    pub(crate) async fn read(self) -> Result<T, ApiError> {
        let (request, mut payload) = match self.body {
            Body::Ready(body) => return Ok(body),
            Body::Pending {
                request, payload, ..
            } => (request, payload),
        };
        T::from_request(&request, &mut payload)
            .await
            .map_err(|error| {
                let error: actix_web::Error = error.into();
                // Our extractor configuration answers with an ApiError;
                // anything else is still the client's body at fault.
                error
                    .as_error::<ApiError>()
                    .cloned()
                    .unwrap_or_else(|| ApiError::bad_request("invalid_body", error.to_string()))
            })
    }
}
