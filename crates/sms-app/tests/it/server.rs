//! Starting and stopping `sms-app serve` for a test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "e2e-test-token-4b1d";

/// A running server, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

/// Where the backends are: embedded, or Postgres + Redis.
pub enum Backends {
    Embedded,
    Shared {
        database_url: String,
        redis_url: String,
        schema: String,
        key_prefix: String,
    },
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts the server with a test configuration plus `extra` TOML.
    pub async fn start(backends: &Backends, extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut config = format!(
            r#"listen = "127.0.0.1:{port}"
sqlite_path = "{db}"
simulation_log = "{log}"
api_tokens = ["{TOKEN}"]
max_body_bytes = 8192
{extra}
"#,
            db = dir.path().join("gateway.db").display(),
            log = dir.path().join("deliveries.jsonl").display(),
        );
        if !config.contains("[limit]") {
            config.push_str("\n[limit]\nrecipient_windows = [{ limit = 1, window_s = 60 }]\n");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sms-app"));
        if let Backends::Shared {
            database_url,
            redis_url,
            schema,
            key_prefix,
        } = backends
        {
            config = config.replace(
                "[limit]",
                &format!("[limit]\nkey_prefix = \"{key_prefix}\""),
            );
            config.push_str(&format!(
                "\n[postgres]\nschema = \"{schema}\"\npool_size = 4\n"
            ));
            cmd.env("SMS_DATABASE_URL", database_url)
                .env("SMS_REDIS_URL", redis_url);
        } else {
            cmd.env_remove("SMS_DATABASE_URL")
                .env_remove("SMS_REDIS_URL");
        }
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, &config).expect("writing config");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = cmd
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .env_remove("SMS_API_TOKENS")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sms-app");
        let server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            dir,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.client.get(server.url("/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not start; log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn deliveries_path(&self) -> PathBuf {
        self.dir.path().join("deliveries.jsonl")
    }

    /// When the simulated vendors accepted message `id`, once per recipient.
    pub fn delivered_at(&self, id: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
        std::fs::read_to_string(self.deliveries_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(id))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["at"].as_str().expect("at").parse().expect("a time")
            })
            .collect()
    }

    /// Deliveries recorded for message `id`.
    pub fn deliveries_of(&self, id: &str) -> usize {
        std::fs::read_to_string(self.deliveries_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(id))
            .count()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("waiting") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Postgres and Redis for a test, or `None` (skip) when absent outside CI.
pub async fn shared_backends() -> Option<Backends> {
    let database_url = std::env::var("SMS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis_url =
        std::env::var("SMS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let pg_up = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .is_ok();
    let redis_addr = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let redis_up = tokio::net::TcpStream::connect(&redis_addr).await.is_ok();
    if !(pg_up && redis_up) {
        let reason = format!("postgres reachable: {pg_up}, redis reachable: {redis_up}");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but a service is missing ({reason})");
        }
        eprintln!("skipped: {reason} (set CI=true to make this a failure)");
        return None;
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Some(Backends::Shared {
        database_url,
        redis_url,
        schema: format!("e2e_{}", &suffix[..12]),
        key_prefix: format!("e2e:{}:", &suffix[..12]),
    })
}

/// Drops the test's schema.
pub async fn drop_schema(backends: &Backends) {
    if let Backends::Shared {
        database_url,
        schema,
        ..
    } = backends
    {
        if let Ok((client, conn)) =
            tokio_postgres::connect(database_url, tokio_postgres::NoTls).await
        {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    }
}

// Helpers for the fault tests (chaos.rs, security.rs): kill -9, restart on the same
// data, a graceful stop that keeps the log.
impl Server {
    /// Kills the server with SIGKILL: no graceful stop, no lease release. Its directory
    /// (config, SQLite file, delivery log, server log) stays for [`Server::restart`].
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again with the same configuration, data and delivery log, and
    /// waits until it answers; its stderr is appended to the same server log.
    pub async fn restart(&mut self, backends: &Backends) {
        assert!(self.child.is_none(), "restart: the server is still running");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sms-app"));
        if let Backends::Shared {
            database_url,
            redis_url,
            ..
        } = backends
        {
            cmd.env("SMS_DATABASE_URL", database_url)
                .env("SMS_REDIS_URL", redis_url);
        } else {
            cmd.env_remove("SMS_DATABASE_URL")
                .env_remove("SMS_REDIS_URL");
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = cmd
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"))
            .arg("serve")
            .env_remove("SMS_API_TOKENS")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restarting sms-app");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not restart; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit, keeping the directory so the complete log,
    /// shutdown included, can still be read.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("waiting") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
