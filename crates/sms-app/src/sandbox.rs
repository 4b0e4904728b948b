//! Real vendor adapters, and the local vendor sandbox they can be pointed at.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use sms_core::{Vendor, VendorId};
use sms_providers::sandbox::{SandboxConfig, serve};

/// Builds the adapter `kind` named `id` from its settings table (credentials missing
/// there come from `SMS_ALIYUN_*`, `SMS_TENCENT_*`, `SMS_CLOOPEN_*`).
pub fn build(kind: &str, id: VendorId, settings: Option<&toml::Value>) -> Result<Arc<dyn Vendor>> {
    Ok(sms_providers::http::build_vendor(
        kind,
        id,
        settings.cloned(),
    )?)
}

/// `sms-app sandbox`: serves the three vendors' protocols on `listen` until Ctrl-C or SIGTERM.
pub async fn sandbox(
    listen: &str,
    config_file: Option<PathBuf>,
    delivery_log: Option<PathBuf>,
) -> Result<()> {
    let mut config = match config_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<SandboxConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?
        }
        None => SandboxConfig::default(),
    };
    if delivery_log.is_some() {
        config.delivery_log = delivery_log;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen: binding {listen}"))?;
    let handle = serve(listener, config).await?;
    println!("vendor sandbox on {} (Ctrl-C to stop)", handle.base_url());
    crate::wire::shutdown_signal().await;
    Ok(())
}
