//! The payment-stream model (decision 0020) checked exhaustively, and each
//! broken variant caught.

use tally_model::stream::{StreamBugs, StreamModel, check_stream};

#[test]
fn honest_stream_keeps_every_property() {
    for n in [1u8, 2, 4] {
        let (states, violated, unreached) = check_stream(StreamModel::new(n));
        eprintln!("stream of {n} ticks: {states} states");
        assert!(violated.is_empty(), "{n} ticks: violated {violated:?}");
        assert!(
            unreached.is_empty(),
            "{n} ticks: never reached {unreached:?}"
        );
        assert!(
            states > 20 * usize::from(n),
            "{n} ticks: only {states} states"
        );
    }
}

#[test]
fn releasing_before_recording_lets_the_payee_claim_more_than_released() {
    let bugs = StreamBugs {
        release_before_record: true,
        ..StreamBugs::default()
    };
    let (_, violated, _) = check_stream(StreamModel::new(2).with_bugs(bugs));
    assert!(
        violated.contains(&"the payee never holds more ticks than were released"),
        "{violated:?}"
    );
    assert!(
        violated.contains(&"no claim above the released ticks (no alert)"),
        "{violated:?}"
    );
}

#[test]
fn ticks_after_the_payers_close_are_caught_at_settlement() {
    let bugs = StreamBugs {
        ticks_after_close: true,
        ..StreamBugs::default()
    };
    let (_, violated, _) = check_stream(StreamModel::new(2).with_bugs(bugs));
    assert!(
        violated.contains(&"no claim above the released ticks (no alert)"),
        "{violated:?}"
    );
}

#[test]
fn an_open_that_keeps_its_token_creates_value() {
    let bugs = StreamBugs {
        open_keeps_token: true,
        ..StreamBugs::default()
    };
    let (_, violated, _) = check_stream(StreamModel::new(2).with_bugs(bugs));
    assert!(
        violated.contains(&"the SEs never hold more than the stream's value"),
        "{violated:?}"
    );
}

#[test]
fn a_half_closed_twice_is_a_double_spend_at_settlement() {
    let bugs = StreamBugs {
        close_twice: true,
        ..StreamBugs::default()
    };
    let (_, violated, _) = check_stream(StreamModel::new(2).with_bugs(bugs));
    assert!(
        violated.contains(&"each half is closed once (no double spend)"),
        "{violated:?}"
    );
}
