//! Generated gRPC code and the validated name types that both the agent and the controller use.
//!
//! Every name that ends up in a path, a unit name, a DNS record or a certificate is parsed into one
//! of the types in [`names`] at the edge, on both sides.

pub mod codec;
pub mod json;
pub mod names;
pub mod results;
pub mod spec;
pub mod text;

/// Generated protobuf and gRPC code for `gatehouse.v1`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("gatehouse.v1");
}

/// The encoded `FileDescriptorSet` of every gatehouse proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gatehouse_descriptor.bin"));

/// The URI SAN prefix of agent identity certificates: `spiffe://gatehouse/agent/<id>`.
pub const AGENT_URI_PREFIX: &str = "spiffe://gatehouse/agent/";

/// The version both binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
