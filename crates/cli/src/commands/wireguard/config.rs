//! A client's wg-quick config, from what the controller sent and the keys made here.

use anyhow::anyhow;
use gatehouse_common::wgkeys::PrivateKey;
use gatehouse_proto::names::{WgEndpoint, WgKey};
use gatehouse_proto::v1::WgClientConfig;

/// The client's wg-quick config: its private key, addresses, DNS and MTU, and the hub as its
/// one peer. Every value from the controller is checked first, so nothing it sends can add a
/// line to the file.
pub fn client_config(
    c: &WgClientConfig,
    private: &PrivateKey,
    psk: Option<&PrivateKey>,
) -> anyhow::Result<String> {
    let nets = |field: &str, list: &[String]| -> anyhow::Result<String> {
        let parsed = list
            .iter()
            .map(|a| {
                a.parse::<ipnet::IpNet>()
                    .map(|n| n.to_string())
                    .map_err(|_| anyhow!("the controller sent a bad {field}: {a:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(parsed.join(", "))
    };
    let hub: WgKey = c.hub_public_key.parse()?;
    let endpoint: WgEndpoint = c.hub_endpoint.parse()?;
    let dns = c
        .dns
        .iter()
        .map(|d| {
            d.parse::<std::net::IpAddr>()
                .map(|a| a.to_string())
                .map_err(|_| anyhow!("the controller sent a bad DNS server: {d:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = String::from("[Interface]\n");
    out.push_str(&format!("PrivateKey = {}\n", private.expose()));
    out.push_str(&format!("Address = {}\n", nets("address", &c.addresses)?));
    if !dns.is_empty() {
        out.push_str(&format!("DNS = {}\n", dns.join(", ")));
    }
    if c.mtu != 0 {
        out.push_str(&format!("MTU = {}\n", c.mtu));
    }
    out.push_str("\n[Peer]\n");
    out.push_str(&format!("PublicKey = {hub}\n"));
    if let Some(psk) = psk {
        out.push_str(&format!("PresharedKey = {}\n", psk.expose()));
    }
    out.push_str(&format!("Endpoint = {endpoint}\n"));
    out.push_str(&format!(
        "AllowedIPs = {}\n",
        nets("allowed range", &c.allowed_ips)?
    ));
    if c.keepalive_seconds != 0 {
        out.push_str(&format!("PersistentKeepalive = {}\n", c.keepalive_seconds));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WgClientConfig {
        WgClientConfig {
            addresses: vec!["10.60.0.5/32".into(), "fd12:3456:789a::5/128".into()],
            dns: vec!["10.60.0.1".into()],
            mtu: 1420,
            hub_public_key: PrivateKey::generate().public().to_string(),
            hub_endpoint: "hub.example.com:51820".into(),
            allowed_ips: vec!["10.60.0.0/24".into(), "fd12:3456:789a::/64".into()],
            keepalive_seconds: 25,
        }
    }

    #[test]
    fn a_client_config_has_its_key_the_hub_and_nothing_the_controller_could_inject() {
        let private = PrivateKey::generate();
        let psk = PrivateKey::random();
        let text = client_config(&config(), &private, Some(&psk)).unwrap();
        assert!(text.starts_with(&format!("[Interface]\nPrivateKey = {}\n", private.expose())));
        assert!(text.contains("Address = 10.60.0.5/32, fd12:3456:789a::5/128\n"));
        assert!(text.contains(&format!("PresharedKey = {}\n", psk.expose())));
        assert!(text.contains("AllowedIPs = 10.60.0.0/24, fd12:3456:789a::/64\n"));
        assert!(text.ends_with("PersistentKeepalive = 25\n"));
        for bad in [
            WgClientConfig {
                hub_endpoint: "hub:1\nPostUp = rm -rf /".into(),
                ..config()
            },
            WgClientConfig {
                dns: vec!["1.1.1.1\nPostUp = x".into()],
                ..config()
            },
            WgClientConfig {
                allowed_ips: vec!["0.0.0.0/0, ::/0\nPostUp = x".into()],
                ..config()
            },
            WgClientConfig {
                hub_public_key: "x".into(),
                ..config()
            },
        ] {
            assert!(client_config(&bad, &private, None).is_err());
        }
    }
}
