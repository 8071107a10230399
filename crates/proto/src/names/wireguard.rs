//! The names a WireGuard network is made of: the interface it is on every host (a kernel link
//! name, a unit name and a UAPI socket path), the keys peers are known by, and the endpoints
//! they are reached at.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::{DomainName, NameError};

/// A WireGuard interface name: 1–15 bytes (the kernel's limit) of `[a-z0-9_-]`, starting with a
/// letter. It names the link, the unit `gatehouse-wg@NAME.service` and the UAPI socket
/// `/var/run/wireguard/NAME.sock`, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The longest name the kernel takes (IFNAMSIZ less the NUL).
    pub const MAX: usize = 15;

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The systemd unit that runs a userspace interface.
    pub fn unit(&self) -> String {
        format!("gatehouse-wg@{}.service", self.0)
    }
}

impl FromStr for InterfaceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let field = "interface name";
        if s.is_empty() || s.len() > Self::MAX {
            return Err(NameError::new(field, s, "must be 1 to 15 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(NameError::new(field, s, "must start with a letter a-z"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(NameError::new(
                field,
                s,
                "may only contain a-z, 0-9, '-' and '_'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WireGuard public key (or preshared key) as `wg` writes it: the standard base64 of 32
/// bytes, 44 characters ending in `=`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WgKey(String);

impl WgKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(44);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out.push('=');
        Self(out)
    }
}

impl FromStr for WgKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        let bytes = s.as_bytes();
        // 32 bytes are 256 bits: 43 characters carry 258, so the last one's low two bits are 0.
        let ok = bytes.len() == 44
            && bytes[43] == b'='
            && bytes[..43].iter().all(|&b| b64(b))
            && b"AEIMQUYcgkosw048".contains(&bytes[42]);
        if !ok {
            return Err(NameError::new(
                "WireGuard key",
                s,
                "must be 32 bytes in base64, as `wg pubkey` prints them (44 characters ending in '=')",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgKey({})", self.0)
    }
}

/// Where a peer is reached: `HOST:PORT` with a DNS name or an address (`[v6]:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgEndpoint {
    host: String,
    port: u16,
}

impl FromStr for WgEndpoint {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let field = "endpoint";
        let rule = "must be HOST:PORT, [IPv6]:PORT or IPv4:PORT, with a port from 1 to 65535";
        let (host, port) = s.rsplit_once(':').ok_or(NameError::new(field, s, rule))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(NameError::new(field, s, rule))?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            match v6.parse::<IpAddr>() {
                Ok(IpAddr::V6(a)) => format!("[{a}]"),
                _ => return Err(NameError::new(field, s, rule)),
            }
        } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            ip.to_string()
        } else {
            let name: DomainName = host.parse().map_err(|_| NameError::new(field, s, rule))?;
            name.to_string()
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for WgEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_the_kernel_and_a_path() {
        for good in ["wg0", "gh-office", "a", "net_1-234567890"] {
            assert!(good.parse::<InterfaceName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "0wg",
            "wg/0",
            "..",
            "wg 0",
            "WG0",
            "a234567890123456",
            "wg0\n",
            "wg@0",
        ] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "wg0".parse::<InterfaceName>().unwrap().unit(),
            "gatehouse-wg@wg0.service"
        );
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        let k = WgKey::from_bytes(&[0u8; 32]);
        assert_eq!(k.as_str(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let k = WgKey::from_bytes(&[0xff; 32]);
        assert_eq!(k.as_str(), "//////////////////////////////////////////8=");
        assert!(k.as_str().parse::<WgKey>().is_ok());
        for bad in [
            "",
            "AAAA",
            "//////////////////////////////////////////9=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(bad.parse::<WgKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints_are_a_host_and_a_port() {
        for (text, shown) in [
            ("vpn.example.com:51820", "vpn.example.com:51820"),
            ("203.0.113.7:51820", "203.0.113.7:51820"),
            ("[2001:db8::0:1]:51820", "[2001:db8::1]:51820"),
        ] {
            assert_eq!(text.parse::<WgEndpoint>().unwrap().to_string(), shown);
        }
        for bad in [
            "vpn.example.com",
            "vpn.example.com:0",
            "vpn.example.com:70000",
            "2001:db8::1:51820",
            "a b:1",
            "[::1:1",
            "x;reboot:1",
        ] {
            assert!(bad.parse::<WgEndpoint>().is_err(), "{bad:?}");
        }
    }
}
