//! Prints the wire size of every protocol object, in bytes, for
//! docs/PERFORMANCE.md: `cargo run -p tally-wallet --example wire_sizes`.

use tally_wallet::fuzzing::WireSizes;

fn main() {
    let s = WireSizes::measure();
    // A short APDU carries at most 255 data bytes (NFC cards).
    let short_apdus = |n: usize| n.div_ceil(255);
    println!("| object | bytes | short APDUs |");
    println!("|---|---:|---:|");
    let rows = [
        ("Issue", s.issue),
        ("Transfer (payment + change)", s.transfer),
        ("PseudonymCertificate", s.pseudonym_certificate),
        ("Request", s.request),
        ("Package, one hop (1 ancestry record)", s.package_one_hop),
        ("Package at the history budget", s.package_at_budget),
        ("Receipt", s.receipt),
    ];
    for (name, n) in rows {
        println!("| {name} | {n} | {} |", short_apdus(n));
    }
    println!(
        "\nat-budget package: {} ancestry records, {} certificates",
        s.package_at_budget_records, s.package_at_budget_certificates
    );
}
