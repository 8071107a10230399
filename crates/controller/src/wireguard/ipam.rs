//! Address management, pure: the next free address of a range given the ones in use, a
//! requested address checked against the range, and a random ULA /64 (RFC 4193) for networks
//! created without an IPv6 range. The store's unique keys make an allocation final.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use ipnet::{IpNet, Ipv6Net};

use crate::error::{Error, Result};

/// A network's addresses in use: IPv4, IPv6.
pub type Used = (BTreeSet<IpAddr>, BTreeSet<IpAddr>);

/// The addresses each network's peers hold, as this controller last read or handed them out,
/// so an allocation does not read every peer of the network. The store's unique keys stay the
/// judge: an address another controller took makes the insert fail, and the network is read
/// again ([`Cache::forget`]).
#[derive(Debug, Default)]
pub struct Cache(Mutex<HashMap<String, Used>>);

impl Cache {
    /// The network's addresses, if known.
    pub fn get(&self, network: &str) -> Option<Used> {
        self.0.lock().expect("ipam lock").get(network).cloned()
    }

    /// What the store says the network holds.
    pub fn put(&self, network: &str, used: Used) {
        self.0
            .lock()
            .expect("ipam lock")
            .insert(network.to_owned(), used);
    }

    /// A peer was given (`taken`) or gave back its addresses.
    pub fn note(&self, network: &str, v4: IpAddr, v6: IpAddr, taken: bool) {
        if let Some((a, b)) = self.0.lock().expect("ipam lock").get_mut(network) {
            if taken {
                a.insert(v4);
                b.insert(v6);
            } else {
                a.remove(&v4);
                b.remove(&v6);
            }
        }
    }

    /// Reads the network from the store next time.
    pub fn forget(&self, network: &str) {
        self.0.lock().expect("ipam lock").remove(network);
    }
}

/// A random unique local /64: `fd` + a 40-bit random global id + subnet 0 (RFC 4193 §3.2).
pub fn random_ula() -> Ipv6Net {
    let mut id = [0u8; 5];
    aws_lc_rs::rand::fill(&mut id).expect("the system RNG");
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&id);
    Ipv6Net::new(Ipv6Addr::from(octets), 64).expect("a /64")
}

/// The addresses of `range` a peer may hold, as offsets from its start: IPv4 leaves out the
/// network and broadcast addresses (of ranges of 4 or more), IPv6 the subnet-router anycast
/// address (offset 0).
fn usable(range: IpNet) -> (u128, u128) {
    let size: u128 = 1u128 << (range.max_prefix_len() - range.prefix_len()).min(127);
    match range {
        IpNet::V4(_) if size >= 4 => (1, size - 2),
        IpNet::V4(_) => (0, size - 1),
        IpNet::V6(_) => (1, size - 1),
    }
}

fn offset(range: IpNet, addr: IpAddr) -> u128 {
    match (range.network(), addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n)),
        (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n),
        _ => u128::MAX,
    }
}

fn at(range: IpNet, offset: u128) -> IpAddr {
    match range.network() {
        IpAddr::V4(n) => IpAddr::V4((u32::from(n) + offset as u32).into()),
        IpAddr::V6(n) => IpAddr::V6((u128::from(n) + offset).into()),
    }
}

/// How many addresses of `range` are free, given `used` (saturating at `u64::MAX`).
pub fn free(range: IpNet, used: &BTreeSet<IpAddr>) -> u64 {
    let (first, last) = usable(range);
    let taken = used
        .iter()
        .filter(|a| range.contains(*a) && (first..=last).contains(&offset(range, **a)))
        .count() as u128;
    (last - first + 1 - taken).min(u128::from(u64::MAX)) as u64
}

/// The lowest free address of `range`; `None` when every one is taken.
pub fn next_free(range: IpNet, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let (first, last) = usable(range);
    let mut want = first;
    // `used` is sorted: walk it until the first gap.
    for o in used
        .iter()
        .filter(|a| range.contains(*a))
        .map(|a| offset(range, *a))
    {
        if o < want {
            continue;
        }
        if o > want {
            break;
        }
        want += 1;
    }
    (want <= last).then(|| at(range, want))
}

/// A requested address, checked: inside `range` and one a peer may hold.
pub fn requested(range: IpNet, field: &str, text: &str) -> Result<IpAddr> {
    let addr: IpAddr = text
        .parse()
        .map_err(|_| Error::Invalid(format!("{field}: {text:?} is not an address")))?;
    let (first, last) = usable(range);
    if !range.contains(&addr) || !(first..=last).contains(&offset(range, addr)) {
        return Err(Error::Invalid(format!(
            "{field}: {addr} is not an address a peer of {range} may hold"
        )));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_lowest_free_address_skips_network_broadcast_and_taken_ones() {
        let v4: IpNet = "10.60.0.0/29".parse().unwrap();
        assert_eq!(next_free(v4, &set(&[])), Some("10.60.0.1".parse().unwrap()));
        assert_eq!(
            next_free(v4, &set(&["10.60.0.1", "10.60.0.2", "10.60.0.4"])),
            Some("10.60.0.3".parse().unwrap())
        );
        let full = set(&[
            "10.60.0.1",
            "10.60.0.2",
            "10.60.0.3",
            "10.60.0.4",
            "10.60.0.5",
            "10.60.0.6",
        ]);
        assert_eq!(next_free(v4, &full), None);
        assert_eq!(free(v4, &full), 0);
        assert_eq!(free(v4, &set(&["10.60.0.1", "192.0.2.1"])), 5);
        let v6: IpNet = "fd00:1:2:3::/64".parse().unwrap();
        assert_eq!(
            next_free(v6, &set(&["fd00:1:2:3::1"])),
            Some("fd00:1:2:3::2".parse().unwrap())
        );
        assert_eq!(free(v6, &set(&[])), u64::MAX);
    }

    #[test]
    fn a_requested_address_must_be_one_a_peer_may_hold() {
        let v4: IpNet = "10.60.0.0/24".parse().unwrap();
        assert!(requested(v4, "ipv4", "10.60.0.9").is_ok());
        for bad in ["10.60.0.0", "10.60.0.255", "10.61.0.1", "fd00::1", "x"] {
            let e = requested(v4, "ipv4", bad).unwrap_err().to_string();
            assert!(e.starts_with("ipv4:"), "{e}");
        }
    }

    #[test]
    fn a_random_ula_is_a_fd_slash_64() {
        let a = random_ula();
        assert_eq!(a.prefix_len(), 64);
        assert_eq!(a.addr().octets()[0], 0xfd);
        assert_ne!(a, random_ula());
    }
}
