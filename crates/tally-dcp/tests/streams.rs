//! Payment streams through the back office (issue 13 item 1, decision
//! 0020), in process: a meter opens a stream to a charging station with an
//! ordinary offline payment (the OPEN), streams ticks, both close offline
//! into a claim and a refund, and both renew or unload at the DCP — the
//! invariant holds and the value splits exactly; a broken payee SE that
//! claims ticks the payer never released is refused at settlement (rule SV4,
//! code 909) with an alert to the MDS; a cloned payee SE that claims twice
//! is a double spend.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::Amount;
use tally_core::Hash32;
use tally_core::policy::device_class::IOT;
use tally_dcp::Backoffice;
use tally_mds::AlertKind;
use tally_store::Store;
use tally_wallet::SeLink;
use tally_wallet::stream::{StreamLink, open_stream, stream_ticks};

const PRICE: Amount = Amount(2);
const TICKS: u32 = 100;

fn backoffice() -> Arc<Backoffice> {
    let bo = Arc::new(Backoffice::open(Store::sqlite_memory().unwrap()).unwrap());
    bo.mint("m", 1_000_000).unwrap();
    bo.deposit("d1", "carol", 10_000).unwrap();
    bo.deposit("d2", "dave", 10_000).unwrap();
    bo
}

fn balance(d: &mut Dev) -> Amount {
    d.link.status().unwrap().balance
}

/// A meter loaded with 1 000 and a station, a stream of 100 ticks at 2
/// open between them, `ticks` ticks delivered.
fn streaming(bo: &Arc<Backoffice>, ticks: u32) -> (Dev, Dev, Hash32) {
    let mut meter = onboard(bo, "stream-meter", IOT, "carol");
    let mut station = onboard(bo, "stream-station", IOT, "dave");
    with_agent(bo, &mut meter, |a| a.load(1_000)).unwrap();
    let id = open_stream(&mut meter.link, &mut station.link, PRICE, TICKS).unwrap();
    stream_ticks(&mut meter.link, &mut station.link, &id, 1, ticks).unwrap();
    (meter, station, id)
}

#[test]
fn a_stream_closes_renews_and_unloads_with_the_value_split_exactly() {
    let bo = backoffice();
    let (mut meter, mut station, id) = streaming(&bo, 60);
    assert_eq!(
        balance(&mut meter),
        Amount(1_000 - 200),
        "the OPEN locked 200"
    );
    assert_eq!(balance(&mut station), Amount::ZERO);
    // Tick 61 released, never delivered: the leftover.
    meter.link.release_tick(&id, 61).unwrap();
    let claim = station.link.close_stream_in(&id).unwrap();
    let released = meter.link.close_stream_out(&id).unwrap();
    assert_eq!((claim.ticks, released), (60, 61));
    assert_eq!(balance(&mut station), Amount(120));
    assert_eq!(balance(&mut meter), Amount(1_000 - 200 + 78));
    for d in [&mut meter, &mut station] {
        with_agent(&bo, d, |a| a.sync()).unwrap();
    }
    // The station renews its claim: the OPEN and the claim settle in the
    // renewal's ancestry (the claim's chain walked to the anchor).
    assert_eq!(
        with_agent(&bo, &mut station, |a| a.renew()).unwrap(),
        Amount(120)
    );
    assert_eq!(balance(&mut station), Amount(120));
    // The meter unloads what it holds, the refund included.
    with_agent(&bo, &mut meter, |a| a.unload(878)).unwrap();
    assert_eq!(bo.account_balance("carol").unwrap(), 10_000 - 1_000 + 878);
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    // Offline: the station's 120 and the leftover 2 nobody holds.
    assert_eq!(inv.offline_float, 122);
    assert!(bo.double_spends().unwrap().is_empty());
    let alerts = bo.alerts().unwrap();
    assert!(alerts.is_empty(), "an honest stream raised {alerts:?}");
    // The renewed token pays on.
    with_agent(&bo, &mut station, |a| a.unload(120)).unwrap();
    assert_eq!(bo.invariant().unwrap().offline_float, 2);
}

#[test]
fn a_claim_beyond_the_released_ticks_is_refused_at_settlement_and_alerted() {
    let bo = backoffice();
    let (mut meter, mut station, id) = streaming(&bo, 10);
    // A broken station SE claims 90 ticks (180) with an element the
    // meter never released.
    assert!(
        station
            .link
            .card
            .applet
            .break_stream_in(&id, 90, Hash32([0x66; 32]))
    );
    let claim = station.link.close_stream_in(&id).unwrap();
    assert_eq!(claim.value, Amount(180));
    meter.link.close_stream_out(&id).unwrap();
    for d in [&mut meter, &mut station] {
        with_agent(&bo, d, |a| a.sync()).unwrap();
    }
    let before = (bo.invariant().unwrap(), bo.account_balance("dave").unwrap());
    let alerts = bo.alerts().unwrap().len();
    // Unloading the claim: the package carries the claim in its ancestry;
    // settlement walks its element to the anchor and refuses it.
    assert!(with_agent(&bo, &mut station, |a| a.unload(180)).is_err());
    assert_eq!(
        (bo.invariant().unwrap(), bo.account_balance("dave").unwrap()),
        before,
        "a refused claim paid out"
    );
    let now = bo.alerts().unwrap();
    assert_eq!(now.len(), alerts + 1, "{now:?}");
    let alert = now.last().unwrap();
    assert_eq!(alert.kind, AlertKind::CounterfeitRefused);
    assert_eq!(alert.amount, u64::from(tally_codes::VERIFY_STREAM_CHAIN));
}

#[test]
fn a_cloned_payee_se_that_claims_twice_is_a_double_spend() {
    let bo = backoffice();
    let (mut meter, mut station, id) = streaming(&bo, 30);
    // A copy of the station's SE takes five more ticks and claims 35 —
    // a second, different close of the same payee half.
    let mut clone = clone_dev(&mut station);
    assert_eq!(station.link.close_stream_in(&id).unwrap().value, Amount(60));
    stream_ticks(&mut meter.link, &mut clone.link, &id, 31, 5).unwrap();
    assert_eq!(clone.link.close_stream_in(&id).unwrap().value, Amount(70));
    with_agent(&bo, &mut station, |a| a.sync()).unwrap();
    with_agent(&bo, &mut station, |a| a.unload(60)).unwrap();
    // The clone spends its claim offline; the payee redeems it.
    bo.deposit("d3", "erin", 1).unwrap();
    let mut erin = onboard(&bo, "stream-erin", IOT, "erin");
    tally_wallet::pay_offline(&mut clone.link, &mut erin.link, Amount(70)).unwrap();
    with_agent(&bo, &mut erin, |a| a.sync()).unwrap();
    with_agent(&bo, &mut erin, |a| a.unload(70)).unwrap();
    // Settlement found the second close of the half: a double spend, its
    // loss what the second close pays.
    let ds = bo.double_spends().unwrap();
    assert_eq!(ds.len(), 1, "{ds:?}");
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.loss, -70, "the loss account debited 70: {inv:?}");
    let alerts = bo.alerts().unwrap();
    assert!(
        alerts.iter().any(|a| a.kind == AlertKind::DoubleSpend),
        "{alerts:?}"
    );
}

/// A copy of the meter's SE made after 10 ticks refunds as if only 10 were
/// released, while the original releases 20 more that the station claims:
/// the two closes hold 40 more than the OPEN locked. Settlement, when the
/// second close arrives, books the excess as a loss (the invariant keeps
/// holding) and the MDS raises StreamOverclaim.
#[test]
fn a_cloned_payer_se_refunding_released_ticks_is_booked_and_alerted() {
    let bo = backoffice();
    let (mut meter, mut station, id) = streaming(&bo, 10);
    let mut clone = clone_dev(&mut meter);
    stream_ticks(&mut meter.link, &mut station.link, &id, 11, 20).unwrap();
    assert_eq!(station.link.close_stream_in(&id).unwrap().value, Amount(60));
    assert_eq!(clone.link.close_stream_out(&id).unwrap(), 10);
    with_agent(&bo, &mut station, |a| a.sync()).unwrap();
    with_agent(&bo, &mut station, |a| a.unload(60)).unwrap();
    // The clone spends all it holds (its change 800 and the refund 180)
    // offline; the payee redeems.
    bo.deposit("d3", "erin", 1).unwrap();
    let mut erin = onboard(&bo, "stream-erin", IOT, "erin");
    tally_wallet::pay_offline(&mut clone.link, &mut erin.link, Amount(980)).unwrap();
    with_agent(&bo, &mut erin, |a| a.sync()).unwrap();
    with_agent(&bo, &mut erin, |a| a.unload(980)).unwrap();
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.loss, -40, "(30 − 10) ticks × 2 booked: {inv:?}");
    let alerts = bo.alerts().unwrap();
    let a = alerts
        .iter()
        .find(|a| a.kind == AlertKind::StreamOverclaim)
        .unwrap_or_else(|| panic!("{alerts:?}"));
    assert_eq!(a.amount, 40);
}

/// Both devices sync (twice: requests reported and acknowledged, fresh
/// pseudonyms fetched) while the stream is open: the keys that sign its
/// closes — the payee's stream key, the payer's refund key, which may own
/// no token any more — stay in the SEs, and both close afterwards.
#[test]
fn a_stream_stays_closable_across_syncs() {
    let bo = backoffice();
    let (mut meter, mut station, id) = streaming(&bo, 10);
    // The meter spends everything else it holds, so its refund key owns
    // no token.
    let mut erin = onboard(&bo, "stream-erin", IOT, "erin");
    tally_wallet::pay_offline(&mut meter.link, &mut erin.link, Amount(800)).unwrap();
    for _ in 0..2 {
        for d in [&mut meter, &mut station, &mut erin] {
            with_agent(&bo, d, |a| a.sync()).unwrap();
        }
    }
    // New keys generated: the SE drops the keys whose job is done.
    for d in [&mut meter, &mut station] {
        assert!(d.link.status().unwrap().unacked == 0);
        d.link.generate_keys(1).unwrap();
    }
    assert_eq!(station.link.close_stream_in(&id).unwrap().value, Amount(20));
    assert_eq!(meter.link.close_stream_out(&id).unwrap(), 10);
    assert_eq!(balance(&mut station), Amount(20));
    assert_eq!(balance(&mut meter), Amount(180));
    with_agent(&bo, &mut station, |a| a.unload(20)).unwrap();
    with_agent(&bo, &mut meter, |a| a.unload(180)).unwrap();
    assert!(bo.invariant().unwrap().holds());
}

/// Found by the main protocol model (tally-model bug
/// `recover_whole_stream`, decision 0020 session 11): the station's wallet
/// loses the OPEN's package; the station syncs (its SE closes the stream
/// request unreceived and reports it), the meter closes its side (a refund
/// of every tick: none was released) and syncs, uploading the
/// unacknowledged OPEN. The stream's value must reach the two SEs once:
/// settlement may not also recover the whole stream output to the station.
#[test]
fn an_open_its_payee_never_received_is_paid_out_once() {
    let bo = backoffice();
    let mut meter = onboard(&bo, "stream-meter", IOT, "carol");
    let mut station = onboard(&bo, "stream-station", IOT, "dave");
    with_agent(&bo, &mut meter, |a| a.load(1_000)).unwrap();
    let request = station
        .link
        .create_stream_request(tally_core::stream::StreamAsk {
            price: PRICE,
            ticks_max: TICKS,
        })
        .unwrap();
    let package = meter.link.pay(&request).unwrap(); // lost on the way
    let open = <tally_core::Package as tally_core::Cbor>::from_cbor(&package)
        .unwrap()
        .transfer
        .id();
    let id = tally_core::stream::stream_id(&open, 0);
    with_agent(&bo, &mut station, |a| a.sync()).unwrap();
    assert_eq!(meter.link.close_stream_out(&id).unwrap(), 0);
    assert_eq!(balance(&mut meter), Amount(1_000), "refunded in full");
    with_agent(&bo, &mut meter, |a| a.sync()).unwrap();
    with_agent(&bo, &mut station, |a| a.sync()).unwrap();
    with_agent(&bo, &mut meter, |a| a.sync()).unwrap();
    let held = balance(&mut meter).0 + balance(&mut station).0;
    assert_eq!(held, 1_000, "the stream's 200 paid out twice");
    assert_eq!(balance(&mut station), Amount::ZERO);
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.offline_float, 1_000);
    // Everything the meter holds unloads; nothing is left offline.
    with_agent(&bo, &mut meter, |a| a.unload(1_000)).unwrap();
    assert_eq!(bo.account_balance("carol").unwrap(), 10_000);
    assert_eq!(bo.invariant().unwrap().offline_float, 0);
}
