//! Which addresses the mount may connect to. Content URLs come from the server, so a
//! hostile or broken server could point one at a cloud instance's metadata service
//! (169.254.169.254), a database on the private network, or the host itself; with
//! `--allow-other` whatever answers would become file content every user of the mount can
//! read. Connections go only to public addresses, and to the kinds of address the
//! configured API server itself is on (the emulator and the tests on loopback, an
//! on-premise proxy on a private network); `--allow-private-addresses` lifts the rule.
//! Checked after DNS resolution (every name reqwest resolves goes through
//! [`GuardedResolver`]) and for addresses written in URLs ([`Guard::check_url`]);
//! redirects are never followed.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// The kinds of address the rule tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    Loopback,
    /// RFC 1918, carrier-grade NAT (100.64/10), IPv6 unique local (fc00::/7).
    Private,
    /// 169.254/16 (cloud metadata services), fe80::/10.
    LinkLocal,
    /// 0.0.0.0, :: (which connect to this host), broadcast, multicast.
    Unspecified,
}

pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Class::Loopback
            } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                Class::Private
            } else if v4.is_link_local() {
                Class::LinkLocal
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 {
                Class::Unspecified
            } else {
                Class::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Class::Loopback
            } else if v6.is_unspecified() || v6.is_multicast() {
                Class::Unspecified
            } else if s[0] & 0xffc0 == 0xfe80 {
                Class::LinkLocal
            } else if s[0] & 0xfe00 == 0xfc00 {
                Class::Private
            } else {
                Class::Public
            }
        }
    }
}

/// The rule: the kinds of address allowed besides public ones.
#[derive(Debug, Clone)]
pub struct Guard {
    allowed: Vec<Class>,
    all: bool,
}

impl Guard {
    /// Everything allowed (`--allow-private-addresses`).
    pub fn open() -> Guard {
        Guard {
            allowed: Vec::new(),
            all: true,
        }
    }

    /// Public addresses, and the kinds the API server at `server` (a URL) resolves to.
    pub fn for_server(server: &str) -> Guard {
        let host_port = url::Url::parse(server).ok().and_then(|u| {
            let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
            Some((host, u.port_or_known_default().unwrap_or(443)))
        });
        let allowed = host_port
            .and_then(|hp| hp.to_socket_addrs().ok())
            .map(|addrs| {
                addrs
                    .map(|a| classify(a.ip()))
                    .filter(|c| *c != Class::Public)
                    .collect()
            })
            .unwrap_or_default();
        Guard { allowed, all: false }
    }

    /// Why `ip` may not be connected to, if it may not.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        let class = classify(ip);
        (!self.all && class != Class::Public && !self.allowed.contains(&class)).then(|| {
            format!(
                "refused to connect to {ip} ({class:?} address) for a URL the server gave; the API server is not on such an address (--allow-private-addresses allows it)"
            )
        })
    }

    /// A URL whose host is an address written out (no name to resolve) that may not be
    /// connected to.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let host = url::Url::parse(url).ok().and_then(|u| {
            u.host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        });
        match host.and_then(|h| h.parse::<IpAddr>().ok()) {
            Some(ip) => self.refuses(ip).map_or(Ok(()), Err),
            None => Ok(()),
        }
    }
}

/// reqwest's name resolution, with the addresses the [`Guard`] refuses taken out.
pub struct GuardedResolver(pub Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| guard.refuses(a.ip()).is_none())
                .collect();
            if kept.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| guard.refuses(a.ip()))
                    .unwrap_or_else(|| "no address".into());
                return Err(format!("{host}: {why}").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classed_and_only_the_api_servers_kind_is_allowed() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("169.254.169.254"), Class::LinkLocal);
        assert_eq!(c("10.1.2.3"), Class::Private);
        assert_eq!(c("172.16.0.1"), Class::Private);
        assert_eq!(c("192.168.1.1"), Class::Private);
        assert_eq!(c("100.64.0.1"), Class::Private);
        assert_eq!(c("127.0.0.2"), Class::Loopback);
        assert_eq!(c("0.0.0.0"), Class::Unspecified);
        assert_eq!(c("::"), Class::Unspecified);
        assert_eq!(c("::1"), Class::Loopback);
        assert_eq!(c("fe80::1"), Class::LinkLocal);
        assert_eq!(c("fd00::1"), Class::Private);
        assert_eq!(c("::ffff:169.254.169.254"), Class::LinkLocal);
        assert_eq!(c("52.1.2.3"), Class::Public);
        assert_eq!(c("2600:1f18::1"), Class::Public);
        let g = Guard::for_server("http://127.0.0.1:8080");
        assert!(g.refuses("127.0.0.1".parse().unwrap()).is_none());
        assert!(g.refuses("52.1.2.3".parse().unwrap()).is_none());
        for bad in ["169.254.169.254", "10.0.0.1", "0.0.0.0", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(g.refuses(bad.parse().unwrap()).is_some(), "{bad}");
        }
        assert!(g.check_url("http://169.254.169.254/latest/meta-data").is_err());
        assert!(g.check_url("http://[fe80::1]:9/x").is_err());
        assert!(
            g.check_url("https://bucket.s3.amazonaws.com/x").is_ok(),
            "names are checked when resolved"
        );
        // A mount of a public API server (no name resolved here: tests stay on this host).
        let public = Guard {
            allowed: Vec::new(),
            all: false,
        };
        assert!(public.refuses("127.0.0.1".parse().unwrap()).is_some());
        assert!(Guard::open().refuses("169.254.169.254".parse().unwrap()).is_none());
    }

    #[test]
    fn names_resolving_to_refused_addresses_are_refused() {
        use reqwest::dns::Resolve;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let guard = Arc::new(Guard {
            allowed: Vec::new(),
            all: false,
        });
        let r = GuardedResolver(guard);
        // `localhost` resolves to loopback, which a public API server's mount refuses.
        let e = rt
            .block_on(r.resolve("localhost".parse().unwrap()))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
