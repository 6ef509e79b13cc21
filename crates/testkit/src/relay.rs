//! A TCP relay to PostgreSQL that can go silent: the connections it froze
//! swallow everything, both ways, and never close, as a half-open TCP
//! session does. Connections made later pass. For the change feed's tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct Relay {
    port: u16,
    /// Connections numbered below this are frozen.
    frozen_below: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("the relay's address").port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (frozen, count) = (Arc::clone(&frozen_below), Arc::clone(&opened));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let number = count.fetch_add(1, Ordering::SeqCst);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, number, Arc::clone(&frozen)));
                tokio::spawn(pipe(server_read, client_write, number, Arc::clone(&frozen)));
            }
        });
        Self {
            port,
            frozen_below,
            opened,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has accepted so far (numbered from 0).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::SeqCst)
    }

    /// Freezes the connections numbered below `count`.
    pub fn freeze_below(&self, count: u64) {
        self.frozen_below.store(count, Ordering::SeqCst);
    }

    /// Freezes every connection open now.
    pub fn freeze_open_connections(&self) {
        self.freeze_below(self.opened());
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    frozen_below: Arc<AtomicU64>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if number < frozen_below.load(Ordering::SeqCst) {
            // Swallowed: the socket stays open, nothing arrives.
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// The `host:port` of a PostgreSQL URL (`postgres://user@host:port/db`).
pub fn authority_of(url: &str) -> String {
    url.split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .map(str::to_owned)
        .expect("a PostgreSQL URL with user@host:port")
}

impl Relay {
    /// `url` with its `host:port` replaced by the relay's.
    pub fn url_for(&self, url: &str) -> String {
        url.replacen(&authority_of(url), &format!("127.0.0.1:{}", self.port), 1)
    }
}
