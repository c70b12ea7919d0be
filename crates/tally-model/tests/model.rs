//! The model of decision 0008, checked exhaustively at its bounds, and
//! each deliberately broken variant caught.
//!
//! Bounds, state counts and times: docs/decisions/0008-model-checked-protocol.md.

use tally_model::{Bound, Bugs, Model, Report, check, check_with};

fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
}

fn honest(bound: Bound, floor: usize) -> Report {
    let r = check(Model::new(bound), threads());
    eprintln!(
        "{}: {} states, depth {}, {:.2?}",
        r.bound, r.states, r.max_depth, r.elapsed
    );
    assert!(
        r.violated.is_empty(),
        "{}: violated {:?}",
        r.bound,
        r.violated
    );
    assert!(
        r.unreached.is_empty(),
        "{}: never reached {:?}",
        r.bound,
        r.unreached
    );
    assert!(
        r.states >= floor,
        "{}: only {} states (floor {floor}): model became trivial",
        r.bound,
        r.states
    );
    r
}

#[test]
fn small_bound_all_properties_hold() {
    honest(Bound::small(), 1_500);
}

#[test]
fn suite_bound_all_properties_hold() {
    honest(Bound::suite(), 200_000);
}

#[test]
fn renewal_bound_all_properties_hold() {
    honest(Bound::renewal(), 200_000);
}

#[test]
fn three_se_bound_all_properties_hold() {
    honest(Bound::three(), 60_000);
}

// Payment streams (issue 13) inside the main model: OPEN, RELEASE, ACCEPT,
// CLOSE by either side, settlement of both halves, with the hostile
// network, crashes and every accounting property above.

#[test]
fn stream_bound_all_properties_hold() {
    honest(Bound::stream(), 2_500);
}

#[test]
fn stream_unload_bound_all_properties_hold() {
    honest(Bound::stream_unload(), 30_000);
}

#[test]
fn stream_mixed_bound_all_properties_hold() {
    honest(Bound::stream_mixed(), 130_000);
}

#[test]
fn stream_three_se_bound_all_properties_hold() {
    honest(Bound::stream_three(), 150_000);
}

fn broken(bound: Bound, bugs: Bugs, expect: &str) {
    let r = check_with(Model::with_bugs(bound, bugs), threads(), true);
    eprintln!(
        "{bugs:?}: violated {:?} after {} states",
        r.violated, r.states
    );
    assert!(
        r.violated.contains(&expect),
        "{bugs:?}: expected {expect:?} violated, got {:?}",
        r.violated
    );
}

#[test]
fn broken_issue_reimport_after_spend_is_caught() {
    broken(
        Bound::small(),
        Bugs {
            reimport_after_spend: true,
            ..Bugs::default()
        },
        "no value created (conservation)",
    );
}

#[test]
fn broken_terminal_written_closures_are_caught() {
    broken(
        Bound::small(),
        Bugs {
            terminal_closures: true,
            ..Bugs::default()
        },
        "each request credited once: recovered at most once, never also received",
    );
}

#[test]
fn broken_redeem_any_order_is_caught() {
    broken(
        Bound::small(),
        Bugs {
            redeem_any_order: true,
            ..Bugs::default()
        },
        "redemption settles only its own SE's order",
    );
}

#[test]
fn broken_no_issue_redelivery_loses_value() {
    broken(
        Bound::small(),
        Bugs {
            no_issue_redelivery: true,
            ..Bugs::default()
        },
        "nothing lost: honest recovery delivers all in-flight value",
    );
}

#[test]
fn broken_no_fulfilment_report_strands_a_double_paid_request() {
    broken(
        Bound::three(),
        Bugs {
            no_fulfilment_report: true,
            ..Bugs::default()
        },
        "nothing lost: honest recovery delivers all in-flight value",
    );
}

#[test]
fn broken_unsigned_requests_strand_the_payers_value() {
    broken(
        Bound::small(),
        Bugs {
            unsigned_requests: true,
            ..Bugs::default()
        },
        "nothing lost: honest recovery delivers all in-flight value",
    );
}

/// A broken stream step, checked to the end (the stream bound is small):
/// every property in `expect` is violated.
fn broken_stream(bugs: Bugs, expect: &[&str]) {
    let r = check_with(Model::with_bugs(Bound::stream(), bugs), threads(), false);
    eprintln!(
        "{bugs:?}: violated {:?} in {} states, {:.2?}",
        r.violated, r.states, r.elapsed
    );
    for e in expect {
        assert!(
            r.violated.contains(e),
            "{bugs:?}: expected {e:?} violated, got {:?}",
            r.violated
        );
    }
}

#[test]
fn broken_stream_open_that_keeps_its_token_is_caught() {
    broken_stream(
        Bugs {
            open_keeps_token: true,
            ..Bugs::default()
        },
        &[
            "no value created (conservation)",
            "no SE holds a consumed token",
        ],
    );
}

#[test]
fn broken_stream_double_close_is_caught() {
    broken_stream(
        Bugs {
            close_twice: true,
            ..Bugs::default()
        },
        &[
            "stream: each half closed once",
            "each token consumed at most once",
            "stream: its closes never pay out more than its value",
        ],
    );
}

#[test]
fn broken_stream_payee_accepting_a_skipped_tick_is_caught() {
    broken_stream(
        Bugs {
            accept_skipped_tick: true,
            ..Bugs::default()
        },
        &[
            "stream: the payee never holds more ticks than were released",
            "stream: no claim above the released ticks (no alert)",
        ],
    );
}

#[test]
fn broken_stream_recovered_whole_to_its_payee_is_caught() {
    broken_stream(
        Bugs {
            recover_whole_stream: true,
            ..Bugs::default()
        },
        &[
            "no value created (conservation)",
            "stream: claim + refund + leftover = value once both halves settle",
        ],
    );
}

#[test]
fn broken_stream_release_before_record_is_caught() {
    broken_stream(
        Bugs {
            release_before_record: true,
            ..Bugs::default()
        },
        &[
            "stream: the payee never holds more ticks than were released",
            "stream: no claim above the released ticks (no alert)",
        ],
    );
}

#[test]
fn broken_stream_ticks_after_the_payers_close_are_caught_at_settlement() {
    broken_stream(
        Bugs {
            ticks_after_close: true,
            ..Bugs::default()
        },
        &["stream: no claim above the released ticks (no alert)"],
    );
}
