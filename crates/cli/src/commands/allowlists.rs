//! `gatehousectl allowlist …`: dynamic IP allowlists, their devices and fixed entries.

use clap::Subcommand;
use gatehouse_proto::names::ResourceName;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::{confirm, now, seconds as parse_duration};
use crate::client::{Client, explain};
use crate::output::{self, relative, say, time};

#[derive(Debug, Subcommand)]
pub enum AllowlistCommand {
    /// Create an allowlist.
    Create {
        /// Its name: [a-z0-9-].
        name: String,
        /// How long a check-in keeps its address allowed.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: u64,
        /// Mirror it into a Cloudflare list: rules (WAF), gateway (Access) or both.
        #[arg(long, value_parser = ["rules", "gateway", "both"], requires = "account")]
        cloudflare: Option<String>,
        /// The Cloudflare account of that list.
        #[arg(long, requires = "cloudflare")]
        account: Option<String>,
        /// Accept loopback, private, CGNAT and link-local sources (a LAN-only list).
        #[arg(long)]
        allow_private: bool,
        /// Keep IPv6 check-ins as this prefix (at most 64 for Cloudflare lists).
        #[arg(long, default_value_t = 64)]
        ipv6_prefix: u32,
    },
    /// List allowlists.
    List,
    /// Show a list: every entry with its devices, first and last check-in, and expiry.
    Show { name: String },
    /// Delete a list, its devices and entries.
    Delete {
        name: String,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Devices that check in to a list.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Fixed entries (an office).
    #[command(subcommand)]
    Entry(EntryCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device and print its check-in token (once).
    Add {
        list: String,
        /// The device's name: [a-z0-9-].
        #[arg(long)]
        name: String,
    },
    /// Revoke a device: its token stops working and its entries go at once.
    Revoke {
        list: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Add (or replace) a fixed entry: an address or a CIDR.
    Add {
        list: String,
        cidr: String,
        /// What it is ("office").
        #[arg(long, default_value = "")]
        comment: String,
        /// Remove it after this long (default: never).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<u64>,
    },
    /// Remove a fixed entry.
    Remove { list: String, cidr: String },
}

/// Checks names before connecting.
pub fn check(cmd: &AllowlistCommand) -> anyhow::Result<()> {
    let name = |n: &str| n.parse::<ResourceName>().map(drop);
    match cmd {
        AllowlistCommand::Create { name: n, .. }
        | AllowlistCommand::Show { name: n }
        | AllowlistCommand::Delete { name: n, .. } => name(n)?,
        AllowlistCommand::Device(
            DeviceCommand::Add { list, name: n } | DeviceCommand::Revoke { list, name: n },
        ) => {
            name(list)?;
            name(n).map_err(|e| anyhow::anyhow!("device {e}"))?;
        }
        AllowlistCommand::Entry(
            EntryCommand::Add { list, .. } | EntryCommand::Remove { list, .. },
        ) => name(list)?,
        AllowlistCommand::List => {}
    }
    Ok(())
}

pub async fn run(client: &mut Client, cmd: AllowlistCommand, out: Output) -> anyhow::Result<()> {
    let list = match cmd {
        AllowlistCommand::Create {
            name,
            ttl,
            cloudflare,
            account,
            allow_private,
            ipv6_prefix,
        } => client
            .create_allowlist(CreateAllowlistRequest {
                name,
                ttl_seconds: ttl,
                cloudflare: cloudflare.unwrap_or_default(),
                account: account.unwrap_or_default(),
                allow_private,
                ipv6_prefix,
            })
            .await
            .map_err(explain)?
            .into_inner(),
        AllowlistCommand::List => {
            let lists = client
                .list_allowlists(ListAllowlistsRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .allowlists;
            output::list(
                out,
                &lists,
                &["LIST", "TTL", "ENTRIES", "DEVICES", "CLOUDFLARE"],
                |l| {
                    vec![
                        l.name.clone(),
                        humantime::format_duration(std::time::Duration::from_secs(l.ttl_seconds))
                            .to_string(),
                        l.entries.len().to_string(),
                        l.devices
                            .iter()
                            .filter(|d| d.revoked_at == 0)
                            .count()
                            .to_string(),
                        if l.cloudflare.is_empty() {
                            "-".into()
                        } else {
                            format!("{} ({})", l.cloudflare, l.account)
                        },
                    ]
                },
            );
            return Ok(());
        }
        AllowlistCommand::Show { name } => client
            .get_allowlist(GetAllowlistRequest { name })
            .await
            .map_err(explain)?
            .into_inner(),
        AllowlistCommand::Delete { name, yes } => {
            confirm(
                &format!("Delete allowlist {name} with its devices and entries?"),
                yes,
            )?;
            let gone = client
                .delete_allowlist(GetAllowlistRequest { name })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &gone, || say!("deleted allowlist {}", gone.name));
            return Ok(());
        }
        AllowlistCommand::Device(DeviceCommand::Add { list, name }) => {
            let added = client
                .add_allowlist_device(AllowlistDeviceRequest { list, name })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &added, || {
                say!("{}", added.token);
                eprintln!(
                    "This token is shown once. The device checks in with:\n  \
                     curl -fsS -X POST -H 'Authorization: Bearer {}' \
                     http://CONTROLLER:7480/v1/allowlist/checkin",
                    added.token
                );
            });
            return Ok(());
        }
        AllowlistCommand::Device(DeviceCommand::Revoke { list, name }) => {
            let device = client
                .revoke_allowlist_device(RevokeAllowlistDeviceRequest { list, name })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &device, || say!("revoked device {}", device.name));
            return Ok(());
        }
        AllowlistCommand::Entry(EntryCommand::Add {
            list,
            cidr,
            comment,
            expires,
        }) => client
            .add_allowlist_entry(AddAllowlistEntryRequest {
                list,
                cidr,
                comment,
                expires_in_seconds: expires.unwrap_or(0),
            })
            .await
            .map_err(explain)?
            .into_inner(),
        AllowlistCommand::Entry(EntryCommand::Remove { list, cidr }) => client
            .remove_allowlist_entry(RemoveAllowlistEntryRequest { list, cidr })
            .await
            .map_err(explain)?
            .into_inner(),
    };
    output::show(out, &list, || print_list(&list));
    Ok(())
}

fn print_list(l: &Allowlist) {
    let now = now();
    say!(
        "allowlist {}: ttl {}, IPv6 as /{}{}{}",
        l.name,
        humantime::format_duration(std::time::Duration::from_secs(l.ttl_seconds)),
        l.ipv6_prefix,
        if l.allow_private {
            ", private sources accepted"
        } else {
            ""
        },
        if l.cloudflare.is_empty() {
            String::new()
        } else {
            format!(
                ", Cloudflare {} list in account {}",
                l.cloudflare, l.account
            )
        }
    );
    for s in &l.sync {
        if s.error.is_empty() {
            say!(
                "Cloudflare {} list {}: {} items, in sync since {}",
                s.target,
                s.name,
                s.items,
                time(s.synced_at)
            );
        } else {
            say!(
                "Cloudflare {} list {}: last synced {}, error: {}",
                s.target,
                s.name,
                time(s.synced_at),
                s.error
            );
        }
    }
    let rows: Vec<Vec<String>> = l
        .entries
        .iter()
        .map(|e| {
            let devices = if e.fixed {
                format!("fixed: {}", e.comment)
            } else {
                e.devices
                    .iter()
                    .map(|d| d.device.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let first = e
                .devices
                .iter()
                .map(|d| d.first_checkin_at)
                .min()
                .unwrap_or(0);
            let last = e
                .devices
                .iter()
                .map(|d| d.last_checkin_at)
                .max()
                .unwrap_or(0);
            vec![
                e.cidr.clone(),
                devices,
                time(first),
                time(last),
                if e.expires_at == 0 {
                    "never".into()
                } else {
                    format!("{} ({})", time(e.expires_at), relative(e.expires_at, now))
                },
            ]
        })
        .collect();
    output::table(
        &[
            "ENTRY",
            "DEVICES",
            "FIRST CHECK-IN",
            "LAST CHECK-IN",
            "EXPIRES",
        ],
        &rows,
    );
    if !l.devices.is_empty() {
        say!();
        let rows: Vec<Vec<String>> = l
            .devices
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.id.clone(),
                    if d.revoked_at == 0 {
                        "active".into()
                    } else {
                        format!("revoked {}", time(d.revoked_at))
                    },
                    time(d.last_checkin_at),
                    if d.last_address.is_empty() {
                        "-".into()
                    } else {
                        d.last_address.clone()
                    },
                ]
            })
            .collect();
        output::table(
            &["DEVICE", "TOKEN ID", "STATE", "LAST CHECK-IN", "ADDRESS"],
            &rows,
        );
    }
}
