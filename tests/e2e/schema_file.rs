/// `schema.graphql` at the repository root is what the server serves; regenerate it with
/// `cargo run -q -p renkei-api -- schema > schema.graphql`.
#[test]
fn committed_schema_file_matches_the_server() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let committed = std::fs::read_to_string(&path).expect("schema.graphql is committed");
    let generated = renkei::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is stale: run `cargo run -q -p renkei-api -- schema > schema.graphql`"
    );
}
