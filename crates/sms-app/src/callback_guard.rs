//! Keeping callbacks away from the gateway's own network: a client's `callback_url`
//! must not make the gateway post to loopback, private, link-local (cloud metadata)
//! or other non-public addresses, unless `callbacks.allow_private_hosts` says so.
//!
//! A URL naming such an address, or `localhost`, is refused when the request comes in.
//! A host name is resolved when its events are posted, and only its public addresses
//! are used, so a name that resolves (or later re-resolves) to a private address gets
//! no post.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sms_core::CallbackUrl;

/// Whether `ip` is an address the public internet can reach.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // "This network", 0.0.0.0/8.
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local, fc00::/7.
                || (first & 0xfe00) == 0xfc00
                // Link-local, fe80::/10.
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Why `url` may not be posted to, when its host is a non-public address or
/// `localhost`; none for a public address or a host name (checked when resolved).
pub fn refusal(url: &CallbackUrl) -> Option<String> {
    let parsed = url::Url::parse(url.as_str()).ok()?;
    let refused = match parsed.host()? {
        url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    refused.then(|| {
        "expected a public address: loopback, private and link-local hosts are refused \
         (callbacks.allow_private_hosts)"
            .to_owned()
    })
}

/// A resolver that hands reqwest only a name's public addresses.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| is_public(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "203.0.114.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_naming_private_hosts_are_refused_and_names_are_left_to_resolution() {
        let url = |u: &str| CallbackUrl::new(u).unwrap();
        for refused in [
            "http://127.0.0.1:8080/e",
            "http://169.254.169.254/latest/meta-data",
            "https://[::1]/e",
            "http://localhost/e",
            "http://api.localhost./e",
            "http://10.0.0.5/hook",
        ] {
            assert!(refusal(&url(refused)).is_some(), "{refused}");
        }
        for allowed in ["https://app.example/e", "https://93.184.216.34/e"] {
            assert!(refusal(&url(allowed)).is_none(), "{allowed}");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses() {
        let name: Name = "localhost".parse().unwrap();
        let e = PublicOnly
            .resolve(name)
            .await
            .err()
            .expect("no public address");
        assert!(e.to_string().contains("no public address"), "{e}");
    }
}
