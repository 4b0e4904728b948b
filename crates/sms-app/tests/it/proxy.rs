//! A TCP proxy that stands between the gateway and Postgres or Redis, so a test can
//! "stop" a shared server without touching it: [`Proxy::down`] closes every proxied
//! connection and refuses new ones (accepted, then closed at once), [`Proxy::up`]
//! forwards again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy on `127.0.0.1:<port>` forwarding to one upstream address.
pub struct Proxy {
    /// The local port the gateway connects to.
    pub port: u16,
    up: watch::Sender<bool>,
    is_up: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (up, _) = watch::channel(true);
        let is_up = Arc::new(AtomicBool::new(true));
        let upstream = upstream.to_owned();
        let (tx, flag) = (up.clone(), is_up.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut down = tx.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                    // Dropping both ends closes the connection like a dead server would.
                });
            }
        });
        Proxy {
            port,
            up,
            is_up,
            accept,
        }
    }

    /// "Stops the server": closes every proxied connection and refuses new ones.
    pub fn down(&self) {
        self.is_up.store(false, Ordering::SeqCst);
        self.up.send_replace(false);
    }

    /// "Starts the server again".
    pub fn up(&self) {
        self.up.send_replace(true);
        self.is_up.store(true, Ordering::SeqCst);
    }

    /// `url` (a `postgres://` or `redis://` URL naming `upstream`) pointed at the proxy.
    pub fn rewrite(&self, url: &str, upstream: &str) -> String {
        assert!(url.contains(upstream), "{url} does not name {upstream}");
        url.replacen(upstream, &format!("127.0.0.1:{}", self.port), 1)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
    }
}

/// The `host:port` a `postgres://` or `redis://` URL names (port defaulted).
pub fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hp = &rest[..end];
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:{default_port}")
    }
}
