//! Compiles the protobuf definitions with protox (pure Rust, no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["gatehouse/v1/agent.proto", "gatehouse/v1/admin.proto"];
    let root = "../../proto";
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let descriptors = protox::compile(files, [root])?;
    // The descriptors themselves, for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("gatehouse_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // No generated `connect` constructor: it would clash with the `Connect` RPC, and both sides
    // dial TLS themselves.
    tonic_prost_build::configure()
        .build_transport(false)
        .codec_path("crate::codec::SmallCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
