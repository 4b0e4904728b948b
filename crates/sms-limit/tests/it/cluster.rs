//! Redis Cluster is refused at start: a real `redis-server` in cluster mode, started
//! by the test, must make the limiters fail to build with an error that says why.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config};
use sms_limit::{Error, RedisLimiter, RedisRecipientLimiter, connect_client};

use crate::support::test_config;

/// A password the server requires, so the test can check the error never shows it.
const PASSWORD: &str = "cluster-test-secret";

/// A `redis-server` child process, killed when dropped (also when the test panics).
struct RedisServer {
    child: Child,
    port: u16,
    /// Holds the cluster config file; removed once the server is gone.
    dir: PathBuf,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// Starts `redis-server` in cluster mode on a free port and waits until it
    /// accepts connections. `None` (after printing why) when `redis-server` is not
    /// installed; under `CI=true` that fails the test instead.
    fn start_cluster_node(test: &str) -> Option<Self> {
        let port = free_port();
        // A directory of its own for the cluster config file; the process id and the
        // port make its name unique among concurrent runs.
        let dir =
            std::env::temp_dir().join(format!("sms-limit-cluster-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.join("nodes.conf"))
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--requirepass", PASSWORD])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: redis-server is not on PATH and CI=true, so it must run");
                }
                eprintln!("skipping {test}: redis-server is not on PATH");
                return None;
            }
            Err(error) => panic!("{test}: could not start redis-server: {error}"),
        };
        let mut server = Self { child, port, dir };
        server.wait_until_listening(test, Duration::from_secs(10));
        Some(server)
    }

    fn wait_until_listening(&mut self, test: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{test}: redis-server exited early ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "{test}: redis-server did not listen on port {} within {limit:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a free port")
        .port()
}

fn assert_refuses_cluster(result: Result<impl Sized, Error>, port: u16) {
    let Err(error) = result else {
        panic!("a Redis Cluster node was accepted");
    };
    assert!(matches!(error, Error::RedisCluster { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the error should name the server: {message}"
    );
    assert!(message.contains("not supported"), "{message}");
    assert!(message.contains("standalone"), "{message}");
    assert!(
        !message.contains(PASSWORD),
        "the error shows the password: {message}"
    );
    assert!(!format!("{error:?}").contains(PASSWORD), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_node_is_refused_at_start() {
    let test = "a_redis_cluster_node_is_refused_at_start";
    let Some(server) = RedisServer::start_cluster_node(test) else {
        return;
    };
    let config = test_config("sms-limit-test:cluster:");
    assert_refuses_cluster(connect_client(&server.url(), &config).await, server.port);
    assert_refuses_cluster(
        RedisRecipientLimiter::connect(&server.url(), &config).await,
        server.port,
    );

    // A client built elsewhere is checked when a limiter is built on it.
    let client = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    assert_refuses_cluster(
        RedisLimiter::from_client(client.clone(), &config).await,
        server.port,
    );
    assert_refuses_cluster(
        RedisRecipientLimiter::from_client(client.clone(), &config).await,
        server.port,
    );
    client.quit().await.unwrap();
}

#[tokio::test]
async fn a_cluster_url_is_refused_without_asking_the_server() {
    // Nothing listens there: the URL alone asks for a cluster client.
    let port = free_port();
    let url = format!("redis-cluster://:{PASSWORD}@127.0.0.1:{port}");
    assert_refuses_cluster(connect_client(&url, &test_config("unused:")).await, port);
}
