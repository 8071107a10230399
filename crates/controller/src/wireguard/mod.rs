//! WireGuard networks across the fleet. The controller holds each network's ranges, its peers'
//! addresses ([`ipam`]) and their public keys, never a private key: hosts make theirs and report
//! the public half; clients' keys are made by `gatehousectl` on the operator's machine. A
//! client's preshared key is the one secret here, sealed, for the hub only.
//!
//! [`networks`] creates and lists networks; [`peers`] adds and removes hosts and clients;
//! [`desired`] puts what each host runs into its desired state.

pub mod desired;
pub mod ipam;
pub mod networks;
pub mod peers;
pub mod status;

/// How a network's peers reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Every peer goes through a hub host, which forwards between them.
    Hub,
    /// Hosts peer with every other host directly; clients attach to a hub.
    Mesh,
}

impl Topology {
    pub fn parse(text: &str) -> crate::error::Result<Self> {
        match text {
            "" | "hub" => Ok(Self::Hub),
            "mesh" => Ok(Self::Mesh),
            other => Err(crate::error::Error::Invalid(format!(
                "topology: {other:?} is neither hub nor mesh"
            ))),
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::Mesh => "mesh",
        }
    }
}

/// A peer's kind, as stored.
pub const HOST: &str = "host";
pub const CLIENT: &str = "client";
