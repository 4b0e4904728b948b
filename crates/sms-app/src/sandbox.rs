//! `sms-app sandbox`: a local server speaking the real vendors' protocols, for the HTTP
//! adapters to be pointed at in tests and demos.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sms_core::VendorId;
use sms_providers::sandbox::{SandboxConfig, serve};

use crate::config::{Config, VendorConfig};

/// `sms-app sandbox`: serves the three vendors' protocols on `listen` until Ctrl-C or
/// SIGTERM. With the gateway's configuration, each route approves what that
/// configuration maps to its vendor (see [`approve_as_configured`]).
pub async fn run(
    listen: &str,
    config_file: Option<PathBuf>,
    delivery_log: Option<PathBuf>,
    gateway: Option<Config>,
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
    if let Some(gateway) = &gateway {
        approve_as_configured(&mut config, gateway)?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen: binding {listen}"))?;
    let handle = serve(listener, config).await?;
    println!("vendor sandbox on {} (Ctrl-C to stop)", handle.base_url());
    crate::serve::shutdown_signal().await;
    Ok(())
}

/// Makes the sandbox approve what the gateway's configuration sends: its templates
/// (unless the sandbox file names its own), and for each real vendor of the gateway,
/// that vendor's name and signature on the route of its protocol. A route whose
/// protocol the gateway does not use keeps the sandbox's own settings.
fn approve_as_configured(sandbox: &mut SandboxConfig, gateway: &Config) -> Result<()> {
    if sandbox.templates.is_pass_through() {
        sandbox.templates = gateway.templates.clone();
    }
    for (name, vendor) in &gateway.vendors {
        let id =
            VendorId::new(name).map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
        match vendor {
            VendorConfig::Aliyun(v) => {
                sandbox.aliyun.vendor = id;
                sandbox.aliyun.sign_name = v.settings.sign_name.clone();
            }
            VendorConfig::Tencent(v) => {
                sandbox.tencent.vendor = id;
                sandbox.tencent.sign_name = v.settings.sign_name.clone();
            }
            VendorConfig::Cloopen(_) => sandbox.cloopen.vendor = id,
            VendorConfig::Simulated(_) => {}
        }
    }
    Ok(())
}
