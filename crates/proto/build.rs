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
    // JSON for people's scripts comes from the messages themselves: field names as in the
    // .proto files, enums as their lowercase words, oneofs as `{"variant": value}`.
    tonic_prost_build::configure()
        .type_attribute(".gatehouse.v1", "#[derive(serde::Serialize)]")
        .type_attribute(".gatehouse.v1", "#[serde(rename_all = \"snake_case\")]")
        .field_attribute(
            "key_type",
            "#[serde(serialize_with = \"crate::json::key_type\")]",
        )
        .field_attribute(
            "ItemResult.state",
            "#[serde(serialize_with = \"crate::json::item_state\")]",
        )
        // A tunnel token is a secret: it never reaches JSON output.
        .field_attribute("TunnelSpec.token", "#[serde(skip_serializing)]")
        .build_transport(false)
        .codec_path("crate::codec::SmallCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
