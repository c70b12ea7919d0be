//! `tally demo offline`: the offline half of the story, end to end, with
//! real secure-element applets behind the APDU interface.

use std::io::{self, Write};
use std::time::Instant;

use tally_core::codec::Cbor;
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
    writeln!(o, "Tally offline demo — every device runs the real SE applet behind ISO 7816-4 APDUs.")?;
    writeln!(o, "(Demo keys come from fixed seeds: never use them for real money.)\n")?;

    let mut scheme = Scheme::new(Suite::Ed25519);
    writeln!(o, "1. The central bank certifies DCP 1 and signs the policy (currency {}).", scheme.policy.currency)?;
    let mk = |s: &Scheme, name: &'static str, kind: &'static str, class: u8, apdu: usize| -> io::Result<Dev> {
        Ok(Dev { name, kind, d: TestDevice::new(s, name.as_bytes(), class, apdu).map_err(err)?, loaded: 0 })
    };
    let mut devs = vec![
        mk(&scheme, "alice-card", "card (NFC, 255-byte APDUs)", CARD, 255)?,
        mk(&scheme, "bob-phone", "phone", PHONE, 4096)?,
        mk(&scheme, "carol-phone", "phone", PHONE, 4096)?,
        mk(&scheme, "meter", "IoT smart meter", IOT, 1024)?,
        mk(&scheme, "charger", "IoT charging station", IOT, 1024)?,
    ];
    writeln!(o, "2. {} devices personalised; each SE generated its own keys and got pseudonym certificates.", devs.len())?;

    for (i, v) in [(0usize, 5_000u64), (3, 100)] {
        let class = devs[i].d.class;
        load(&mut devs[i].d.link, &mut scheme, class, v).map_err(err)?;
        devs[i].loaded += v;
        writeln!(o, "3. DCP loads {v} XTS into {}.", devs[i].name)?;
    }

    let pay = |devs: &mut Vec<Dev>, from: usize, to: usize, amount: u64, o: &mut dyn Write| -> io::Result<usize> {
        let (a, b) = pick(devs, from, to);
        let r = pay_offline(&mut a.d.link, &mut b.d.link, Amount(amount)).map_err(err)?;
        writeln!(o, "   {:>11} → {:<11} {:>5} XTS  package {:>4} bytes", a.name, b.name, amount, r.package_bytes)?;
        Ok(r.package_bytes)
    };
    writeln!(o, "4. Offline payments (no network anywhere):")?;
    pay(&mut devs, 0, 1, 1_200, &mut o)?; // card → phone: Bob's phone is the terminal
    pay(&mut devs, 1, 2, 700, &mut o)?; // phone → phone, Bob re-spends
    pay(&mut devs, 2, 0, 300, &mut o)?; // phone → card, Carol re-spends
    writeln!(o, "   alice-card now holds change 3800 + 300 received; paying 4000 merges both tokens:")?;
    pay(&mut devs, 0, 1, 4_000, &mut o)?;
    pay(&mut devs, 1, 2, 4_500, &mut o)?;

    writeln!(o, "5. Machine to machine: the meter pays the charger 1 XTS per tick for 20 ticks.")?;
    let t = Instant::now();
    for _ in 0..20 {
        let (a, b) = pick(&mut devs, 3, 4);
        pay_offline(&mut a.d.link, &mut b.d.link, Amount(1)).map_err(err)?;
    }
    writeln!(o, "   20 micropayments in {:.1} ms (host CPU, full verification each).", t.elapsed().as_secs_f64() * 1e3)?;

    writeln!(o, "6. Interrupted payment: Carol pays Bob 50, Bob's receipt is lost; Carol resends.")?;
    {
        let (carol, bob) = pick(&mut devs, 2, 1);
        let (payee, req) = PayeeSession::start(&mut bob.d.link, Amount(50)).map_err(err)?;
        let payer = PayerSession::start(&mut carol.d.link, &req).map_err(err)?;
        let first = payee.clone().on_package(&mut bob.d.link, payer.package()).map_err(|(_, e)| err(e))?;
        // … the receipt never reaches Bob. Bob's SE still has the package:
        let again = payer.resend(&mut carol.d.link).map_err(err)?;
        let second = payee.on_package(&mut bob.d.link, &again).map_err(|(_, e)| err(e))?;
        assert_eq!(first.receipt, second.receipt);
        payer.on_receipt(&mut carol.d.link, &second.receipt).map_err(|(_, e)| err(e))?;
        writeln!(o, "   same package, same receipt: Bob credited once, Carol's payment acknowledged.")?;
    }

    writeln!(o, "7. A forged package: Carol's package to Bob with one signature bit flipped.")?;
    {
        let (carol, bob) = pick(&mut devs, 2, 1);
        let before = bob.d.applet().state().clone();
        let (_payee, req) = PayeeSession::start(&mut bob.d.link, Amount(10)).map_err(err)?;
        let payer = PayerSession::start(&mut carol.d.link, &req).map_err(err)?;
        let mut pkg = Package::from_cbor(payer.package()).map_err(|e| io::Error::other(e.to_string()))?;
        let mut sig = *pkg.transfer.signatures[0].bytes();
        sig[5] ^= 1;
        pkg.transfer.signatures[0] = tally_core::Signature::new(pkg.transfer.signatures[0].suite(), sig);
        let verdict = bob.d.link.receive(&pkg.to_cbor());
        writeln!(o, "   Bob's SE: {}", match &verdict {
            Err(e) => e.to_string(),
            Ok(_) => "ACCEPTED (bug!)".into(),
        })?;
        let after = bob.d.applet().state();
        writeln!(o, "   Bob's tokens unchanged: {}", before.tokens == after.tokens)?;
        // Carol's SE already spent its inputs for that package: the genuine
        // package is still deliverable.
        let ok = bob.d.link.receive(payer.package()).map_err(err)?;
        payer.on_receipt(&mut carol.d.link, &ok.to_cbor()).map_err(|(_, e)| err(e))?;
        writeln!(o, "   the genuine package from Carol's log is then accepted.")?;
    }

    writeln!(o, "8. Verification cost of the last hop (host CPU):")?;
    {
        let (carol, bob) = pick(&mut devs, 2, 1);
        let req = bob.d.link.create_request(Amount(100)).map_err(err)?;
        let pkg = carol.d.link.pay(&req).map_err(err)?;
        let t = Instant::now();
        let v = verify_package_bytes(
            &pkg,
            &Expected { payee: req.payee.key, amount: req.amount, nonce: req.nonce },
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
    writeln!(o, "{:<12} {:<28} {:>8} {:>7} {:>8} {:>8}", "device", "kind", "balance", "tokens", "counter", "unacked")?;
    let mut total = 0u64;
    let mut loaded = 0u64;
    for d in devs.iter_mut() {
        let s = d.d.link.status().map_err(err)?;
        total += s.balance.0;
        loaded += d.loaded;
        writeln!(o, "{:<12} {:<28} {:>8} {:>7} {:>8} {:>8}", d.name, d.kind, s.balance.0, s.tokens, s.counter, s.unacked)?;
    }
    writeln!(o, "{:<12} {:<28} {:>8}", "total", "", total)?;
    writeln!(o, "loaded {loaded} XTS, held {total} XTS: value conserved = {}", loaded == total)?;
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
