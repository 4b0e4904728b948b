//! Starting a sandbox and building messages.

use sms_core::{MessageId, OutboundSms, SmsRequest};
use sms_providers::sandbox::{SandboxConfig, SandboxHandle, serve};
use tokio::net::TcpListener;

/// A sandbox with the default credentials on an ephemeral loopback port.
pub async fn start() -> SandboxHandle {
    start_with(SandboxConfig::default()).await
}

/// A sandbox with `config` on an ephemeral loopback port.
pub async fn start_with(config: SandboxConfig) -> SandboxHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    serve(listener, config).await.expect("sandbox starts")
}

/// A message with `args` to `recipients`.
pub fn sms<A: AsRef<str>>(args: &[&str], recipients: &[A]) -> OutboundSms {
    let recipients: Vec<&str> = recipients.iter().map(AsRef::as_ref).collect();
    OutboundSms {
        id: MessageId::new(),
        request: SmsRequest::new("SMS_123", args.iter().copied(), recipients)
            .expect("valid request"),
    }
}

/// `count` distinct mainland mobile numbers.
pub fn mobiles(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("+86139{i:08}")).collect()
}

/// A loopback address where nothing listens (bound, then released).
pub async fn dead_base_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}
