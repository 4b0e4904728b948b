//! Starting a sandbox and building messages.

use sms_core::{MessageId, OutboundSms, SmsRequest, VendorTemplate};
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

/// A message with `args` to `recipients`, passed through as template `SMS_123` (no
/// catalogue: the vendor gets the caller's template name, no text is known).
pub fn sms<A: AsRef<str>>(args: &[&str], recipients: &[A]) -> OutboundSms {
    let recipients: Vec<&str> = recipients.iter().map(AsRef::as_ref).collect();
    OutboundSms::pass_through(
        MessageId::new(),
        SmsRequest::new("SMS_123", args.iter().copied(), recipients).expect("valid request"),
    )
}

/// `sms` as a catalogue maps it: the vendor's template `id` with Aliyun's variable
/// `params`, an optional signature of the template's own, and the rendered `text`.
pub fn mapped(
    sms: OutboundSms,
    id: &str,
    params: &[&str],
    sign_name: Option<&str>,
    text: Option<String>,
) -> OutboundSms {
    OutboundSms {
        template: VendorTemplate {
            id: id.to_owned(),
            params: params.iter().map(|p| (*p).to_owned()).collect(),
            sign_name: sign_name.map(str::to_owned),
        },
        text,
        ..sms
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
