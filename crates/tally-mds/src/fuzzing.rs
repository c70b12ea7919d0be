//! The `mds_streams` fuzz target's check (feature `fuzzing`; its keys are
//! testkit keys, public): the fuzzer's bytes drive a run of payment
//! streams — OPENs, claims, refunds (honest or not), closes of a half
//! twice, a claim paying more than its ticks, batches and restarts — into
//! an MDS on SQLite in memory, and every batch's alerts, the holdings and
//! the fraud losses are compared with a simple model of decision 0020's
//! section "MDS". Replayed on stable by tests/fuzz_corpus.rs.

use tally_core::package::sign_transfer_with;
use tally_core::stream::{STREAM_REFUND_FLAG, StreamAsk, StreamOpenTerms, StreamPart};
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Hash32, OutPoint, Output, Record, SecretKey, Suite};
use tally_store::Store;

use crate::{AlertKind, IngestRecord, Mds, MdsConfig, Verdict};

/// Most operations one input drives (the rest of it is ignored).
pub const OPS_MAX: usize = 64;
/// Most streams one input opens.
pub const STREAMS_MAX: usize = 8;
/// What each stream's payer is issued before its OPEN.
const FUNDS: u64 = 1_000;

struct ModelStream {
    open: Hash32,
    payee: SecretKey,
    refund: SecretKey,
    price: u64,
    ticks_max: u32,
    /// First close of each half: ticks, record id.
    claim: Option<(u32, Hash32)>,
    refund_close: Option<(u32, Hash32)>,
}

struct Run {
    scheme: Scheme,
    config: MdsConfig,
    mds: Option<Mds>,
    streams: Vec<ModelStream>,
    pending: Vec<IngestRecord>,
    /// What the pending batch must raise: kind, subject, amount, evidence.
    expected: Vec<(AlertKind, Hash32, u64, Vec<Hash32>)>,
    holdings: u64,
    losses: u64,
    counter: u64,
}

impl Run {
    fn sign(
        &mut self,
        from: &SecretKey,
        input: OutPoint,
        pay: u64,
        to: &SecretKey,
        part: StreamPart,
    ) -> IngestRecord {
        self.counter += 1;
        let k = from.clone();
        let outputs = if pay == 0 {
            Vec::new()
        } else {
            vec![Output {
                value: Amount(pay),
                owner: to.public(),
            }]
        };
        let t = sign_transfer_with(
            vec![input],
            &[from.public()],
            outputs,
            [0; 16],
            self.counter,
            Some(part),
            &|_| Some(k.clone()),
        )
        .unwrap_or_else(|| panic!("testkit keys sign"));
        IngestRecord::new(Record::Transfer(t), 1, Verdict::Verified)
    }

    fn open(&mut self, price: u64, ticks_max: u32) {
        let n = self.streams.len();
        let payer = key(Suite::Ed25519, format!("fz-payer-{n}").as_bytes());
        let payee = key(Suite::Ed25519, format!("fz-payee-{n}").as_bytes());
        let refund = key(Suite::Ed25519, format!("fz-refund-{n}").as_bytes());
        let issue = self.scheme.issue(payer.public(), FUNDS);
        let tok = OutPoint {
            record: issue.id(),
            index: 0,
        };
        self.pending.push(IngestRecord::new(
            Record::Issue(issue),
            1,
            Verdict::Verified,
        ));
        let value = price * u64::from(ticks_max);
        self.counter += 1;
        let k = payer.clone();
        let t = sign_transfer_with(
            vec![tok],
            &[payer.public()],
            vec![
                Output {
                    value: Amount(value),
                    owner: payee.public(),
                },
                Output {
                    value: Amount(FUNDS - value),
                    owner: payer.public(),
                },
            ],
            [0; 16],
            self.counter,
            Some(StreamPart::Open(StreamOpenTerms {
                index: 0,
                refund_key: refund.public(),
                ask: StreamAsk {
                    price: Amount(price),
                    ticks_max,
                },
                anchor: Hash32([0; 32]),
            })),
            &|_| Some(k.clone()),
        )
        .unwrap_or_else(|| panic!("testkit keys sign"));
        let open = t.id();
        self.pending
            .push(IngestRecord::new(Record::Transfer(t), 1, Verdict::Verified));
        self.holdings += FUNDS;
        self.streams.push(ModelStream {
            open,
            payee,
            refund,
            price,
            ticks_max,
            claim: None,
            refund_close: None,
        });
    }

    /// A close of stream `s`: the claim (`refund` false) of `ticks` ticks
    /// or the refund saying `ticks` were released; `extra` added to what
    /// it pays (non-zero: a close that does not conserve).
    fn close(&mut self, s: usize, refund: bool, ticks: u32, extra: u64) {
        let st = &self.streams[s];
        let (price, ticks_max, open) = (st.price, st.ticks_max, st.open);
        let due = if refund {
            price * u64::from(ticks_max - ticks)
        } else {
            price * u64::from(ticks)
        };
        let (signer, input, part) = if refund {
            (
                st.refund.clone(),
                OutPoint {
                    record: open,
                    index: STREAM_REFUND_FLAG,
                },
                StreamPart::Refund { ticks },
            )
        } else {
            (
                st.payee.clone(),
                OutPoint {
                    record: open,
                    index: 0,
                },
                StreamPart::Claim {
                    ticks,
                    element: Hash32([0; 32]),
                },
            )
        };
        let r = self.sign(&signer, input, due + extra, &signer, part);
        let id = r.id;
        self.pending.push(r);
        if extra > 0 {
            self.expected
                .push((AlertKind::NonConserving, id, extra, vec![id]));
            return;
        }
        let st = &mut self.streams[s];
        let slot = if refund {
            &mut st.refund_close
        } else {
            &mut st.claim
        };
        if let Some((_, first)) = *slot {
            self.losses += due;
            self.holdings += due;
            self.expected
                .push((AlertKind::DoubleSpend, id, due, vec![first, id]));
            return;
        }
        *slot = Some((ticks, id));
        // Claim: −V + k·p; refund: + (N − k)·p.
        if refund {
            self.holdings += due;
        } else {
            self.holdings = self.holdings + due - price * u64::from(ticks_max);
        }
        if let (Some((claimed, claim)), Some((released, refund_id))) = (st.claim, st.refund_close)
            && claimed > released
        {
            let excess = price * u64::from(claimed - released);
            let first = if refund { claim } else { refund_id };
            self.losses += excess;
            self.expected
                .push((AlertKind::StreamOverclaim, id, excess, vec![first, id]));
        }
    }

    fn flush(&mut self) {
        let Some(mds) = &self.mds else {
            return;
        };
        let batch = std::mem::take(&mut self.pending);
        let out = mds
            .ingest(&batch)
            .unwrap_or_else(|e| panic!("an ordered stream run ingests: {e}"));
        let got: Vec<_> = out
            .alerts
            .iter()
            .map(|a| (a.kind, a.subject, a.amount, a.records.clone()))
            .collect();
        let want = std::mem::take(&mut self.expected);
        assert_eq!(got, want, "alerts of the batch");
        let ind = mds
            .indicators()
            .unwrap_or_else(|e| panic!("indicators: {e}"));
        let held: u64 = ind.holdings_by_class.iter().map(|h| h.1).sum();
        assert_eq!(held, self.holdings, "holdings");
        assert_eq!(ind.fraud_losses, self.losses, "fraud losses");
    }

    fn restart(&mut self) {
        self.flush();
        if let Some(mds) = self.mds.take() {
            let mds = Mds::open(mds.into_store(), self.config.clone())
                .unwrap_or_else(|e| panic!("reopen: {e}"));
            self.mds = Some(mds);
        }
    }
}

/// Runs `data` as operations, each one byte and its arguments (missing
/// bytes read as 0): `0 p n` opens a stream of `1 + n % 16` ticks at
/// `1 + p % 8`; `1 s k` / `2 s k` claims / refunds stream `s` with `k`
/// ticks (taken modulo the stream's ticks + 1); `3` ingests the pending
/// records as one batch; `4` does that and restarts the MDS on the same
/// store; `5 s k` is a claim paying one more than its ticks.
pub fn check_streams(data: &[u8]) {
    let scheme = Scheme::new(Suite::Ed25519);
    let dcp = scheme.dcp.public().id();
    let config = MdsConfig::new(vec![dcp], vec![dcp], 1_000_000);
    let store = Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}"));
    let mds = Mds::open(store, config.clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut run = Run {
        scheme,
        config,
        mds: Some(mds),
        streams: Vec::new(),
        pending: Vec::new(),
        expected: Vec::new(),
        holdings: 0,
        losses: 0,
        counter: 0,
    };
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next();
    for _ in 0..OPS_MAX {
        let Some(op) = next() else {
            break;
        };
        let (a, b) = (next().unwrap_or(0), next().unwrap_or(0));
        match op % 6 {
            0 if run.streams.len() < STREAMS_MAX => {
                run.open(1 + u64::from(a % 8), 1 + u32::from(b % 16));
            }
            1 | 2 | 5 if !run.streams.is_empty() => {
                let s = usize::from(a) % run.streams.len();
                let ticks = u32::from(b) % (run.streams[s].ticks_max + 1);
                run.close(s, op % 6 == 2, ticks, u64::from(op % 6 == 5));
            }
            3 => run.flush(),
            4 => run.restart(),
            _ => {}
        }
    }
    run.flush();
}

/// Seeds for the `mds_streams` corpus: `(name, bytes)`.
pub fn seed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // Honest: claim 6, refund 7 released, in one batch and in two.
        ("honest", vec![0, 4, 9, 1, 0, 6, 2, 0, 7]),
        (
            "honest-split",
            vec![0, 4, 9, 3, 0, 0, 2, 0, 7, 3, 0, 0, 1, 0, 6],
        ),
        // A half closed twice.
        ("double-claim", vec![0, 1, 9, 1, 0, 3, 3, 0, 0, 1, 0, 8]),
        ("double-refund", vec![0, 1, 9, 2, 0, 3, 2, 0, 5]),
        // Claim 8, refund 5, each order; with a restart in between.
        ("overclaim", vec![0, 4, 9, 1, 0, 8, 2, 0, 5]),
        ("overclaim-refund-first", vec![0, 4, 9, 2, 0, 5, 1, 0, 8]),
        (
            "overclaim-restart",
            vec![0, 4, 9, 4, 0, 0, 1, 0, 8, 4, 0, 0, 2, 0, 5],
        ),
        // A claim paying more than its ticks, then honest closes.
        ("greedy", vec![0, 2, 3, 5, 0, 2, 1, 0, 2, 2, 0, 2]),
        // Two streams interleaved.
        (
            "two-streams",
            vec![0, 1, 5, 0, 2, 7, 1, 1, 7, 2, 0, 1, 1, 0, 4, 2, 1, 3],
        ),
    ]
}
