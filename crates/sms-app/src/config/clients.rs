//! `[clients.<name>]`: the applications that call the API, each with its own tokens,
//! the templates it may send, its own rate limits and its monthly spend cap; and
//! `[spend]`, the cap of the whole deployment.
//!
//! A client's tokens are kept as SHA-256 digests (`token_sha256`), so the file never
//! holds one in plain text; tokens can also come from the environment
//! (`SMS_CLIENT_<NAME>_TOKENS`, comma-separated), and are hashed on load. The tokens
//! of `api_tokens` (`SMS_API_TOKENS`) form one client without a name, so a
//! configuration from before clients goes on working.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sms_core::{ClientId, ClientQuota, Money, Templates};

use super::{ENV_API_TOKENS, ENV_OPERATOR_TOKENS, Secret, check_token_length};

/// One client.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The SHA-256 of each of its tokens, in hex (`printf %s "$TOKEN" | sha256sum`).
    pub token_sha256: Vec<String>,
    /// Its tokens from the environment (`SMS_CLIENT_<NAME>_TOKENS`); never in the file.
    #[serde(skip)]
    pub tokens: Vec<Secret>,
    /// The logical templates it may send; absent: every template.
    pub templates: Option<Vec<String>>,
    /// Most recipients per second, across instances; the global limit still applies.
    pub per_second: Option<u32>,
    /// Most recipients per calendar day (UTC), across instances.
    pub per_day: Option<u32>,
    /// Most it may spend per billing month, in the vendors' currency (`"5000.00"`):
    /// billed segments at the price tier in force. Sends are refused once reached.
    pub monthly_spend_cap: Option<String>,
}

/// `[spend]`: the deployment's own cap and when caps warn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpendConfig {
    /// Most the whole deployment may spend per billing month (`"20000.00"`); none: no
    /// cap.
    pub monthly_cap: Option<String>,
    /// The share of a cap at which it warns (a log line, a metric), from 0 to 1.
    /// Default 0.8.
    pub warn_at: f64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self {
            monthly_cap: None,
            warn_at: 0.8,
        }
    }
}

impl SpendConfig {
    /// The deployment's cap, when set (validated by [`validate`]).
    pub fn cap(&self) -> Option<Money> {
        self.monthly_cap.as_deref().and_then(|c| c.parse().ok())
    }

    fn validate(&self) -> Result<()> {
        if !(self.warn_at > 0.0 && self.warn_at <= 1.0) {
            bail!(
                "spend.warn_at: expected a share above 0 and at most 1, found {}",
                self.warn_at
            );
        }
        if let Some(cap) = &self.monthly_cap {
            parse_cap("spend.monthly_cap", cap)?;
        }
        Ok(())
    }
}

/// A spend cap: an amount of money above zero.
fn parse_cap(key: &str, cap: &str) -> Result<Money> {
    match cap.parse::<Money>() {
        Ok(money) if money > Money::ZERO => Ok(money),
        Ok(money) => bail!("{key}: expected an amount above zero, found {money}"),
        Err(e) => bail!("{key}: expected an amount of money like \"5000.00\", found {cap:?} ({e})"),
    }
}

/// The environment variable holding client `name`'s tokens: `SMS_CLIENT_<NAME>_TOKENS`,
/// the name upper-cased with `-` as `_`.
pub fn tokens_env(name: &str) -> String {
    format!(
        "SMS_CLIENT_{}_TOKENS",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// The SHA-256 of `token`.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A caller the API knows, as a request carries it once its token was checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Client {
    /// Its name; none for the tokens of `api_tokens`.
    pub name: Option<ClientId>,
    /// The templates it may send; none: every template.
    pub templates: Option<HashSet<String>>,
    /// Its own rate limits.
    pub quota: ClientQuota,
    /// Its monthly spend cap.
    pub spend_cap: Option<Money>,
}

impl Client {
    /// Whether it may send `template`.
    pub fn may_send(&self, template: &str) -> bool {
        self.templates.as_ref().is_none_or(|t| t.contains(template))
    }

    /// Whether it may see, list or cancel messages of `owner`: a named client only its
    /// own, the unnamed one every client's.
    pub fn may_see(&self, owner: Option<&ClientId>) -> bool {
        self.name.as_ref().is_none_or(|own| owner == Some(own))
    }

    /// Its name for answers and logs.
    pub fn label(&self) -> &str {
        label(self.name.as_ref())
    }
}

/// The label of a client's name in answers, logs and metrics: `(api_tokens)` for the
/// unnamed client of `api_tokens`.
pub fn label(name: Option<&ClientId>) -> &str {
    name.map_or("(api_tokens)", ClientId::as_str)
}

/// Every client by the digest of each of its tokens.
pub fn by_digest(
    clients: &BTreeMap<String, ClientConfig>,
    api_tokens: &[Secret],
) -> HashMap<[u8; 32], std::sync::Arc<Client>> {
    let mut map = HashMap::new();
    if !api_tokens.is_empty() {
        let unnamed = std::sync::Arc::new(Client::default());
        for token in api_tokens {
            map.insert(digest(token.expose().trim()), unnamed.clone());
        }
    }
    for (name, config) in clients {
        // Names and caps were validated; an invalid one never gets this far.
        let Ok(id) = ClientId::new(name) else {
            continue;
        };
        let client = std::sync::Arc::new(Client {
            name: Some(id),
            templates: config
                .templates
                .as_ref()
                .map(|t| t.iter().cloned().collect()),
            quota: ClientQuota {
                per_second: config.per_second,
                per_day: config.per_day,
            },
            spend_cap: config
                .monthly_spend_cap
                .as_deref()
                .and_then(|c| c.parse().ok()),
        });
        for hex in &config.token_sha256 {
            if let Some(d) = parse_digest(hex) {
                map.insert(d, client.clone());
            }
        }
        for token in &config.tokens {
            map.insert(digest(token.expose().trim()), client.clone());
        }
    }
    map
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex.trim()).ok()?;
    bytes.try_into().ok()
}

/// Checks every client: a valid name, at least one token, digests that are SHA-256s,
/// environment tokens long enough, no token shared by two clients (or with
/// `api_tokens` or `operator_tokens`), and allow-lists naming configured templates.
/// Each error names its key.
pub fn validate(
    clients: &BTreeMap<String, ClientConfig>,
    spend: &SpendConfig,
    api_tokens: &[Secret],
    operator_tokens: &[Secret],
    templates: &Templates,
) -> Result<()> {
    spend.validate()?;
    // Where each token digest was first seen, to name both places of a duplicate.
    let mut seen: HashMap<[u8; 32], String> = HashMap::new();
    let mut note = |d: [u8; 32], key: String| -> Result<()> {
        if let Some(first) = seen.get(&d) {
            bail!("{key}: the same token as {first}; each token names one client");
        }
        seen.insert(d, key);
        Ok(())
    };
    // A token listed twice in api_tokens names the one unnamed client twice: harmless.
    let mut unnamed = HashSet::new();
    for (i, t) in api_tokens.iter().enumerate() {
        let d = digest(t.expose().trim());
        if unnamed.insert(d) {
            note(d, format!("api_tokens[{i}] ({ENV_API_TOKENS})"))?;
        }
    }
    for (i, t) in operator_tokens.iter().enumerate() {
        note(
            digest(t.expose().trim()),
            format!("operator_tokens[{i}] ({ENV_OPERATOR_TOKENS})"),
        )?;
    }
    for (name, client) in clients {
        if let Err(e) = ClientId::new(name) {
            bail!("clients.{name}: {}", e.problem);
        }
        for (key, limit) in [
            ("per_second", client.per_second),
            ("per_day", client.per_day),
        ] {
            if limit == Some(0) {
                bail!("clients.{name}.{key}: expected at least 1, found 0");
            }
        }
        if let Some(cap) = &client.monthly_spend_cap {
            parse_cap(&format!("clients.{name}.monthly_spend_cap"), cap)?;
        }
        if client.token_sha256.is_empty() && client.tokens.is_empty() {
            bail!(
                "clients.{name}.token_sha256: expected at least one token digest (or tokens in {})",
                tokens_env(name)
            );
        }
        for (i, hex) in client.token_sha256.iter().enumerate() {
            let key = format!("clients.{name}.token_sha256[{i}]");
            let Some(d) = parse_digest(hex) else {
                bail!(
                    "{key}: expected a SHA-256 in hex (64 digits 0-9, a-f), found {} characters",
                    hex.trim().chars().count()
                );
            };
            note(d, key)?;
        }
        for (i, token) in client.tokens.iter().enumerate() {
            let key = format!("clients.{name} ({}[{i}])", tokens_env(name));
            check_token_length(&key, token)?;
            note(digest(token.expose().trim()), key)?;
        }
        if let (Some(allowed), false) = (&client.templates, templates.is_pass_through()) {
            for (i, template) in allowed.iter().enumerate() {
                if templates.get(template).is_none() {
                    let known: Vec<&str> = templates.iter().map(|(n, _)| n).collect();
                    bail!(
                        "clients.{name}.templates[{i}]: unknown template {template:?}; expected \
                         one of the [templates]: {}",
                        known.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(token: &str) -> String {
        hex::encode(digest(token))
    }

    fn client(digests: &[&str]) -> ClientConfig {
        ClientConfig {
            token_sha256: digests.iter().map(|t| hex_of(t)).collect(),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn a_token_of_two_clients_is_an_error_naming_both_keys() {
        let clients = BTreeMap::from([
            ("app".to_owned(), client(&["token-of-the-app-0001"])),
            (
                "shop".to_owned(),
                client(&["token-of-the-shop-001", "token-of-the-app-0001"]),
            ),
        ]);
        let e = validate(
            &clients,
            &SpendConfig::default(),
            &[],
            &[],
            &Templates::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "clients.shop.token_sha256[1]: the same token as clients.app.token_sha256[0]; \
             each token names one client"
        );
        let only_app = BTreeMap::from([("app".to_owned(), client(&["token-of-the-app-0001"]))]);
        let api = [Secret::new("token-of-the-app-0001")];
        let e = validate(
            &only_app,
            &SpendConfig::default(),
            &api,
            &[],
            &Templates::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "clients.app.token_sha256[0]: the same token as api_tokens[0] (SMS_API_TOKENS); \
             each token names one client"
        );
    }

    #[test]
    fn a_digest_that_is_not_a_sha256_is_an_error_naming_it() {
        let clients = BTreeMap::from([(
            "shop".to_owned(),
            ClientConfig {
                token_sha256: vec!["abc".into()],
                ..ClientConfig::default()
            },
        )]);
        let e = validate(
            &clients,
            &SpendConfig::default(),
            &[],
            &[],
            &Templates::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("clients.shop.token_sha256[0]: expected a SHA-256"),
            "{e}"
        );
    }

    #[test]
    fn a_client_sees_only_its_allowed_templates() {
        let clients = BTreeMap::from([(
            "shop".to_owned(),
            ClientConfig {
                templates: Some(vec!["order_shipped".into()]),
                ..client(&["token-of-the-shop-001"])
            },
        )]);
        let map = by_digest(&clients, &[Secret::new("token-of-the-api-0001")]);
        let shop = &map[&digest("token-of-the-shop-001")];
        assert_eq!(shop.label(), "shop");
        assert!(shop.may_send("order_shipped") && !shop.may_send("login_code"));
        let unnamed = &map[&digest("token-of-the-api-0001")];
        assert_eq!(unnamed.name, None);
        assert!(unnamed.may_send("anything"));
        assert!(!map.contains_key(&digest("token-of-the-shop-002")));
    }
}
