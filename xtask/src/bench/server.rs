//! `sms-app serve` (and the hello-world baseline) as child processes of the benchmark:
//! their configuration, start-up, resident memory and shutdown.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::build_dir;

/// Port of `serve`.
pub(super) const SERVE_PORT: u16 = 18_080;
/// The bearer token `serve` accepts; the `wrk` script sends it.
pub(super) const TOKEN: &str = "bench-token-0123456789";

/// How the three simulated vendors of a benchmark configuration behave.
#[derive(Clone, Copy)]
pub(super) enum Vendors {
    /// Answering at once: their default latency of 20–30 ms would make the figures the
    /// vendors' and not the gateway's.
    Instant,
    /// Every vendor down, so the drainer claims, fails and requeues.
    Down,
}

/// A `serve` configuration with a bearer token, the global limit out of the way (the
/// load measures the send path, not the limiter), `storage` as its storage lines and
/// three simulated vendors behaving as `vendors` says. The vendors' own per-number
/// limits are off: they would keep a log of every number the load sends to, and the
/// figures would show the simulation's memory, not the gateway's.
pub(super) fn serve_config(storage: &str, vendors: Vendors) -> String {
    let simulation = match vendors {
        Vendors::Instant => "latency_ms = 0, jitter_ms = 0, per_number_limits = false",
        Vendors::Down => "outage = true, per_number_limits = false",
    };
    let mut config = format!(
        "listen = \"127.0.0.1:{SERVE_PORT}\"\napi_tokens = [\"{TOKEN}\"]\n{storage}\n\
         [limit]\nglobal_per_second = 1000000\n"
    );
    for (order, name) in ["aliyun", "tencent", "cloopen"].iter().enumerate() {
        config.push_str(&format!(
            "[vendors.{name}]\norder = {order}\nsimulation = {{ {simulation} }}\n"
        ));
    }
    config
}

/// Starts the release `sms-app serve` with `config`, its output in `serve-{name}.log`.
pub(super) fn serve(config: &Path, out: &Path, name: &str) -> Result<Server> {
    let bin = build_dir().join("release/sms-app");
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).arg("serve");
    cmd.env("RUST_LOG", "warn");
    Server::start(&mut cmd, SERVE_PORT, &out.join(format!("serve-{name}.log")))
}

/// A child process listening on a port; stopped when dropped.
pub(super) struct Server {
    child: Child,
}

impl Server {
    /// Starts `cmd` with its output in `log` and waits until `GET /healthz` on `port`
    /// answers 200.
    pub(super) fn start(cmd: &mut Command, port: u16, log: &Path) -> Result<Self> {
        // Another process answering there would be measured instead of ours.
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!("port {port} is already in use; stop whatever listens there and run again");
        }
        let log_file = fs::File::create(log)?;
        let child = cmd
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{:?} exited with {status} before listening; see {}",
                    cmd.get_program(),
                    log.display()
                );
            }
            if http_ok(port, "/healthz") {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "nothing answered on port {port} within 60 s; see {}",
            log.display()
        )
    }

    /// Current and peak resident memory, in MiB.
    pub(super) fn memory_mib(&self) -> (Option<f64>, Option<f64>) {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so serve releases its leases; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET path` on the local `port` answers 200 within 2 s.
fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if std::io::Write::write_all(&mut stream, request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
