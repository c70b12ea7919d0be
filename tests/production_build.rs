//! Issue 9, the production binary: `cargo build --release -p tally-cli`
//! links no test kit (fixed-seed keys, seeded test entropy). Asked of cargo
//! itself: the features the normal build of `tally-cli` resolves to, with
//! no dev-dependency in the graph (`cargo test` turns `dev-tools` on for
//! the tests through a dev-dependency, which is exactly what must not leak
//! into the build people ship).

use std::process::Command;

/// `cargo tree` lines `package features` of the normal (non-dev) graph of
/// `tally-cli`, with `args` added.
fn normal_graph(args: &[&str]) -> String {
    graph_of("tally-cli", args)
}

/// The same for any workspace package.
fn graph_of(package: &str, args: &[&str]) -> String {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--manifest-path", manifest, "-p", package])
        .args(["-e", "normal,build", "-f", "{p} {f}", "--prefix", "none"])
        .args(["--offline", "--locked"])
        .args(args)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn features_of<'a>(graph: &'a str, package: &str) -> Vec<&'a str> {
    graph
        .lines()
        .filter(|l| l.starts_with(&format!("{package} v")))
        .flat_map(|l| l.rsplit(' ').next().unwrap_or("").split(','))
        .collect()
}

#[test]
fn release_build_of_tally_links_no_testkit() {
    let graph = normal_graph(&[]);
    assert!(graph.contains("tally-core v"), "unexpected graph:\n{graph}");
    let leaks: Vec<&str> = graph
        .lines()
        .filter(|l| l.contains("testkit") || l.contains("dev-tools") || l.contains("test-hooks"))
        .collect();
    assert!(
        leaks.is_empty(),
        "the production build of tally enables test kits:\n{}",
        leaks.join("\n")
    );
    for p in ["tally-core", "tally-wallet"] {
        assert!(
            !features_of(&graph, p).contains(&"testkit"),
            "{p} built with testkit"
        );
    }
    assert!(
        !features_of(&graph, "tally-se").contains(&"test-hooks"),
        "tally-se built with its test hooks (state access, unchecked signing)"
    );
}

/// The check above can see a test kit when one is there: the dev-tools
/// build (demo, bench) does enable it.
#[test]
fn the_check_sees_testkit_in_the_dev_tools_build() {
    let graph = normal_graph(&["--features", "dev-tools"]);
    assert!(
        features_of(&graph, "tally-core").contains(&"testkit"),
        "{graph}"
    );
    assert!(
        features_of(&graph, "tally-wallet").contains(&"testkit"),
        "{graph}"
    );
}

/// Issue 11: the device's HTTP client is its own crate, so a wallet links
/// no server code — no back office, store, ledger or HTTP server crate in
/// tally-client's normal dependency graph.
#[test]
fn the_device_client_links_no_server_code() {
    let graph = graph_of("tally-client", &[]);
    assert!(
        graph.contains("tally-wallet v"),
        "unexpected graph:\n{graph}"
    );
    for server in [
        "tally-api ",
        "tally-dcp ",
        "tally-store ",
        "tally-ledger ",
        "tally-directory ",
        "tally-mds ",
        "axum ",
        "tokio ",
        "rusqlite ",
        "postgres ",
    ] {
        assert!(
            !graph.lines().any(|l| l.starts_with(server)),
            "tally-client links {server}:\n{graph}"
        );
    }
}
