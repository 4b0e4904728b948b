//! The board contract run against Redis, then what only the Redis board does: fail
//! fast while Redis is unreachable, and subscribe to changes once Redis is back, also
//! when it was down when the board was built and after it restarts.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, PubsubInterface};
use fred::types::InfoKind;
use sms_core::testing::board_contract::ContractBoard;
use sms_core::{BoardUnavailable, BoardWrite, SharedBoard};
use sms_limit::{LimitConfig, RedisBoard, RedisClient, connect_client};

use crate::support::{
    count_keys, delete_keys, eventually, random_prefix, redis_or_skip, redis_url, test_config,
};

/// Deletes every key under a prefix when dropped, from a thread and runtime of its
/// own: it is dropped after the board, at the end of a contract case's runtime.
struct DeleteKeys(String);

impl Drop for DeleteKeys {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to delete test keys");
            runtime.block_on(async move {
                let client = connect_client(&redis_url(), &test_config("unused:"))
                    .await
                    .expect("the test Redis URL is valid");
                delete_keys(&client, &prefix).await;
                let left = count_keys(&client, &prefix).await;
                let _ = client.quit().await;
                left
            })
        })
        .join();
        if !matches!(deleted, Ok(0)) && !std::thread::panicking() {
            panic!("the keys under {} were not all deleted", self.0);
        }
    }
}

/// A board under a prefix of its own, its keys deleted after the case.
async fn redis_board() -> Option<ContractBoard> {
    let probe = redis_or_skip("the board contract").await?;
    let _ = probe.quit().await;
    let prefix = random_prefix();
    let board = RedisBoard::connect(&redis_url(), &test_config(&prefix), "contract")
        .await
        .expect("connecting the board");
    Some(ContractBoard::new(Arc::new(board)).keeping(DeleteKeys(prefix)))
}

sms_core::board_contract_tests!(redis_board);

#[tokio::test]
async fn an_unreachable_board_fails_fast_instead_of_hanging() {
    // The command timeout is long: what answers must be the fail-fast, not a timeout.
    let config = LimitConfig {
        connect_timeout_ms: 200,
        ..test_config("sms-limit-test:unreachable:")
    };
    let board = RedisBoard::connect("redis://127.0.0.1:1", &config, "down")
        .await
        .expect("Redis being down is not an error when the board is built");
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), board.read())
        .await
        .expect("read() hung while Redis is unreachable");
    assert!(matches!(read, Err(BoardUnavailable(_))), "{read:?}");
    assert!(board.write(0, "x").await.is_err());
    assert!(
        board
            .claim("c", "me", Duration::from_secs(1))
            .await
            .is_err()
    );
    assert!(board.release("c", "me").await.is_err());
    assert!(
        board
            .report("me", "r", Duration::from_secs(1))
            .await
            .is_err()
    );
    assert!(board.reports().await.is_err());
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn a_reclaim_by_the_holder_is_granted_and_does_not_extend_the_claim() {
    let Some(client) = redis_or_skip("a_reclaim_by_the_holder_is_granted").await else {
        return;
    };
    let prefix = random_prefix();
    let board = RedisBoard::connect(&redis_url(), &test_config(&prefix), "reclaim")
        .await
        .unwrap();
    let ttl = Duration::from_millis(1_000);
    assert!(board.claim("probe", "one", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        board.claim("probe", "one", ttl).await.unwrap(),
        "held already"
    );
    assert!(!board.claim("probe", "two", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        board.claim("probe", "two", ttl).await.unwrap(),
        "the claim expired 1 s after it was first taken, not after it was claimed again"
    );
    drop(board);
    delete_keys(&client, &prefix).await;
}

/// A standalone `redis-server` child process on `port`, killed when dropped.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RedisServer {
    /// Starts `redis-server` on `port` and waits until it listens. `None` (after
    /// printing why) when it is not installed; under `CI=true` that fails instead.
    fn start(test: &str, port: u16) -> Option<Self> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: redis-server is not on PATH and CI=true, so it must run");
                }
                eprintln!("skipping {test}: redis-server is not on PATH");
                return None;
            }
            Err(error) => panic!("{test}: could not start redis-server: {error}"),
        };
        let mut server = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("{test}: redis-server exited early ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "{test}: redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a free port")
        .port()
}

/// How many connections are subscribed to `channel`.
async fn subscribers(client: &RedisClient, channel: &str) -> i64 {
    let reply: Result<(String, i64), _> = client.pubsub_numsub(channel).await;
    reply.map_or(0, |(_, count)| count)
}

/// Waits until `reader` is subscribed (within 5 s: the backoff is capped at 1 s), lets
/// the reconnect's own wake-up pass, then checks that one write wakes it.
async fn assert_a_write_wakes(probe: &RedisClient, reader: &Arc<RedisBoard>, writer: &RedisBoard) {
    let subscribed = eventually(Duration::from_secs(5), || async {
        subscribers(probe, reader.channel()).await >= 1
    })
    .await;
    assert!(
        subscribed,
        "the board did not subscribe within 5 s of Redis"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            writer.read().await.is_ok()
        })
        .await,
        "the writer did not reconnect"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiter = {
        let reader = Arc::clone(reader);
        tokio::spawn(async move { reader.changed().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "woken without a write");
    let version = writer.read().await.unwrap().version;
    let written = writer.write(version, "x").await.unwrap();
    assert!(matches!(written, BoardWrite::Written { .. }), "{written:?}");
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("the write woke the reader")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_comes_up_when_redis_does_and_after_a_restart() {
    let test = "the_subscription_comes_up_when_redis_does_and_after_a_restart";
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let config = LimitConfig {
        connect_timeout_ms: 300,
        command_timeout_ms: 2_000,
        ..test_config("sms-limit-test:restart:")
    };
    // Built while nothing listens: it must subscribe once Redis is there.
    let reader = Arc::new(RedisBoard::connect(&url, &config, "b").await.unwrap());
    assert!(reader.read().await.is_err());
    let Some(server) = RedisServer::start(test, port) else {
        return;
    };
    let writer = RedisBoard::connect(&url, &config, "b").await.unwrap();
    let probe = connect_client(&url, &config).await.unwrap();
    assert_a_write_wakes(&probe, &reader, &writer).await;

    drop(server);
    let _server = RedisServer::start(test, port).expect("redis-server started before");
    assert_a_write_wakes(&probe, &reader, &writer).await;
    let _ = probe.quit().await;
}

/// How many clients the server has connected, `probe` included.
async fn connected_clients(probe: &RedisClient) -> i64 {
    let info: String = probe.info(Some(InfoKind::Clients)).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO clients names connected_clients")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_board_closes_its_connections() {
    let test = "a_dropped_board_closes_its_connections";
    let port = free_port();
    let Some(_server) = RedisServer::start(test, port) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
    let config = test_config("sms-limit-test:drop:");
    let probe = connect_client(&url, &config).await.unwrap();
    let before = connected_clients(&probe).await;
    let board = RedisBoard::connect(&url, &config, "b").await.unwrap();
    assert_eq!(
        connected_clients(&probe).await,
        before + 2,
        "commands and subscription"
    );
    drop(board);
    let closed = eventually(Duration::from_secs(5), || async {
        connected_clients(&probe).await == before
    })
    .await;
    assert!(closed, "the board's connections outlived it");
    let _ = probe.quit().await;
}
