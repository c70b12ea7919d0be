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
        "tally-central ",
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

/// Issue 11, item 1: the central bank is its own crate, and the boundary
/// runs one way: tally-central's normal graph holds no DCP (nor anything
/// built on one), so the central bank cannot call into a DCP.
#[test]
fn the_central_bank_links_no_dcp() {
    let graph = graph_of("tally-central", &[]);
    assert!(
        graph.contains("tally-ledger v"),
        "unexpected graph:\n{graph}"
    );
    for party in ["tally-dcp ", "tally-api ", "tally-cli ", "tally-client "] {
        assert!(
            !graph.lines().any(|l| l.starts_with(party)),
            "tally-central links {party}:\n{graph}"
        );
    }
}

/// The check above can see a party crate when one is there: the DCP does
/// link the central bank's crate (for the `Central` trait and the wire types).
#[test]
fn the_check_sees_the_central_bank_in_the_dcp_graph() {
    let graph = graph_of("tally-dcp", &[]);
    assert!(
        graph.lines().any(|l| l.starts_with("tally-central ")),
        "{graph}"
    );
}

/// Tables of the central bank's store (its own, the ledger's, settlement's,
/// the directory's) and the MDS's: a DCP reaches them only through the
/// `Central` trait. Whole names, and prefixes (`cb_`, `ledger_`…).
const CENTRAL_TABLES: &[&str] = &[
    "se_registry",
    "se_escrow_ids",
    "spent",
    "journal",
    "accounts",
    "issued",
    "double_spends",
    "revoked_keys",
    "revocation_lists",
    "settled_records",
    "mds_outbox",
    "node_meta",
    "node_docs",
    "node_secrets",
    "node_public_keys",
];
const CENTRAL_TABLE_PREFIXES: &[&str] =
    &["cb_", "ledger_", "settlement_", "spent_", "mds_", "node_"];

fn is_central_table(word: &str) -> bool {
    CENTRAL_TABLES.contains(&word) || CENTRAL_TABLE_PREFIXES.iter().any(|p| word.starts_with(p))
}

/// The string literals of Rust source `src` (comments skipped; escapes
/// left as written; a line continuation drops the line break and the
/// next line's leading blanks, as Rust does).
fn string_literals(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            // A char literal ('x', '\n', '\''), or a lifetime ('a).
            '\'' if c.get(i + 1) == Some(&'\\') => {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '\'' if c.get(i + 2) == Some(&'\'') => i += 3,
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && c.get(i + 1) == Some(&'\n') {
                        i += 2;
                        while i < c.len() && c[i].is_whitespace() {
                            i += 1;
                        }
                        continue;
                    }
                    if c[i] == '\\' {
                        s.push(c[i]);
                        i += 1;
                    }
                    if let Some(&ch) = c.get(i) {
                        s.push(ch);
                    }
                    i += 1;
                }
                out.push(s);
                i += 1;
            }
            ch if ident(ch) => {
                let start = i;
                while i < c.len() && ident(c[i]) {
                    i += 1;
                }
                // A raw string: `r"…"`, `r#"…"#`, `br"…"`.
                let word: String = c[start..i].iter().collect();
                let mut hashes = 0;
                while c.get(i + hashes) == Some(&'#') {
                    hashes += 1;
                }
                if !(matches!(word.as_str(), "r" | "br") && c.get(i + hashes) == Some(&'"')) {
                    continue;
                }
                let body = i + hashes + 1;
                let mut j = body;
                while j < c.len()
                    && !(c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')))
                {
                    j += 1;
                }
                out.push(c[body..j.min(c.len())].iter().collect());
                i = j + 1 + hashes;
            }
            _ => i += 1,
        }
    }
    out
}

/// What in the string literals of Rust source `src` names a central bank
/// table: SQL (a literal with an SQL verb) whose table after FROM, JOIN,
/// INTO, UPDATE or TABLE is not the DCP's (`dcp_*`) or is computed
/// (`{table}`), any word of SQL that is a central table, and a literal that
/// is nothing but a central table's name (a table handed to a helper).
fn central_tables_in_sql(src: &str) -> Vec<String> {
    const VERBS: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP",
    ];
    const BEFORE_TABLE: &[&str] = &["FROM", "JOIN", "INTO", "UPDATE", "TABLE"];
    const SKIP: &[&str] = &["IF", "NOT", "EXISTS", "ONLY"];
    let mut found = Vec::new();
    for lit in string_literals(src) {
        let words: Vec<&str> = lit
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '{' || ch == '}'))
            .filter(|w| !w.is_empty())
            .collect();
        let is_sql = words.iter().any(|w| VERBS.contains(w));
        if !is_sql {
            if words.len() == 1 && lit.trim() == words[0] && is_central_table(words[0]) {
                found.push(format!("table name {:?}", lit));
            }
            continue;
        }
        let first_line = lit.trim().lines().next().unwrap_or("");
        for (k, w) in words.iter().enumerate() {
            if is_central_table(w) {
                found.push(format!("{w} in \"{first_line}\""));
                continue;
            }
            if !BEFORE_TABLE.contains(w) {
                continue;
            }
            let Some(table) = words[k + 1..].iter().find(|t| !SKIP.contains(t)) else {
                continue;
            };
            // `DO UPDATE SET` (an upsert) and subqueries name no table here.
            if *table == "SET" || VERBS.contains(table) || is_central_table(table) {
                continue;
            }
            if !(table.starts_with("dcp_") || *table == "schema_migrations") {
                found.push(format!("table {table} in \"{first_line}\""));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Issue 11, item 1: a DCP cannot touch the central bank's tables. Its
/// own source (crates/tally-dcp/src) has SQL on `dcp_*` tables only; the
/// central bank's store is reached through the `Central` trait.
#[test]
fn the_dcp_has_no_sql_on_the_central_banks_tables() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tally-dcp/src");
    let mut files = vec![std::path::PathBuf::from(dir)];
    let mut scanned = 0;
    let mut sql = 0;
    let mut found = Vec::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).expect("read tally-dcp/src") {
                files.push(e.expect("dir entry").path());
            }
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(&p).expect("read source");
        scanned += 1;
        sql += string_literals(&src)
            .iter()
            .filter(|l| l.contains("dcp_"))
            .count();
        for f in central_tables_in_sql(&src) {
            found.push(format!("{}: {f}", p.display()));
        }
    }
    // The scan saw the DCP's source and its SQL (not an empty directory).
    assert!(scanned >= 3, "scanned {scanned} files in {dir}");
    assert!(sql >= 10, "only {sql} literals on dcp_* tables in {dir}");
    assert!(
        found.is_empty(),
        "tally-dcp touches the central bank's tables:\n{}",
        found.join("\n")
    );
}

/// The scan above finds what it looks for, and only that.
#[test]
fn the_sql_scan_sees_central_tables_and_only_them() {
    let bad = r###"
        fn f(tx: &mut dyn Tx) {
            tx.query_one("SELECT v FROM node_meta WHERE k = $1", &[]);
            tx.execute(r#"UPDATE ledger_accounts SET balance = 0"#, &[]);
            tx.execute("INSERT INTO spent (token) VALUES ($1)", &[]);
            tx.execute("DELETE FROM cb_inbox WHERE op_id = $1", &[]);
            tx.execute(&format!("SELECT key FROM {table} WHERE role = $1"), &[]);
            legacy_seed(store, "node_secrets", "root");
            tx.execute("SELECT balance \
                FROM accounts", &[]);
        }
    "###;
    let found = central_tables_in_sql(bad);
    for table in [
        "node_meta",
        "ledger_accounts",
        "spent",
        "cb_inbox",
        "{table}",
        "\"node_secrets\"",
        // A line continuation joins the literal's lines.
        "accounts in \"SELECT balance FROM accounts\"",
        "table {table} in",
    ] {
        assert!(
            found.iter().any(|f| f.contains(table)),
            "{table} not found in {found:?}"
        );
    }
    let good = r###"
        // SELECT v FROM node_meta: a comment, not SQL.
        /* UPDATE cb_ops SET reply = $1 */
        fn f(tx: &mut dyn Tx) {
            let q = '"'; let l: &'static str = "x";
            tx.query_one("SELECT balance FROM dcp_accounts WHERE name = $1", &[]);
            tx.execute("INSERT INTO dcp_issues (tag) VALUES ($1) ON CONFLICT (tag) DO UPDATE SET tag = $1", &[]);
            tx.execute(r#"CREATE TABLE IF NOT EXISTS dcp_x (a BLOB)"#, &[]);
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]);
            Err("its token was spent: cannot cancel");
            pin_public_key(store, "dcp_public_keys", "dcp", key);
        }
    "###;
    assert_eq!(central_tables_in_sql(good), Vec::<String>::new());
}
