//! TLS to the machine's PostgreSQL (`ssl = on`, a self-signed certificate
//! for `localhost`), as the server itself reports it in `pg_stat_ssl`:
//! `sslmode` and `sslrootcert` in the URL reach the pool, the change
//! listener and single connections alike, and a certificate that does not
//! chain to the given root is refused. Outside CI an unreachable server
//! skips these (loudly); in CI it fails them.

use agentry_store::{Change, DatabaseUrl, PoolOptions, Store, connect_postgres};
use agentry_testkit::{
    drop_postgres, postgres_admin, postgres_db_with, postgres_server, postgres_url,
};
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(diesel::QueryableByName, Debug)]
struct Backends {
    #[diesel(sql_type = BigInt)]
    encrypted: i64,
    #[diesel(sql_type = BigInt)]
    plaintext: i64,
}

#[derive(diesel::QueryableByName)]
struct Encrypted {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

/// How the server sees the backends of database `name` whose current or
/// last query is (`listener`) or is not a LISTEN.
async fn backends(admin: &mut AsyncPgConnection, name: &str, listener: bool) -> Backends {
    diesel::sql_query(
        "SELECT COUNT(*) FILTER (WHERE s.ssl) AS encrypted, \
                COUNT(*) FILTER (WHERE NOT s.ssl) AS plaintext \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND (a.query LIKE 'LISTEN%') = $2 AND a.pid <> pg_backend_pid()",
    )
    .bind::<Text, _>(name)
    .bind::<Bool, _>(listener)
    .get_result(admin)
    .await
    .expect("read pg_stat_ssl")
}

async fn refusal(url: &str) -> String {
    match connect_postgres(url).await {
        Ok(_) => panic!("{url} connected; it should have been refused"),
        Err(error) => error.to_string(),
    }
}

async fn is_encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Encrypted>(conn)
        .await
        .expect("read pg_stat_ssl")
        .ssl
}

/// A store on a fresh database with `sslmode` set, its pool used and its
/// change listener past LISTEN; the server's view of both kinds of
/// backend.
async fn store_backends(sslmode: &str) -> Option<(Backends, Backends)> {
    let (db, name) = postgres_db_with(&format!("sslmode={sslmode}")).await?;
    let mut changes = db.store.subscribe_changes();
    db.store.ping().await.expect("ping through the pool");
    db.store
        .start_change_listener(&db.url)
        .await
        .expect("start the change listener");
    // The listener distrusts the feed until its first heartbeat comes back
    // over its LISTEN connection, then publishes Resync.
    for expected in [Change::Untrusted, Change::Resync] {
        let heard = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv()).await;
        assert_eq!(
            heard.expect("the listener starts").expect("a change"),
            expected
        );
    }

    let mut admin = postgres_admin().await.expect("admin connection");
    let pooled = backends(&mut admin, &name, false).await;
    let listening = backends(&mut admin, &name, true).await;

    // A notification still reaches the listener over this connection
    // (NOTIFY stays within its database, so it is sent from the test's).
    db.execute_raw("SELECT pg_notify('agentry_changes', 'signing-keys')")
        .await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv()).await;
    assert_eq!(
        heard.expect("the notification arrives").expect("a change"),
        Change::SigningKeys
    );
    drop(db);
    drop_postgres(&name).await;
    Some((pooled, listening))
}

#[tokio::test(flavor = "multi_thread")]
async fn require_encrypts_the_pool_and_the_change_listener() {
    let Some((pooled, listening)) = store_backends("require").await else {
        return;
    };
    assert!(pooled.encrypted >= 1 && pooled.plaintext == 0, "{pooled:?}");
    assert!(
        listening.encrypted == 1 && listening.plaintext == 0,
        "{listening:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_keeps_the_pool_and_the_change_listener_in_plaintext() {
    let Some((pooled, listening)) = store_backends("disable").await else {
        return;
    };
    assert!(pooled.plaintext >= 1 && pooled.encrypted == 0, "{pooled:?}");
    assert!(
        listening.plaintext == 1 && listening.encrypted == 0,
        "{listening:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_connection_follows_sslmode() {
    if postgres_admin().await.is_none() {
        return;
    }
    let server = postgres_server();
    for (sslmode, encrypted) in [("require", true), ("prefer", true), ("disable", false)] {
        let url = postgres_url(&server, "postgres", &format!("sslmode={sslmode}"));
        let mut conn = connect_postgres(&url).await.expect(sslmode);
        assert_eq!(
            is_encrypted(&mut conn).await,
            encrypted,
            "sslmode={sslmode}"
        );
    }
}

/// A CA of our own that never signed the server's certificate.
fn unrelated_root(dir: &std::path::Path) -> std::path::PathBuf {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Agentry test CA that signed nothing",
    );
    let key = rcgen::KeyPair::generate().expect("key");
    let root = params.self_signed(&key).expect("self-signed root");
    let path = dir.join("unrelated-root.pem");
    std::fs::write(&path, root.pem()).expect("write root");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_the_server_does_not_chain_to_is_refused() {
    if postgres_admin().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = unrelated_root(dir.path());
    let server = postgres_server();
    for sslmode in ["verify-full", "verify-ca", "require"] {
        let options = format!("sslmode={sslmode}&sslrootcert={}", root.display());
        let url = postgres_url(&server, "postgres", &options);
        let refused = refusal(&url).await;
        assert!(
            refused.contains("invalid peer certificate") && refused.contains("UnknownIssuer"),
            "sslmode={sslmode}: {refused}"
        );

        // The store's own paths refuse it too, and say why.
        let url = DatabaseUrl::parse(&url).expect("valid url");
        let ensured = Store::ensure_database(&url).await.expect_err(sslmode);
        assert!(ensured.to_string().contains("UnknownIssuer"), "{ensured}");
        let store = Store::connect(&url, &PoolOptions::default()).expect("pool");
        let pinged = store.ping().await.expect_err(sslmode).to_string();
        assert!(pinged.contains("UnknownIssuer"), "{pinged}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_own_certificate_as_root_verifies_the_chain_and_the_name() {
    let Some(mut admin) = postgres_admin().await else {
        return;
    };
    let certificate: Setting =
        diesel::sql_query("SELECT setting AS value FROM pg_settings WHERE name = 'ssl_cert_file'")
            .get_result(&mut admin)
            .await
            .expect("ssl_cert_file");
    if let Err(error) = std::fs::read(&certificate.value) {
        eprintln!(
            "\n!!! SKIPPING verify-ca with the server's own certificate: cannot read {} ({error})\n",
            certificate.value
        );
        return;
    }
    let server = postgres_server();
    let root = format!("sslrootcert={}", certificate.value);
    let url = postgres_url(&server, "postgres", &format!("sslmode=verify-ca&{root}"));
    let mut conn = connect_postgres(&url).await.expect("verify-ca");
    assert!(is_encrypted(&mut conn).await);

    // The local server's certificate names `localhost`, not 127.0.0.1:
    // verify-full holds the name to it, verify-ca does not.
    if server.contains("@127.0.0.1:") {
        let url = postgres_url(&server, "postgres", &format!("sslmode=verify-full&{root}"));
        let refused = refusal(&url).await;
        assert!(refused.contains("not valid for name"), "{refused}");
        let by_name = server.replace("@127.0.0.1:", "@localhost:");
        let url = postgres_url(&by_name, "postgres", &format!("sslmode=verify-full&{root}"));
        let mut conn = connect_postgres(&url).await.expect("verify-full by name");
        assert!(is_encrypted(&mut conn).await);
    }
}
