//! `sms-app sandbox`: a local server speaking the real vendors' protocols, for the HTTP
//! adapters to be pointed at in tests and demos.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sms_providers::sandbox::{SandboxConfig, serve};

/// `sms-app sandbox`: serves the three vendors' protocols on `listen` until Ctrl-C or SIGTERM.
pub async fn run(
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
    crate::serve::shutdown_signal().await;
    Ok(())
}
