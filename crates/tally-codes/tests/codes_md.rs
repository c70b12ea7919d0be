//! docs/CODES.md is generated from the registry. This test fails when the
//! file is out of date; `TALLY_WRITE_CODES=1 cargo test -p tally-codes`
//! rewrites it.

use std::fmt::Write;
use std::path::Path;

use tally_codes::{Component, RANGES, REGISTRY, State};

fn render() -> String {
    let mut s = String::new();
    s.push_str(
        "# Result codes\n\n\
         <!-- Generated from crates/tally-codes/src/lib.rs by \
         `TALLY_WRITE_CODES=1 cargo test -p tally-codes`; do not edit. -->\n\n\
         Every refusal in Tally carries a stable numeric code, registered once in\n\
         `crates/tally-codes` with its component, the HTTP status and ISO 7816\n\
         status word it travels with, and its meaning. A code is never renumbered\n\
         and never reused for another meaning. HTTP answers carry it in the error\n\
         envelope (docs/API.md); a secure element records it for GET DATA\n\
         `LAST_ERROR` after an error status word (docs/APDU.md); MDS codes appear in\n\
         logs and `ingestion_failed` alerts. A *reserved* code is held for work in\n\
         progress: nothing answers with it yet.\n\n\
         ## Ranges\n\n\
         | range | component | codes from |\n|---|---|---|\n",
    );
    for (c, lo, hi) in RANGES {
        let range = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}–{hi}")
        };
        writeln!(s, "| {range} | {} | {} |", c.name(), c.source()).unwrap();
    }
    for c in Component::ALL {
        writeln!(s, "\n## {}\n", c.name()).unwrap();
        s.push_str("| code | constant | HTTP | SW | meaning |\n|---|---|---|---|---|\n");
        for e in REGISTRY.iter().filter(|e| e.component == c) {
            let http = if e.http.is_empty() {
                "—".to_string()
            } else {
                e.http
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sw = if e.sw.is_empty() {
                "—".to_string()
            } else {
                e.sw.iter()
                    .map(|w| {
                        if *w == 0x63C0 {
                            "63CX".into()
                        } else {
                            format!("{w:04X}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let meaning = match e.state {
                State::Used => e.meaning.to_string(),
                State::Reserved => format!("*reserved:* {}", e.meaning),
                State::Retired => format!("*retired:* {}", e.meaning),
            };
            writeln!(
                s,
                "| {} | `{}` | {http} | {sw} | {meaning} |",
                e.code, e.name
            )
            .unwrap();
        }
    }
    s
}

#[test]
fn docs_codes_md_is_generated_from_the_registry() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CODES.md");
    let want = render();
    if std::env::var_os("TALLY_WRITE_CODES").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write docs/CODES.md");
        eprintln!("wrote {}", path.display());
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/CODES.md is out of date with crates/tally-codes: run \
         `TALLY_WRITE_CODES=1 cargo test -p tally-codes` and commit it"
    );
}
