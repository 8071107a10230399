//! Which address a check-in records, and as what entry: IPv4 as its /32, IPv6 as its /64 (the
//! narrowest Cloudflare lists accept; a phone's rotating privacy addresses stay in one entry),
//! an IPv4-mapped IPv6 address as the IPv4 it is. Forwarded headers count only from trusted
//! proxies. Addresses that cannot be a device's public address are refused unless the list
//! allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The prefix an IPv6 check-in is kept as by default.
pub const IPV6_PREFIX: u8 = 64;

/// The entry for `ip`: /32 for IPv4 (and IPv4-mapped IPv6), `/v6_prefix` for IPv6.
pub fn entry(ip: IpAddr, v6_prefix: u8) -> IpNet {
    match unmapped(ip) {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, 32).expect("32 is a valid prefix")),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, v6_prefix.min(128))
                .expect("at most 128")
                .trunc(),
        ),
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else as it is.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is not a device's public address, if it is not.
pub fn not_public(ip: IpAddr) -> Option<&'static str> {
    match unmapped(ip) {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a carrier-grade NAT address (100.64.0.0/10), shared by many subscribers")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        Some("not a unicast address")
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a unicast address")
    } else {
        None
    }
}

/// The client's address: the peer's, or the one a trusted proxy forwarded
/// (`CF-Connecting-IP`, else the right-most untrusted hop of `X-Forwarded-For`).
pub fn client(
    peer: IpAddr,
    trusted: &[IpNet],
    cf_connecting_ip: Option<&str>,
    forwarded_for: Option<&str>,
) -> Result<IpAddr, String> {
    let peer = unmapped(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if !is_trusted(peer) {
        return Ok(peer);
    }
    if let Some(v) = cf_connecting_ip {
        return v
            .trim()
            .parse::<IpAddr>()
            .map(unmapped)
            .map_err(|_| "CF-Connecting-IP is not an IP address".to_owned());
    }
    if let Some(v) = forwarded_for {
        // Each proxy appends the address it saw: walk back past the trusted ones.
        for hop in v.rsplit(',') {
            let ip = hop
                .trim()
                .parse::<IpAddr>()
                .map(unmapped)
                .map_err(|_| "X-Forwarded-For holds something that is not an IP address")?;
            if !is_trusted(ip) {
                return Ok(ip);
            }
        }
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_is_kept_whole_and_ipv6_as_its_64() {
        assert_eq!(entry(ip("203.0.113.7"), 64).to_string(), "203.0.113.7/32");
        assert_eq!(entry(ip("2001:db8::1"), 64).to_string(), "2001:db8::/64");
        assert_eq!(
            entry(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            entry(ip("2001:0db8:0000:0000:0000:0000:0000:0001"), 64),
            entry(ip("2001:db8::ffff"), 64),
            "one /64 whatever the spelling or the host part"
        );
        assert_eq!(
            entry(ip("::ffff:198.51.100.9"), 64).to_string(),
            "198.51.100.9/32"
        );
        assert_eq!(entry(ip("2001:db8::1"), 128).to_string(), "2001:db8::1/128");
        assert_eq!(entry(ip("2001:db8::1"), 200).to_string(), "2001:db8::1/128");
        assert_eq!(
            entry(ip("2001:db8:abcd::1"), 48).to_string(),
            "2001:db8:abcd::/48"
        );
    }

    #[test]
    fn addresses_that_are_not_a_devices_own_are_named() {
        for (addr, why) in [
            ("127.0.0.2", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade"),
            ("100.127.255.254", "carrier-grade"),
            ("169.254.1.1", "link-local"),
            ("::1", "loopback"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("0.0.0.0", "unicast"),
        ] {
            assert!(
                not_public(ip(addr)).is_some_and(|w| w.contains(why)),
                "{addr}: {:?}",
                not_public(ip(addr))
            );
        }
        for fine in ["203.0.113.7", "100.128.0.1", "2001:db8::1", "8.8.8.8"] {
            assert_eq!(not_public(ip(fine)), None, "{fine}");
        }
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let forged = Some("198.51.100.1");
        assert_eq!(
            client(ip("203.0.113.7"), &trusted, forged, Some("198.51.100.2")).unwrap(),
            ip("203.0.113.7"),
            "an untrusted peer cannot choose its address"
        );
        assert_eq!(
            client(ip("10.0.0.5"), &trusted, forged, None).unwrap(),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(
                ip("10.0.0.5"),
                &trusted,
                None,
                Some("198.51.100.66, 203.0.113.9, 10.0.0.7")
            )
            .unwrap(),
            ip("203.0.113.9"),
            "the right-most hop that is not a trusted proxy"
        );
        assert!(client(ip("10.0.0.5"), &trusted, Some("nope"), None).is_err());
        assert_eq!(
            client(ip("::ffff:10.0.0.5"), &trusted, forged, None).unwrap(),
            ip("198.51.100.1")
        );
    }
}
