//! The guard of the storage rule (docs/decisions/0016): SQL strings,
//! `query`/`query_one`/`execute` calls and positional column reads appear
//! in a crate's `src/db.rs` only. Shared by the conformance suites of
//! tally-ledger and tally-central (the latter includes this file by path).

#![allow(dead_code)]

/// `Some(number of #)` if a raw string literal (`r"…"`, `r#"…"#`) starts
/// at `i`.
fn raw_string_at(b: &[u8], i: usize) -> Option<usize> {
    if b[i] != b'r' || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// Pieces of a source file, each with its line number.
pub type Lines = Vec<(usize, String)>;

/// Every string literal (with the line it starts on) and every code
/// fragment outside literals and comments, per line, of a Rust source.
pub fn split_source(src: &str) -> (Lines, Lines) {
    let b = src.as_bytes();
    let (mut strings, mut code) = (Vec::new(), Vec::new());
    let (mut i, mut line) = (0usize, 1usize);
    let mut cur = String::new();
    let flush = |code: &mut Lines, cur: &mut String, line: usize| {
        if !cur.trim().is_empty() {
            code.push((line, std::mem::take(cur)));
        }
        cur.clear();
    };
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            flush(&mut code, &mut cur, line);
            line += 1;
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                line += usize::from(b[i] == b'\n');
                i += 1;
            }
            i += 2;
        } else if let Some(hashes) = raw_string_at(b, i) {
            let j = i + 1 + hashes;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let start = j + 1;
            let mut k = start;
            while k < b.len() && !b[k..].starts_with(&close) {
                k += 1;
            }
            let text = String::from_utf8_lossy(&b[start..k.min(b.len())]).to_string();
            strings.push((line, text.clone()));
            line += text.matches('\n').count();
            i = k + close.len();
        } else if c == b'"' {
            let start = i + 1;
            let mut k = start;
            while k < b.len() && b[k] != b'"' {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            let text = String::from_utf8_lossy(&b[start..k.min(b.len())]).to_string();
            strings.push((line, text.clone()));
            line += text.matches('\n').count();
            i = k + 1;
        } else if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // 'x'
        } else if c == b'\'' && b.get(i + 1) == Some(&b'\\') {
            let mut k = i + 2;
            while k < b.len() && b[k] != b'\'' {
                k += 1;
            }
            i = k + 1; // '\n', '\'', '\u{..}'
        } else {
            cur.push(c as char);
            i += 1;
        }
    }
    flush(&mut code, &mut cur, line);
    (strings, code)
}

/// Where `src` breaks the rule "SQL and positional reads only in db.rs".
pub fn violations(file: &str, src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (strings, code) = split_source(src);
    for (line, s) in &strings {
        let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let upd = flat
            .find("UPDATE ")
            .is_some_and(|at| flat[at..].contains(" SET"));
        for kw in [
            "SELECT ",
            "INSERT INTO",
            "DELETE FROM",
            "CREATE TABLE",
            "ALTER TABLE",
            "DROP TABLE",
        ] {
            if flat.contains(kw) {
                out.push(format!("{file}:{line}: SQL `{kw}` in a string literal"));
            }
        }
        if upd {
            out.push(format!(
                "{file}:{line}: SQL `UPDATE … SET` in a string literal"
            ));
        }
    }
    for (line, c) in &code {
        let c: String = c.split_whitespace().collect();
        for call in [".query(", ".query_one(", ".execute("] {
            if c.contains(call) {
                out.push(format!("{file}:{line}: `{call}` call"));
            }
        }
        for read in [".int(", ".bytes(", ".text(", ".opt_bytes("] {
            let mut rest = c.as_str();
            while let Some(at) = rest.find(read) {
                let after = &rest[at + read.len()..];
                if after.starts_with(|ch: char| ch.is_ascii_digit()) {
                    out.push(format!("{file}:{line}: positional read `{read}…`"));
                }
                rest = after;
            }
        }
    }
    out
}

pub fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The guard finds each kind of violation, on the line it is on, and
/// nothing in comments or in ordinary code.
pub fn self_test() {
    let bad = concat!(
        "fn f(tx: &mut dyn Tx) {\n",
        "    tx.query(\"SELECT a FROM t\", &[]);\n",
        "    tx.query_one(\"x\", &[]);\n",
        "    tx.execute(\"INSERT INTO t VALUES (1)\", &[]);\n",
        "    let s = \"UPDATE t\n SET a = 1\";\n",
        "    let d = r#\"DELETE FROM t\"#;\n",
        "    let c = \"CREATE TABLE t (a BIGINT)\";\n",
        "    let v = (row.int(0), row.bytes(1), row.text(2), row.opt_bytes(3));\n",
        "}\n",
    );
    let v = violations("bad.rs", bad);
    for want in [
        "bad.rs:2: SQL `SELECT `",
        "bad.rs:2: `.query(`",
        "bad.rs:3: `.query_one(`",
        "bad.rs:4: `.execute(`",
        "bad.rs:4: SQL `INSERT INTO`",
        "bad.rs:5: SQL `UPDATE … SET`",
        "bad.rs:7: SQL `DELETE FROM`",
        "bad.rs:8: SQL `CREATE TABLE`",
        "bad.rs:9: positional read `.int(…`",
        "bad.rs:9: positional read `.bytes(…`",
        "bad.rs:9: positional read `.text(…`",
        "bad.rs:9: positional read `.opt_bytes(…`",
    ] {
        assert!(
            v.iter().any(|x| x.starts_with(want)),
            "missed {want}: {v:#?}"
        );
    }
    let fine = concat!(
        "// tx.query(\"SELECT a FROM t\")\n",
        "/* UPDATE t SET a = 1 */\n",
        "fn g(tx: &mut dyn Tx) { tx.account_pair(\"a\", \"b\"); w.bytes(&x); r.int(k); }\n",
        "const Q: char = '\"'; let s = \"re-checked since the SELECT;\";\n",
    );
    assert_eq!(violations("fine.rs", fine), Vec::<String>::new());
}

/// Fails naming file:line for every violation in `crate_dir/src` outside
/// `src/db.rs`; checks that the guard does see `db.rs`'s SQL.
pub fn check_crate(crate_dir: &str) {
    let src = std::path::Path::new(crate_dir).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 4, "{files:?}");
    let mut found = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "db.rs"))
    {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.strip_prefix(&src).unwrap_or(f).display().to_string();
        found.extend(violations(&format!("src/{name}"), &text));
    }
    assert!(
        found.is_empty(),
        "SQL outside src/db.rs:\n{}",
        found.join("\n")
    );
    // And the store itself is where the SQL is.
    let db = std::fs::read_to_string(src.join("db.rs")).expect("src/db.rs");
    assert!(
        !violations("src/db.rs", &db).is_empty(),
        "the guard does not see db.rs's SQL"
    );
}
