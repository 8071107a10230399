//! Host facts and metrics from sysinfo, sampled on an interval for `Report`.

use gatehouse_proto::v1::{FilesystemUsage, HostFacts, HostMetrics, InterfaceTraffic};
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};

/// Keeps sysinfo's state between samples (CPU usage is a difference between two reads).
#[derive(Debug)]
pub struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
}

impl Sampler {
    /// Takes a first reading.
    pub fn new() -> Result<Self, sysinfo::Error> {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )?;
        Ok(Self {
            system,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
        })
    }

    /// Reads the current metrics.
    pub fn sample(&mut self) -> HostMetrics {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let load = System::load_average().unwrap_or_default();
        let mut filesystems: Vec<FilesystemUsage> = self
            .disks
            .iter()
            .map(|d| FilesystemUsage {
                mount_point: d.mount_point().to_string_lossy().into_owned(),
                file_system: d.file_system().to_string_lossy().into_owned(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
            })
            .collect();
        filesystems.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
        let mut interfaces: Vec<InterfaceTraffic> = self
            .networks
            .iter()
            .map(|(name, data)| InterfaceTraffic {
                name: name.to_string_lossy().into_owned(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        HostMetrics {
            cpu_percent: self.system.global_cpu_usage(),
            memory_total_bytes: self.system.total_memory(),
            memory_used_bytes: self.system.used_memory(),
            swap_total_bytes: self.system.total_swap(),
            swap_used_bytes: self.system.used_swap(),
            load_1: load.one,
            load_5: load.five,
            load_15: load.fifteen,
            uptime_seconds: System::uptime().unwrap_or(0),
            filesystems,
            interfaces,
        }
    }

    /// What the host is: name, OS, kernel, architecture, addresses.
    pub fn facts(&self) -> HostFacts {
        let mut addresses: Vec<String> = self
            .networks
            .values()
            .flat_map(|data| data.ip_networks().iter().map(|ip| ip.addr.to_string()))
            .collect();
        addresses.sort();
        addresses.dedup();
        HostFacts {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_default(),
            kernel: System::kernel_version().unwrap_or_default(),
            arch: std::env::consts::ARCH.to_owned(),
            addresses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_host() {
        let mut sampler = Sampler::new().unwrap();
        let m = sampler.sample();
        assert!(m.memory_total_bytes > 0);
        assert!(m.memory_used_bytes <= m.memory_total_bytes);
        assert!(m.uptime_seconds > 0);
        assert!(
            m.interfaces.iter().any(|i| i.name == "lo"),
            "{:?}",
            m.interfaces
        );
        let facts = sampler.facts();
        assert!(!facts.hostname.is_empty());
        assert_eq!(facts.arch, std::env::consts::ARCH);
    }
}
