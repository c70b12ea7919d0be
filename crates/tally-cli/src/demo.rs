//! `tally demo offline`: the offline half of the story, end to end, with
//! real secure-element applets behind the APDU interface.

use std::io::{self, Write};
use std::time::Instant;

use tally_core::codec::Cbor;
use tally_core::crypto::Entropy;
use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::testkit::Scheme;
use tally_core::verify::{Expected, NoCache, verify_package_bytes};
use tally_core::{Amount, Package, Suite};
use tally_wallet::session::{PayeeSession, PayerSession};
use tally_wallet::testkit::{TestDevice, load};
use tally_wallet::{SeLink, WalletError, pay_offline};

struct Dev {
    name: &'static str,
    kind: &'static str,
    d: TestDevice,
    loaded: u64,
}

fn err(e: WalletError) -> io::Error {
    io::Error::other(e.to_string())
}

pub fn offline() -> io::Result<()> {
    let out = io::stdout();
    let mut o = out.lock();
    let started = Instant::now();
    writeln!(
        o,
        "Tally offline demo — every device runs the real SE applet behind ISO 7816-4 APDUs."
    )?;
    writeln!(
        o,
        "(Demo keys come from fixed seeds: never use them for real money.)\n"
    )?;

    let mut scheme = Scheme::new(Suite::Ed25519);
    writeln!(
        o,
        "1. The central bank certifies DCP 1 and signs the policy (currency {}).",
        scheme.policy.currency
    )?;
    let mk = |s: &Scheme,
              name: &'static str,
              kind: &'static str,
              class: u8,
              apdu: usize|
     -> io::Result<Dev> {
        Ok(Dev {
            name,
            kind,
            d: TestDevice::new(s, name.as_bytes(), class, apdu).map_err(err)?,
            loaded: 0,
        })
    };
    let mut devs = vec![
        mk(
            &scheme,
            "alice-card",
            "card (NFC, 255-byte APDUs)",
            CARD,
            255,
        )?,
        mk(&scheme, "bob-phone", "phone", PHONE, 4096)?,
        mk(&scheme, "carol-phone", "phone", PHONE, 4096)?,
        mk(&scheme, "meter", "IoT smart meter", IOT, 1024)?,
        mk(&scheme, "charger", "IoT charging station", IOT, 1024)?,
    ];
    writeln!(
        o,
        "2. {} devices personalised; each SE generated its own keys and got pseudonym certificates.",
        devs.len()
    )?;

    for (i, v) in [(0usize, 5_000u64), (3, 100)] {
        let class = devs[i].d.class;
        load(&mut devs[i].d.link, &mut scheme, class, v).map_err(err)?;
        devs[i].loaded += v;
        writeln!(o, "3. DCP loads {v} XTS into {}.", devs[i].name)?;
    }

    let pay = |devs: &mut Vec<Dev>,
               from: usize,
               to: usize,
               amount: u64,
               o: &mut dyn Write|
     -> io::Result<usize> {
        let (a, b) = pick(devs, from, to);
        let r = pay_offline(&mut a.d.link, &mut b.d.link, Amount(amount)).map_err(err)?;
        writeln!(
            o,
            "   {:>11} → {:<11} {:>5} XTS  package {:>4} bytes",
            a.name, b.name, amount, r.package_bytes
        )?;
        Ok(r.package_bytes)
    };
    writeln!(o, "4. Offline payments (no network anywhere):")?;
    pay(&mut devs, 0, 1, 1_200, &mut o)?; // card → phone: Bob's phone is the terminal
    pay(&mut devs, 1, 2, 700, &mut o)?; // phone → phone, Bob re-spends
    pay(&mut devs, 2, 0, 300, &mut o)?; // phone → card, Carol re-spends
    writeln!(
        o,
        "   alice-card now holds change 3800 + 300 received; paying 4000 merges both tokens:"
    )?;
    pay(&mut devs, 0, 1, 4_000, &mut o)?;
    pay(&mut devs, 1, 2, 4_500, &mut o)?;

    writeln!(
        o,
        "5. Machine to machine: the meter pays the charger 1 XTS per tick for 20 ticks."
    )?;
    let t = Instant::now();
    for _ in 0..20 {
        let (a, b) = pick(&mut devs, 3, 4);
        pay_offline(&mut a.d.link, &mut b.d.link, Amount(1)).map_err(err)?;
    }
    writeln!(
        o,
        "   20 micropayments in {:.1} ms (host CPU, full verification each).",
        t.elapsed().as_secs_f64() * 1e3
    )?;

    writeln!(
        o,
        "6. Interrupted payment: Carol pays Bob 50, Bob's receipt is lost; Carol resends."
    )?;
    {
        let (carol, bob) = pick(&mut devs, 2, 1);
        let (payee, req) = PayeeSession::start(&mut bob.d.link, Amount(50)).map_err(err)?;
        let payer = PayerSession::start(&mut carol.d.link, &req).map_err(err)?;
        let first = payee
            .clone()
            .on_package(&mut bob.d.link, payer.package())
            .map_err(|(_, e)| err(e))?;
        // … the receipt never reaches Bob. Bob's SE still has the package:
        let again = payer.resend(&mut carol.d.link).map_err(err)?;
        let second = payee
            .on_package(&mut bob.d.link, &again)
            .map_err(|(_, e)| err(e))?;
        assert_eq!(first.receipt, second.receipt);
        payer
            .on_receipt(&mut carol.d.link, &second.receipt)
            .map_err(|(_, e)| err(e))?;
        writeln!(
            o,
            "   same package, same receipt: Bob credited once, Carol's payment acknowledged."
        )?;
    }

    writeln!(
        o,
        "7. A forged package: Carol's package to Bob with one signature bit flipped."
    )?;
    {
        let (carol, bob) = pick(&mut devs, 2, 1);
        let before = bob.d.applet().state().clone();
        let (_payee, req) = PayeeSession::start(&mut bob.d.link, Amount(10)).map_err(err)?;
        let payer = PayerSession::start(&mut carol.d.link, &req).map_err(err)?;
        let mut pkg =
            Package::from_cbor(payer.package()).map_err(|e| io::Error::other(e.to_string()))?;
        let mut sig = *pkg.transfer.signatures[0].bytes();
        sig[5] ^= 1;
        pkg.transfer.signatures[0] =
            tally_core::Signature::new(pkg.transfer.signatures[0].suite(), sig);
        let verdict = bob.d.link.receive(&pkg.to_cbor());
        writeln!(
            o,
            "   Bob's SE: {}",
            match &verdict {
                Err(e) => e.to_string(),
                Ok(_) => "ACCEPTED (bug!)".into(),
            }
        )?;
        let after = bob.d.applet().state();
        writeln!(
            o,
            "   Bob's tokens unchanged: {}",
            before.tokens == after.tokens
        )?;
        // Carol's SE already spent its inputs for that package: the genuine
        // package is still deliverable.
        let ok = bob.d.link.receive(payer.package()).map_err(err)?;
        payer
            .on_receipt(&mut carol.d.link, &ok.to_cbor())
            .map_err(|(_, e)| err(e))?;
        writeln!(
            o,
            "   the genuine package from Carol's log is then accepted."
        )?;
    }

    writeln!(o, "8. Verification cost of the last hop (host CPU):")?;
    {
        let (carol, bob) = pick(&mut devs, 2, 1);
        let req = bob.d.link.create_request(Amount(100)).map_err(err)?;
        let pkg = carol.d.link.pay(&req).map_err(err)?;
        let t = Instant::now();
        let v = verify_package_bytes(
            &pkg,
            &Expected {
                payee: req.payee.key,
                amount: req.amount,
                nonce: req.nonce,
                stream: None,
            },
            &scheme.trust(),
            scheme.params(32),
            &mut NoCache,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        writeln!(
            o,
            "   {} bytes, {} ancestry records, {} signature checks, verified in {:.0} µs",
            pkg.len(),
            v.ancestry_ids().len(),
            v.signature_checks(),
            t.elapsed().as_secs_f64() * 1e6
        )?;
        let receipt = bob.d.link.receive(&pkg).map_err(err)?;
        carol.d.link.ack(&receipt).map_err(err)?;
    }

    writeln!(o, "\nSummary")?;
    writeln!(
        o,
        "{:<12} {:<28} {:>8} {:>7} {:>8} {:>8}",
        "device", "kind", "balance", "tokens", "counter", "unacked"
    )?;
    let mut total = 0u64;
    let mut loaded = 0u64;
    for d in devs.iter_mut() {
        let s = d.d.link.status().map_err(err)?;
        total += s.balance.0;
        loaded += d.loaded;
        writeln!(
            o,
            "{:<12} {:<28} {:>8} {:>7} {:>8} {:>8}",
            d.name, d.kind, s.balance.0, s.tokens, s.counter, s.unacked
        )?;
    }
    writeln!(o, "{:<12} {:<28} {:>8}", "total", "", total)?;
    writeln!(
        o,
        "loaded {loaded} XTS, held {total} XTS: value conserved = {}",
        loaded == total
    )?;
    writeln!(o, "done in {:.2} s", started.elapsed().as_secs_f64())?;
    if loaded != total {
        return Err(io::Error::other("value not conserved"));
    }
    Ok(())
}

fn pick(v: &mut [Dev], a: usize, b: usize) -> (&mut Dev, &mut Dev) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

// ---------------------------------------------------------------------------
// `tally demo`: the whole story against a real node (HTTP) on a temporary
// SQLite file.

use tally_se::dispatch::Card as SeCard;
use tally_se::storage::MemStorage;
use tally_wallet::agent::Agent;
use tally_wallet::testkit::blank_card;

type MemLink = tally_wallet::ApduLink<SeCard<MemStorage, tally_core::testkit::TestEntropy>>;

struct Device {
    name: &'static str,
    kind: &'static str,
    link: MemLink,
    se_id: tally_core::Hash32,
}

/// What enrolment needs: the root (from the node's key file, not the
/// network), the manufacturer's key, and the DCP that hands out codes.
/// Step 13: a second scheme in confidential mode (its own node, database
/// and keys; the policy commits to amounts, decision 0019): a payment
/// chain, and what the payee saw next to what settlement saw.
fn confidential_scheme(o: &mut impl Write, dir: &std::path::Path) -> Result<(), crate::CliError> {
    let w = |e: io::Error| cli(e);
    let db = dir.join("confidential.sqlite");
    let bo = crate::node::open_backoffice_trusting(
        &crate::node::StoreUrls::new(&db.to_string_lossy(), "", ""),
        None,
        &crate::node::KeyOptions {
            dir: dir.join("confidential.keys"),
            pkcs11: None,
        },
        &[],
    )?;
    bo.use_confidential_amounts().map_err(cli)?;
    let token = "demo-operator-token".to_string();
    let (node, stop, server) = serve_background(bo.clone(), token.clone())?;
    let op = tally_api::OperatorClient::new(&node, &token);
    op.mint("demo-c-mint", 100_000).map_err(cli)?;
    op.deposit("erin", "demo-c-erin", 5_000).map_err(cli)?;
    op.deposit("frank", "demo-c-frank", 1_000).map_err(cli)?;
    op.deposit("grace", "demo-c-grace", 1_000).map_err(cli)?;
    let e = Enrolment::new(&bo)?;
    let mut erin = onboard(&node, &e, "erin-card", "card", CARD, "erin")?;
    let mut frank = onboard(&node, &e, "frank-phone", "phone", PHONE, "frank")?;
    let mut grace = onboard(&node, &e, "grace-meter", "IoT", IOT, "grace")?;
    erin.agent(&node, |a| a.load(1_000))?;
    // erin → frank 300 (change 700), frank → grace 120 (change 180), then
    // frank → grace 180 (the whole change token).
    let first = pay_keep_package(&mut erin.link, &mut frank.link, 300)?;
    // frank's phone makes the range proof on its processor; his SE
    // checks it before it signs (decision 0032).
    let second = pay_keep_package_with(&mut frank.link, &mut grace.link, 120, true)?;
    // frank pays grace his remaining 180: a whole token, one output and
    // no range proof to make (decision 0031).
    let third = pay_keep_package(&mut frank.link, &mut grace.link, 180)?;
    let whole = tally_core::Package::from_cbor(&third).map_err(|e| cli(format!("{e:?}")))?;
    let proofless = whole.transfer.outputs.len() == 1
        && whole
            .transfer
            .confidential
            .as_ref()
            .is_some_and(|c| c.range_proof.is_none());
    let path = dir.join("confidential.package");
    crate::device::write_atomic(&path, &second)?;
    let seen = crate::package::inspect(&path)?;
    let commitments = seen.lines().filter(|l| l.contains("commitment")).count();
    let amounts_shown = ["1000", "700", "300", "180"]
        .iter()
        .filter(|v| seen.contains(&format!(" {v} ")) || seen.contains(&format!(" {v}\n")))
        .count();
    let grace_holds = grace.link.status().map_err(cli)?.balance.0;
    writeln!(
        o,
        "13. Confidential mode (a second scheme: the policy commits to amounts). erin-card loads 1000 and pays frank-phone 300 (the card's SE proves); frank pays grace-meter 120 offline, the range proof made by his phone's processor and checked by his SE before it signed (decision 0032) ({} and {} bytes)."
        ,first.len(), second.len()
    )
    .map_err(w)?;
    writeln!(
        o,
        "    frank then pays grace his remaining 180 whole: one output, no range proof to make (decision 0031; {} bytes, its transfer {} of them)",
        third.len(),
        whole.transfer.to_cbor().len()
    )
    .map_err(w)?;
    writeln!(
        o,
        "    what the payee saw (tally package inspect of grace's package of 120): {commitments} commitment lines, {amounts_shown} of the amounts 1000 / 700 / 300 / 180 in the clear; grace's SE opened its own outputs: {grace_holds}"
    )
    .map_err(w)?;
    // Settlement opens every record's audit seal when the tokens come
    // back: grace renews (the whole chain settles), the payers sync.
    let renewed = grace.agent(&node, |a| a.renew())?;
    erin.agent(&node, |a| a.sync())?;
    frank.agent(&node, |a| a.sync())?;
    let inv = bo.invariant().map_err(cli)?;
    let held: u64 = [&mut erin, &mut frank, &mut grace]
        .into_iter()
        .map(|d| d.link.status().map(|s| s.balance.0).unwrap_or(0))
        .sum();
    bo.pump_mds();
    let ind = op.indicators().map_err(cli)?;
    let (payments, value) = (ind["payments"].clone(), ind["payment_value"].clone());
    writeln!(
        o,
        "    what settlement saw (every audit seal opened when grace renewed; the MDS fed from the openings): {payments} payments worth {value}, issued {}; grace renewed {renewed}; invariant holds: {}, offline float {} = what the SEs hold {held}",
        ind["issued"],
        inv.holds(),
        inv.offline_float
    )
    .map_err(w)?;
    let _ = stop.send(());
    let _ = server.join();
    if !inv.holds()
        || inv.offline_float != held as i64
        || amounts_shown != 0
        || !proofless
        || grace_holds != 300
        || value.as_u64() != Some(600)
    {
        return Err(cli(
            "the confidential scheme does not balance or shows amounts",
        ));
    }
    Ok(())
}

struct Enrolment<'a> {
    bo: &'a tally_dcp::Backoffice,
    root: tally_core::PublicKey,
    maker: tally_core::SecretKey,
}

impl<'a> Enrolment<'a> {
    /// A fresh manufacturer key, trusted by `bo`'s policy.
    fn new(bo: &'a tally_dcp::Backoffice) -> Result<Enrolment<'a>, crate::CliError> {
        let mut seed = [0u8; 32];
        crate::device::OsEntropy.fill(&mut seed);
        let maker = tally_core::SecretKey::from_seed(Suite::Ed25519, &seed)
            .ok_or_else(|| cli("maker key"))?;
        bo.trust_manufacturer(maker.public()).map_err(cli)?;
        Ok(Enrolment {
            bo,
            root: bo.root_key(),
            maker,
        })
    }
}

fn cli(e: impl std::fmt::Display) -> crate::CliError {
    crate::CliError::failed(e.to_string())
}

impl Device {
    fn agent<R>(
        &mut self,
        node: &str,
        f: impl FnOnce(&mut Agent<'_>) -> Result<R, tally_wallet::agent::AgentError>,
    ) -> Result<R, crate::CliError> {
        let mut b = tally_api::HttpBackend::new(node);
        let mut a = Agent {
            se: &mut self.link,
            backend: &mut b,
            se_id: self.se_id,
            pending: None,
        };
        f(&mut a).map_err(cli)
    }
}

fn onboard(
    node: &str,
    e: &Enrolment<'_>,
    name: &'static str,
    kind: &'static str,
    class: u8,
    account: &str,
) -> Result<Device, crate::CliError> {
    let apdu = if class == CARD { 255 } else { 4096 };
    let mut link =
        tally_wallet::ApduLink::select(blank_card(name.as_bytes()), apdu).map_err(cli)?;
    let cert = tally_wallet::agent::manufacture(&mut link, class, e.root, &e.maker, "demo-maker")
        .map_err(cli)?;
    if class != IOT {
        link.change_pin(None, DEMO_PIN.as_bytes()).map_err(cli)?;
    }
    // The account holder got this code from the DCP out of band.
    let code = e.bo.enrolment_code(account).map_err(cli)?;
    let mut b = tally_api::HttpBackend::new(node);
    let se_id = Agent::onboard(&mut link, &mut b, cert, account, &code)
        .map_err(cli)?
        .se_id;
    Ok(Device {
        name,
        kind,
        link,
        se_id,
    })
}

/// The cardholders' PIN in the demo.
const DEMO_PIN: &str = "2468";

/// One offline payment; returns the package (the demo's evidence).
fn pay_keep_package(
    payer: &mut MemLink,
    payee: &mut MemLink,
    amount: u64,
) -> Result<Vec<u8>, crate::CliError> {
    pay_keep_package_with(payer, payee, amount, false)
}

/// [`pay_keep_package`]; with `prove_here`, as a phone whose application
/// processor makes the range proof for its SE (decision 0032).
fn pay_keep_package_with(
    payer: &mut MemLink,
    payee: &mut MemLink,
    amount: u64,
    prove_here: bool,
) -> Result<Vec<u8>, crate::CliError> {
    let (payee_s, request) = PayeeSession::start(payee, Amount(amount)).map_err(cli)?;
    let payer_s = if prove_here {
        let mut rng = tally_core::testkit::TestEntropy::new(b"demo/frank-phone-processor");
        PayerSession::start_proving(payer, &request, &mut rng).map_err(cli)?
    } else {
        PayerSession::start(payer, &request).map_err(cli)?
    };
    let package = payer_s.package().to_vec();
    let received = payee_s
        .on_package(payee, &package)
        .map_err(|(_, e)| cli(e))?;
    payer_s
        .on_receipt(payer, &received.receipt)
        .map_err(|(_, e)| cli(e))?;
    Ok(package)
}

fn pick2(v: &mut [Device], a: usize, b: usize) -> (&mut Device, &mut Device) {
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// Serves `bo`'s API on 127.0.0.1 (any port) on a thread of its own until
/// the returned sender fires: (base URL, stop, thread).
fn serve_background(
    bo: std::sync::Arc<tally_dcp::Backoffice>,
    token: String,
) -> Result<
    (
        String,
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ),
    crate::CliError,
> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let l = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
            let cfg = tally_api::ApiConfig {
                operator_token: token,
                body_limit_bytes: 1 << 20,
                device_rate: tally_api::DeviceRate::default(),
            };
            if let Err(e) = tally_api::serve(bo, l, cfg, async {
                let _ = stop_rx.await;
            })
            .await
            {
                eprintln!("tally: demo server stopped: {e}");
            }
        });
    });
    let addr = rx.recv().map_err(cli)?.map_err(cli)?;
    Ok((format!("http://{addr}"), stop_tx, server))
}

pub fn full() -> Result<(), crate::CliError> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("tally-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| crate::CliError::io(&dir, e))?;
    let db = dir.join("node.sqlite");
    // The supervisors' 3-of-5 ceremony first: the node encrypts every
    // SE's identity to their joint key.
    let sup = dir.join("supervisors");
    let joint = crate::supervisor::steps::keygen(&sup, 3, 5)?;
    // DCP 2's issuing key (its own key directory), trusted by the
    // central bank beside DCP 1.
    let dcp2_key = tally_dcp::KeyDir::open_or_create(&dir.join("dcp2.keys"))
        .and_then(|k| k.signer(tally_dcp::keys::DCP, &mut tally_dcp::OsEntropy))
        .map_err(cli)?;
    let bo = crate::node::open_backoffice_trusting(
        &crate::node::StoreUrls::new(&db.to_string_lossy(), "", ""),
        Some(&joint),
        &crate::node::KeyOptions {
            dir: dir.join("node.keys"),
            pkcs11: None,
        },
        &[(2, dcp2_key.public_key())],
    )?;
    let token = "demo-operator-token".to_string();
    let (node, stop_tx, server) = serve_background(bo.clone(), token.clone())?;
    // DCP 2: its own database, reaching the central bank of the node.
    let bank: std::sync::Arc<dyn tally_dcp::Central> = bo
        .central_bank()
        .ok_or_else(|| cli("the node has no central bank"))?
        .clone();
    let dcp2 = std::sync::Arc::new(
        tally_dcp::Backoffice::open_dcp(
            tally_store::Store::sqlite(&dir.join("dcp2.sqlite")).map_err(cli)?,
            2,
            dcp2_key,
            bank,
        )
        .map_err(cli)?,
    );
    let (node2, stop2, server2) = serve_background(dcp2.clone(), token.clone())?;
    let out = io::stdout();
    let mut o = out.lock();
    let w = |e: io::Error| cli(e);
    writeln!(
        o,
        "Tally demo: a node (central bank + directory + MDS, and DCP 1 on its own database) on {node}, SQLite at {}; DCP 2 (own database, own issuing key, its customers' accounts in its own book) on {node2}",
        db.display()
    )
    .map_err(w)?;
    writeln!(
        o,
        "Supervisors: 3-of-5 escrow key set made without a dealer, in {}",
        sup.display()
    )
    .map_err(w)?;
    writeln!(
        o,
        "Devices run the real SE applet behind ISO 7816-4 APDUs and talk to the node over HTTP.\n"
    )
    .map_err(w)?;
    let op = tally_api::OperatorClient::new(&node, &token);
    op.mint("demo-mint-1", 1_000_000).map_err(cli)?;
    writeln!(
        o,
        "1. The central bank mints 1,000,000 XTS into DCP 1's settlement account."
    )
    .map_err(w)?;
    for (acct, amount) in [
        ("alice", 20_000),
        ("bob", 5_000),
        ("carol", 5_000),
        ("acme-energy", 1_000),
        ("mallory", 3_000),
    ] {
        op.deposit(acct, &format!("demo-deposit-{acct}"), amount)
            .map_err(cli)?;
    }
    writeln!(
        o,
        "2. DCP 1 opens accounts for alice, bob, carol, acme-energy and mallory."
    )
    .map_err(w)?;
    // The manufacturer's key, trusted by the central bank's policy.
    let e = Enrolment::new(&bo)?;
    let mut d = vec![
        onboard(&node, &e, "alice-card", "card", CARD, "alice")?,
        onboard(&node, &e, "bob-phone", "phone", PHONE, "bob")?,
        onboard(&node, &e, "carol-phone", "phone", PHONE, "carol")?,
        onboard(&node, &e, "meter", "IoT smart meter", IOT, "acme-energy")?,
        onboard(
            &node,
            &e,
            "charger",
            "IoT charging station",
            IOT,
            "acme-energy",
        )?,
        onboard(
            &node,
            &e,
            "mallory-phone",
            "phone (to be cloned)",
            PHONE,
            "mallory",
        )?,
    ];
    writeln!(
        o,
        "3. {} SEs manufactured (root installed from the node's key file, attestation key certified by the manufacturer), each enrolled with its account's one-time code, PINs set on cards and phones, pseudonyms certified.",
        d.len()
    )
    .map_err(w)?;
    {
        // A second SE tries alice's used code: refused.
        let mut link =
            tally_wallet::ApduLink::select(blank_card(b"intruder"), 4096).map_err(cli)?;
        let cert =
            tally_wallet::agent::manufacture(&mut link, PHONE, e.root, &e.maker, "demo-maker")
                .map_err(cli)?;
        let mut b = tally_api::HttpBackend::new(&node);
        let refused = Agent::onboard(&mut link, &mut b, cert, "alice", "0000-0000-0000-0000")
            .err()
            .map(|x| x.to_string())
            .unwrap_or_else(|| "ACCEPTED (bug!)".into());
        writeln!(
            o,
            "   an SE enrolling for alice with a guessed code: {refused}"
        )
        .map_err(w)?;
    }
    for (i, v) in [(0usize, 5_000u64), (1, 1_000), (3, 200), (5, 2_000)] {
        d[i].agent(&node, |a| a.load(v))?;
        writeln!(o, "4. {} loads {v} XTS from its account.", d[i].name).map_err(w)?;
    }
    writeln!(o, "5. Offline payments, no network:").map_err(w)?;
    for (from, to, amount) in [
        (0usize, 1usize, 1_200u64),
        (1, 2, 1_500),
        (2, 0, 300),
        (0, 1, 4_000),
    ] {
        let (a, b) = pick2(&mut d, from, to);
        let r = pay_offline(&mut a.link, &mut b.link, Amount(amount)).map_err(cli)?;
        writeln!(
            o,
            "   {:>13} → {:<13} {:>5} XTS  package {:>4} bytes",
            a.name, b.name, amount, r.package_bytes
        )
        .map_err(w)?;
    }
    writeln!(
        o,
        "   A hostile terminal (bob's phone app driving alice's card at the till):"
    )
    .map_err(w)?;
    {
        let alice = &mut d[0];
        let before = alice.link.status().map_err(cli)?;
        let pay_online = alice
            .link
            .build_request(&tally_se::RequestParams::PayOnline {
                to_account: "mallory".into(),
                amount: 5_000,
            });
        writeln!(
            o,
            "     asks the card to sign an online payment of 5000 to mallory, no PIN: {}",
            pay_online
                .err()
                .map(|x| x.to_string())
                .unwrap_or_else(|| "SIGNED (bug!)".into())
        )
        .map_err(w)?;
        let req = d[1].link.create_request(Amount(6_000)).map_err(cli)?;
        let big = d[0].link.pay(&req);
        writeln!(
            o,
            "     asks for an offline payment of 6000, above the 5000 no-PIN limit: {}",
            big.err()
                .map(|x| x.to_string())
                .unwrap_or_else(|| "PAID (bug!)".into())
        )
        .map_err(w)?;
        let after = d[0].link.status().map_err(cli)?;
        writeln!(
            o,
            "     the card's balance is unchanged ({} → {})",
            before.balance, after.balance
        )
        .map_err(w)?;
    }
    let bal = d[0].agent(&node, |a| a.pay_online("bob", 250, Some(DEMO_PIN)))?;
    writeln!(
        o,
        "   alice pays bob 250 XTS online from her card, PIN verified in the SE; alice's account now {bal}"
    )
    .map_err(w)?;
    let t = Instant::now();
    for _ in 0..30 {
        let (a, b) = pick2(&mut d, 3, 4);
        pay_offline(&mut a.link, &mut b.link, Amount(1)).map_err(cli)?;
    }
    writeln!(
        o,
        "6. The meter pays the charger 1 XTS per tick, 30 ticks offline ({:.0} ms).",
        t.elapsed().as_secs_f64() * 1e3
    )
    .map_err(w)?;
    // Hybrid (issue 13): with connectivity the meter's route is online
    // (`tally device route online`): the same SE command pays each tick,
    // and the payment is settled at the ledger before the next one.
    let t = Instant::now();
    // Its 30 one-unit hops are near the history budget: it renews first.
    let renewed = d[3].agent(&node, |a| a.renew())?;
    let mut settled = 0;
    for _ in 0..5 {
        let (meter, charger) = pick2(&mut d, 3, 4);
        let (payee_s, request) = PayeeSession::start(&mut charger.link, Amount(1)).map_err(cli)?;
        let payer_s = PayerSession::start(&mut meter.link, &request).map_err(cli)?;
        settled += meter.agent(&node, |a| a.sync())?.uploaded;
        let received = payee_s
            .on_package(&mut charger.link, payer_s.package())
            .map_err(|(_, e)| cli(e))?;
        payer_s
            .on_receipt(&mut meter.link, &received.receipt)
            .map_err(|(_, e)| cli(e))?;
    }
    writeln!(
        o,
        "   The meter gets connectivity: it renews {renewed} XTS, and its route is online: 5 more ticks by the same SE command, each settled at the ledger before the next ({settled} payments settled online, {:.0} ms).",
        t.elapsed().as_secs_f64() * 1e3
    )
    .map_err(w)?;
    // A payment stream (issue 13, decision 0020): one OPEN payment locks
    // the value for the charger, then each tick is one hash on each SE.
    {
        let t = Instant::now();
        let (meter, charger) = pick2(&mut d, 3, 4);
        let id =
            tally_wallet::stream::open_stream(&mut meter.link, &mut charger.link, Amount(1), 100)
                .map_err(cli)?;
        tally_wallet::stream::stream_ticks(&mut meter.link, &mut charger.link, &id, 1, 80)
            .map_err(cli)?;
        use tally_wallet::stream::StreamLink as _;
        let claim = charger.link.close_stream_in(&id).map_err(cli)?;
        let released = meter.link.close_stream_out(&id).map_err(cli)?;
        writeln!(
            o,
            "   A payment stream: the meter's OPEN payment locks 100 XTS for the charger (100 ticks of 1); 80 ticks streamed, each one hash on each SE; both close offline: the charger's claim {} XTS, the meter's refund {} XTS, both plain tokens now ({:.0} ms).",
            claim.value,
            100 - u64::from(released),
            t.elapsed().as_secs_f64() * 1e3
        )
        .map_err(w)?;
    }
    writeln!(o, "7. Devices come online:").map_err(w)?;
    for i in [1usize, 4] {
        let v = d[i].agent(&node, |a| a.renew())?;
        writeln!(o, "   {} renews {v} XTS into one fresh token", d[i].name).map_err(w)?;
    }
    let bal = d[2].agent(&node, |a| a.unload(500))?;
    writeln!(
        o,
        "   carol-phone unloads 500 XTS; carol's account now {bal}"
    )
    .map_err(w)?;
    let epoch = op.advance_epoch().map_err(cli)?;
    for dev in d.iter_mut() {
        dev.agent(&node, |a| a.sync())?;
    }
    writeln!(
        o,
        "   the central bank opens epoch {epoch}; every device syncs (uploads sealed to settlement): epoch grant, policy, revocation list, fresh pseudonyms"
    )
    .map_err(w)?;

    // A second DCP: a customer of DCP 2 paid offline by a customer of
    // DCP 1, renewing and unloading at DCP 2; an interbank payment.
    let cb = bo
        .central_bank()
        .ok_or_else(|| cli("the node has no central bank"))?
        .clone();
    cb.mint(2, "demo-mint-2", 100_000).map_err(cli)?;
    let op2 = tally_api::OperatorClient::new(&node2, &token);
    op2.deposit("dave", "demo-deposit-dave", 2_000)
        .map_err(cli)?;
    let e2 = Enrolment {
        bo: &dcp2,
        root: e.root,
        maker: e.maker.clone(),
    };
    let mut dave = onboard(&node2, &e2, "dave-phone", "phone at DCP 2", PHONE, "dave")?;
    pay_offline(&mut d[1].link, &mut dave.link, Amount(700)).map_err(cli)?;
    let renewed = dave.agent(&node2, |a| a.renew())?;
    let dave_bal = dave.agent(&node2, |a| a.unload(200))?;
    let alice_bal = d[0].agent(&node, |a| a.pay_online("dave@2", 300, Some(DEMO_PIN)))?;
    dcp2.book_inbox().map_err(cli)?;
    let dave_bal_after = op2.balance("dave").map_err(cli)?;
    writeln!(
        o,
        "   Second DCP: the central bank mints 100,000 into DCP 2's settlement account; dave's phone enrols at DCP 2.\n   bob-phone (DCP 1) pays dave-phone (DCP 2) 700 XTS offline; dave renews {renewed} at DCP 2 and unloads 200 into his account there ({dave_bal}).\n   alice pays dave@2 300 XTS online: DCP 1 → central ledger → DCP 2's inbox; alice {alice_bal}, dave {dave_bal_after}."
    )
    .map_err(w)?;
    for (name, dcp) in [("DCP 1", &bo), ("DCP 2", &dcp2)] {
        let r = dcp.reconcile().map_err(cli)?;
        writeln!(
            o,
            "   {name}: customers' accounts and own money {} = settlement account at the central bank {} ({})",
            r.book.sum,
            r.settlement_account,
            if r.matches() { "reconciled" } else { "MISMATCH" }
        )
        .map_err(w)?;
        if !r.matches() {
            return Err(cli(format!(
                "{name}'s book does not match its settlement account"
            )));
        }
    }

    writeln!(o, "8. Cloned SE: mallory copies her phone's secure element and spends the same 1000 XTS twice.").map_err(w)?;
    let clone_storage = {
        let applet = &mut d[5].link.card.applet;
        let placeholder = tally_se::Applet::boot(
            MemStorage::new(1024),
            tally_se::Sealing::None,
            tally_core::testkit::TestEntropy::new(b"p"),
        )
        .map_err(cli)?;
        let real = std::mem::replace(applet, placeholder);
        let st = real.into_storage();
        let copy = MemStorage::from_bytes(st.as_bytes().to_vec());
        *applet = tally_se::Applet::boot(
            st,
            tally_se::Sealing::None,
            tally_core::testkit::TestEntropy::new(b"m"),
        )
        .map_err(cli)?;
        copy
    };
    let clone = tally_se::Applet::boot(
        clone_storage,
        tally_se::Sealing::None,
        tally_core::testkit::TestEntropy::new(b"c"),
    )
    .map_err(cli)?;
    let mut clone_link = tally_wallet::ApduLink::select(SeCard::new(clone), 4096).map_err(cli)?;
    let honest_pkg = {
        let (m, c) = pick2(&mut d, 5, 2);
        pay_keep_package(&mut m.link, &mut c.link, 1_000)?
    };
    let cloned_pkg = pay_keep_package(&mut clone_link, &mut d[1].link, 1_000)?;
    writeln!(o, "   carol and bob each accept 1000 XTS offline (both packages verify: the clone has the keys).").map_err(w)?;
    for i in [2usize, 1] {
        d[i].agent(&node, |a| a.renew())?;
    }
    let ds = op.double_spends().map_err(cli)?.len();
    writeln!(o, "   both renew; settlement's spent registry catches the second spend: {} double spend(s) with both signed records as evidence.", ds).map_err(w)?;
    writeln!(
        o,
        "   carol and bob keep their money (offline finality); the scheme's loss account books it."
    )
    .map_err(w)?;

    // Containment: MDS alert → supervisors open the escrow → directory
    // revokes → honest devices refuse offline.
    let alert = op
        .alerts()
        .map_err(cli)?
        .into_iter()
        .find(|a| a.kind == "double_spend")
        .ok_or_else(|| cli("the MDS raised no double-spend alert"))?;
    let offender = alert.offender.clone().unwrap_or_default();
    writeln!(
        o,
        "9. The MDS (fed by settlement, never by the DCP) raises alert {}: {} ({}), offender pseudonym {}…, {} records of evidence.",
        alert.id,
        alert.kind,
        alert.severity,
        &offender[..16.min(offender.len())],
        alert.records.len()
    )
    .map_err(w)?;
    // The cheater's pseudonyms named by the evidence: the token's owner and
    // the change key of each spend. The node revokes only pseudonyms whose
    // escrow the supervisors opened to that identity, so each is opened.
    let change = |p: &[u8]| -> Result<String, crate::CliError> {
        let pkg = Package::from_cbor(p).map_err(cli)?;
        Ok(hex::encode(
            pkg.transfer
                .outputs
                .get(1)
                .map(|o| o.owner.id().0)
                .unwrap_or_default(),
        ))
    };
    let mut keys = vec![offender.clone()];
    for p in [&honest_pkg, &cloned_pkg] {
        let k = change(p)?;
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut opened = Vec::with_capacity(keys.len());
    // A change key that never signed a settled record has no settled
    // certificate, so no escrow to open (and cannot be revoked): skip it.
    keys.retain(|k| op.escrow(k).is_ok());
    for key in &keys {
        let escrow = op.escrow(key).map_err(cli)?;
        let escrow_bytes = hex::decode(&escrow.escrow).map_err(cli)?;
        let request = crate::supervisor::steps::request(
            &sup,
            &escrow_bytes,
            &format!("mds alert {}", alert.id),
            "double spend by a cloned SE",
        )?;
        for i in [0u8, 2, 4] {
            crate::supervisor::steps::share(&sup, &request, i)?;
        }
        let digest = crate::supervisor::steps::combine(&sup, &request)?;
        opened.push((request, digest));
    }
    let (request, digest) = opened
        .first()
        .cloned()
        .ok_or_else(|| cli("no escrow to open"))?;
    if opened.iter().any(|(_, d)| *d != digest) {
        return Err(cli("the escrows opened to different identities"));
    }
    let entries = crate::supervisor::steps::verify(&sup)?;
    op.alert_transition(alert.id, "escrow_opened", &format!("opening {request}"))
        .map_err(cli)?;
    writeln!(
        o,
        "10. Supervisors 0, 2 and 4 of 5 each give a decryption share with a DLEQ proof for each of the {} pseudonyms' escrows; combined, each opens to identity digest {}…; audit log: {entries} signed, hash-chained entries, verified.",
        keys.len(),
        &digest[..16]
    )
    .map_err(w)?;
    let revoked = op
        .revoke(&tally_api::RevokeRequest {
            id_digest: digest.clone(),
            key_ids: keys.clone(),
            reason: "double spend".into(),
            alert: Some(alert.id),
            // The node checks the opening in the supervisors' audit log.
            audit_log: Some(hex::encode(
                std::fs::read(sup.join("audit.log")).map_err(|e| crate::CliError::io(&sup, e))?,
            )),
            request: Some(request.to_string()),
        })
        .map_err(cli)?;
    writeln!(
        o,
        "11. The directory revokes SE {}… (mallory's: {}); revocation list {} lists {} pseudonym(s).",
        &revoked.se_id[..16],
        revoked.se_id == d[5].se_id.to_string(),
        revoked.revocation_serial,
        revoked.revoked_keys
    )
    .map_err(w)?;
    d[0].agent(&node, |a| a.sync())?;
    let refused = {
        let (m, a) = pick2(&mut d, 5, 0);
        pay_offline(&mut m.link, &mut a.link, Amount(100))
    };
    // The revoked SE did pay (its SE debited 100 into a package the payee
    // refused): that value stays in the offline float, in flight.
    let in_flight: i64 = if refused.is_err() { 100 } else { 0 };
    writeln!(
        o,
        "12. alice-card syncs (new revocation list); mallory-phone tries to pay it 100 XTS offline: {}.",
        match &refused {
            Err(e) => format!("refused ({e})"),
            Ok(_) => "ACCEPTED (containment failed)".into(),
        }
    )
    .map_err(w)?;
    let sync_refused = d[5].agent(&node, |a| a.sync()).is_err();
    writeln!(o, "    mallory-phone can no longer sync: {sync_refused}.").map_err(w)?;
    op.alert_transition(alert.id, "closed", "SE revoked, loss booked")
        .map_err(cli)?;
    if refused.is_ok() || !sync_refused {
        return Err(cli("containment failed"));
    }

    confidential_scheme(&mut o, &dir)?;

    writeln!(o, "\nDevices").map_err(w)?;
    writeln!(
        o,
        "{:<14} {:<24} {:>8} {:>7} {:>8}",
        "device", "kind", "offline", "tokens", "counter"
    )
    .map_err(w)?;
    for dev in d.iter_mut() {
        let s = dev.link.status().map_err(cli)?;
        writeln!(
            o,
            "{:<14} {:<24} {:>8} {:>7} {:>8}",
            dev.name, dev.kind, s.balance.0, s.tokens, s.counter
        )
        .map_err(w)?;
    }
    writeln!(o, "\nAccounts at DCP 1").map_err(w)?;
    for acct in ["alice", "bob", "carol", "acme-energy", "mallory"] {
        writeln!(o, "{:<14} {:>8}", acct, op.balance(acct).map_err(cli)?).map_err(w)?;
    }
    writeln!(o, "\nAccounts at DCP 2").map_err(w)?;
    writeln!(o, "{:<14} {:>8}", "dave", op2.balance("dave").map_err(cli)?).map_err(w)?;
    let inv = bo.invariant().map_err(cli)?;
    writeln!(o, "\nLedger invariant (GET {node}/ledger/invariant)").map_err(w)?;
    writeln!(
        o,
        "  minted − redeemed          {:>10}",
        inv.minted - inv.redeemed
    )
    .map_err(w)?;
    writeln!(o, "  accounts                   {:>10}", inv.accounts).map_err(w)?;
    writeln!(o, "  offline float              {:>10}", inv.offline_float).map_err(w)?;
    writeln!(o, "  scheme loss account        {:>10}", inv.loss).map_err(w)?;
    writeln!(
        o,
        "  accounts + float + loss    {:>10}",
        inv.accounts + inv.offline_float + inv.loss
    )
    .map_err(w)?;
    writeln!(o, "  holds                      {:>10}", inv.holds()).map_err(w)?;
    let held: i64 = d
        .iter_mut()
        .chain(std::iter::once(&mut dave))
        .map(|dev| dev.link.status().map(|s| s.balance.0 as i64).unwrap_or(0))
        .sum::<i64>()
        + clone_link.status().map(|s| s.balance.0 as i64).unwrap_or(0);
    writeln!(
        o,
        "  value held in SEs          {:>10}  + {in_flight} in the refused package of the revoked SE = {} (equals the offline float: {})",
        held,
        held + in_flight,
        held + in_flight == inv.offline_float
    )
    .map_err(w)?;
    let ind = op.indicators().map_err(cli)?;
    writeln!(
        o,
        "\nIndicators (GET {node}/mds/indicators; also Prometheus at /metrics)"
    )
    .map_err(w)?;
    for (k, label) in [
        (
            "circulation",
            "offline money in circulation (issued − redeemed)",
        ),
        ("issued", "issued"),
        ("redeemed", "redeemed"),
        ("payments", "offline payments"),
        ("payment_value", "offline payment value"),
        ("average_hops", "average hops before renewal"),
        ("velocity", "velocity (payment value ÷ issued)"),
        (
            "average_offline_epochs",
            "average epochs offline before sync",
        ),
        ("fraud_losses", "losses from fraud"),
        ("double_spends", "double spends"),
        ("alerts_open", "alerts open"),
    ] {
        writeln!(o, "  {label:<50} {:>10}", ind[k]).map_err(w)?;
    }
    writeln!(
        o,
        "  {:<50} {}",
        "payments by epoch", ind["payments_by_epoch"]
    )
    .map_err(w)?;
    writeln!(
        o,
        "  {:<50} {}",
        "holdings by device class", ind["holdings_by_class"]
    )
    .map_err(w)?;
    writeln!(o, "\ndone in {:.1} s", started.elapsed().as_secs_f64()).map_err(w)?;
    drop(o);
    let _ = stop_tx.send(());
    let _ = server.join();
    let _ = stop2.send(());
    let _ = server2.join();
    let _ = std::fs::remove_dir_all(&dir);
    if !inv.holds() || held + in_flight != inv.offline_float {
        return Err(crate::CliError::failed("ledger invariant does not hold"));
    }
    Ok(())
}
