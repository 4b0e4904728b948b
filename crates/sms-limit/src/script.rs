//! Lua scripts run on the server: loaded once with `SCRIPT LOAD`, run with `EVALSHA`.
//!
//! Each script runs atomically, so a decision made on what it read cannot be undone by
//! another client in between. After a Redis restart the server has forgotten the
//! script (`NOSCRIPT`); it is loaded again and the call retried. Every call carries an
//! explicit timeout and fails fast while the connection is down, so an outage costs at
//! most one timeout per call.

use std::time::Duration;

use fred::prelude::{Client, ClientLike, ErrorKind, FromValue, LuaInterface, Options, Value};
use fred::types::scripts::Script;

/// A Lua script run with `EVALSHA` under a timeout, reloaded on `NOSCRIPT`.
#[derive(Debug)]
pub(crate) struct ScriptRunner {
    client: Client,
    script: Script,
    options: Options,
}

impl ScriptRunner {
    /// Runs `lua` on `client`, every call bounded by `timeout`; loads it now if the
    /// client is connected, else on the first call.
    pub(crate) async fn new(client: Client, lua: &'static str, timeout: Duration) -> Self {
        let runner = Self {
            client,
            script: Script::from_lua(lua),
            options: Options {
                timeout: Some(timeout),
                // While disconnected, fail now rather than queue behind the reconnect:
                // the caller's fallback answers at once.
                fail_fast: true,
                ..Options::default()
            },
        };
        // Load eagerly when Redis is up; if it is down, the first call loads it.
        if runner.client.is_connected() {
            if let Err(error) = runner.load().await {
                tracing::debug!(%error, "could not load lua script yet");
            }
        }
        runner
    }

    async fn load(&self) -> Result<(), fred::error::Error> {
        let lua = self.script.lua().cloned().unwrap_or_default();
        self.client
            .with_options(&self.options)
            .script_load::<(), _>(lua)
            .await
    }

    /// Runs the script on `keys` and `args`, its reply converted to `R`.
    pub(crate) async fn run<R: FromValue>(
        &self,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, fred::error::Error> {
        // While the client is reconnecting, fred may hold commands until the
        // connection is back; answer now instead, the caller has a fallback ready.
        if !self.client.is_connected() {
            return Err(fred::error::Error::new(
                ErrorKind::IO,
                format!("not connected (client state {:?})", self.client.state()),
            ));
        }
        let timeout = self.options.timeout.unwrap_or(Duration::from_secs(1));
        // fred applies the timeout to the reply; this outer one also bounds the time a
        // command can wait to be written, so a call never outlives the configured limit
        // by more than a scheduling delay.
        match tokio::time::timeout(timeout, self.run_reloading(keys, args)).await {
            Ok(result) => result,
            Err(_) => Err(fred::error::Error::new(
                ErrorKind::Timeout,
                format!("no reply within {timeout:?}"),
            )),
        }
    }

    async fn run_reloading<R: FromValue>(
        &self,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, fred::error::Error> {
        let client = self.client.with_options(&self.options);
        let sha = self.script.sha1().clone();
        match client
            .evalsha(sha.clone(), keys.clone(), args.clone())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                self.load().await?;
                client.evalsha(sha, keys, args).await
            }
            result => result,
        }
    }
}
