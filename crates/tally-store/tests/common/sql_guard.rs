//! The guard behind "no SQL outside the store" (issue 11, item 6): scans
//! the `.rs` files of a crate's `src/` (except the store module) and names
//! every string literal holding an SQL statement and every SQL call or
//! positional row read, as `file:line: what`. One file, included by path
//! (`#[path = "../../tally-store/tests/common/sql_guard.rs"]`) by the
//! `db_conformance` suite of every role crate that has a `src/db.rs`.

use std::path::{Path, PathBuf};

/// SQL in a string literal: a statement keyword.
fn sql_in_literal(s: &str) -> Option<&'static str> {
    const KEYWORDS: [&str; 5] = [
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        "ALTER TABLE",
    ];
    if let Some(k) = KEYWORDS.iter().find(|k| s.contains(**k)) {
        return Some(k);
    }
    if let Some(i) = s.find("UPDATE ")
        && s[i..].contains(" SET")
    {
        return Some("UPDATE … SET");
    }
    None
}

/// SQL calls and positional reads in code (outside comments and strings).
fn sql_in_code(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for call in [".query(", ".query_one(", ".execute("] {
        if code.contains(call) {
            found.push(format!("call `{call}`"));
        }
    }
    for read in [".int(", ".bytes(", ".text(", ".opt_bytes(", ".is_null("] {
        let mut rest = code;
        while let Some(i) = rest.find(read) {
            rest = &rest[i + read.len()..];
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                found.push(format!("positional read `{read}<digit>`"));
            }
        }
    }
    found
}

/// Pieces of source, each with its (first) line, 1-based.
type Lines = Vec<(usize, String)>;

/// Splits Rust source into string literals and code, dropping comments.
/// Char literals and lifetimes are told apart by the closing quote.
fn lex(src: &str) -> (Lines, Lines) {
    let b: Vec<char> = src.chars().collect();
    let (mut strings, mut code) = (Vec::new(), Vec::new());
    let (mut i, mut line) = (0usize, 1usize);
    let mut cur = String::new();
    let flush = |cur: &mut String, code: &mut Lines, line: usize| {
        if !cur.trim().is_empty() {
            code.push((line, std::mem::take(cur)));
        }
        cur.clear();
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '\n' {
            flush(&mut cur, &mut code, line);
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        flush(&mut cur, &mut code, line);
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && {
            let mut j = i + 1;
            while b.get(j) == Some(&'#') {
                j += 1;
            }
            b.get(j) == Some(&'"') && !prev_is_ident(&b, i)
        } {
            let mut hashes = 0;
            i += 1;
            while b[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            let start = line;
            let mut s = String::new();
            while i < b.len() {
                if b[i] == '"' && (1..=hashes).all(|k| b.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                if b[i] == '\n' {
                    line += 1;
                }
                s.push(b[i]);
                i += 1;
            }
            strings.push((start, s));
            cur.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            let start = line;
            let mut s = String::new();
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    s.push(b[i]);
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    line += 1;
                }
                if let Some(ch) = b.get(i) {
                    s.push(*ch);
                }
                i += 1;
            }
            i += 1;
            strings.push((start, s));
            cur.push_str("\"\"");
        } else if c == '\'' {
            // 'x' or '\n' / '\u{..}' is a char; 'a (no closing quote) a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                cur.push(c);
                i += 1;
            }
            cur.push_str("' '");
        } else {
            cur.push(c);
            i += 1;
        }
    }
    flush(&mut cur, &mut code, line);
    (strings, code)
}

/// Whether `b[i]` continues an identifier (`br"…"` is a raw byte string).
fn prev_is_ident(b: &[char], i: usize) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    match i.checked_sub(1).map(|j| b[j]) {
        Some('b') => i >= 2 && ident(b[i - 2]),
        Some(c) => ident(c),
        None => false,
    }
}

/// Every violation in one file's source, as `name:line: what`.
pub fn scan_source(name: &str, src: &str) -> Vec<String> {
    let (strings, code) = lex(src);
    let mut found = Vec::new();
    for (line, s) in strings {
        if let Some(k) = sql_in_literal(&s) {
            found.push(format!("{name}:{line}: SQL `{k}` in a string literal"));
        }
    }
    for (line, c) in code {
        for what in sql_in_code(&c) {
            found.push(format!("{name}:{line}: {what}"));
        }
    }
    found
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Scans `manifest_dir/src`, skipping files whose path relative to `src`
/// is in `allowed` (the store module).
pub fn scan_crate(manifest_dir: &str, allowed: &[&str]) -> Vec<String> {
    let src = Path::new(manifest_dir).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    let mut found = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap_or(&f)
            .to_string_lossy()
            .replace('\\', "/");
        if allowed.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        found.extend(scan_source(&format!("src/{rel}"), &text));
    }
    found
}

/// The guard must be able to fail: each kind of violation is found, on
/// its line, and comments, doc text and lifetimes are not.
pub fn self_test() {
    let src = r####"
//! Module doc: SELECT x FROM t, tx.query(...) and r.int(0) in a comment.
fn ok<'a>(x: &'a str) -> char { let _ = "select lowercase is prose"; 'q' }
/* block: INSERT INTO t VALUES (1) */
fn bad(tx: &mut dyn Tx) {
    let a = "SELECT a FROM t";
    let b = r#"INSERT INTO t (a) VALUES ($1)"#;
    let c = "UPDATE t
        SET a = 1";
    tx.execute(&a, &[]);
    let r = tx.query_one(b, &[]);
    let n = row.int(3);
    let m = row.opt_bytes(0);
    let d = "DELETE FROM t";
    let e = "CREATE TABLE t (a BIGINT)";
    let ok = row.int(i);
}
"####;
    let found = scan_source("x.rs", src);
    let want = [
        "x.rs:6: SQL `SELECT ` in a string literal",
        "x.rs:7: SQL `INSERT INTO` in a string literal",
        "x.rs:8: SQL `UPDATE … SET` in a string literal",
        "x.rs:14: SQL `DELETE FROM` in a string literal",
        "x.rs:15: SQL `CREATE TABLE` in a string literal",
        "x.rs:10: call `.execute(`",
        "x.rs:11: call `.query_one(`",
        "x.rs:12: positional read `.int(<digit>`",
        "x.rs:13: positional read `.opt_bytes(<digit>`",
    ];
    let mut found_sorted = found.clone();
    found_sorted.sort();
    let mut want_sorted: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want_sorted.sort();
    assert_eq!(found_sorted, want_sorted, "found: {found:#?}");
}
