//! Exhaustive check of the Tally protocol model at one or more bounds.
//!
//! `cargo run --release -p tally-model --example check -- [bound...]`
//! where a bound is `small`, `suite`, `renewal`, `three`, `large`,
//! `stream`, `stream_unload`, `stream_mixed` or `stream_three` (default:
//! `small suite`). Prints bound, unique states, depth, time and verdict.
use tally_model::{Bound, Model, check};

fn main() {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = vec!["small".into(), "suite".into()];
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    println!(
        "{:<13} {:>10} {:>6} {:>10}  verdict",
        "bound", "states", "depth", "time"
    );
    for n in names {
        let Some(b) = Bound::by_name(&n) else {
            eprintln!(
                "unknown bound {n} (small, suite, renewal, three, large, stream, stream_unload, stream_mixed, stream_three)"
            );
            std::process::exit(2);
        };
        let r = check(Model::new(b), threads);
        let verdict = if r.violated.is_empty() && r.unreached.is_empty() {
            "all properties hold".to_string()
        } else {
            format!("VIOLATED {:?} UNREACHED {:?}", r.violated, r.unreached)
        };
        println!(
            "{:<13} {:>10} {:>6} {:>9.2}s  {}",
            r.bound,
            r.states,
            r.max_depth,
            r.elapsed.as_secs_f64(),
            verdict
        );
    }
}
