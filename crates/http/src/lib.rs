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
use agentry_store::Store;

/// Mounts every route Agentry serves onto an actix-web app. The app must
/// carry a `web::Data<Store>`.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// Liveness: the process is up and serving.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the database answers. Load balancers stop sending traffic
/// while this fails.
async fn readyz(store: web::Data<Store>) -> HttpResponse {
    match store.detached(async |store| store.ping().await).await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ok",
            "database": store.backend().as_str(),
        })),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "status": "unavailable",
                "database": store.backend().as_str(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, http::StatusCode, test, web};
    use agentry_store::{DatabaseUrl, PoolOptions, Store};

    async fn app_with(
        store: Store,
    ) -> impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    > {
        test::init_service(
            App::new()
                .app_data(web::Data::new(store))
                .configure(super::configure),
        )
        .await
    }

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let url = DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .expect("url");
        let store = Store::connect(&url, &PoolOptions::default()).expect("pool");
        store.migrate().await.expect("migrate");
        store
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn health_and_readiness_answer_with_json() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = app_with(sqlite_store(&dir).await).await;
        for path in ["/healthz", "/readyz"] {
            let response =
                test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let body: serde_json::Value = test::read_body_json(response).await;
            assert_eq!(body["status"], "ok");
        }
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readiness_fails_while_the_database_is_unreachable() {
        // A PostgreSQL port nothing listens on.
        let url = DatabaseUrl::parse("postgres://postgres@127.0.0.1:1/agentry").expect("url");
        let options = PoolOptions {
            wait_timeout: std::time::Duration::from_secs(2),
            ..PoolOptions::default()
        };
        let app = app_with(Store::connect(&url, &options).expect("pool")).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["database"], "postgres");
    }
}
