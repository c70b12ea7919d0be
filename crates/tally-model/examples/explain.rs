//! Print the path the checker found for one property:
//! `cargo run -p tally-model --example explain -- <bound> "<property name>" [bug]`
//! bug: reimport | closures | redeem | noredeliver | nofulfil | unsigned |
//! openkeeps | closetwice | skiptick | recoverstream | releasefirst | afterclose
use tally_model::{Bound, Bugs, Model, explain};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let b = Bound::by_name(&a[0]).expect("bound");
    let mut bugs = Bugs::default();
    match a.get(2).map(String::as_str) {
        Some("reimport") => bugs.reimport_after_spend = true,
        Some("closures") => bugs.terminal_closures = true,
        Some("redeem") => bugs.redeem_any_order = true,
        Some("noredeliver") => bugs.no_issue_redelivery = true,
        Some("nofulfil") => bugs.no_fulfilment_report = true,
        Some("unsigned") => bugs.unsigned_requests = true,
        Some("openkeeps") => bugs.open_keeps_token = true,
        Some("closetwice") => bugs.close_twice = true,
        Some("skiptick") => bugs.accept_skipped_tick = true,
        Some("recoverstream") => bugs.recover_whole_stream = true,
        Some("releasefirst") => bugs.release_before_record = true,
        Some("afterclose") => bugs.ticks_after_close = true,
        _ => {}
    }
    let m = Model::with_bugs(b, bugs);
    let name: &'static str = m
        .properties_names()
        .into_iter()
        .find(|n| *n == a[1])
        .expect("property");
    match explain(m, name) {
        Some(p) => print!("{p}"),
        None => println!("no discovery"),
    }
}
