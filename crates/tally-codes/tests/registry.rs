//! The registry's rules, and that the checker enforcing them at compile
//! time does catch each kind of mistake.

use std::path::{Path, PathBuf};

use tally_codes::{Code, Component, Problem, RANGES, REGISTRY, State, check, lookup};

fn entry(code: u16, component: Component) -> Code {
    Code {
        code,
        name: "X",
        component,
        http: &[],
        sw: &[],
        state: State::Used,
        meaning: "m",
    }
}

#[test]
fn the_registry_passes_its_own_check() {
    assert_eq!(check(REGISTRY, RANGES), Ok(()));
}

#[test]
fn the_checker_refuses_a_code_with_two_meanings() {
    let t = [entry(10, Component::Ledger), entry(10, Component::Ledger)];
    assert_eq!(check(&t, RANGES), Err(Problem::NotAscending { code: 10 }));
    let t = [entry(11, Component::Ledger), entry(10, Component::Ledger)];
    assert_eq!(check(&t, RANGES), Err(Problem::NotAscending { code: 10 }));
}

#[test]
fn the_checker_refuses_a_code_outside_its_components_ranges() {
    let t = [entry(30, Component::Ledger)];
    assert_eq!(check(&t, RANGES), Err(Problem::OutOfRange { code: 30 }));
    // 64 is the DCP's although it sits between HTTP ranges.
    let t = [entry(64, Component::Http)];
    assert_eq!(check(&t, RANGES), Err(Problem::OutOfRange { code: 64 }));
    let t = [entry(64, Component::Dcp)];
    assert_eq!(check(&t, RANGES), Ok(()));
}

#[test]
fn the_checker_refuses_overlapping_or_inverted_ranges() {
    let r = [(Component::Ledger, 10, 29), (Component::Settlement, 29, 39)];
    assert_eq!(check(&[], &r), Err(Problem::RangesOverlap { code: 29 }));
    let r = [(Component::Ledger, 10, 9)];
    assert_eq!(check(&[], &r), Err(Problem::RangesOverlap { code: 10 }));
}

#[test]
fn the_checker_refuses_a_meaning_that_breaks_the_table() {
    for m in ["", "two\nlines", "a | b"] {
        let t = [Code {
            meaning: m,
            ..entry(10, Component::Ledger)
        }];
        assert_eq!(
            check(&t, RANGES),
            Err(Problem::BadMeaning { code: 10 }),
            "{m:?}"
        );
    }
}

#[test]
fn every_component_owns_a_range_and_codes_in_it() {
    for c in Component::ALL {
        assert!(RANGES.iter().any(|r| r.0 == c), "{c:?} owns no range");
        assert!(
            REGISTRY.iter().any(|e| e.component == c),
            "{c:?} has no code"
        );
    }
    for e in REGISTRY {
        assert!(e.component.owns(e.code), "{}", e.name);
        // Only the owner: ranges are disjoint.
        for c in Component::ALL.iter().filter(|c| **c != e.component) {
            assert!(!c.owns(e.code), "{} also in {c:?}'s range", e.name);
        }
    }
}

#[test]
fn names_are_unique_and_say_their_component() {
    let prefix = |c: Component| match c {
        Component::Client => "NO_CODE",
        Component::Ledger => "LEDGER_",
        Component::Settlement => "SETTLEMENT_",
        Component::Directory => "DIRECTORY_",
        Component::Dcp => "DCP_",
        Component::Http => "HTTP_",
        Component::Node => "NODE_",
        Component::Verify => "VERIFY_",
        Component::Se => "SE_",
        Component::Mds => "MDS_",
        Component::Central => "CENTRAL_",
    };
    for (i, e) in REGISTRY.iter().enumerate() {
        assert!(e.name.starts_with(prefix(e.component)), "{}", e.name);
        assert!(
            REGISTRY[..i].iter().all(|o| o.name != e.name),
            "{} twice",
            e.name
        );
        assert_eq!(lookup(e.code), Some(e));
    }
    assert_eq!(lookup(1), None);
}

#[test]
fn http_statuses_and_status_words_are_where_they_belong() {
    for e in REGISTRY {
        for s in e.http {
            assert!((400..600).contains(s), "{}: HTTP {s}", e.name);
        }
        for sw in e.sw {
            assert!(
                matches!(sw >> 8, 0x63 | 0x69 | 0x6A | 0x6F),
                "{}: SW {sw:04X}",
                e.name
            );
        }
        match (e.component, e.state) {
            (_, State::Reserved | State::Retired) => {
                assert!(e.http.is_empty() && e.sw.is_empty(), "{}", e.name)
            }
            (Component::Se, _) => assert!(e.http.is_empty() && !e.sw.is_empty(), "{}", e.name),
            (Component::Mds | Component::Client, _) => assert!(e.http.is_empty(), "{}", e.name),
            (Component::Verify, _) => assert!(!e.http.is_empty() && !e.sw.is_empty(), "{}", e.name),
            _ => assert!(!e.http.is_empty() && e.sw.is_empty(), "{}", e.name),
        }
    }
}

/// The device protocol's next refusals keep their blocks: SE 2037-2039,
/// DCP 88-89 (2032, 2033, 85 and 86 came into use with decision 0010,
/// 87 with decision 0015, 2034 with decision 0023, 2035 and 2036 with
/// decision 0032).
#[test]
fn the_held_codes_are_reserved() {
    for code in (2037..=2039).chain(88..=89) {
        let e = lookup(code).unwrap_or_else(|| panic!("{code} not registered"));
        assert_eq!(e.state, State::Reserved, "{code}");
    }
    for code in [2032, 2033, 2034, 2035, 2036, 85, 86, 87] {
        let e = lookup(code).unwrap_or_else(|| panic!("{code} not registered"));
        assert_eq!(e.state, State::Used, "{code}");
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push((p, text));
        }
    }
}

/// `name` as a whole identifier in `text`.
fn mentions(text: &str, name: &str) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    text.match_indices(name).any(|(i, _)| {
        let before = text.as_bytes().get(i.wrapping_sub(1)).copied();
        let after = text.as_bytes().get(i + name.len()).copied();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Every code in use is answered by production code of some crate (its
/// `code()` method, or the HTTP layer), and no reserved code is: the
/// registry lists no dead number, and a reserved number is not taken by
/// stealth.
#[test]
fn every_used_code_is_answered_somewhere_and_no_reserved_one_is() {
    let mut sources = Vec::new();
    let crates = workspace().join("crates");
    for c in std::fs::read_dir(&crates).expect("crates/").flatten() {
        if c.file_name() != "tally-codes" {
            rust_sources(&c.path().join("src"), &mut sources);
        }
    }
    assert!(
        sources.len() > 20,
        "found only {} source files",
        sources.len()
    );
    let mut unused = Vec::new();
    for e in REGISTRY {
        let users: Vec<_> = sources
            .iter()
            .filter(|(_, t)| mentions(t, e.name))
            .map(|(p, _)| p.display().to_string())
            .collect();
        match e.state {
            State::Used if users.is_empty() => unused.push(e.name),
            State::Reserved => assert!(users.is_empty(), "reserved {} used in {users:?}", e.name),
            State::Retired => assert!(users.is_empty(), "retired {} used in {users:?}", e.name),
            State::Used => {}
        }
    }
    assert!(
        unused.is_empty(),
        "registered but answered nowhere: {unused:?}"
    );
}
