//! Tally on a Cortex-M4F: a payer SE and a payee SE (tally-se applets on
//! simulated flash) driven by the wallet's payer/payee sessions, running
//! scripted scenarios from host-generated test vectors and measuring each
//! operation. Output goes to the host over semihosting; the exit code says
//! whether every check passed.
//!
//! Semihosting arguments (`-semihosting-config …,arg=tally-m4,arg=MODE`):
//! `smoke` runs the Ed25519 payment scenario and a 64-tick stream only;
//! `stream` the 10,000-tick stream only; `confidential` (feature
//! `confidential`) the confidential payment only; anything else runs the
//! whole benchmark (both suites, machine to machine, streams, reference
//! crypto).

#![no_std]
#![no_main]
// The confidential payment firmware links its own scenario only: the
// transparent scenarios' code is unused there.
#![cfg_attr(all(feature = "confidential", not(feature = "bench")), allow(dead_code))]

extern crate alloc;

mod flash;
mod measure;
mod mem;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprint, hprintln};
use tally_core::codec::Cbor;
use tally_core::crypto::{SecretKey, SigCheck, tagged_hash, verify, verify_many_bounded};
use tally_core::record::distinct_signers;
use tally_core::testkit::TestEntropy;
use tally_core::verify::{NoCache, verify_package};
use tally_core::{
    Amount, Expected, Hash32, Package, PublicKey, Record, Request, Signature, Suite, TrustStore,
    VerifyParams,
};
use tally_se::storage::Journal;
use tally_se::{Applet, Sealing};
use tally_wallet::{PayeeSession, PayerSession};

use flash::Flash;
use measure::{CountingHeap, Sample};

/// One line of output to the host, built without `core::fmt`: the
/// payment firmware prints only text and unsigned integers, and
/// `core::fmt`'s machinery (and every `format!` call site's argument
/// tables) is flash a product does without (decision 0022). The
/// benchmark's own code, behind the `bench` feature, still formats.
struct Line(Vec<u8>);

impl Line {
    fn new(s: &str) -> Line {
        let mut l = Line(Vec::with_capacity(256));
        l.s(s);
        l
    }
    fn s(&mut self, s: &str) -> &mut Line {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn u(&mut self, mut v: u64) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&digits[i..]);
        self
    }
    /// ` key=value`.
    fn kv(&mut self, key: &str, v: u64) -> &mut Line {
        self.s(" ").s(key).s("=").u(v)
    }
    fn print(&mut self) {
        self.0.push(b'\n');
        if let Ok(mut out) = cortex_m_semihosting::hio::hstdout() {
            let _ = out.write_all(&self.0);
        }
    }
}

#[global_allocator]
static HEAP: CountingHeap = CountingHeap::new();

/// Heap arena and two SE stores, in the board's 16 MB SSRAM (not counted
/// as RAM: see memory.x). Generous, so that the benchmark measures what
/// is used rather than failing at an arbitrary bound.
const HEAP_SIZE: usize = 8 << 20;
const FLASH_SIZE: usize = 1 << 20;

#[unsafe(link_section = ".psram")]
static mut PSRAM: MaybeUninit<[u8; HEAP_SIZE + 3 * FLASH_SIZE]> = MaybeUninit::uninit();

macro_rules! fixture {
    ($name:ident, $file:literal) => {
        #[unsafe(link_section = ".fixtures")]
        static $name: [u8; include_bytes!(concat!("../fixtures/", $file)).len()] =
            *include_bytes!(concat!("../fixtures/", $file));
    };
}

fixture!(ED_PAYER, "ed25519-payer.state");
fixture!(ED_PAYEE, "ed25519-payee.state");
fixture!(ED_PKG8, "ed25519-pkg8.bin");
fixture!(ED_EXPECT, "ed25519-expect.bin");
fixture!(ED_METER, "ed25519-meter.state");
fixture!(ED_METER_CHAIN, "ed25519-meter-chain.state");
fixture!(ED_STATION, "ed25519-station.state");
fixture!(ED_METER_LONG, "ed25519-meter-long.state");
fixture!(ED_TOPUP, "ed25519-topup.bin");
fixture!(ED_STREAM_METER, "ed25519-stream-meter.state");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_PAYER, "p256-payer.state");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_PAYEE, "p256-payee.state");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_PKG8, "p256-pkg8.bin");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_EXPECT, "p256-expect.bin");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_METER, "p256-meter.state");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_METER_CHAIN, "p256-meter-chain.state");
#[cfg(not(feature = "ed25519-only"))]
fixture!(P2_STATION, "p256-station.state");
#[cfg(feature = "confidential")]
fixture!(CONF_PAYER, "conf-payer.state");
#[cfg(feature = "confidential")]
fixture!(CONF_PAYEE, "conf-payee.state");
#[cfg(all(feature = "confidential", not(feature = "no-se-prover")))]
fixture!(CONF_PKG1, "conf-pkg1.bin");
#[cfg(feature = "delegated-proving")]
fixture!(CONF_PROOF1, "conf-proof1.bin");
#[cfg(all(feature = "confidential", not(feature = "no-se-prover")))]
fixture!(CONF_PKG2, "conf-pkg2.bin");
#[cfg(all(feature = "confidential", not(feature = "no-se-prover")))]
fixture!(CONF_EXPECT, "conf-expect.bin");
/// The confidential payer's second Issue, paid whole in the scenario's
/// second payment (one output, no range proof: decision 0031).
#[cfg(feature = "confidential")]
const CONF_WHOLE: u64 = 100;

/// One suite's test vectors.
struct SuiteFx {
    name: &'static str,
    suite: Suite,
    payer: &'static [u8],
    payee: &'static [u8],
    pkg8: &'static [u8],
    expect: &'static [u8],
    meter: &'static [u8],
    meter_chain: &'static [u8],
    station: &'static [u8],
}

const ED25519: SuiteFx = SuiteFx {
    name: "ed25519",
    suite: Suite::Ed25519,
    payer: &ED_PAYER,
    payee: &ED_PAYEE,
    pkg8: &ED_PKG8,
    expect: &ED_EXPECT,
    meter: &ED_METER,
    meter_chain: &ED_METER_CHAIN,
    station: &ED_STATION,
};

#[cfg(not(feature = "ed25519-only"))]
const P256: SuiteFx = SuiteFx {
    name: "p256",
    suite: Suite::EcdsaP256Sha256,
    payer: &P2_PAYER,
    payee: &P2_PAYEE,
    pkg8: &P2_PKG8,
    expect: &P2_EXPECT,
    meter: &P2_METER,
    meter_chain: &P2_METER_CHAIN,
    station: &P2_STATION,
};

/// Must match the host generator (crates/tally-wallet/examples/m4.rs).
const PAYMENT: u64 = 250;
const PAYER_LOAD: u64 = 1_000;
const M2M_TICKS: usize = 100;
/// The long run: consecutive payments without a sync (the tier's
/// `offline_payments_max`), a fresh station every `LONG_STATION`
/// payments, and the meter topped up online with `LONG_TOPUP_ISSUES`
/// Issues of 8 one-unit tokens every `LONG_TOPUP_EVERY` payments.
const LONG_TICKS: usize = 1_000;
const LONG_STATION: usize = 10;
const LONG_TOPUP_EVERY: usize = 32;
const LONG_TOPUP_ISSUES: usize = 4;

type Se<'a> = Applet<&'a mut Flash, TestEntropy>;

static OVERHEAD: AtomicU32 = AtomicU32::new(0);
static IPT_MILLI: AtomicU32 = AtomicU32::new(40_000);
static STACK_MAX: AtomicUsize = AtomicUsize::new(0);
static HEAP_MAX: AtomicUsize = AtomicUsize::new(0);

fn m<R>(f: impl FnOnce() -> R) -> (R, Sample) {
    let mut f = Some(f);
    let mut out = None;
    let s = measure::measure(&HEAP, u64::from(OVERHEAD.load(Relaxed)), &mut || {
        out = f.take().map(|f| f())
    });
    STACK_MAX.fetch_max(s.stack_total, Relaxed);
    HEAP_MAX.fetch_max(s.heap_peak, Relaxed);
    match out {
        Some(r) => (r, s),
        None => fail("measure"),
    }
}

fn instr(ticks: u64) -> u64 {
    ticks * u64::from(IPT_MILLI.load(Relaxed)) / 1000
}

fn report(suite: &str, op: &str, s: &Sample, extra: &[(&str, u64)]) {
    let mut l = Line::new("OP suite=");
    l.s(suite).s(" op=").s(op);
    l.kv("ticks", s.ticks).kv("instr", instr(s.ticks));
    for (k, v) in [
        ("stack", s.stack),
        ("stack_total", s.stack_total),
        ("heap_before", s.heap_before),
        ("heap_peak", s.heap_peak),
        ("heap_after", s.heap_after),
        ("allocs", s.allocs),
    ] {
        l.kv(k, v as u64);
    }
    for (k, v) in extra {
        l.kv(k, *v);
    }
    l.print();
}

type Res<T> = Result<T, String>;

/// With the `bench` feature a failure names its error; the payment
/// firmware (a product's stand-in) names only the step, as a device would
/// log a step and a code rather than carry every error type's `Debug`.
fn ctx<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> Res<T> {
    if cfg!(feature = "bench") {
        r.map_err(|e| format!("{what}: {e:?}"))
    } else {
        r.map_err(|_| String::from(what))
    }
}

fn check(cond: bool, what: &str) -> Res<()> {
    if cond {
        Ok(())
    } else {
        let mut msg = String::from("check failed: ");
        msg.push_str(what);
        Err(msg)
    }
}

/// Factory provisioning: the host's SE state as the one commit of a blank
/// store.
#[inline(never)]
fn provision(flash: &mut Flash, state: &[u8]) -> Res<()> {
    flash.erase();
    let (mut j, current) = ctx(Journal::open(&mut *flash), "journal on blank flash")?;
    check(current.is_none(), "blank flash holds no state")?;
    ctx(j.commit(state), "provisioning commit")
}

#[inline(never)]
fn boot<'a>(flash: &'a mut Flash, label: &[u8]) -> Res<Se<'a>> {
    ctx(
        Applet::boot(flash, Sealing::None, TestEntropy::new(label)),
        "boot",
    )
}

fn trust_of(se: &Se<'_>) -> Res<(TrustStore, VerifyParams)> {
    let st = se.state();
    let p = st.personal.as_ref().ok_or("not personalized")?;
    let policy = st.policy.clone().ok_or("no policy")?;
    let rev = st.revocations.clone().ok_or("no revocation list")?;
    let budget = policy
        .limits(p.device_class, p.tier)
        .ok_or("no tier")?
        .history_records_max;
    let trust = ctx(TrustStore::new(p.root, policy, rev), "trust store")?;
    let params = VerifyParams {
        epoch: st.epoch,
        history_records_max: usize::from(budget),
        signature_batch_max: tally_se::SIGNATURE_BATCH_MAX,
    };
    Ok((trust, params))
}

/// The signature checks a verifier makes for `pkg` with nothing cached, in
/// the order `verify_package` collects them (Issues, then per transfer its
/// certificates on first use and its signatures).
fn signature_checks(pkg: &Package, trust: &TrustStore) -> Res<Vec<(PublicKey, Hash32, Signature)>> {
    let dcp = |id: &Hash32| {
        trust
            .policy()
            .dcp(id)
            .map(|c| c.key)
            .ok_or(String::from("unknown DCP"))
    };
    let mut out = Vec::new();
    for r in &pkg.ancestry {
        if let Record::Issue(i) = r {
            out.push((dcp(&i.issuer)?, i.id(), i.signature));
        }
    }
    for c in &pkg.certificates {
        out.push((dcp(&c.issuer)?, c.signed_message(), c.signature));
    }
    let owner = |op: &tally_core::OutPoint| {
        pkg.ancestry
            .iter()
            .find(|r| r.id() == op.record)
            .and_then(|r| r.outputs().get(usize::from(op.index)))
            .map(|o| o.owner)
    };
    let transfers = pkg
        .ancestry
        .iter()
        .filter_map(|r| match r {
            Record::Transfer(t) => Some(t),
            Record::Issue(_) => None,
        })
        .chain(core::iter::once(&pkg.transfer));
    for t in transfers {
        let owners: Option<Vec<PublicKey>> = t.inputs.iter().map(owner).collect();
        let signers = distinct_signers(owners.ok_or("input not in ancestry")?.into_iter());
        let id = t.id();
        for (k, s) in signers.iter().zip(&t.signatures) {
            out.push((*k, id, *s));
        }
    }
    Ok(out)
}

/// Payee-side verification alone (no SE): decode, `verify_package`, and
/// `verify_many_bounded` over exactly its signature checks, in the same
/// batches.
fn verify_alone(
    fx: &SuiteFx,
    label: &str,
    bytes: &[u8],
    request: &Request,
    trust: &TrustStore,
    params: VerifyParams,
) -> Res<()> {
    let (pkg, s) = m(|| Package::from_cbor(bytes));
    let pkg = ctx(pkg, "decode package")?;
    report(
        fx.name,
        &format!("decode_{label}"),
        &s,
        &[("bytes", bytes.len() as u64)],
    );
    let expected = Expected {
        payee: request.payee.key,
        amount: request.amount,
        nonce: request.nonce,
        stream: None,
    };
    let copy = pkg.clone();
    let (v, s_verify) = m(|| verify_package(copy, &expected, trust, params, &mut NoCache));
    let v = ctx(v, "verify_package")?;
    let checks = signature_checks(&pkg, trust)?;
    check(
        checks.len() == v.signature_checks(),
        "signature check list matches the verifier's count",
    )?;
    let sc: Vec<SigCheck<'_>> = checks
        .iter()
        .map(|(key, msg, sig)| SigCheck {
            key,
            msg: &msg.0,
            sig,
        })
        .collect();
    // The same signatures in the same batches as the verifier makes them.
    let (r, s_sigs) = m(|| verify_many_bounded(&sc, params.signature_batch_max));
    ctx(r, "verify_many_bounded")?;
    let certs = pkg.certificates.len();
    let extra = [
        ("bytes", bytes.len() as u64),
        ("records", pkg.ancestry.len() as u64),
        ("certificates", certs as u64),
        ("sigs", v.signature_checks() as u64),
    ];
    report(fx.name, &format!("verify_{label}"), &s_verify, &extra);
    report(fx.name, &format!("sigs_{label}"), &s_sigs, &extra);
    Ok(())
}

/// SE boot and recovery, CREATE REQUEST, PAY (one input, change), RECEIVE
/// of a one-hop and an eight-hop package with full verification, ACK.
fn core_scenario(fx: &SuiteFx, fa: &mut Flash, fb: &mut Flash, full: bool) -> Res<()> {
    let n = fx.name;
    provision(fa, fx.payer)?;
    provision(fb, fx.payee)?;
    // The payer's first commit will lose power half-way through its first
    // write (a PAY appends one log record).
    fa.tear_next_write();

    let (payer, s) = m(|| boot(fa, b"m4/payer"));
    let mut payer = payer?;
    report(n, "boot", &s, &[]);
    let (payee, s) = m(|| boot(fb, b"m4/payee"));
    let mut payee = payee?;
    report(n, "boot_payee", &s, &[]);

    let (r, s) = m(|| PayeeSession::start(&mut payee, Amount(PAYMENT)));
    let (session1, req1) = ctx(r, "CREATE REQUEST")?;
    report(n, "create_request", &s, &[("bytes", req1.len() as u64)]);

    // PAY, torn: power is cut while its log record is written.
    let torn = PayerSession::start(&mut payer, &req1);
    check(torn.is_err(), "the torn PAY fails")?;
    drop(payer);
    fa.power_on();
    let (payer, s) = m(|| boot(fa, b"m4/payer"));
    let mut payer = payer?;
    report(n, "boot_recovery", &s, &[]);
    let st = payer.state();
    check(
        st.balance() == Amount(PAYER_LOAD) && st.outgoing.is_empty() && st.counter == 0,
        "recovery restores the state before the torn PAY",
    )?;

    let (r, s) = m(|| PayerSession::start(&mut payer, &req1));
    let pay1 = ctx(r, "PAY")?;
    report(n, "pay", &s, &[("bytes", pay1.package().len() as u64)]);
    check(
        tagged_hash(b"m4/expect", &[pay1.package()]).0[..] == fx.expect[..32],
        "package 1 is the one the host predicted",
    )?;

    let pkg1 = pay1.package().to_vec();
    let (r, s) = m(|| session1.on_package(&mut payee, &pkg1));
    let received = ctx(r.map_err(|(_, e)| e), "RECEIVE one hop")?;
    report(n, "receive_1", &s, &[("bytes", pkg1.len() as u64)]);

    let (r, s) = m(|| pay1.on_receipt(&mut payer, &received.receipt));
    ctx(r.map_err(|(_, e)| e), "ACK")?;
    report(n, "ack", &s, &[("bytes", received.receipt.len() as u64)]);
    check(
        payer.state().balance() == Amount(PAYER_LOAD - PAYMENT),
        "payer keeps the change",
    )?;
    check(payee.state().balance() == Amount(PAYMENT), "payee is paid")?;
    check(
        payer.state().outgoing.iter().all(|o| o.acked),
        "payment acknowledged",
    )?;

    let (r, s) = m(|| PayeeSession::start(&mut payee, Amount(PAYMENT)));
    let (session2, req2) = ctx(r, "CREATE REQUEST 2")?;
    report(n, "create_request_2", &s, &[]);
    check(
        tagged_hash(b"m4/expect", &[&req2]).0[..] == fx.expect[32..64],
        "request 2 is the one the host predicted",
    )?;
    let (r, s) = m(|| session2.on_package(&mut payee, fx.pkg8));
    ctx(r.map_err(|(_, e)| e), "RECEIVE eight hops")?;
    report(n, "receive_8", &s, &[("bytes", fx.pkg8.len() as u64)]);
    check(
        payee.state().balance() == Amount(2 * PAYMENT),
        "payee holds both payments",
    )?;

    // PAY with the payee's certificate already verified: the payer's SE
    // checks a request when it arrives, while the terminal asks the user to
    // confirm (CHECK REQUEST), so the PAY after the confirmation only signs
    // and commits. (The PAY above, the first after a boot, verified the
    // certificate itself: cold.) This one spends the change token of the
    // first payment (two ancestry records) and makes change again.
    let (r, s) = m(|| PayeeSession::start(&mut payee, Amount(PAYMENT)));
    let (session3, req3) = ctx(r, "CREATE REQUEST 3")?;
    report(n, "create_request_3", &s, &[]);
    let (r, s) = m(|| PayerSession::check(&mut payer, &req3));
    ctx(r, "CHECK REQUEST")?;
    report(n, "check_request", &s, &[]);
    let (r, s) = m(|| PayerSession::start(&mut payer, &req3));
    let pay3 = ctx(r, "PAY (certificate checked)")?;
    report(n, "pay_warm", &s, &[("bytes", pay3.package().len() as u64)]);
    let received = ctx(
        session3
            .on_package(&mut payee, pay3.package())
            .map_err(|(_, e)| e),
        "RECEIVE two hops",
    )?;
    ctx(
        pay3.on_receipt(&mut payer, &received.receipt)
            .map_err(|(_, e)| e),
        "ACK 3",
    )?;
    check(
        payer.state().balance() == Amount(PAYER_LOAD - 2 * PAYMENT)
            && payee.state().balance() == Amount(3 * PAYMENT),
        "third payment moved exactly its amount",
    )?;

    if !full {
        return Ok(());
    }

    // The payee-side verifier alone, and its signature checks alone.
    let (trust, params) = trust_of(&payee)?;
    let request1 = ctx(Request::from_cbor(&req1), "request 1")?;
    let request2 = ctx(Request::from_cbor(&req2), "request 2")?;
    verify_alone(fx, "1", &pkg1, &request1, &trust, params)?;
    verify_alone(fx, "8", fx.pkg8, &request2, &trust, params)?;

    // What the SEs' states cost to encode, decode and hash (every commit
    // encodes and hashes the whole state; boot decodes it).
    for (who, se) in [("payer", &payer), ("payee", &payee)] {
        let (bytes, s) = m(|| se.state().to_cbor());
        report(
            n,
            &format!("state_encode_{who}"),
            &s,
            &[("bytes", bytes.len() as u64)],
        );
        let (h, s) = m(|| tagged_hash(b"x", &[&bytes]));
        core::hint::black_box(h);
        report(
            n,
            &format!("state_hash_{who}"),
            &s,
            &[("bytes", bytes.len() as u64)],
        );
        // As boot decodes its base (decision 0024: strict, not re-encoded).
        let (st, s) = m(|| tally_se::state::State::from_stored(&bytes));
        ctx(st, "state decode")?;
        report(
            n,
            &format!("state_decode_{who}"),
            &s,
            &[("bytes", bytes.len() as u64)],
        );
    }
    drop(payer);
    drop(payee);

    // Reference points: the suite's primitives.
    let (k, s) = m(|| SecretKey::from_seed(fx.suite, &[7; 32]));
    let k = k.ok_or("key from seed")?;
    report(n, "key_from_seed", &s, &[]);
    let msg = [0x42u8; 32];
    let (sig, s) = m(|| k.sign(&msg));
    report(n, "sign", &s, &[]);
    let pk = k.public();
    let (r, s) = m(|| verify(&pk, &msg, &sig));
    ctx(r, "verify")?;
    report(n, "verify", &s, &[]);
    Ok(())
}

/// A smart meter pays a charging station one unit per tick, offline.
fn m2m(fx: &SuiteFx, variant: &str, meter_state: &[u8], fa: &mut Flash, fb: &mut Flash) -> Res<()> {
    let n = fx.name;
    provision(fa, meter_state)?;
    provision(fb, fx.station)?;
    let mut meter = boot(fa, b"m4/meter")?;
    let mut station = boot(fb, b"m4/station")?;
    let start = meter.state().balance();
    let mut done = 0usize;
    let mut refusal = String::new();
    let mut sum = [0u64; 4];
    for tick in 0..M2M_TICKS {
        let w0 = flash::written();
        let (r, s_req) = m(|| PayeeSession::start(&mut station, Amount(1)));
        let (session, req) = ctx(r, "station CREATE REQUEST")?;
        let (r, s_pay) = m(|| PayerSession::start(&mut meter, &req));
        let pay = match r {
            Ok(p) => p,
            Err(tally_wallet::WalletError::Refused { code }) => {
                refusal = format!("{code}");
                break;
            }
            Err(e) => return Err(format!("meter PAY: {e:?}")),
        };
        let package_len = pay.package().len();
        let (r, s_rcv) = m(|| session.on_package(&mut station, pay.package()));
        let received = ctx(r.map_err(|(_, e)| e), "station RECEIVE")?;
        let (r, s_ack) = m(|| pay.on_receipt(&mut meter, &received.receipt));
        ctx(r.map_err(|(_, e)| e), "meter ACK")?;
        let w1 = flash::written();
        let samples = [s_req, s_pay, s_rcv, s_ack];
        for (a, s) in sum.iter_mut().zip(&samples) {
            *a += instr(s.ticks);
        }
        hprintln!(
            "TICK suite={} variant={} tick={} request={} pay={} receive={} ack={} package={} heap_peak={} stack={} meter_flash={} station_flash={}",
            n,
            variant,
            tick + 1,
            instr(s_req.ticks),
            instr(s_pay.ticks),
            instr(s_rcv.ticks),
            instr(s_ack.ticks),
            package_len,
            samples.iter().map(|s| s.heap_peak).max().unwrap_or(0),
            samples.iter().map(|s| s.stack_total).max().unwrap_or(0),
            w1[0] - w0[0],
            w1[1] - w0[1],
        );
        done = tick + 1;
    }
    let paid = start.0 - meter.state().balance().0;
    check(paid == done as u64, "the meter paid one unit per tick")?;
    check(
        station.state().balance() == Amount(done as u64),
        "the station holds every unit",
    )?;
    hprintln!(
        "M2M suite={} variant={} ticks={} refusal={} request={} pay={} receive={} ack={} meter_state={} station_state={}",
        n,
        variant,
        done,
        if refusal.is_empty() { "none" } else { &refusal },
        sum[0],
        sum[1],
        sum[2],
        sum[3],
        meter.state().to_cbor().len(),
        station.state().to_cbor().len(),
    );
    if variant == "unit" {
        for (who, se) in [("meter", &meter), ("station", &station)] {
            print_state(n, who, &se.state().to_cbor());
        }
    }
    Ok(())
}

/// 1,000 consecutive payments without a sync: the meter pays one unit per
/// tick to a station (a fresh one every `LONG_STATION` payments: a
/// station holds what it receives), every payment acknowledged; the
/// meter is topped up online (Issues, not a sync) so that it never pays
/// with change. One device is powered at a time, as two devices would
/// be: the station boots (its journal replayed) for each of its commands
/// and is off in between, so PAY and ACK run with only the meter's state
/// in the heap, and the station's share of RECEIVE is its peak less what
/// was live before it booted (the meter's state and the wallet's
/// buffers). Per tick: instructions, heap and stack of PAY, RECEIVE and
/// ACK, the station's boots, flash bytes written on each side and the
/// meter's state size; at the end the meter reboots from its journal.
// Not inlined: its frame would join `main`'s, under every other measured
// operation's stack depth.
#[inline(never)]
fn m2m_long(fx: &SuiteFx, fa: &mut Flash, fb: &mut Flash, fc: &mut Flash) -> Res<()> {
    let n = fx.name;
    provision(fa, &ED_METER_LONG[..])?;
    let mut meter = boot(fa, b"m4/meter-long")?;
    let mut topups = tally_core::codec::Reader::new(&ED_TOPUP[..]);
    ctx(topups.array_max(4096), "top-up list")?;
    let start = meter.state().balance();
    let mut boots = 0usize;
    // The meter's worst boot: a copy of its store booted whenever its
    // log reaches a new high-water mark (the running meter keeps its RAM).
    let (mut fullest_log, mut worst_boot) = (0usize, None);
    for done in 0..LONG_TICKS {
        if done % LONG_STATION == 0 {
            provision(fb, fx.station)?;
        }
        if done > 0 && done % LONG_TOPUP_EVERY == 0 {
            for _ in 0..LONG_TOPUP_ISSUES {
                let issue = ctx(tally_core::Issue::read(&mut topups), "top-up issue")?;
                ctx(meter.import_issue(issue), "top-up")?;
            }
        }
        let w0 = flash::written();
        boots += 1;
        let label = format!("m4/station/{boots}");
        let (station, s_boot1) = m(|| boot(fb, label.as_bytes()));
        let mut station = station?;
        let (r, s_req) = m(|| PayeeSession::start(&mut station, Amount(1)));
        let (session, req) = ctx(r, "station CREATE REQUEST")?;
        drop(station);
        let (r, s_pay) = m(|| PayerSession::start(&mut meter, &req));
        let pay = ctx(r, "meter PAY")?;
        boots += 1;
        let label = format!("m4/station/{boots}");
        let (station, s_boot2) = m(|| boot(fb, label.as_bytes()));
        let mut station = station?;
        let (r, s_rcv) = m(|| session.on_package(&mut station, pay.package()));
        let received = ctx(r.map_err(|(_, e)| e), "station RECEIVE")?;
        let station_state = station.state().to_cbor().len();
        drop(station);
        let (r, s_ack) = m(|| pay.on_receipt(&mut meter, &received.receipt));
        ctx(r.map_err(|(_, e)| e), "meter ACK")?;
        let w1 = flash::written();
        let meter_log = meter.journal_log_bytes();
        if meter_log > fullest_log {
            fullest_log = meter_log;
            worst_boot = Some(snapshot_boot(&meter, fc, meter_log)?);
        }
        hprintln!(
            "LONG suite={} tick={} pay={} pay_heap={} pay_stack={} receive={} receive_heap={} receive_stack={} station_live={} ack={} ack_heap={} ack_stack={} request={} boot={} boot_heap={} boot_stack={} meter_flash={} station_flash={} meter_state={} station_state={} meter_log={} outgoing={}",
            n,
            done + 1,
            instr(s_pay.ticks),
            s_pay.heap_peak,
            s_pay.stack_total,
            instr(s_rcv.ticks),
            s_rcv.heap_peak - s_boot2.heap_before,
            s_rcv.stack_total,
            s_boot2.heap_before,
            instr(s_ack.ticks),
            s_ack.heap_peak,
            s_ack.stack_total,
            instr(s_req.ticks),
            instr(s_boot1.ticks.max(s_boot2.ticks)),
            s_boot1.heap_peak.max(s_boot2.heap_peak) - s_boot1.heap_before.min(s_boot2.heap_before),
            s_boot1.stack_total.max(s_boot2.stack_total),
            w1[0] - w0[0],
            w1[1] - w0[1],
            meter.state().to_cbor().len(),
            station_state,
            meter_log,
            meter.state().outgoing.len(),
        );
    }
    let paid = start.0 + 8 * (LONG_TOPUP_ISSUES * ((LONG_TICKS - 1) / LONG_TOPUP_EVERY)) as u64
        - meter.state().balance().0;
    check(
        paid == LONG_TICKS as u64,
        "the meter paid one unit per tick",
    )?;
    check(
        meter.state().payments_since_sync as usize == LONG_TICKS,
        "no sync in between",
    )?;
    let log = meter.journal_log_bytes();
    drop(meter);
    let (r, s) = m(|| boot(fa, b"m4/meter-long"));
    let meter = r?;
    check(
        meter.state().payments_since_sync as usize == LONG_TICKS,
        "the meter reboots into its last state",
    )?;
    report(n, "boot_long", &s, &[("log", log as u64)]);
    if let Some((s, log)) = worst_boot {
        report(n, "boot_long_fullest", &s, &[("log", log as u64)]);
    }
    decode_long(n, meter.state())?;
    drop(meter);
    boot_parts(n, fa)?;
    if PROFILE.load(Relaxed) {
        profile_boot(fa)?;
    }
    Ok(())
}

/// `arg=profile` with `arg=long`: after the run, boot the meter from its
/// journal for ever, for tools/sample-profile.py.
static PROFILE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// (Its own frame: the long run's stack figures stay the run's.)
#[inline(never)]
fn profile_boot(fa: &mut Flash) -> Res<()> {
    hprintln!("PROFILE START");
    loop {
        let m = boot(fa, b"m4/meter-long")?;
        drop(m);
    }
}

/// Boots a copy of `se`'s store (its log `log` bytes): what the SE's own
/// reboot would cost now, measured without rebooting it.
#[inline(never)]
fn snapshot_boot(se: &Se<'_>, fc: &mut Flash, log: usize) -> Res<(Sample, usize)> {
    fc.copy_from(se.storage());
    let (r, s) = m(|| boot(fc, b"m4/meter-long-snapshot"));
    let copy = r?;
    check(
        copy.state().payments_since_sync == se.state().payments_since_sync,
        "the copy boots into the same state",
    )?;
    drop(copy);
    Ok((s, log))
}

/// Boot after the long run taken apart (bench firmware only): the
/// journal's recovery (slot checks, the base read), the base decoded, the
/// log scanned and its deltas applied, the log scanned alone, and each
/// table of the state decoded on its own.
#[cfg(feature = "bench")]
#[inline(never)]
fn boot_parts(n: &str, fa: &mut Flash) -> Res<()> {
    use tally_se::state::{State, apply_delta};
    use tally_se::storage::StorageError;
    let (r, s) = m(|| Journal::open(&mut *fa));
    let (mut j, payload) = ctx(r, "journal open")?;
    let payload = payload.ok_or("no state")?;
    report(n, "boot_part_open", &s, &[("bytes", payload.len() as u64)]);
    let (r, s) = m(|| State::from_stored(&payload));
    let mut st = ctx(r, "base decode")?;
    report(n, "boot_part_decode", &s, &[]);
    drop(payload);
    let sequence = j.sequence().unwrap_or(0);
    let mut index = 0u32;
    let (r, s) = m(|| {
        j.replay(&mut |b| {
            apply_delta(&mut st, b, sequence, index).map_err(|_| StorageError::Corrupt)?;
            index += 1;
            Ok(())
        })
    });
    let records = ctx(r, "replay")?;
    report(
        n,
        "boot_part_replay",
        &s,
        &[("records", u64::from(records))],
    );
    drop(j);
    let (mut j, _) = ctx(Journal::open(&mut *fa), "journal open")?;
    let (r, s) = m(|| j.replay(&mut |_| Ok(())));
    ctx(r, "scan")?;
    report(n, "boot_part_scan", &s, &[]);
    drop(j);
    // Each table alone: a state holding only that table, decoded as boot
    // decodes its base (less an empty state's decoding, about 2 000).
    fn table(n: &str, name: &str, st: &State, set: &dyn Fn(&mut State, &State)) -> Res<()> {
        let mut one = State::default();
        set(&mut one, st);
        let b = one.to_cbor();
        drop(one);
        let (r, s) = m(|| State::from_stored(&b));
        ctx(r, "table decode")?;
        let op = format!("decode_table_{name}");
        report(n, &op, &s, &[("bytes", b.len() as u64)]);
        Ok(())
    }
    // The copy routines (mem.rs): 16 KB aligned and not, and 512 digests
    // from odd addresses, as decoding copies them.
    {
        let src = alloc::vec![7u8; 16 * 1024 + 8];
        let mut dst = alloc::vec![0u8; 16 * 1024 + 8];
        let (_, s) = m(|| {
            dst[..16384].copy_from_slice(core::hint::black_box(&src[..16384]));
            Ok::<(), ()>(())
        });
        report(n, "memcpy_aligned_16k", &s, &[]);
        let (_, s) = m(|| {
            dst[..16384].copy_from_slice(core::hint::black_box(&src[1..16385]));
            Ok::<(), ()>(())
        });
        report(n, "memcpy_misaligned_16k", &s, &[]);
        let (_, s) = m(|| {
            for i in 0..512 {
                dst[i * 32..i * 32 + 32]
                    .copy_from_slice(core::hint::black_box(&src[i * 32 + 1..i * 32 + 33]));
            }
            Ok::<(), ()>(())
        });
        report(n, "memcpy_512x32_misaligned", &s, &[]);
    }
    table(n, "none", &st, &|_, _| {})?;
    table(n, "keys", &st, &|o, s| o.keys = s.keys.clone())?;
    table(n, "tokens", &st, &|o, s| o.tokens = s.tokens.clone())?;
    table(n, "records", &st, &|o, s| o.records = s.records.clone())?;
    table(n, "imported", &st, &|o, s| o.imported = s.imported.clone())?;
    table(n, "paid", &st, &|o, s| o.paid = s.paid.clone())?;
    table(n, "acked", &st, &|o, s| o.acked = s.acked.clone())?;
    table(n, "trust", &st, &|o, s| {
        o.personal = s.personal.clone();
        o.policy = s.policy.clone();
        o.revocations = s.revocations.clone();
    })?;
    Ok(())
}
#[cfg(not(feature = "bench"))]
fn boot_parts(_: &str, _: &mut Flash) -> Res<()> {
    Ok(())
}

/// Where boot's time goes: a state of the base's size decoded as boot
/// decodes its base (the rest is the journal's checks and the log).
/// (Its own frame: the long run's stack figures stay the run's.)
#[inline(never)]
fn decode_long(n: &str, state: &tally_se::state::State) -> Res<()> {
    let bytes = state.to_cbor();
    let (st, s) = m(|| tally_se::state::State::from_stored(&bytes));
    ctx(st, "long-run state decode")?;
    report(n, "decode_long", &s, &[("bytes", bytes.len() as u64)]);
    Ok(())
}

/// The semihosting command line, as bytes (no UTF-8 decoding: the modes
/// are ASCII words).
fn cmdline() -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    let r = unsafe {
        cortex_m_semihosting::syscall1(
            cortex_m_semihosting::nr::GET_CMDLINE,
            block.as_mut_ptr() as usize,
        )
    };
    if r != 0 {
        return Vec::new();
    }
    let len = unsafe { core::ptr::read_volatile(&block[1]) }.min(buf.len());
    buf[..len].to_vec()
}

/// Whether the command line holds the word `mode`.
fn has_arg(args: &[u8], mode: &[u8]) -> bool {
    args.split(|b| b.is_ascii_whitespace()).any(|a| a == mode)
}

/// Ticks of the stream scenario: a short stream in the smoke run, the
/// issue's 10,000 in the benchmark.
const STREAM_TICKS_SMOKE: u32 = 64;
const STREAM_TICKS_BENCH: u32 = 10_000;

/// A payment stream (decision 0020) from the meter to the station, both
/// on this M4: the OPEN payment (the station's stream request, the
/// meter's PAY locking `ticks` units, the station's RECEIVE keeping the
/// stream, the meter's ACK), `ticks` ticks (the meter's RELEASE,
/// then the station's ACCEPT of the element, each with its durable
/// journal record), then both CLOSE. Per tick: instructions of each side
/// (average and worst), heap and stack peaks, flash bytes written on
/// each side (worst, and average including the log compactions).
// Not inlined, as `m2m_long`.
#[inline(never)]
fn stream_scenario(fx: &SuiteFx, fa: &mut Flash, fb: &mut Flash, ticks: u32) -> Res<()> {
    let n = fx.name;
    provision(fa, &ED_STREAM_METER[..])?;
    provision(fb, fx.station)?;
    let mut meter = boot(fa, b"m4/stream-meter")?;
    let mut station = boot(fb, b"m4/stream-station")?;
    // The OPEN payment, both SEs (request, PAY, RECEIVE, ACK) in one
    // figure.
    let (r, s_open) =
        m(|| tally_wallet::stream::open_stream(&mut meter, &mut station, Amount(1), ticks));
    let id = ctx(r, "stream OPEN")?;
    report(
        n,
        "stream_open",
        &s_open,
        &[("ticks_max", u64::from(ticks))],
    );
    let anchor = ctx(
        station.stream_anchor(&id).ok_or("no stream"),
        "the station's stream",
    )?;
    let (mut rel_sum, mut rel_max, mut acc_sum, mut acc_max) = (0u64, 0u64, 0u64, 0u64);
    // Worst ticks that wrote only their log record (no compaction).
    let (mut rel_rec_max, mut acc_rec_max) = (0u64, 0u64);
    let (mut heap, mut stack) = (0usize, 0usize);
    let (mut fl_max, w_start) = ([0usize; 2], flash::written());
    for k in 1..=ticks {
        let w0 = flash::written();
        let (r, s_rel) = m(|| meter.release_tick(&id, k));
        let element = ctx(r, "meter STREAM RELEASE")?;
        let (r, s_acc) = m(|| station.accept_tick(&id, k, element));
        let streamed = ctx(r, "station STREAM ACCEPT")?;
        check(streamed == Amount(u64::from(k)), "one unit per tick")?;
        let w1 = flash::written();
        let (ir, ia) = (instr(s_rel.ticks), instr(s_acc.ticks));
        rel_sum += ir;
        acc_sum += ia;
        rel_max = rel_max.max(ir);
        acc_max = acc_max.max(ia);
        heap = heap.max(s_rel.heap_peak).max(s_acc.heap_peak);
        stack = stack.max(s_rel.stack_total).max(s_acc.stack_total);
        for d in 0..2 {
            fl_max[d] = fl_max[d].max(w1[d] - w0[d]);
        }
        // A log record is at most 45 bytes; a compaction writes the state.
        if w1[0] - w0[0] <= 64 {
            rel_rec_max = rel_rec_max.max(ir);
        }
        if w1[1] - w0[1] <= 64 {
            acc_rec_max = acc_rec_max.max(ia);
        }
        if k == 1 || k == ticks || k % 1000 == 0 {
            Line::new("STREAMTICK suite=")
                .s(n)
                .kv("tick", u64::from(k))
                .kv("release", ir)
                .kv("accept", ia)
                .kv("heap_peak", s_rel.heap_peak.max(s_acc.heap_peak) as u64)
                .kv("stack", s_rel.stack_total.max(s_acc.stack_total) as u64)
                .kv("meter_flash", (w1[0] - w0[0]) as u64)
                .kv("station_flash", (w1[1] - w0[1]) as u64)
                .print();
        }
    }
    let w_end = flash::written();
    let t = u64::from(ticks);
    Line::new("OP suite=")
        .s(n)
        .s(" op=stream_tick")
        .kv("ticks", t)
        .kv("instr", (rel_sum + acc_sum) / t)
        .kv("release_avg", rel_sum / t)
        .kv("release_max", rel_max)
        .kv("accept_avg", acc_sum / t)
        .kv("accept_max", acc_max)
        .kv("release_max_record", rel_rec_max)
        .kv("accept_max_record", acc_rec_max)
        .kv("heap_peak", heap as u64)
        .kv("stack_total", stack as u64)
        .kv("meter_flash_max", fl_max[0] as u64)
        .kv("station_flash_max", fl_max[1] as u64)
        .kv(
            "meter_flash_avg",
            ((w_end[0] - w_start[0]) / ticks as usize) as u64,
        )
        .kv(
            "station_flash_avg",
            ((w_end[1] - w_start[1]) / ticks as usize) as u64,
        )
        .print();
    let (r, s_c) = m(|| station.close_stream_in(&id));
    let claim = ctx(r, "station STREAM CLOSE")?;
    report(n, "stream_close_payee", &s_c, &[]);
    let (r, s_c) = m(|| meter.close_stream_out(&id));
    let released = ctx(r, "meter STREAM CLOSE")?;
    report(n, "stream_close_payer", &s_c, &[]);
    check(
        claim.ticks == ticks && released == ticks,
        "every tick released and claimed",
    )?;
    check(
        tally_core::stream::reaches_anchor(&claim.element, claim.ticks, ticks, &anchor),
        "the claim walks to the anchor",
    )?;
    // The benchmark's 10,000-tick stream: both states go back to the host,
    // which renews them (the station's claim verified as settlement does,
    // its element walked to the anchor; issue 13 item 4).
    #[cfg(feature = "bench")]
    if ticks == STREAM_TICKS_BENCH {
        for (who, se) in [("stream-meter", &meter), ("stream-station", &station)] {
            print_state(n, who, &se.state().to_cbor());
        }
    }
    Ok(())
}

/// A `STATE` line: the SE's state in hex, for the host to renew.
#[inline(never)]
fn print_state(n: &str, who: &str, bytes: &[u8]) {
    let mut line = String::with_capacity(bytes.len() * 2 + 64);
    let _ = write!(line, "STATE suite={n} device={who} hex=");
    for b in bytes {
        let _ = write!(line, "{b:02x}");
    }
    hprintln!("{}", line);
}

/// A confidential payment (issue 12, decisions 0017 and 0027), one device
/// powered at a time: the payee SE's CREATE REQUEST, its RECEIVE of the
/// one-hop confidential package the host made for that request by the
/// real host path (fixture `conf-pkg1.bin`: open its own output, check
/// the commitments balance and the range proof, then the transparent
/// checks), then the payer SE's PAY of the same payment (balanced
/// blindings, commit, prove the range of both outputs, seal the openings
/// on the SE), which must make the host's package byte for byte, and its
/// ACK of the payee's receipt. Then the same for a whole token (the
/// payer's Issue of 100, decision 0031): one output, no range proof to
/// make or to verify (`receive_whole`, `pay_whole`, `ack_whole`).
#[cfg(all(feature = "confidential", not(feature = "no-se-prover")))]
fn confidential_scenario(fa: &mut Flash, fb: &mut Flash, fc: &mut Flash) -> Res<()> {
    provision(fa, &CONF_PAYER[..])?;
    provision(fb, &CONF_PAYEE[..])?;
    let paid = confidential_payee(fb)?;
    // The benchmark's breakdown (not in the payment firmware, whose
    // figures and flash are the product's).
    #[cfg(feature = "bench")]
    confidential_prove_alone()?;
    #[cfg(feature = "delegated-proving")]
    confidential_delegated(fa, fc, &paid[0].0)?;
    #[cfg(not(feature = "delegated-proving"))]
    let _ = fc;
    confidential_payer(fa, &paid)?;
    #[cfg(all(feature = "bench", feature = "ed25519-only"))]
    p256_personalization_refused(fb)?;
    Ok(())
}

/// An Ed25519-only device (the confidential device build, decision 0027)
/// is never personalised in P-256: the suite's code is unknown to the
/// build, refused with nothing written (a reboot finds the SE blank); in
/// Ed25519 the same SE is then personalised. Checked where it is built:
/// the benchmark firmware with `confidential,ed25519-only`, which
/// `firmware_smoke` runs.
#[cfg(all(feature = "confidential", feature = "bench", feature = "ed25519-only"))]
#[inline(never)]
fn p256_personalization_refused(flash: &mut Flash) -> Res<()> {
    flash.erase();
    let root = SecretKey::from_seed(Suite::Ed25519, &[7; 32])
        .ok_or("root key")?
        .public();
    let mut se = boot(flash, b"m4/blank")?;
    check(
        matches!(
            se.personalize(3, 1, Suite::EcdsaP256Sha256, root),
            Err(tally_se::SeError::Decode(
                tally_core::CodecError::UnknownCode
            ))
        ),
        "an Ed25519-only SE refuses a P-256 personalisation",
    )?;
    check(se.state().personal.is_none(), "nothing personalised")?;
    drop(se);
    let mut se = boot(flash, b"m4/blank")?;
    check(se.state().personal.is_none(), "nothing written")?;
    ctx(
        se.personalize(3, 1, Suite::Ed25519, root),
        "Ed25519 personalisation",
    )?;
    Line::new("CHECK ed25519_only_refuses_p256_personalization=pass").print();
    Ok(())
}

/// The trust store's range generators as the SEs build them (16-bit
/// ranges, the firmware's chunk sizes). Benchmark firmware only.
#[cfg(all(feature = "confidential", feature = "bench"))]
fn device_range_gens()
-> Result<tally_core::confidential::RangeGens, tally_core::confidential::ConfidentialError> {
    use tally_core::confidential::{
        RANGE_MSM_CHUNK, RANGE_OUTPUTS_MAX, RANGE_PROVE_MSM_CHUNK, RangeBits, RangeGens,
    };
    RangeGens::low_memory(
        RangeBits::Bits16,
        RANGE_OUTPUTS_MAX,
        RANGE_MSM_CHUNK,
        RANGE_PROVE_MSM_CHUNK,
    )
}

/// Where PAY's time goes: the range proof alone, in its own frame (no SE
/// booted). Benchmark firmware only.
#[cfg(all(feature = "confidential", feature = "bench"))]
#[inline(never)]
fn confidential_prove_alone() -> Res<()> {
    let n = "conf";
    // Where PAY's time goes: the range proof alone (16 bits × 2 outputs,
    // the payment and the change, the trust store's generators), which a
    // phone or IoT gateway could make instead of the SE (decision 0017).
    let (r, s) = m(|| {
        use tally_core::confidential::{Opening, RangeProof};
        let gens = device_range_gens()?;
        let mut rng = TestEntropy::new(b"m4/conf-prove");
        let openings = [
            Opening::random(Amount(PAYMENT), &mut rng),
            Opening::random(Amount(PAYER_LOAD - PAYMENT), &mut rng),
        ];
        let context = tagged_hash(b"m4/conf-prove", &[]);
        RangeProof::prove(&gens, &context, &openings, &mut rng).map(|p| (p, openings, context))
    });
    let (proof, openings, context) = ctx(r, "range proof alone")?;
    let commitments = openings.map(|o| o.commit());
    check(proof.outputs() == 2, "the proof covers both outputs")?;
    report(n, "range_prove_16x2", &s, &[]);
    // And its verification alone, as the payee's RECEIVE runs it
    // (generators decompressed 64 at a time, the bucket method).
    let (r, s) = m(|| proof.verify(&device_range_gens()?, &context, &commitments));
    ctx(r, "range proof verification alone")?;
    report(n, "range_verify_16x2", &s, &[]);
    // Decision 0033's option, measured and not adopted: the change alone
    // under a range proof (16 bits × 1 output), the payee's output left
    // to its payee's check of its opening.
    let (r, s) = m(|| {
        use tally_core::confidential::{Opening, RangeProof};
        let gens = device_range_gens()?;
        let mut rng = TestEntropy::new(b"m4/conf-prove-1");
        let openings = [Opening::random(Amount(PAYER_LOAD - PAYMENT), &mut rng)];
        RangeProof::prove(&gens, &context, &openings, &mut rng).map(|p| (p, openings))
    });
    let (proof1, openings1) = ctx(r, "range proof 16 x 1")?;
    check(proof1.outputs() == 1, "the proof covers one output")?;
    report(
        n,
        "range_prove_16x1",
        &s,
        &[("bytes", proof1.to_cbor().len() as u64)],
    );
    let commitments1 = openings1.map(|o| o.commit());
    let (r, s) = m(|| proof1.verify(&device_range_gens()?, &context, &commitments1));
    ctx(r, "range proof 16 x 1 verification")?;
    report(n, "range_verify_16x1", &s, &[]);
    // A payee's terminal times the payer's PAY. The proof's running time
    // must not depend on the amounts it hides (THREATS T76): the same
    // randomness, amounts with no bit set and with every bit set. The
    // smoke test compares the two counts.
    for (op, value) in [
        ("range_prove_16x2_bits_clear", 0u64),
        ("range_prove_16x2_bits_set", 0xFFFF),
    ] {
        let (r, s) = m(|| {
            use tally_core::confidential::{Opening, RangeProof};
            let gens = device_range_gens()?;
            let mut rng = TestEntropy::new(b"m4/conf-prove-timing");
            let openings = [
                Opening::random(Amount(value), &mut rng),
                Opening::random(Amount(value), &mut rng),
            ];
            RangeProof::prove(&gens, &context, &openings, &mut rng)
        });
        ctx(r, "range proof of extreme amounts")?;
        report(n, op, &s, &[]);
    }
    Ok(())
}

/// The first payment (250 from the Issue of 1 000, with change) on a
/// copy of the payer's store, proved by the phone's application processor
/// (decision 0032): the SE's PAY P1 1 (the proving task: every check of
/// PAY, the openings derived, nothing changed) and PAY P1 2 with the
/// application processor's proof (`conf-proof1.bin`, made by the host for
/// this task: checked, then sealed, signed and journalled as PAY). The
/// payment itself is then made by PAY on the original store.
#[cfg(all(feature = "delegated-proving", not(feature = "no-se-prover")))]
#[inline(never)]
fn confidential_delegated(fa: &mut Flash, fc: &mut Flash, req: &[u8]) -> Res<()> {
    use tally_core::confidential::RangeProof;
    let n = "conf";
    let request = ctx(tally_core::Request::from_cbor(req), "request")?;
    let proof = ctx(RangeProof::from_cbor(&CONF_PROOF1[..]), "proof fixture")?;
    fc.copy_from(fa);
    let mut payer = boot(fc, b"m4/conf-payer-delegated")?;
    let (r, s) = m(|| payer.proving_task(&request));
    let task = ctx(r, "pay_task")?;
    report(n, "pay_task", &s, &[("bytes", task.to_cbor().len() as u64)]);
    check(
        task.openings.len() == 2 && task.openings[0].value() == Amount(PAYMENT),
        "the task opens the payment and the change",
    )?;
    let (r, s) = m(|| payer.pay_proved(&request, Some(proof)));
    let package = ctx(r, "pay_proved")?;
    report(n, "pay_proved", &s, &[("bytes", package.len() as u64)]);
    check(
        payer.state().balance() == Amount(PAYER_LOAD + CONF_WHOLE - PAYMENT),
        "the delegated payment keeps the change",
    )?;
    drop(payer);
    #[cfg(feature = "bench")]
    delegated_proof_refused(fa, &request)?;
    #[cfg(not(feature = "bench"))]
    let _ = fa;
    Ok(())
}

/// A proof with one byte changed, before the payment (the original
/// store): refused, nothing changed. Benchmark firmware only (a test, not
/// the product's flash).
#[cfg(all(feature = "delegated-proving", feature = "bench", not(feature = "no-se-prover")))]
#[inline(never)]
fn delegated_proof_refused(fa: &mut Flash, request: &tally_core::Request) -> Res<()> {
    use tally_core::confidential::RangeProof;
    let mut bad = CONF_PROOF1.to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let bad = ctx(RangeProof::from_cbor(&bad), "corrupted proof")?;
    let mut fresh = boot(fa, b"m4/conf-payer-delegated-2")?;
    let before = fresh.state().clone();
    check(
        fresh.pay_proved(request, Some(bad)).is_err() && *fresh.state() == before,
        "a corrupted proof is refused",
    )?;
    Line::new("CHECK delegated_proof_refused=pass").print();
    Ok(())
}

/// The payee's half (its own frame: the payer's SE is not on the stack
/// under its RECEIVE, as on a device where only the payee is powered).
#[cfg(all(feature = "confidential", not(feature = "no-se-prover")))]
#[inline(never)]
fn confidential_payee(fb: &mut Flash) -> Res<[(Vec<u8>, Vec<u8>); 2]> {
    let n = "conf";
    let (payee, s) = m(|| boot(fb, b"m4/conf-payee"));
    let mut payee = payee?;
    report(n, "boot_payee", &s, &[]);
    // The payment with change, then the whole token (one output, no
    // range proof: decision 0031). One loop: one copy of the code in
    // flash.
    let steps = [
        (PAYMENT, &CONF_PKG1[..], "create_request", "receive_1"),
        (CONF_WHOLE, &CONF_PKG2[..], "create_request_whole", "receive_whole"),
    ];
    let mut out: [(Vec<u8>, Vec<u8>); 2] = Default::default();
    let mut balance = 0;
    for (i, (amount, pkg, op_request, op_receive)) in steps.into_iter().enumerate() {
        let (r, s) = m(|| PayeeSession::start(&mut payee, Amount(amount)));
        let (session, req) = ctx(r, op_request)?;
        report(n, op_request, &s, &[("bytes", req.len() as u64)]);
        check(
            tagged_hash(b"m4/expect", &[&req]).0[..] == CONF_EXPECT[64 * i..64 * i + 32],
            "the confidential request is the one the host predicted",
        )?;
        // What RECEIVE spends on the constant generators alone (benchmark
        // firmware only).
        #[cfg(feature = "bench")]
        if i == 0 {
            confidential_decompress()?;
        }
        let (r, s) = m(|| session.on_package(&mut payee, pkg));
        let received = ctx(r.map_err(|(_, e)| e), op_receive)?;
        report(n, op_receive, &s, &[("bytes", pkg.len() as u64)]);
        balance += amount;
        check(
            payee.state().balance() == Amount(balance),
            "the confidential payee is paid",
        )?;
        out[i] = (req, received.receipt);
    }
    Ok(out)
}

/// Decompressing the 2 × 16 × 2 constant generators of a 16-bit proof
/// over two outputs, as RECEIVE does once per verification (decision
/// 0027). Benchmark firmware only.
#[cfg(all(feature = "confidential", feature = "bench"))]
#[inline(never)]
fn confidential_decompress() -> Res<()> {
    let n = "conf";
    let (ok, s) = m(|| {
        use curve25519_dalek::ristretto::CompressedRistretto;
        use tally_core::confidential_gens::{G, H};
        let mut ok = 0u64;
        for table in [&G, &H] {
            for party in &table[..2] {
                for p in &party[..16] {
                    ok += u64::from(CompressedRistretto(*p).decompress().is_some());
                }
            }
        }
        ok
    });
    check(ok == 64, "the constant generators decompress")?;
    report(n, "generators_decompress", &s, &[("points", ok)]);
    Ok(())
}

/// The payer's half: PAY (proving on the SE) and ACK, for the payment
/// with change and for the whole token.
#[cfg(all(feature = "confidential", not(feature = "no-se-prover")))]
#[inline(never)]
fn confidential_payer(fa: &mut Flash, paid: &[(Vec<u8>, Vec<u8>); 2]) -> Res<()> {
    let n = "conf";
    let (payer, s) = m(|| boot(fa, b"m4/conf-payer"));
    let mut payer = payer?;
    report(n, "boot", &s, &[]);
    let steps = [("pay", "ack", PAYMENT), ("pay_whole", "ack_whole", CONF_WHOLE)];
    let mut balance = PAYER_LOAD + CONF_WHOLE;
    for (i, ((req, receipt), (op_pay, op_ack, amount))) in paid.iter().zip(steps).enumerate() {
        let (r, s) = m(|| PayerSession::start(&mut payer, req));
        let pay = ctx(r, op_pay)?;
        report(n, op_pay, &s, &[("bytes", pay.package().len() as u64)]);
        check(
            tagged_hash(b"m4/expect", &[pay.package()]).0[..] == CONF_EXPECT[64 * i + 32..64 * i + 64],
            "the SE's confidential package is the host's",
        )?;
        let (r, s) = m(|| pay.on_receipt(&mut payer, receipt));
        ctx(r.map_err(|(_, e)| e), op_ack)?;
        report(n, op_ack, &s, &[("bytes", receipt.len() as u64)]);
        balance -= amount;
        check(
            payer.state().balance() == Amount(balance),
            "the confidential payer keeps the change",
        )?;
    }
    check(
        payer.state().outgoing.iter().all(|o| o.acked),
        "the confidential payments are acknowledged",
    )
}

/// A phone's payment firmware whose SE makes no range proofs (feature
/// `no-se-prover`, decision 0032): the same two payments, exchanged live
/// between the two SEs (one powered at a time: each boots from its store
/// for each step). The payment with change is PAY P1 1 / P1 2 with the
/// application processor's proof (`conf-proof1.bin`, the host's, for this
/// very task); the whole token is PAY. Then a payment that needs a proof,
/// asked by PAY: refused (2036), nothing changed.
#[cfg(feature = "no-se-prover")]
fn confidential_scenario(fa: &mut Flash, fb: &mut Flash, _: &mut Flash) -> Res<()> {
    use tally_core::confidential::RangeProof;
    provision(fa, &CONF_PAYER[..])?;
    provision(fb, &CONF_PAYEE[..])?;
    let n = "conf";
    let steps = [
        (PAYMENT, "create_request", "pay_proved", "receive_1", "ack"),
        (CONF_WHOLE, "create_request_whole", "pay_whole", "receive_whole", "ack_whole"),
    ];
    for (i, (amount, op_request, op_pay, op_receive, op_ack)) in steps.into_iter().enumerate() {
        let mut payee = boot(fb, b"m4/conf-payee")?;
        let (r, s) = m(|| payee.create_request(Amount(amount)));
        let request = ctx(r, op_request)?;
        report(n, op_request, &s, &[]);
        drop(payee);
        let mut payer = boot(fa, b"m4/conf-payer")?;
        let package = if i == 0 {
            let (r, s) = m(|| payer.proving_task(&request));
            let task = ctx(r, "pay_task")?;
            report(n, "pay_task", &s, &[("bytes", task.to_cbor().len() as u64)]);
            let proof = ctx(RangeProof::from_cbor(&CONF_PROOF1[..]), "proof fixture")?;
            let (r, s) = m(|| payer.pay_proved(&request, Some(proof)));
            let package = ctx(r, op_pay)?;
            report(n, op_pay, &s, &[("bytes", package.len() as u64)]);
            package
        } else {
            let (r, s) = m(|| payer.pay(&request));
            let package = ctx(r, op_pay)?;
            report(n, op_pay, &s, &[("bytes", package.len() as u64)]);
            package
        };
        drop(payer);
        let mut payee = boot(fb, b"m4/conf-payee")?;
        let (r, s) = m(|| payee.receive(&package));
        let receipt = ctx(r, op_receive)?;
        report(n, op_receive, &s, &[("bytes", package.len() as u64)]);
        drop(payee);
        let mut payer = boot(fa, b"m4/conf-payer")?;
        let (r, s) = m(|| payer.ack(&receipt));
        ctx(r, op_ack)?;
        report(n, op_ack, &s, &[]);
    }
    let mut payee = boot(fb, b"m4/conf-payee")?;
    check(
        payee.state().balance() == Amount(PAYMENT + CONF_WHOLE),
        "the phone's payee is paid",
    )?;
    // A payment with change asked by PAY: this SE has no prover.
    let request = ctx(payee.create_request(Amount(50)), "request of 50")?;
    drop(payee);
    let mut payer = boot(fa, b"m4/conf-payer")?;
    let before = payer.state().balance();
    check(
        matches!(payer.pay(&request), Err(tally_se::SeError::NoProver))
            && payer.state().balance() == before
            && before == Amount(PAYER_LOAD - PAYMENT),
        "a payment with change is refused by PAY on an SE without a prover",
    )?;
    Line::new("CHECK no_se_prover_refuses_pay_with_change=pass").print();
    Ok(())
}

#[cfg(not(feature = "confidential"))]
fn confidential_scenario(_: &mut Flash, _: &mut Flash, _: &mut Flash) -> Res<()> {
    Err(String::from("built without the confidential feature"))
}

// With `confidential`, not inlined: its frame (both suites' scenarios)
// would otherwise be `main`'s, above the confidential scenario's every
// measured stack depth. (The transparent firmware keeps its layout.)
#[cfg_attr(feature = "confidential", inline(never))]
fn run(full: bool, fa: &mut Flash, fb: &mut Flash, fc: &mut Flash) -> Res<()> {
    core_scenario(&ED25519, fa, fb, full)?;
    if !full {
        return stream_scenario(&ED25519, fa, fb, STREAM_TICKS_SMOKE);
    }
    stream_scenario(&ED25519, fa, fb, STREAM_TICKS_BENCH)?;
    // `ed25519-only` (the confidential device build) has no P-256.
    #[cfg(not(feature = "ed25519-only"))]
    core_scenario(&P256, fa, fb, true)?;
    #[cfg(not(feature = "ed25519-only"))]
    let suites = [&ED25519, &P256];
    #[cfg(feature = "ed25519-only")]
    let suites = [&ED25519];
    for fx in suites {
        m2m(fx, "unit", fx.meter, fa, fb)?;
        m2m(fx, "chain", fx.meter_chain, fa, fb)?;
    }
    m2m_long(&ED25519, fa, fb, fc)?;
    Ok(())
}

#[entry]
fn main() -> ! {
    let cp = cortex_m::Peripherals::take().unwrap_or_else(|| fail("peripherals"));
    // SAFETY: the only reference ever made to PSRAM, split into the heap
    // arena and two stores.
    let psram: &'static mut [u8] = unsafe {
        let p = core::ptr::addr_of_mut!(PSRAM) as *mut u8;
        core::ptr::write_bytes(p, 0, HEAP_SIZE);
        core::slice::from_raw_parts_mut(p, HEAP_SIZE + 3 * FLASH_SIZE)
    };
    let (arena, stores) = psram.split_at_mut(HEAP_SIZE);
    unsafe { HEAP.init(arena.as_mut_ptr() as usize, arena.len()) };
    let (sa, rest) = stores.split_at_mut(FLASH_SIZE);
    let (sb, sc) = rest.split_at_mut(FLASH_SIZE);
    let mut fa = Flash::new(0, sa);
    let mut fb = Flash::new(1, sb);
    // A copy of a store, booted by the long run's snapshot (the meter at
    // its fullest log) without disturbing the running SE.
    let mut fc = Flash::new(2, sc);

    measure::start_systick(cp.SYST);
    let (ipt_milli, overhead) = measure::calibrate();
    IPT_MILLI.store(ipt_milli as u32, Relaxed);
    OVERHEAD.store(overhead as u32, Relaxed);
    // The copy routines every measurement runs on (mem.rs), checked first
    // (the benchmark firmware: `firmware_smoke` runs it too; the payment
    // firmwares keep their flash).
    #[cfg(feature = "bench")]
    if let Err(routine) = mem::self_test() {
        fail(&format!(
            "{routine} differs from the byte-at-a-time reference"
        ));
    }
    let args = cmdline();
    let full = cfg!(feature = "bench") && !has_arg(&args, b"smoke");
    Line::new("CALIBRATION")
        .kv("instructions_per_tick_milli", ipt_milli)
        .kv("overhead_ticks", overhead)
        .s(" mode=")
        .s(if full { "bench" } else { "smoke" })
        .print();
    // `stream`: the 10,000-tick stream alone (docs/PERFORMANCE.md).
    let only_stream = has_arg(&args, b"stream");
    // `long`: the 1,000-payment run alone (boot after it, taken apart).
    let only_long = full && has_arg(&args, b"long");
    PROFILE.store(has_arg(&args, b"profile"), Relaxed);
    // A confidential device's payment firmware (`confidential` without
    // `bench`) carries its own scenario only, as the transparent payment
    // firmware carries its own: not the transparent scenarios' code and
    // fixtures, which it never runs (decision 0027, session 17).
    #[cfg(all(feature = "confidential", not(feature = "bench")))]
    let result = if has_arg(&args, b"confidential") {
        let _ = (only_stream, only_long);
        confidential_scenario(&mut fa, &mut fb, &mut fc)
    } else {
        Err(String::from(
            "this confidential payment firmware runs the `confidential` scenario only",
        ))
    };
    #[cfg(not(all(feature = "confidential", not(feature = "bench"))))]
    let result = if cfg!(feature = "confidential") && has_arg(&args, b"confidential") {
        confidential_scenario(&mut fa, &mut fb, &mut fc)
    } else if only_stream {
        stream_scenario(&ED25519, &mut fa, &mut fb, STREAM_TICKS_BENCH)
    } else if only_long {
        m2m_long(&ED25519, &mut fa, &mut fb, &mut fc)
    } else {
        run(full, &mut fa, &mut fb, &mut fc)
    };
    match result {
        Ok(()) => {
            Line::new("SUMMARY")
                .kv("stack_max", STACK_MAX.load(Relaxed) as u64)
                .kv("stack_painted", measure::stack_high_water() as u64)
                .kv("heap_peak_max", HEAP_MAX.load(Relaxed) as u64)
                .kv("heap_high_water", HEAP.high_water() as u64)
                .kv("allocs", HEAP.allocs() as u64)
                .print();
            Line::new("RESULT PASS").print();
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(e) => fail(&e),
    }
    loop {
        cortex_m::asm::bkpt();
    }
}

fn fail(msg: &str) -> ! {
    Line::new("RESULT FAIL ").s(msg).print();
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}

/// With `bench`, the panic's message and location. The payment firmware
/// says only that it panicked: reading the location keeps a `Location`
/// (file name, line, column) for every panic site in the firmware, about
/// 8 KB of flash (decision 0022), which a product would drop too (on a
/// nightly toolchain, `-Zlocation-detail=none`). The benchmark firmware
/// runs the same scenario in `smoke` mode and names the place.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if cfg!(feature = "bench") {
        hprintln!("RESULT FAIL panic: {}", info);
    } else {
        hprint!("RESULT FAIL panic\n");
    }
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}
