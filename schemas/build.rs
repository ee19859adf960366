//! Compiles `proto/` with protox (pure Rust: no `protoc` on any machine) and prost-build.
//! This reads files at build time only; the crate itself does no I/O.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/maestro/templates/v1/templates.proto",
        "proto/maestro/healing/v1/healing.proto",
        "proto/maestro/execution/v1/execution.proto",
        "proto/maestro/log/v1/log.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    // Maps encode in key order, so the same message always encodes to the same bytes.
    config.btree_map(["."]);
    config.compile_fds(descriptors)?;
    Ok(())
}
