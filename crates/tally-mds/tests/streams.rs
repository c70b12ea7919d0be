//! Payment streams in the MDS (issue 13, decision 0020): an honest OPEN,
//! claim and refund raise nothing and the leftover leaves the holdings; a
//! half closed twice is a double spend; a refund of ticks the claim took
//! (a broken or cloned payer SE) is a `StreamOverclaim` in either order of
//! arrival, across batches and restarts, on SQLite and PostgreSQL.

use tally_core::package::sign_transfer_with;
use tally_core::policy::device_class::{CARD, PHONE};
use tally_core::stream::{STREAM_REFUND_FLAG, StreamAsk, StreamOpenTerms, StreamPart, chain_walk};
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Hash32, OutPoint, Output, Record, SecretKey, Suite, Transfer};
use tally_mds::{Alert, AlertKind, IngestRecord, Mds, MdsConfig, MdsError, Severity, Verdict};
use tally_store::Store;

const PRICE: u64 = 5;
const TICKS: u32 = 10;
/// `PRICE · TICKS`.
const V: u64 = 50;
const FUNDS: u64 = 1_000;

fn sk(label: &str) -> SecretKey {
    key(Suite::Ed25519, label.as_bytes())
}

/// One payer, one payee, one stream of `TICKS` ticks at `PRICE`.
struct Stream {
    payer: SecretKey,
    payee: SecretKey,
    refund: SecretKey,
    seed: Hash32,
    issue: IngestRecord,
    open: IngestRecord,
    counter: u64,
}

fn sign(
    counter: &mut u64,
    from: &SecretKey,
    input: OutPoint,
    outputs: Vec<(u64, &SecretKey)>,
    part: StreamPart,
) -> Transfer {
    *counter += 1;
    let k = from.clone();
    sign_transfer_with(
        vec![input],
        &[from.public()],
        outputs
            .into_iter()
            .map(|(v, o)| Output {
                value: Amount(v),
                owner: o.public(),
            })
            .collect(),
        [*counter as u8; 16],
        *counter,
        Some(part),
        &|_| Some(k.clone()),
    )
    .unwrap_or_else(|| panic!("sign"))
}

fn verified(t: Transfer, epoch: u32, classes: Vec<u8>) -> IngestRecord {
    let mut r = IngestRecord::new(Record::Transfer(t), epoch, Verdict::Verified);
    r.output_classes = classes;
    r
}

impl Stream {
    fn new(label: &str) -> Stream {
        let mut scheme = Scheme::new(Suite::Ed25519);
        let payer = sk(&format!("{label}-payer"));
        let payee = sk(&format!("{label}-payee"));
        let refund = sk(&format!("{label}-refund"));
        let seed = Hash32([0x5e; 32]);
        let i = scheme.issue(payer.public(), FUNDS);
        let tok = OutPoint {
            record: i.id(),
            index: 0,
        };
        let mut issue = IngestRecord::new(Record::Issue(i), 1, Verdict::Verified);
        issue.output_classes = vec![CARD];
        let mut counter = 0;
        let terms = StreamOpenTerms {
            index: 0,
            refund_key: refund.public(),
            ask: StreamAsk {
                price: Amount(PRICE),
                ticks_max: TICKS,
            },
            anchor: chain_walk(seed, TICKS),
        };
        let open = sign(
            &mut counter,
            &payer,
            tok,
            vec![(V, &payee), (FUNDS - V, &payer)],
            StreamPart::Open(terms),
        );
        Stream {
            payer,
            payee,
            refund,
            seed,
            issue,
            open: verified(open, 1, vec![PHONE, CARD]),
            counter,
        }
    }

    fn payee_half(&self) -> OutPoint {
        OutPoint {
            record: self.open.id,
            index: 0,
        }
    }

    fn payer_half(&self) -> OutPoint {
        OutPoint {
            record: self.open.id,
            index: STREAM_REFUND_FLAG,
        }
    }

    /// The payee's claim of `ticks` ticks, paying `ticks · PRICE`.
    fn claim(&mut self, ticks: u32, epoch: u32) -> IngestRecord {
        let element = chain_walk(self.seed, TICKS - ticks);
        let (payee, half) = (self.payee.clone(), self.payee_half());
        let t = sign(
            &mut self.counter,
            &payee,
            half,
            vec![(u64::from(ticks) * PRICE, &payee)],
            StreamPart::Claim { ticks, element },
        );
        verified(t, epoch, vec![PHONE])
    }

    /// The payer's refund saying `released` ticks were released, paying
    /// `(TICKS − released) · PRICE` to the refund key.
    fn refund(&mut self, released: u32, epoch: u32) -> IngestRecord {
        let (refund, half) = (self.refund.clone(), self.payer_half());
        let t = sign(
            &mut self.counter,
            &refund,
            half,
            vec![(u64::from(TICKS - released) * PRICE, &refund)],
            StreamPart::Refund { ticks: released },
        );
        verified(t, epoch, vec![CARD])
    }

    fn config(&self) -> MdsConfig {
        let scheme = Scheme::new(Suite::Ed25519);
        let dcp = scheme.dcp.public().id();
        MdsConfig::new(vec![dcp], vec![dcp], 10_000)
    }

    fn mds(&self) -> Mds {
        let store = Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}"));
        Mds::open(store, self.config()).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn ingest(mds: &Mds, b: &[IngestRecord]) -> Vec<Alert> {
    mds.ingest(b)
        .unwrap_or_else(|e| panic!("ingest: {e}"))
        .alerts
}

fn holdings(mds: &Mds) -> Vec<(u8, u64)> {
    mds.indicators()
        .unwrap_or_else(|e| panic!("{e}"))
        .holdings_by_class
}

fn fraud_losses(mds: &Mds) -> u64 {
    mds.indicators()
        .unwrap_or_else(|e| panic!("{e}"))
        .fraud_losses
}

#[test]
fn an_honest_open_claim_and_refund_raise_nothing_and_the_leftover_leaves_the_holdings() {
    for claim_first in [true, false] {
        let mut s = Stream::new("honest");
        let mds = s.mds();
        assert!(ingest(&mds, &[s.issue.clone(), s.open.clone()]).is_empty());
        // The stream output counts once (the payer half not at all).
        assert_eq!(holdings(&mds), vec![(CARD, FUNDS - V), (PHONE, V)]);
        // Released 7 ticks, the payee got 6 (the 7th was lost in transit).
        let claim = s.claim(6, 2);
        let refund = s.refund(7, 2);
        let (first, second) = if claim_first {
            (claim, refund)
        } else {
            (refund, claim)
        };
        assert!(ingest(&mds, &[first]).is_empty(), "first close");
        assert!(ingest(&mds, &[second]).is_empty(), "second close");
        assert!(mds.alerts().unwrap_or_else(|e| panic!("{e}")).is_empty());
        // Claim: −V + 6·p to the payee; refund: +3·p to the payer. The
        // released-but-unclaimed tick (p) is held by nobody.
        assert_eq!(
            holdings(&mds),
            vec![(CARD, FUNDS - V + 3 * PRICE), (PHONE, 6 * PRICE)]
        );
        let ind = mds.indicators().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ind.issued, FUNDS);
        assert_eq!(ind.fraud_losses, 0);
        // The OPEN is the payment; closes are not payments.
        assert_eq!((ind.payments, ind.payment_value), (1, V));
        // Held: issued − the leftover.
        let held: u64 = ind.holdings_by_class.iter().map(|h| h.1).sum();
        assert_eq!(held, FUNDS - PRICE);
    }
}

#[test]
fn a_claim_of_every_tick_and_a_refund_of_none_are_honest_too() {
    let mut s = Stream::new("edges");
    let mds = s.mds();
    let (claim, refund) = (s.claim(TICKS, 2), s.refund(TICKS, 2));
    let b = [s.issue.clone(), s.open.clone(), refund, claim];
    assert!(ingest(&mds, &b).is_empty());
    assert_eq!(holdings(&mds), vec![(CARD, FUNDS - V), (PHONE, V)]);
}

#[test]
fn a_close_paying_more_than_its_ticks_is_non_conserving() {
    let mut s = Stream::new("greedy");
    let mds = s.mds();
    ingest(&mds, &[s.issue.clone(), s.open.clone()]);
    // A claim of 3 ticks paying 4 ticks' worth.
    let (payee, half) = (s.payee.clone(), s.payee_half());
    let t = sign(
        &mut s.counter,
        &payee,
        half,
        vec![(4 * PRICE, &payee)],
        StreamPart::Claim {
            ticks: 3,
            element: chain_walk(s.seed, TICKS - 3),
        },
    );
    let a = ingest(&mds, &[verified(t, 2, vec![PHONE])]);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].kind, a[0].amount), (AlertKind::NonConserving, PRICE));
    // The payer half is no token: an ordinary transfer spending it (no
    // refund part) is backed by nothing.
    let (refund, half) = (s.refund.clone(), s.payer_half());
    s.counter += 1;
    let k = refund.clone();
    let t = tally_core::package::sign_transfer(
        vec![half],
        &[refund.public()],
        vec![Output {
            value: Amount(V),
            owner: refund.public(),
        }],
        [0xee; 16],
        s.counter,
        &|_| Some(k.clone()),
    )
    .unwrap_or_else(|| panic!("sign"));
    let a = ingest(&mds, &[verified(t, 2, vec![CARD])]);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].kind, a[0].amount), (AlertKind::NonConserving, V));
    // The honest closes still go through afterwards.
    let (claim, refund) = (s.claim(3, 3), s.refund(3, 3));
    assert!(ingest(&mds, &[claim, refund]).is_empty());
}

#[test]
fn a_half_closed_twice_is_a_double_spend() {
    // Two claims.
    let mut s = Stream::new("twice");
    let mds = s.mds();
    ingest(&mds, &[s.issue.clone(), s.open.clone()]);
    let (c1, c2) = (s.claim(4, 2), s.claim(9, 3));
    assert!(ingest(&mds, std::slice::from_ref(&c1)).is_empty());
    let a = ingest(&mds, std::slice::from_ref(&c2));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].kind, AlertKind::DoubleSpend);
    assert_eq!(a[0].subject, c2.id);
    assert_eq!(a[0].records, vec![c1.id, c2.id]);
    assert_eq!(a[0].offender, Some(s.payee.public().id()));
    assert_eq!(a[0].outpoint, Some((s.open.id, 0)));
    // The loss: what the second claim pays out of nothing.
    assert_eq!(a[0].amount, 9 * PRICE);
    assert_eq!(fraud_losses(&mds), 9 * PRICE);

    // Two refunds.
    let mut s = Stream::new("twice-refund");
    let mds = s.mds();
    ingest(&mds, &[s.issue.clone(), s.open.clone()]);
    let (r1, r2) = (s.refund(6, 2), s.refund(1, 2));
    let a = ingest(&mds, &[r1.clone(), r2.clone()]);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].kind, AlertKind::DoubleSpend);
    assert_eq!(a[0].records, vec![r1.id, r2.id]);
    assert_eq!(a[0].offender, Some(s.refund.public().id()));
    assert_eq!(a[0].outpoint, Some((s.open.id, STREAM_REFUND_FLAG)));
    assert_eq!(a[0].amount, 9 * PRICE);
}

fn check_overclaim(a: &Alert, first: &IngestRecord, second: &IngestRecord, offender: Hash32) {
    assert_eq!(a.kind, AlertKind::StreamOverclaim);
    assert_eq!(a.severity, Severity::Critical);
    assert!(a.kind.is_fraud());
    assert_eq!(a.subject, second.id);
    assert_eq!(a.records, vec![first.id, second.id]);
    assert_eq!(a.offender, Some(offender));
    // Claimed 8, refund says 5 released: 3 ticks too many.
    assert_eq!(a.amount, 3 * PRICE);
    assert_eq!(a.epoch, second.epoch);
}

#[test]
fn a_refund_of_ticks_the_claim_took_is_a_stream_overclaim_in_either_order() {
    for (claim_first, one_batch) in [(true, false), (false, false), (true, true), (false, true)] {
        let mut s = Stream::new("overclaim");
        let mds = s.mds();
        ingest(&mds, &[s.issue.clone(), s.open.clone()]);
        let (claim, refund) = (s.claim(8, 2), s.refund(5, 3));
        let (first, second) = if claim_first {
            (claim.clone(), refund.clone())
        } else {
            (refund.clone(), claim.clone())
        };
        let alerts = if one_batch {
            ingest(&mds, &[first.clone(), second.clone()])
        } else {
            assert!(ingest(&mds, std::slice::from_ref(&first)).is_empty());
            ingest(&mds, std::slice::from_ref(&second))
        };
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        // The refund came second: its key refunded released ticks; the
        // claim came second: its owner claimed past the refund.
        let offender = if claim_first {
            s.refund.public().id()
        } else {
            s.payee.public().id()
        };
        check_overclaim(&alerts[0], &first, &second, offender);
        assert_eq!(alerts[0].outpoint, Some((s.open.id, 0)));
        // Stored as raised (its kind's code reads back).
        assert_eq!(mds.alerts().unwrap_or_else(|e| panic!("{e}")), alerts);
        // The excess is value nobody paid for: holdings grew by it.
        assert_eq!(fraud_losses(&mds), 3 * PRICE);
        let held: u64 = holdings(&mds).iter().map(|h| h.1).sum();
        assert_eq!(held, FUNDS + 3 * PRICE);
        // Replaying either close changes nothing.
        let out = mds
            .ingest(&[first.clone(), second.clone()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.duplicates, out.alerts.len()), (2, 0));
    }
}

#[test]
fn a_batch_that_does_not_commit_leaves_no_stream_behind() {
    let mut s = Stream::new("rollback");
    let mds = s.mds();
    ingest(&mds, &[s.issue.clone()]);
    let claim = s.claim(8, 2);
    // A record spending an output nobody ingested fails the batch.
    let orphan = {
        let k = s.payer.clone();
        let t = tally_core::package::sign_transfer(
            vec![OutPoint {
                record: Hash32([9; 32]),
                index: 0,
            }],
            &[k.public()],
            vec![Output {
                value: Amount(1),
                owner: k.public(),
            }],
            [0xaa; 16],
            99,
            &|_| Some(k.clone()),
        )
        .unwrap_or_else(|| panic!("sign"));
        verified(t, 2, vec![CARD])
    };
    let err = mds
        .ingest(&[s.open.clone(), claim.clone(), orphan])
        .map(|o| o.alerts);
    assert!(matches!(err, Err(MdsError::UnknownInput(_))), "{err:?}");
    // Nothing of it stayed: the OPEN registers again, the claim is the
    // first close again, and the refund is compared with it.
    assert!(ingest(&mds, &[s.open.clone(), claim.clone()]).is_empty());
    let refund = s.refund(5, 3);
    let a = ingest(&mds, std::slice::from_ref(&refund));
    assert_eq!(a.len(), 1, "{a:?}");
    check_overclaim(&a[0], &claim, &refund, s.refund.public().id());
}

/// A restart between the OPEN and the closes and between the two closes:
/// the payer half and the first close's ticks come back from the store
/// (`open_store` opens the same store each time).
fn restarts(claim_first: bool, open_store: &dyn Fn() -> Store) {
    let mut s = Stream::new("restart");
    let (claim, refund) = (s.claim(8, 2), s.refund(5, 3));
    let (first, second) = if claim_first {
        (claim.clone(), refund.clone())
    } else {
        (refund.clone(), claim.clone())
    };
    let config = s.config();
    let reopen = || Mds::open(open_store(), config.clone()).unwrap_or_else(|e| panic!("{e}"));
    ingest(&reopen(), &[s.issue.clone(), s.open.clone()]);
    // The payer half was kept: its refund is no unknown input.
    assert!(ingest(&reopen(), std::slice::from_ref(&first)).is_empty());
    let a = ingest(&reopen(), std::slice::from_ref(&second));
    assert_eq!(a.len(), 1, "{a:?}");
    let offender = if claim_first {
        s.refund.public().id()
    } else {
        s.payee.public().id()
    };
    check_overclaim(&a[0], &first, &second, offender);
    // After another restart: each half is still closed once.
    let again = if claim_first {
        s.refund(2, 4)
    } else {
        s.claim(1, 4)
    };
    let a = ingest(&reopen(), std::slice::from_ref(&again));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].kind, AlertKind::DoubleSpend);
    assert_eq!(a[0].records, vec![second.id, again.id]);
    let mds = reopen();
    assert_eq!(
        mds.alerts()
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|a| a.kind)
            .collect::<Vec<_>>(),
        vec![AlertKind::StreamOverclaim, AlertKind::DoubleSpend]
    );
    // Losses counted once each, restarts or not: the excess, and what the
    // second close of a half pays (a refund of 2 released: 8 ticks; a
    // claim of 1 tick).
    let again_pays: u64 = if claim_first { 8 } else { 1 };
    assert_eq!(fraud_losses(&mds), (3 + again_pays) * PRICE);
}

#[test]
fn stream_state_survives_restarts_sqlite() {
    for claim_first in [true, false] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("mds.db");
        restarts(claim_first, &|| {
            Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}"))
        });
    }
}

#[test]
fn stream_state_survives_restarts_postgres() {
    for claim_first in [true, false] {
        let Some((first, schema)) =
            tally_store::test_postgres_store("tally-mds stream_state_survives_restarts_postgres")
        else {
            return;
        };
        drop(first);
        let Some(url) = tally_store::test_database_url("stream restarts") else {
            return;
        };
        restarts(claim_first, &|| {
            Store::postgres(&url, Some(&schema)).unwrap_or_else(|e| panic!("{e}"))
        });
        if let Ok(admin) = Store::postgres(&url, None) {
            let _ = admin.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
        }
    }
}
