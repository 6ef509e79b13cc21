//! Agentry's HTTP surface.
//!
//! This crate owns everything that knows about HTTP and JSON: the actix-web
//! scopes of the five API families, the request guards (extractors), the
//! handlers, the wire types of each family and the problem+json error body.
//! Handlers translate between wire types and domain types by hand and delegate
//! every decision to the crates below.
//!
//! It must never be depended on by another library crate; only `agentryd`
//! composes it. No rule of the lifecycle or the ledger is decided here.

use actix_web::{HttpResponse, web};

/// Mounts every route Agentry serves onto an actix-web app.
pub fn configure(config: &mut web::ServiceConfig) {
    config.route("/healthz", web::get().to(healthz));
}

/// Liveness: the process is up and serving. Readiness, which also checks the
/// database, is `/readyz` (added with the store).
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use actix_web::{App, http::StatusCode, test};

    #[actix_web::test]
    async fn healthz_answers_ok_with_a_json_status() {
        let app = test::init_service(App::new().configure(super::configure)).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["status"], "ok");
    }

    #[actix_web::test]
    async fn unknown_paths_are_not_found() {
        let app = test::init_service(App::new().configure(super::configure)).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
