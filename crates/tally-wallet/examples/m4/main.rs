//! Host side of the Cortex-M4 firmware (firmware/cortex-m4).
//!
//! ```sh
//! cargo run -p tally-wallet --example m4 -- fixtures   # rewrite firmware/cortex-m4/fixtures/*.bin
//! cargo run -p tally-wallet --example m4 -- bench      # build, run under QEMU, write docs/PERFORMANCE.md
//! cargo run -p tally-wallet --example m4 -- smoke      # build, run the smoke scenario (what the test does)
//! cargo run -p tally-wallet --example m4 -- confidential  # confidential payment firmware: figures, flash
//! ```
//! (`firmware/cortex-m4/bench.sh` runs `bench` in release.)
//!
//! Everything is deterministic: the testkit scheme's keys come from fixed
//! seeds, the SEs draw on `TestEntropy`, signatures are deterministic. So
//! the host can predict exactly what the payee SE on the M4 will put in its
//! second request and build the eight-hop package that pays it.

mod fixtures;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tally_core::codec::Cbor;
use tally_core::crypto::tagged_hash;
use tally_core::policy::device_class::{DCP, IOT};
use tally_core::testkit::Scheme;
use tally_core::verify::{NoCache, verify_package_for_settlement};
use tally_core::{Amount, Package, Receipt, Record, Request, Suite};
use tally_wallet::SeLink;
use tally_wallet::testkit::certify_fresh_keys;

use fixtures::{FLASH_TARGET, elf_sections, from_state, fw_dir, must, root};

fn write_fixtures() {
    let files = fixtures::generate();
    fixtures::write(&files);
    for (name, bytes) in &files {
        println!("{:>7} bytes  fixtures/{name}", bytes.len());
    }
}

// ---- building and running the firmware ---------------------------------------

const TARGET: &str = "thumbv7em-none-eabihf";

fn elf_path() -> PathBuf {
    root()
        .join("target/firmware")
        .join(TARGET)
        .join("release/tally-m4")
}

/// The payment-scenario-only firmware (`--no-default-features`), kept for
/// its section sizes.
fn payment_elf_path() -> PathBuf {
    root().join("target/firmware/tally-m4-payment.elf")
}

/// Builds the firmware without its benchmark code, keeps the ELF as
/// [`payment_elf_path`] (the next build overwrites the default output) and
/// checks that it runs the payment scenario to success.
fn build_payment_firmware() {
    build_firmware_with(&["--no-default-features"]);
    must(
        std::fs::copy(elf_path(), payment_elf_path()),
        "copy the payment firmware",
    );
    let (status, out) = run_qemu_elf(&payment_elf_path(), "smoke");
    assert!(
        status.success() && out.contains("RESULT PASS"),
        "the payment firmware failed ({status}):\n{out}"
    );
}

/// `cargo build --release` in firmware/cortex-m4 (its own workspace, its
/// own .cargo/config.toml: target, linker script, rustflags).
fn build_firmware() {
    build_firmware_with(&[]);
}

fn build_firmware_with(extra: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
    let status = Command::new(cargo)
        .args(["build", "--release"])
        .args(extra)
        .current_dir(fw_dir())
        // The firmware's config must apply, not the caller's environment.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status();
    let status = must(status, "run cargo");
    assert!(status.success(), "firmware build failed");
}

/// Runs the firmware under QEMU (instruction-counting mode); returns the
/// exit status and what it printed.
fn run_qemu(mode: &str) -> (std::process::ExitStatus, String) {
    run_qemu_elf(&elf_path(), mode)
}

fn run_qemu_elf(elf: &Path, mode: &str) -> (std::process::ExitStatus, String) {
    let child = Command::new("qemu-system-arm")
        .args([
            "-machine",
            "mps2-an386",
            "-cpu",
            "cortex-m4",
            "-nographic",
            "-icount",
            "shift=0",
            "-semihosting-config",
            &format!("enable=on,target=native,arg=tally-m4,arg={mode}"),
            "-kernel",
        ])
        .arg(elf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let out = must(
        must(child, "start qemu-system-arm").wait_with_output(),
        "qemu",
    );
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

// ---- parsing ------------------------------------------------------------------

type Fields = BTreeMap<String, String>;

fn fields(line: &str) -> Fields {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &Fields, k: &str) -> u64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

struct Run {
    calibration: Fields,
    ops: BTreeMap<(String, String), Fields>,
    ticks: Vec<Fields>,
    m2m: Vec<Fields>,
    long: Vec<Fields>,
    states: Vec<(String, String, Vec<u8>)>,
    summary: Fields,
}

fn parse(out: &str) -> Run {
    let mut r = Run {
        calibration: Fields::new(),
        ops: BTreeMap::new(),
        ticks: Vec::new(),
        m2m: Vec::new(),
        long: Vec::new(),
        states: Vec::new(),
        summary: Fields::new(),
    };
    for line in out.lines() {
        let f = fields(line);
        match line.split_whitespace().next() {
            Some("CALIBRATION") => r.calibration = f,
            Some("OP") => {
                r.ops.insert((f["suite"].clone(), f["op"].clone()), f);
            }
            Some("TICK") => r.ticks.push(f),
            Some("M2M") => r.m2m.push(f),
            Some("LONG") => r.long.push(f),
            Some("STATE") => {
                let hex = &f["hex"];
                let bytes = (0..hex.len() / 2)
                    .map(|i| must(u8::from_str_radix(&hex[2 * i..2 * i + 2], 16), "hex"))
                    .collect();
                r.states
                    .push((f["suite"].clone(), f["device"].clone(), bytes));
            }
            Some("SUMMARY") => r.summary = f,
            _ => {}
        }
    }
    r
}

// ---- renewal on the host ---------------------------------------------------------

struct Renewal {
    suite: Suite,
    device: String,
    balance: u64,
    tokens_before: usize,
    rounds: usize,
    package_bytes: usize,
    records: usize,
    signature_checks: usize,
    micros: u128,
}

/// The device comes online with the state the M4 left: every token is paid
/// to the DCP's redemption key (at most 16 inputs a round), the package is
/// verified as settlement does and its inputs entered in a spent registry,
/// the DCP issues one fresh token per round, the SE imports it and takes the
/// DCP's receipt; then a sync grant clears the payment log.
fn renew(
    suite: Suite,
    device: &str,
    state: &[u8],
    spent: &mut BTreeMap<tally_core::OutPoint, tally_core::Hash32>,
) -> Renewal {
    let t0 = Instant::now();
    let mut scheme = Scheme::new(suite);
    let trust = scheme.trust();
    let mut se = from_state(state, format!("host/renew/{device}").as_bytes());
    let class = se
        .state()
        .personal
        .as_ref()
        .map(|p| p.device_class)
        .unwrap_or(IOT);
    let balance = se.state().balance().0;
    let tokens_before = se.state().tokens.len();
    let (mut rounds, mut package_bytes, mut records, mut signature_checks) = (0, 0, 0, 0);
    for round in 0..tally_se::state::TOKENS_MAX {
        let mut toks = se.tokens();
        if toks.is_empty() || (toks.len() == 1 && toks[0].lineage_len == 1 && round > 0) {
            break;
        }
        toks.sort_by_key(|t| (t.lineage_len, std::cmp::Reverse(t.value)));
        let amount: u64 = toks
            .iter()
            .take(tally_core::record::RECORD_INPUTS_MAX)
            .map(|t| t.value.0)
            .sum();
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(
            &tagged_hash(
                b"m4/renew",
                &[device.as_bytes(), &(round as u64).to_be_bytes()],
            )
            .0[..16],
        );
        let request = Request::sign(
            &scheme.dcp,
            Amount(amount),
            nonce,
            scheme.certify(scheme.dcp.public(), DCP, 0),
            scheme.epoch,
        );
        let order = tally_core::dcp::RedemptionOrder::sign(
            &scheme.dcp,
            must(se.se_id(), "se id"),
            false,
            request,
        );
        let bytes = must(se.redeem(&order), "redeem");
        let pkg = must(Package::from_cbor(&bytes), "decode redemption");
        let v = must(
            verify_package_for_settlement(pkg, &trust, scheme.params(1024), &mut NoCache),
            "settlement verification",
        );
        let (_, out) = v.payment();
        assert_eq!(out.owner, scheme.dcp.public(), "pays the DCP");
        assert_eq!(out.value, Amount(amount), "pays the whole amount");
        let p = v.package();
        for (rec, id) in p
            .ancestry
            .iter()
            .zip(v.ancestry_ids())
            .filter(|(r, _)| matches!(r, Record::Transfer(_)))
            .map(|(r, id)| (r.inputs().to_vec(), *id))
            .chain(std::iter::once((
                p.transfer.inputs.clone(),
                v.transfer_id(),
            )))
        {
            for op in rec {
                let prev = spent.insert(op, id);
                assert!(
                    prev.is_none() || prev == Some(id),
                    "double spend at settlement"
                );
            }
        }
        package_bytes += bytes.len();
        records += p.ancestry.len();
        signature_checks += v.signature_checks();
        let key = must(certify_fresh_keys(&mut se, &scheme, class, 1), "fresh key")[0];
        let issue = scheme.issue(key, amount);
        must(se.import_issue(issue), "import renewed token");
        must(
            se.ack(&Receipt::sign(&scheme.dcp, v.transfer_id())),
            "DCP receipt",
        );
        rounds += 1;
    }
    let se_id = must(se.se_id(), "se id");
    must(SeLink::sync(&mut se, &scheme.sync_grant(se_id, 2)), "sync");
    assert_eq!(se.state().balance().0, balance, "renewal keeps the value");
    assert!(se.state().outgoing.is_empty(), "sync clears the log");
    assert!(
        se.tokens().iter().all(|t| t.lineage_len == 1),
        "only fresh tokens left"
    );
    Renewal {
        suite,
        device: device.to_string(),
        balance,
        tokens_before,
        rounds,
        package_bytes,
        records,
        signature_checks,
        micros: t0.elapsed().as_micros(),
    }
}

// ---- the report ---------------------------------------------------------------------

/// `1234567` → `1 234 567`.
fn grp(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn mi(n: u64) -> String {
    format!("{:.2} M", n as f64 / 1e6)
}

fn kib(n: u64) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

const SUITES: [(&str, &str); 2] = [("ed25519", "Ed25519"), ("p256", "P-256")];

const CORE_OPS: [(&str, &str); 9] = [
    ("boot", "SE boot (clean journal)"),
    ("boot_recovery", "SE boot + recovery (torn log record)"),
    ("create_request", "CREATE REQUEST (payee)"),
    (
        "pay",
        "PAY, one input with change (payer), cold: first after boot, verifies the payee certificate",
    ),
    (
        "check_request",
        "CHECK REQUEST (payer, while the user confirms: the payee certificate)",
    ),
    (
        "pay_warm",
        "PAY after CHECK REQUEST, warm (the change token: two ancestry records, change again)",
    ),
    (
        "receive_1",
        "RECEIVE one-hop package (payee, full verification)",
    ),
    (
        "receive_8",
        "RECEIVE eight-hop package (payee, full verification)",
    ),
    ("ack", "ACK (payer)"),
];

const RAM_TARGET: u64 = 64 * 1024;
const PAY_TARGET: u64 = 1_000_000;
const BOOT_TARGET: u64 = 500_000;

fn report(
    run: &Run,
    sections: &BTreeMap<String, u64>,
    payment: &BTreeMap<String, u64>,
    renewals: &[Renewal],
) -> String {
    let op = |s: &str, o: &str| -> Fields {
        run.ops
            .get(&(s.to_string(), o.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let mut md = String::new();
    let w = &mut md;
    let sec = |n: &str| sections.get(n).copied().unwrap_or(0);
    let _ = writeln!(
        w,
        "Calibration: a two-instruction loop run 1 M and 5 M times differs by {} \
         ticks per 8 M instructions, i.e. **{:.3} instructions per SysTick tick** \
         (SysTick on the 25 MHz core clock, 1 ns per instruction under `-icount \
         shift=0`); an empty measurement costs {} tick. Instructions below are \
         ticks × 40, so each figure is exact to ±40 instructions.\n",
        grp(8_000_000 * 1000 / num(&run.calibration, "instructions_per_tick_milli").max(1)),
        num(&run.calibration, "instructions_per_tick_milli") as f64 / 1000.0,
        num(&run.calibration, "overhead_ticks"),
    );

    let _ = writeln!(
        w,
        "#### Operations (instructions; stack and heap peak in bytes)\n"
    );
    let _ = writeln!(
        w,
        "| operation | Ed25519 | P-256 | stack (Ed25519 / P-256) | heap peak, both SEs' state included (Ed25519 / P-256) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for (o, label) in CORE_OPS {
        let (e, p) = (op("ed25519", o), op("p256", o));
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} / {} | {} / {} |",
            mi(num(&e, "instr")),
            mi(num(&p, "instr")),
            grp(num(&e, "stack_total")),
            grp(num(&p, "stack_total")),
            grp(num(&e, "heap_peak")),
            grp(num(&p, "heap_peak")),
        );
    }
    let _ = writeln!(
        w,
        "\nPAY is `PayerSession::start` (request decode, `Applet::pay`, package \
         decode for the transfer id). The cold PAY is the first after a boot \
         and checks the payee's certificate signature itself; CHECK REQUEST \
         (`PayerSession::check`, APDU 1C) checks it when the request arrives, while \
         the terminal asks the user to confirm, and the warm PAY after it finds \
         the certificate in the SE's cache. RECEIVE is `PayeeSession::on_package` \
         (`Applet::receive`: decode, `verify_package`, commit, receipt); ACK is \
         `PayerSession::on_receipt`. Every one includes its journal commit to the \
         simulated flash. Stack is the depth from the top of the stack (the \
         benchmark's own frames above the operation included).\n"
    );

    let _ = writeln!(w, "#### Payee verification against its signature checks\n");
    let _ = writeln!(
        w,
        "| suite | package | bytes | records | certificates | signature checks | `verify_package` | `verify_many_bounded`, same signatures, same batches | overhead | heap peak of `verify_package` |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (s, sname) in SUITES {
        for (l, lname) in [("1", "one hop"), ("8", "eight hops")] {
            let v = op(s, &format!("verify_{l}"));
            let g = op(s, &format!("sigs_{l}"));
            let (vi, gi) = (num(&v, "instr"), num(&g, "instr"));
            let _ = writeln!(
                w,
                "| {sname} | {lname} | {} | {} | {} | {} | {} | {} | {:+.1} % | {} |",
                grp(num(&v, "bytes")),
                num(&v, "records"),
                num(&v, "certificates"),
                num(&v, "sigs"),
                mi(vi),
                mi(gi),
                (vi as f64 / gi.max(1) as f64 - 1.0) * 100.0,
                grp(num(&v, "heap_peak") - num(&v, "heap_before")),
            );
        }
    }

    let _ = writeln!(w, "\n#### Primitives and state handling (instructions)\n");
    let _ = writeln!(w, "| | Ed25519 | P-256 |");
    let _ = writeln!(w, "|---|---:|---:|");
    for (o, label) in [
        ("key_from_seed", "signing key from its seed"),
        ("sign", "sign"),
        ("verify", "verify one signature"),
    ] {
        let _ = writeln!(
            w,
            "| {label} | {} | {} |",
            mi(num(&op("ed25519", o), "instr")),
            mi(num(&op("p256", o), "instr"))
        );
    }
    for who in ["payer", "payee"] {
        for (o, label) in [
            ("state_encode", "encode"),
            ("state_hash", "SHA-256 over"),
            ("state_decode", "decode"),
        ] {
            let e = op("ed25519", &format!("{o}_{who}"));
            let p = op("p256", &format!("{o}_{who}"));
            let _ = writeln!(
                w,
                "| {label} the {who}'s state ({} / {} bytes) | {} | {} |",
                grp(num(&e, "bytes")),
                grp(num(&p, "bytes")),
                mi(num(&e, "instr")),
                mi(num(&p, "instr"))
            );
        }
    }

    let _ = writeln!(
        w,
        "\n#### Machine to machine: a meter pays a charging station 1 unit per tick\n"
    );
    let _ = writeln!(
        w,
        "| suite | meter loaded with | ticks done | stopped by | per tick, meter (PAY + ACK) | per tick, station (REQUEST + RECEIVE) | per tick, total | tick 1 → last tick, total | flash written per tick (meter / station) | heap peak | state at the end (meter / station) |"
    );
    let _ = writeln!(w, "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|");
    for m in &run.m2m {
        let (s, v) = (&m["suite"], &m["variant"]);
        let ticks: Vec<&Fields> = run
            .ticks
            .iter()
            .filter(|t| &t["suite"] == s && &t["variant"] == v)
            .collect();
        let n = ticks.len().max(1) as u64;
        let total =
            |t: &Fields| num(t, "request") + num(t, "pay") + num(t, "receive") + num(t, "ack");
        let meter = (num(m, "pay") + num(m, "ack")) / n;
        let station = (num(m, "request") + num(m, "receive")) / n;
        let first = ticks.first().map(|t| total(t)).unwrap_or(0);
        let last = ticks.last().map(|t| total(t)).unwrap_or(0);
        let mf: u64 = ticks.iter().map(|t| num(t, "meter_flash")).sum::<u64>() / n;
        let sf: u64 = ticks.iter().map(|t| num(t, "station_flash")).sum::<u64>() / n;
        let heap = ticks.iter().map(|t| num(t, "heap_peak")).max().unwrap_or(0);
        let refusal = m.get("refusal").map(String::as_str).unwrap_or("none");
        let stopped = match refusal {
            "none" => String::from("—"),
            "2109" => String::from("PAY refused: 2109, payment log full"),
            "2021" => String::from("PAY refused: 2021, needs renewal (history budget)"),
            r => format!("PAY refused: {r}"),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {stopped} | {} | {} | **{}** | {} → {} | {} / {} | {} | {} / {} |",
            if s == "ed25519" { "Ed25519" } else { "P-256" },
            if v == "unit" {
                "100 tokens of 1 + one of 50"
            } else {
                "one token of 100"
            },
            ticks.len(),
            mi(meter),
            mi(station),
            mi(meter + station),
            mi(first),
            mi(last),
            grp(mf),
            grp(sf),
            kib(heap),
            grp(num(m, "meter_state")),
            grp(num(m, "station_state")),
        );
    }
    if !renewals.is_empty() {
        let _ = writeln!(
            w,
            "\nThen both renew on the host (the states the M4 left, read back over \
             semihosting): each pays its tokens to the DCP's redemption key, 16 inputs \
             a round; the host verifies each package as settlement does, enters every \
             input in a spent registry shared by both (no input twice), issues one \
             fresh token per round, and a sync grant clears the payment log. So do \
             the two SEs of the 10,000-tick stream (`stream-meter`, `stream-station`, \
             after both closed on the M4: the station's claim of 10,000 ticks is \
             verified as settlement does, its element walked to the OPEN's anchor; \
             the meter released every tick, so its close returned nothing and it \
             has nothing to renew).\n"
        );
        let _ = writeln!(
            w,
            "| suite | device | value | tokens before | rounds | package bytes | ancestry records | signature checks at settlement | host time |"
        );
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in renewals {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} ms |",
                if r.suite == Suite::Ed25519 {
                    "Ed25519"
                } else {
                    "P-256"
                },
                r.device,
                r.balance,
                r.tokens_before,
                r.rounds,
                grp(r.package_bytes as u64),
                r.records,
                r.signature_checks,
                r.micros as f64 / 1000.0
            );
        }
    }

    let stat = sec(".data") + sec(".bss") + sec(".uninit");
    let long_ram = long_report(w, run, stat);

    let _ = writeln!(w, "\n#### Memory\n");
    let psec = |n: &str| payment.get(n).copied().unwrap_or(0);
    let flash = sec(".vector_table") + sec(".text") + sec(".rodata") + sec(".data");
    let pflash = psec(".vector_table") + psec(".text") + psec(".rodata") + psec(".data");
    let _ = writeln!(
        w,
        "| ELF section | payment firmware (bytes) | benchmark firmware (bytes) | |"
    );
    let _ = writeln!(w, "|---|---:|---:|---|");
    for (n, what) in [
        (".vector_table", "flash"),
        (".text", "flash: code"),
        (".rodata", "flash: constants (curve tables, …)"),
        (".data", "flash (initial values) and RAM"),
        (".bss", "RAM"),
        (".fixtures", "flash, but test vectors: not counted"),
    ] {
        let _ = writeln!(w, "| `{n}` | {} | {} | {what} |", grp(psec(n)), grp(sec(n)));
    }
    let _ = writeln!(
        w,
        "| **flash (firmware)** | **{}** ({}) | **{}** ({}) | |",
        grp(pflash),
        kib(pflash),
        grp(flash),
        kib(flash)
    );
    let _ = writeln!(
        w,
        "| **static RAM** | **{}** | **{}** | |",
        grp(psec(".data") + psec(".bss") + psec(".uninit")),
        grp(stat)
    );
    let _ = writeln!(
        w,
        "\nThe payment firmware is `--no-default-features`: the payment scenario \
         only (both SEs, the sessions, the journal, the scenario driver and its \
         semihosting output); the benchmark firmware adds the verifier-alone \
         runs, primitives, state handling, machine to machine and reporting."
    );
    let _ = writeln!(
        w,
        "\n| RAM, whole core scenario (both SEs) | Ed25519 | P-256 |\n|---|---:|---:|"
    );
    let core_max = |s: &str, key: &str, ops: &[&str]| {
        ops.iter().map(|o| num(&op(s, o), key)).max().unwrap_or(0)
    };
    // Every protocol step of the core scenario, also those not in the table.
    let all: Vec<&str> = CORE_OPS
        .iter()
        .map(|(o, _)| *o)
        .chain(["boot_payee", "create_request_2", "create_request_3"])
        .collect();
    let no8: Vec<&str> = all.iter().copied().filter(|o| *o != "receive_8").collect();
    let mut ram = BTreeMap::new();
    for (label, ops) in [
        ("without the eight-hop RECEIVE", &no8),
        ("with the eight-hop RECEIVE", &all),
    ] {
        let e_heap = core_max("ed25519", "heap_peak", ops);
        let p_heap = core_max("p256", "heap_peak", ops);
        let e_stack = core_max("ed25519", "stack_total", ops);
        let p_stack = core_max("p256", "stack_total", ops);
        let (e, p) = (stat + e_heap + e_stack, stat + p_heap + p_stack);
        ram.insert(label, (e, p));
        let _ = writeln!(
            w,
            "| peak heap, {label} | {} | {} |",
            grp(e_heap),
            grp(p_heap)
        );
        let _ = writeln!(
            w,
            "| peak stack, {label} | {} | {} |",
            grp(e_stack),
            grp(p_stack)
        );
        let _ = writeln!(
            w,
            "| **static + heap + stack**, {label} | **{}** | **{}** |",
            kib(e),
            kib(p)
        );
    }
    let _ = writeln!(
        w,
        "\nHeap arena high-water mark over the whole benchmark (first-fit \
         fragmentation included, machine-to-machine runs included): {}; \
         allocations: {}.\n",
        kib(num(&run.summary, "heap_high_water")),
        grp(num(&run.summary, "allocs"))
    );

    let _ = writeln!(w, "#### Targets\n");
    let _ = writeln!(w, "| target | measured | |");
    let _ = writeln!(w, "|---|---|---|");
    let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
    let pay_e = num(&op("ed25519", "pay"), "instr");
    let pay_p = num(&op("p256", "pay"), "instr");
    let warm_e = num(&op("ed25519", "pay_warm"), "instr");
    let warm_p = num(&op("p256", "pay_warm"), "instr");
    let _ = writeln!(
        w,
        "| PAY ≤ 1.0 M instructions (Ed25519), payee certificate checked before (warm) | {} (P-256: {}) | {} |",
        mi(warm_e),
        mi(warm_p),
        met(warm_e <= PAY_TARGET)
    );
    let _ = writeln!(
        w,
        "| PAY ≤ 1.0 M instructions (Ed25519), first PAY after boot (cold) | {} (P-256: {}) | {} |",
        mi(pay_e),
        mi(pay_p),
        met(pay_e <= PAY_TARGET)
    );
    let over = |s: &str, l: &str| {
        let v = num(&op(s, &format!("verify_{l}")), "instr") as f64;
        let g = num(&op(s, &format!("sigs_{l}")), "instr").max(1) as f64;
        (v / g - 1.0) * 100.0
    };
    let worst = [
        over("ed25519", "1"),
        over("ed25519", "8"),
        over("p256", "1"),
        over("p256", "8"),
    ]
    .into_iter()
    .fold(f64::MIN, f64::max);
    let _ = writeln!(
        w,
        "| payee verification overhead beyond its signature checks ≤ 20 % | Ed25519 {:+.1} % / {:+.1} %, P-256 {:+.1} % / {:+.1} % (one / eight hops) | {} |",
        over("ed25519", "1"),
        over("ed25519", "8"),
        over("p256", "1"),
        over("p256", "8"),
        met(worst <= 20.0)
    );
    let _ = writeln!(
        w,
        "| flash ≤ 192 KiB (payer + payee firmware) | payment firmware {} (benchmark firmware {}) | {} |",
        kib(pflash),
        kib(flash),
        met(pflash <= FLASH_TARGET)
    );
    for (label, (e, p)) in &ram {
        let _ = writeln!(
            w,
            "| RAM ≤ 64 KiB, {label} | Ed25519 {}, P-256 {} | {} |",
            kib(*e),
            kib(*p),
            met(*e <= RAM_TARGET && *p <= RAM_TARGET)
        );
    }
    let boot_e = num(&op("ed25519", "boot"), "instr");
    let boot_p = num(&op("p256", "boot"), "instr");
    let boot_long = num(&op("ed25519", "boot_long"), "instr");
    let fullest = op("ed25519", "boot_long_fullest");
    let boot_fullest = num(&fullest, "instr");
    // Every boot of the 1,000-payment run: the stations' (before each of
    // their commands) too.
    let boot_station = run.long.iter().map(|f| num(f, "boot")).max().unwrap_or(0);
    let _ = writeln!(
        w,
        "| boot ≤ 0.5 M instructions | clean journal {} (P-256: {}); after 1,000 payments, log replayed, {}; the meter at its fullest log ({} bytes) {}; a station, worst of the run, {} | {} |",
        mi(boot_e),
        mi(boot_p),
        mi(boot_long),
        grp(num(&fullest, "log")),
        mi(boot_fullest),
        mi(boot_station),
        met([boot_e, boot_p, boot_long, boot_fullest, boot_station]
            .iter()
            .all(|b| *b <= BOOT_TARGET))
    );
    if let Some(l) = long_ram {
        let _ = writeln!(
            w,
            "| PAY, RECEIVE and ACK within 64 KiB RAM for 1,000 consecutive payments (Ed25519) | static + heap + stack, worst payment: {} (first 100: {}, last 100: {}) | {} |",
            kib(l.worst),
            kib(l.first),
            kib(l.last),
            met(l.worst <= RAM_TARGET)
        );
        let _ = writeln!(
            w,
            "| … cost per payment flat | PAY + RECEIVE + ACK, mean of the first 100 → last 100: {} → {} | {} |",
            mi(l.cost_first),
            mi(l.cost_last),
            met(l.cost_last as f64 <= 1.05 * l.cost_first as f64)
        );
    }
    md
}

/// What the long run's RAM targets are judged on.
struct LongRam {
    worst: u64,
    first: u64,
    last: u64,
    cost_first: u64,
    cost_last: u64,
}

/// The 1,000-payment table, by blocks of 100 payments.
fn long_report(w: &mut String, run: &Run, stat: u64) -> Option<LongRam> {
    if run.long.is_empty() {
        return None;
    }
    let _ = writeln!(
        w,
        "\n#### 1,000 consecutive payments without a sync (Ed25519)\n\n\
         The meter pays 1 unit per payment, each acknowledged, never syncing \
         (1,000 is the tier's `offline_payments_max`). It starts with 4 Issues \
         of 8 one-unit tokens and is topped up online with 4 more every 32 \
         payments (Issues credited, not a sync: the payment counters and the \
         log are untouched), so that it never pays with change. A payee holds \
         every token it receives (about 0.5 KB of state each, until it syncs), \
         so a fresh station takes each 10 payments. One device is powered at a \
         time, as two devices would be: the station boots from its journal for \
         each of its commands (CREATE REQUEST, RECEIVE) and is off in between, \
         so PAY and ACK run with only the meter's state in the heap; for \
         RECEIVE the heap figure is the station's share (its peak less what was \
         live before it booted: the meter's state and the wallet's buffers). \
         Per block of 100 payments: mean and largest instructions; RAM as \
         static + the largest heap peak + the largest stack of PAY, RECEIVE and \
         ACK; flash bytes written per payment (compactions included); the \
         meter's state (encoded) and journal log at the block's end.\n"
    );
    let _ = writeln!(
        w,
        "| payments | PAY mean / max | RECEIVE mean / max | ACK mean / max | station boot mean / max | heap peak (PAY / RECEIVE / ACK) | stack peak | static + heap + stack | flash per payment, meter / station | meter state / log |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut worst = 0;
    let mut blocks = Vec::new();
    for block in run.long.chunks(100) {
        let n = block.len() as u64;
        let stat_of = |k: &str| {
            let v: Vec<u64> = block.iter().map(|t| num(t, k)).collect();
            (
                v.iter().sum::<u64>() / n,
                v.iter().copied().max().unwrap_or(0),
            )
        };
        let (pay, pay_max) = stat_of("pay");
        let (rcv, rcv_max) = stat_of("receive");
        let (ack, ack_max) = stat_of("ack");
        let max_of = |k: &str| block.iter().map(|t| num(t, k)).max().unwrap_or(0);
        let (pay_heap, rcv_heap, ack_heap) = (
            max_of("pay_heap"),
            max_of("receive_heap"),
            max_of("ack_heap"),
        );
        let heap = pay_heap.max(rcv_heap).max(ack_heap);
        let (boot, boot_max) = stat_of("boot");
        let stack = block
            .iter()
            .flat_map(|t| {
                [
                    num(t, "pay_stack"),
                    num(t, "receive_stack"),
                    num(t, "ack_stack"),
                ]
            })
            .max()
            .unwrap_or(0);
        let ram = stat + heap + stack;
        worst = worst.max(ram);
        let (mf, _) = stat_of("meter_flash");
        let (sf, _) = stat_of("station_flash");
        let last = block.last().cloned().unwrap_or_default();
        let first_tick = num(&block[0], "tick");
        let _ = writeln!(
            w,
            "| {}–{} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} / {} | {} | {} | {} / {} | {} / {} |",
            first_tick,
            num(&last, "tick"),
            mi(pay),
            mi(pay_max),
            mi(rcv),
            mi(rcv_max),
            mi(ack),
            mi(ack_max),
            mi(boot),
            mi(boot_max),
            grp(pay_heap),
            grp(rcv_heap),
            grp(ack_heap),
            grp(stack),
            kib(ram),
            grp(mf),
            grp(sf),
            grp(num(&last, "meter_state")),
            grp(num(&last, "meter_log")),
        );
        blocks.push((ram, pay + rcv + ack));
    }
    let boot = run
        .ops
        .get(&("ed25519".to_string(), "boot_long".to_string()))
        .cloned()
        .unwrap_or_default();
    let decode = run
        .ops
        .get(&("ed25519".to_string(), "decode_long".to_string()))
        .cloned()
        .unwrap_or_default();
    let fullest = run
        .ops
        .get(&("ed25519".to_string(), "boot_long_fullest".to_string()))
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "\nThe meter then reboots from its journal: base state and a log of {} \
         bytes replayed, **{}** instructions, heap peak {}, stack {}. Of that, \
         decoding a state of {} bytes (the meter's, as boot decodes its base) \
         takes {}; the rest is the journal's checks and the log. At its fullest \
         log of the run ({} bytes; a copy of its store booted then, the running \
         meter untouched) the meter's boot is **{}**, heap peak {}.\n",
        grp(num(&boot, "log")),
        mi(num(&boot, "instr")),
        grp(num(&boot, "heap_peak")),
        grp(num(&boot, "stack_total")),
        grp(num(&decode, "bytes")),
        mi(num(&decode, "instr")),
        grp(num(&fullest, "log")),
        mi(num(&fullest, "instr")),
        grp(num(&fullest, "heap_peak").saturating_sub(num(&fullest, "heap_before"))),
    );
    let (first, cost_first) = blocks.first().copied().unwrap_or_default();
    let (last, cost_last) = blocks.last().copied().unwrap_or_default();
    Some(LongRam {
        worst,
        first,
        last,
        cost_first,
        cost_last,
    })
}

const BEGIN: &str = "<!-- m4-bench:begin (generated by firmware/cortex-m4/bench.sh) -->";
const END: &str = "<!-- m4-bench:end -->";

/// Replaces the generated block of docs/PERFORMANCE.md's "Cortex-M4"
/// section (appending the section if it is missing).
fn write_doc(block: &str) {
    let path = root().join("docs/PERFORMANCE.md");
    let doc = must(std::fs::read_to_string(&path), "read docs/PERFORMANCE.md");
    let new = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{BEGIN}\n\n{block}\n{}", &doc[..b], &doc[e..])
        }
        _ => format!(
            "{}\n## Cortex-M4\n\n{BEGIN}\n\n{block}\n{END}\n",
            doc.trim_end()
        ),
    };
    must(std::fs::write(&path, new), "write docs/PERFORMANCE.md");
}

fn bench(write: bool) {
    build_payment_firmware();
    build_firmware();
    let t0 = Instant::now();
    let (status, out) = run_qemu("bench");
    let secs = t0.elapsed().as_secs_f64();
    let log = root().join("target/firmware/m4-bench.log");
    must(std::fs::write(&log, &out), "write log");
    for line in out.lines().filter(|l| !l.starts_with("STATE ")) {
        println!("{line}");
    }
    assert!(
        status.success() && out.contains("RESULT PASS"),
        "the firmware benchmark failed ({status}); log in {}",
        log.display()
    );
    let run = parse(&out);
    let mut renewals = Vec::new();
    for (s, sname) in SUITES {
        let suite = if s == "ed25519" {
            Suite::Ed25519
        } else {
            Suite::EcdsaP256Sha256
        };
        let mut spent = BTreeMap::new();
        for (_, device, state) in run.states.iter().filter(|(x, _, _)| x == sname || x == s) {
            renewals.push(renew(suite, device, state, &mut spent));
        }
    }
    let sections = elf_sections(&elf_path());
    let payment = elf_sections(&payment_elf_path());
    let md = report(&run, &sections, &payment, &renewals);
    println!("\n{md}");
    println!("(QEMU ran {secs:.1} s; full log in {})", log.display());
    if write {
        write_doc(&md);
        println!("docs/PERFORMANCE.md updated");
    }
}

fn smoke() {
    build_firmware();
    let (status, out) = run_qemu("smoke");
    print!("{out}");
    assert!(
        status.success() && out.contains("RESULT PASS"),
        "smoke scenario failed: {status}"
    );
}

/// Issue 12's Cortex-M4 targets for a confidential payment (decisions 0017
/// and 0027).
const CONF_RECEIVE_MAX: u64 = 40_000_000;
const CONF_PAY_MAX: u64 = 120_000_000;
const CONF_RAM_MAX: u64 = 64 * 1024;
const CONF_FLASH_MAX: u64 = 256 * 1024;

/// Flash an ELF takes (`.vector_table + .text + .rodata + .data`) and its
/// static RAM (`.data + .bss`), from its section sizes.
fn flash_and_static(sections: &BTreeMap<String, u64>) -> (u64, u64) {
    let sec = |n: &str| sections.get(n).copied().unwrap_or(0);
    (
        sec(".vector_table") + sec(".text") + sec(".rodata") + sec(".data"),
        sec(".data") + sec(".bss"),
    )
}

/// A target's verdict.
fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// The confidential payment firmware (`--no-default-features --features
/// confidential,ed25519-only`: no P-256, decision 0027): builds it, runs
/// its `confidential` scenario under QEMU and prints each operation's
/// instructions and RAM (static + peak heap + peak stack) and the
/// firmware's flash, against issue 12's targets. First the benchmark
/// firmware with `confidential,ed25519-only` (the build the smoke test
/// runs) runs the same scenario plus its breakdown (the constant
/// generators' decompression, the range proof alone), which the payment
/// firmware leaves out.
fn confidential() {
    build_firmware_with(&["--features", "confidential,ed25519-only,delegated-proving"]);
    let (status, bench_out) = run_qemu_elf(&elf_path(), "confidential");
    print!("{bench_out}");
    assert!(
        status.success() && bench_out.contains("RESULT PASS"),
        "the confidential scenario failed on the benchmark firmware: {status}"
    );
    build_firmware_with(&[
        "--no-default-features",
        "--features",
        "confidential,ed25519-only",
    ]);
    let elf = root().join("target/firmware/tally-m4-confidential.elf");
    must(
        std::fs::copy(elf_path(), &elf),
        "copy the confidential firmware",
    );
    let (flash, stat) = flash_and_static(&elf_sections(&elf));
    let (status, out) = run_qemu_elf(&elf, "confidential");
    print!("{out}");
    assert!(
        status.success() && out.contains("RESULT PASS"),
        "the confidential scenario failed: {status}"
    );
    println!(
        "\n| operation | instructions | peak heap | peak stack | static + heap + stack | target |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for line in out.lines().filter(|l| l.starts_with("OP suite=conf ")) {
        let f = fields(line);
        let op = f.get("op").cloned().unwrap_or_default();
        let (instr, heap, stack) = (
            num(&f, "instr"),
            num(&f, "heap_peak"),
            num(&f, "stack_total"),
        );
        let ram = stat + heap + stack;
        let target = match op.as_str() {
            "receive_1" | "receive_whole" => format!(
                "≤ 40 M: {}; ≤ 64 KiB: {}",
                met(instr <= CONF_RECEIVE_MAX),
                met(ram <= CONF_RAM_MAX)
            ),
            "pay" | "pay_whole" => format!(
                "≤ 120 M: {}; ≤ 64 KiB: {}",
                met(instr <= CONF_PAY_MAX),
                met(ram <= CONF_RAM_MAX)
            ),
            _ => String::new(),
        };
        println!(
            "| {op} | {} | {} | {} | {} ({}) | {target} |",
            mi(instr),
            grp(heap),
            grp(stack),
            grp(ram),
            kib(ram)
        );
    }
    println!("\nBreakdown (benchmark firmware with `confidential`):");
    for line in bench_out.lines().filter(|l| {
        l.starts_with("OP suite=conf ")
            && (l.contains(" op=generators_decompress ")
                || l.contains(" op=range_prove_16x2 ")
                || l.contains(" op=range_verify_16x2 ")
                || l.contains(" op=range_prove_16x1 ")
                || l.contains(" op=range_verify_16x1 ")
                || l.contains(" op=range_prove_16x2_bits_clear ")
                || l.contains(" op=range_prove_16x2_bits_set "))
    }) {
        let f = fields(line);
        println!(
            "- {}: {} instructions, heap peak {} (live before {}), stack {}",
            f.get("op").cloned().unwrap_or_default(),
            mi(num(&f, "instr")),
            grp(num(&f, "heap_peak")),
            grp(num(&f, "heap_before")),
            grp(num(&f, "stack_total"))
        );
    }
    // PAY proved by the phone's application processor (decision 0032):
    // the SE's two commands, from the benchmark firmware.
    let op = |name: &str| {
        bench_out
            .lines()
            .filter(|l| l.starts_with("OP suite=conf "))
            .map(fields)
            .find(|f| f.get("op").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in the benchmark firmware's output"))
    };
    let (task, proved) = (op("pay_task"), op("pay_proved"));
    let both = num(&task, "instr") + num(&proved, "instr");
    let ram = stat
        + num(&task, "heap_peak").max(num(&proved, "heap_peak"))
        + num(&task, "stack_total").max(num(&proved, "stack_total"));
    println!(
        "\nPAY proved by the application processor (decision 0032; benchmark firmware): \
         PAY P1 1 (task) {} + PAY P1 2 (verify the proof, seal, sign, journal) {} = {} on the SE, \
         ≤ 120 M: {}; RAM {} ({}), ≤ 64 KiB: {}",
        mi(num(&task, "instr")),
        mi(num(&proved, "instr")),
        mi(both),
        met(both <= CONF_PAY_MAX),
        grp(ram),
        kib(ram),
        met(ram <= CONF_RAM_MAX)
    );
    // A phone's payment firmware: PAY P1 1 / P1 2 and PAY on the SE, and
    // the same without the SE's prover (its processor always proves).
    for (features, what) in [
        (
            "confidential,ed25519-only,delegated-proving",
            "with `delegated-proving` (and the SE's own prover)",
        ),
        (
            "confidential,ed25519-only,no-se-prover",
            "with `no-se-prover` (the processor always proves)",
        ),
    ] {
        build_firmware_with(&["--no-default-features", "--features", features]);
        let (phone_flash, phone_static) = flash_and_static(&elf_sections(&elf_path()));
        println!(
            "phone payment firmware {what}: flash {} bytes ({}), ≤ 256 KiB: {}",
            grp(phone_flash),
            kib(phone_flash),
            met(phone_flash <= CONF_FLASH_MAX)
        );
        if !features.contains("no-se-prover") {
            continue;
        }
        // Its scenario: the two payments exchanged live, PAY with change
        // refused (2036).
        let (status, out) = run_qemu_elf(&elf_path(), "confidential");
        assert!(
            status.success()
                && out.contains("RESULT PASS")
                && out.contains("CHECK no_se_prover_refuses_pay_with_change=pass"),
            "the phone firmware's scenario failed: {status}\n{out}"
        );
        println!("\n| phone, no SE prover: operation | instructions | static + heap + stack |");
        println!("|---|---:|---:|");
        for line in out.lines().filter(|l| l.starts_with("OP suite=conf ")) {
            let f = fields(line);
            let ram = phone_static + num(&f, "heap_peak") + num(&f, "stack_total");
            println!(
                "| {} | {} | {} ({}) |",
                f.get("op").cloned().unwrap_or_default(),
                mi(num(&f, "instr")),
                grp(ram),
                kib(ram)
            );
        }
    }
    println!(
        "\nflash (.vector_table + .text + .rodata + .data): {} bytes ({}), target ≤ 256 KiB: {}; static RAM (.data + .bss) {} bytes",
        grp(flash),
        kib(flash),
        met(flash <= CONF_FLASH_MAX),
        grp(stat)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fixtures") => write_fixtures(),
        Some("bench") => bench(!args.iter().any(|a| a == "--no-write")),
        Some("smoke") => smoke(),
        Some("confidential") => confidential(),
        _ => {
            eprintln!("usage: m4 fixtures | bench [--no-write] | smoke | confidential");
            std::process::exit(2);
        }
    }
}
