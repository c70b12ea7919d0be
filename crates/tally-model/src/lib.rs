//! An abstract, model-checked model of the Tally offline protocol
//! (decision 0008): load, offline payment (request, pay, receive, ack,
//! resend), redemption (renewal and unload), sync, the recovery of
//! interrupted payments and payment streams (decision 0020: OPEN, RELEASE,
//! ACCEPT, CLOSE, settlement of both halves), checked exhaustively with
//! the `stateright` crate.
//!
//! # What is modelled
//!
//! * **Back office** (DCP + central bank as one actor): account balances,
//!   the offline float, the spent registry (outpoint -> consumer), the
//!   device-request log keyed by `(SE, counter)` with the stored final
//!   answer (an identical resend gets the stored answer, a used counter
//!   with other content is refused), redemption orders bound to an SE,
//!   uploaded closures and fulfilment reports, recoveries (a closed
//!   request paid: credited to the payee once), refunds (a request paid
//!   twice: the surplus back to its payer once) and each SE's mailbox of
//!   Issues, all re-delivered at each sync.
//! * **SEs**: held tokens, the persistent set of Issues ever imported,
//!   open payee requests, closed requests (closures the SE signed),
//!   received transfers, the outgoing log (unacked / acked / settled),
//!   the monotonic request counter, and the streams it pays (released,
//!   closed) or is paid (ticks, closed) with the closes it signed. Every
//!   SE step is one atomic transition (the journal leaves the old or the
//!   new state).
//! * **Streams** (decision 0020, price 1 per tick): a payee SE's stream
//!   request is a signed request; the OPEN is an offline payment whose
//!   output (the stream's value) is held by no SE as a token but locked in
//!   two halves, the payee's `(open, 0)` and the payer's
//!   `(open, PAYER_HALF)`. RELEASE records the next tick and emits its
//!   element in one step; the payee's ACCEPT takes only its next tick and
//!   only an element that exists (released: a preimage otherwise). CLOSE
//!   by either side signs a claim (`k` ticks) or a refund (`N − released`)
//!   spending its half into a token. Sync uploads the closes; settlement
//!   registers each half once in the spent registry and, once both are
//!   registered, books the leftover (released, never claimed: kept in the
//!   float) or, for a claim above the released count, alerts and books
//!   the excess from the scheme loss account into the float. An OPEN its
//!   payee never received is settled as a claim of nothing: the payer's
//!   refund half returns what it did not release.
//! * **Network and terminal**: every message ever sent stays in one set;
//!   any of them can be delivered to any SE (or to the back office) any
//!   number of times, in any order, or never. That is loss, duplication,
//!   reordering and a hostile terminal that replays and misroutes every
//!   message it has ever seen, including one SE's redemption order fed to
//!   another SE. Signatures are unforgeable: a message exists only if its
//!   signer produced it, so the terminal cannot build a closure, a
//!   package or a receipt itself.
//! * **Crashes**: an SE step is atomic, so a power cut is "the step did
//!   not happen". A wallet/terminal crash loses its RAM, i.e. the
//!   messages it held: that is message loss, already covered. The
//!   liveness property ([`Model::drained`]) assumes every wallet crashes
//!   in the state under check and every message in flight is lost, and
//!   checks that the honest recovery path (resend from the SE's log,
//!   sync, settlement, import) still delivers every unit of value.
//!
//! Value is a small integer; signatures, hashes, certificates, limits,
//! epochs, expiry and cardholder verification are abstracted away.
//!
//! # Extending
//!
//! New protocol steps add an [`Body`] or [`Msg`] variant, an intent kind
//! in [`Bound`] and a handler; the accounting properties are generic over
//! records. Streams (issue 13) were added so: [`Msg::StreamRequest`] and
//! [`Msg::Tick`], [`Action::Release`] and [`Action::Close`], the intent
//! [`Bound::streams`]; the accounting needed one addition, because a
//! stream output is spent in two halves by records paying less than it
//! locks: [`Model::stream_remainder`] counts what a stream still locks (in
//! flight until settlement books it), and the books carry the leftover and
//! the stream loss. The small focused stream model stays in [`stream`]
//! (longer chains, in milliseconds).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use stateright::{Model as SrModel, Property};

pub mod stream;

/// An SE index (SE `i` is bound to account `i`).
pub type Se = u8;
/// Value in minor units. Signed so that a negative balance is observable
/// by the properties instead of being an arithmetic panic.
pub type Amount = i16;

/// Owner of a token output: an SE's (pseudonym) key or the DCP's
/// redemption key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Se(Se),
    Dcp,
}

/// A transfer's nonce: the payee's request, or a redemption order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nonce {
    /// A payee request; `intent` indexes [`Bound::payments`].
    Pay { payee: Se, intent: u8 },
    /// A redemption order, derived from the SE's order request id.
    Redeem { se: Se, ctr: u8 },
}

/// The operation an Issue was made for: one Issue per operation, so a
/// retried operation yields the identical Issue (same id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Load {
        se: Se,
        ctr: u8,
    },
    Renew {
        nonce: Nonce,
    },
    /// A stranded payment output recovered for the payee.
    Recover {
        payer: Se,
        nonce: Nonce,
    },
    /// A payment for a request that another transfer already fulfilled
    /// (or that was already recovered), refunded to its payer.
    Refund {
        payer: Se,
        nonce: Nonce,
    },
}

/// A payment stream: the OPEN that `payer` signed for `payee`'s stream
/// request `intent` (one stream per request nonce).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub payer: Se,
    pub payee: Se,
    pub intent: u8,
}

/// Index of the payer half of a stream output: `(open, PAYER_HALF)` is a
/// virtual outpoint no real output has (decision 0020: `0x80 | index`).
pub const PAYER_HALF: u8 = 0x80;

/// The two halves of a stream output, each consumed once: the payee's
/// claim and the payer's refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Half {
    Payee,
    Payer,
}

impl StreamId {
    /// The OPEN: an ordinary transfer for the stream request's nonce.
    pub fn open(self) -> RecId {
        RecId::Transfer {
            payer: self.payer,
            nonce: Nonce::Pay {
                payee: self.payee,
                intent: self.intent,
            },
        }
    }
    pub fn half(self, h: Half) -> OutPoint {
        OutPoint {
            rec: self.open(),
            idx: match h {
                Half::Payee => 0,
                Half::Payer => PAYER_HALF,
            },
        }
    }
    fn of(open: RecId) -> Option<Self> {
        match open {
            RecId::Transfer {
                payer,
                nonce: Nonce::Pay { payee, intent },
            } => Some(StreamId {
                payer,
                payee,
                intent,
            }),
            _ => None,
        }
    }
}

/// Record id. Content-derived, so the interleaving does not number records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecId {
    Issue(Op),
    /// An honest payer signs at most one transfer per nonce.
    Transfer {
        payer: Se,
        nonce: Nonce,
    },
    /// A stream close: the payee's claim of `ticks` or the payer's refund
    /// of what it did not release (`ticks` released). An honest SE closes
    /// each half once; a second, different close is another record
    /// consuming the same half (a double spend).
    Close {
        stream: StreamId,
        half: Half,
        ticks: u8,
    },
}

/// The stream part of a transfer (decision 0020, "as built": a 6th body
/// element of `Transfer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamPart {
    /// Output 0 is the stream output (value `ticks` at price 1), held by
    /// no SE as a token: its halves are spent by the closes.
    Open {
        ticks: u8,
    },
    Claim {
        ticks: u8,
    },
    Refund {
        released: u8,
    },
}

/// One output of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutPoint {
    pub rec: RecId,
    pub idx: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Output {
    pub value: Amount,
    pub owner: Key,
}

/// A signed record (Issue or Transfer). Output 0 of a transfer pays the
/// payee (or the DCP), output 1 (if any) is the payer's change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    pub inputs: Vec<OutPoint>,
    pub outputs: Vec<Output>,
    pub stream: Option<StreamPart>,
}

/// What consumed an outpoint in the spent registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consumer {
    Transfer(RecId),
    /// A stranded payment output recovered for the payee.
    Recovery,
    /// A surplus payment output (its request was fulfilled or recovered by
    /// another transfer) refunded to the payer.
    Refund,
    /// A redemption output settled (renewed or unloaded).
    Redemption,
}

/// Body of an SE-built, SE-signed back-office request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Body {
    Load {
        amount: Amount,
    },
    Order {
        amount: Amount,
        unload: bool,
    },
    Redeem {
        nonce: Nonce,
        transfer: RecId,
    },
    /// Unacknowledged outgoing packages; the outcome of each of this SE's
    /// requests: closed `(intent, amount)` or fulfilled by a received
    /// transfer. Both lists are built and signed by the SE.
    Sync {
        packages: Vec<RecId>,
        closures: Vec<(u8, Amount)>,
        fulfilled: Vec<RecId>,
        /// The stream closes this SE signed (claims and refunds).
        closes: Vec<RecId>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevReq {
    pub se: Se,
    pub ctr: u8,
    pub body: Body,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    /// SE -> back office.
    Dev(DevReq),
    /// Back office -> SE: an Issue (load, renewal, recovery).
    Issued(Op),
    /// Payee SE -> payer: request (nonce, amount, key = payee's).
    Request {
        payee: Se,
        intent: u8,
        amount: Amount,
    },
    /// Payer SE -> payee: the package of this transfer.
    Package(RecId),
    /// Payee SE (or DCP for a redemption) -> payer: receipt of a transfer.
    Receipt(RecId),
    /// DCP -> SE: a signed redemption order bound to `se`.
    Order {
        nonce: Nonce,
        se: Se,
        amount: Amount,
        unload: bool,
    },
    /// Back office -> payer: this uploaded package is settled.
    Settled(RecId),
    /// Payee SE -> payer: a stream request of `ticks` ticks at price 1
    /// (signed by the payee SE like every request).
    StreamRequest { payee: Se, intent: u8, ticks: u8 },
    /// Payer SE -> payee: the chain element of tick `k`. It exists only if
    /// the payer's SE released it (a preimage otherwise).
    Tick { stream: StreamId, k: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutStatus {
    Unacked,
    Acked,
    Settled,
}

/// An outgoing-log entry (keyed by the transfer's nonce).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outgoing {
    pub status: OutStatus,
    /// For a redemption: the counter of the Redeem request, so the SE
    /// can rebuild the byte-identical request after a wallet crash.
    pub redeem_ctr: Option<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeState {
    pub tokens: BTreeSet<OutPoint>,
    /// Issues ever imported (credited once per SE, ever).
    pub imported: BTreeSet<Op>,
    /// Open payee requests: intent -> amount.
    pub open: BTreeMap<u8, Amount>,
    /// Requests this SE closed (and signed the closure of).
    pub closed: BTreeMap<u8, Amount>,
    pub received: BTreeSet<RecId>,
    pub outgoing: BTreeMap<Nonce, Outgoing>,
    pub ctr: u8,
    /// Streams this SE pays (durable `released`, then `closed`).
    pub streams_out: BTreeMap<StreamId, StreamOut>,
    /// Streams paid to this SE (durable `ticks`, then `closed`).
    pub streams_in: BTreeMap<StreamId, StreamIn>,
    /// Stream closes this SE signed, uploaded at every sync.
    pub closes: BTreeSet<RecId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamOut {
    pub ticks_max: u8,
    pub released: u8,
    pub closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamIn {
    pub ticks_max: u8,
    pub ticks: u8,
    pub closed: bool,
}

/// A stream whose two halves settlement registered: what it booked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Booked {
    pub ticks_max: u8,
    /// Ticks claimed by the payee half's consumer (0 for a stream its
    /// payee never received).
    pub claim: u8,
    /// Ticks the payer's refund says it released.
    pub released: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackOffice {
    pub accounts: Vec<Amount>,
    pub float: Amount,
    pub last_ctr: Vec<u8>,
    /// Request log: (SE, counter) -> the request answered. Its stored
    /// final answer is the messages of the first answer, which the network
    /// set keeps for ever: an identical resend gets exactly those again.
    pub answers: BTreeMap<(Se, u8), Body>,
    /// Redemption orders: nonce -> (bound SE, amount, unload).
    pub orders: BTreeMap<Nonce, (Se, Amount, bool)>,
    /// Redemption nonces settled (once per nonce).
    pub redeemed: BTreeSet<Nonce>,
    pub spent: BTreeMap<OutPoint, Consumer>,
    pub double_spends: u8,
    pub settled: BTreeSet<RecId>,
    /// Uploaded closures: (payee, intent, amount).
    pub closures: BTreeSet<(Se, u8, Amount)>,
    /// Transfers whose stranded payment output was recovered.
    pub recovered: BTreeSet<RecId>,
    /// Requests the payee reported fulfilled: nonce -> the transfer received.
    pub fulfilled: BTreeMap<Nonce, RecId>,
    /// Surplus payments refunded to their payer.
    pub refunded: BTreeSet<RecId>,
    /// Issues made for each SE (its mailbox).
    pub mailbox: BTreeMap<Se, BTreeSet<Op>>,
    /// Streams with both halves registered.
    pub streams: BTreeMap<StreamId, Booked>,
    /// Released, never claimed stream ticks: value nobody holds, kept in
    /// the float.
    pub leftover: Amount,
    /// Claims above the payer's released count: the excess, booked from
    /// the scheme loss account into the float.
    pub stream_loss: Amount,
    /// Alerts raised for such claims.
    pub stream_alerts: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub ses: Vec<SeState>,
    pub bo: BackOffice,
    /// Every record ever signed (ghost: global knowledge).
    pub records: BTreeMap<RecId, Record>,
    /// Every message ever sent.
    pub net: BTreeSet<Msg>,
    /// Intents started (bit i = intent i).
    pub used: u32,
    pub syncs_left: Vec<u8>,
}

/// Deliberately broken variants: each re-enables an old bug, so the tests
/// can show that the checker finds the violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// IMPORT ISSUE is a no-op only while the token is still held (issue 9,
    /// attack 2): after spending, the same Issue is credited again.
    pub reimport_after_spend: bool,
    /// The closed-request list is written by the terminal (attack 5): it
    /// can claim any request it has seen, received or not.
    pub terminal_closures: bool,
    /// REDEEM pays any order and settlement pays the order's account
    /// (attack 3): a card's offline value is unloaded to another account.
    pub redeem_any_order: bool,
    /// Sync does not re-deliver load/renewal Issues: a wallet crash between
    /// the back office's answer and IMPORT strands the value.
    pub no_issue_redelivery: bool,
    /// The payee reports only closed requests, not fulfilled ones (the
    /// design as first briefed): a request paid by two payers strands the
    /// payment the payee did not receive.
    pub no_fulfilment_report: bool,
    /// The payee's Request is not signed (SPEC §4.7 today): the terminal
    /// can alter a request's amount or invent a nonce for a real payee key,
    /// and the payer SE pays it.
    pub unsigned_requests: bool,
    /// The payer's SE pays a stream OPEN without spending its inputs.
    pub open_keeps_token: bool,
    /// The payee's SE takes ticks after its close and closes again (a
    /// second claim of the same half).
    pub close_twice: bool,
    /// The payee's SE takes a tick past its next one. It cannot check
    /// such an element with one hash against the one it holds, so the
    /// terminal can hand it any tick (a forged element).
    pub accept_skipped_tick: bool,
    /// Settlement pairs a stream OPEN whose request its payee closed
    /// unreceived like an ordinary payment: the whole stream output is
    /// recovered to the payee, while the payer refunds its half too.
    pub recover_whole_stream: bool,
    /// The payer's SE lets an element out before the tick is durable: a
    /// power cut after the element left and before the record landed.
    pub release_before_record: bool,
    /// The payer's SE keeps releasing after its own close.
    pub ticks_after_close: bool,
}

/// The bound: how many SEs, what each may do (each intent at most once,
/// in any order and interleaving), how many syncs each SE may start.
#[derive(Clone, Debug)]
pub struct Bound {
    pub name: &'static str,
    pub accounts: Vec<Amount>,
    /// (SE, amount): a load.
    pub loads: Vec<(Se, Amount)>,
    /// (payee, amount): a payee request; any other SE may pay it.
    pub payments: Vec<(Se, Amount)>,
    /// (SE, amount, unload): a redemption order request.
    pub redemptions: Vec<(Se, Amount, bool)>,
    /// Syncs each SE may start.
    pub syncs: u8,
    /// (payee, ticks): a stream request of `ticks` ticks at price 1; any
    /// other SE may pay it (OPEN), then release ticks and close.
    pub streams: Vec<(Se, u8)>,
}

impl Bound {
    /// Smoke bound: 2 SEs; SE 0 loads 2 and pays SE 1 1 unit; SE 1
    /// unloads 1; one sync each.
    pub fn small() -> Self {
        Bound {
            name: "small",
            accounts: vec![2, 0],
            loads: vec![(0, 2)],
            payments: vec![(1, 1)],
            redemptions: vec![(1, 1, true)],
            syncs: 1,
            streams: vec![],
        }
    }
    /// The suite bound (issue 9's "under 2 minutes"): 2 SEs, both load
    /// (2 and 1), a payment each way (1 unit), SE 1 unloads 1; one sync
    /// each.
    pub fn suite() -> Self {
        Bound {
            name: "suite",
            accounts: vec![2, 1],
            loads: vec![(0, 2), (1, 1)],
            payments: vec![(1, 1), (0, 1)],
            redemptions: vec![(1, 1, true)],
            syncs: 1,
            streams: vec![],
        }
    }
    /// Renewal and repeated sync: SE 0 loads 2, pays SE 1 1 unit, renews
    /// 1; two syncs each (so each side can upload twice, in either order).
    pub fn renewal() -> Self {
        Bound {
            name: "renewal",
            accounts: vec![2, 0],
            loads: vec![(0, 2)],
            payments: vec![(1, 1)],
            redemptions: vec![(0, 1, false)],
            syncs: 2,
            streams: vec![],
        }
    }
    /// Three SEs: SE 0 loads 2; SE 1 and SE 2 each request 1 unit that
    /// any other SE may pay (the terminal may show a request to two
    /// payers); one sync each.
    pub fn three() -> Self {
        Bound {
            name: "three",
            accounts: vec![2, 0, 0],
            loads: vec![(0, 2)],
            payments: vec![(1, 1), (2, 1)],
            redemptions: vec![],
            syncs: 1,
            streams: vec![],
        }
    }
    /// Larger (example only, minutes): as `renewal` plus an unload by SE 1.
    pub fn large() -> Self {
        Bound {
            name: "large",
            accounts: vec![2, 0],
            loads: vec![(0, 2)],
            payments: vec![(1, 1)],
            redemptions: vec![(1, 1, true), (0, 1, false)],
            syncs: 2,
            streams: vec![],
        }
    }
    /// Streams: SE 0 loads 2 and pays SE 1's stream request of 2 ticks
    /// (OPEN, ticks, closes by either side in any order); one sync each.
    pub fn stream() -> Self {
        Bound {
            name: "stream",
            accounts: vec![2, 0],
            loads: vec![(0, 2)],
            payments: vec![],
            redemptions: vec![],
            syncs: 1,
            streams: vec![(1, 2)],
        }
    }
    /// Three ticks and a redemption: SE 0 loads 3 and pays SE 1's stream
    /// request of 3 ticks; SE 1 unloads 1 (from its claim token, the only
    /// value it can hold); one sync each.
    pub fn stream_unload() -> Self {
        Bound {
            name: "stream_unload",
            accounts: vec![3, 0],
            loads: vec![(0, 3)],
            payments: vec![],
            redemptions: vec![(1, 1, true)],
            syncs: 1,
            streams: vec![(1, 3)],
        }
    }
    /// A stream beside ordinary payments: both SEs load (3 and 1), SE 0
    /// requests a 1-unit payment (SE 1 pays it), SE 1 requests a stream of
    /// 2 ticks (SE 0 opens it with change); one sync each.
    pub fn stream_mixed() -> Self {
        Bound {
            name: "stream_mixed",
            accounts: vec![3, 1],
            loads: vec![(0, 3), (1, 1)],
            payments: vec![(0, 1)],
            redemptions: vec![],
            syncs: 1,
            streams: vec![(1, 2)],
        }
    }
    /// A stream request shown to two payers: SE 0 and SE 1 each load 1;
    /// SE 2 requests a stream of 1 tick that either may open (or both:
    /// the surplus OPEN's payee half is settled as a claim of nothing and
    /// its payer refunds through its own half); one sync each.
    pub fn stream_three() -> Self {
        Bound {
            name: "stream_three",
            accounts: vec![1, 1, 0],
            loads: vec![(0, 1), (1, 1)],
            payments: vec![],
            redemptions: vec![],
            syncs: 1,
            streams: vec![(2, 1)],
        }
    }
    /// Experimental bound from the environment, for sizing:
    /// `syncs;acc,acc;se:amt,..;payee:amt,..;se:amt:u|r,..[;payee:ticks,..]`
    pub fn parse(spec: &str) -> Option<Self> {
        let f: Vec<&str> = spec.split(';').collect();
        let list = |x: &str| -> Vec<Vec<i16>> {
            x.split(',')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    e.split(':')
                        .map(|v| match v {
                            "u" => 1,
                            "r" => 0,
                            v => v.parse().unwrap(),
                        })
                        .collect()
                })
                .collect()
        };
        Some(Bound {
            name: "custom",
            syncs: f.first()?.parse().ok()?,
            accounts: f.get(1)?.split(',').map(|v| v.parse().unwrap()).collect(),
            loads: list(f.get(2)?).iter().map(|v| (v[0] as Se, v[1])).collect(),
            payments: list(f.get(3)?).iter().map(|v| (v[0] as Se, v[1])).collect(),
            redemptions: list(f.get(4)?)
                .iter()
                .map(|v| (v[0] as Se, v[1], v[2] == 1))
                .collect(),
            streams: f
                .get(5)
                .map(|x| list(x).iter().map(|v| (v[0] as Se, v[1] as u8)).collect())
                .unwrap_or_default(),
        })
    }
    pub fn by_name(name: &str) -> Option<Self> {
        if name.contains(';') {
            return Self::parse(name);
        }
        Some(match name {
            "small" => Self::small(),
            "suite" => Self::suite(),
            "renewal" => Self::renewal(),
            "three" => Self::three(),
            "large" => Self::large(),
            "stream" => Self::stream(),
            "stream_unload" => Self::stream_unload(),
            "stream_mixed" => Self::stream_mixed(),
            "stream_three" => Self::stream_three(),
            _ => return None,
        })
    }
    pub fn n_se(&self) -> usize {
        self.accounts.len()
    }
    pub fn total(&self) -> Amount {
        self.accounts.iter().sum()
    }
    fn n_intents(&self) -> usize {
        self.loads.len() + self.payments.len() + self.redemptions.len() + self.streams.len()
    }
    /// Whether intent `i` is a stream request.
    fn is_stream(&self, i: u8) -> bool {
        let first = self.loads.len() + self.payments.len() + self.redemptions.len();
        (i as usize) >= first && (i as usize) < self.n_intents()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Start intent `i` (load / payee request / redemption order request).
    Start(u8),
    /// SE closes its open requests and builds its sync request.
    Sync(Se),
    /// Broken variant only: the terminal writes the closure list of a
    /// sync of `se`, claiming request `intent`.
    SyncForged(Se, u8),
    /// Deliver a message to the back office.
    ToBo(Msg),
    /// Deliver a message to an SE (any SE: misrouting is allowed).
    ToSe(Msg, Se),
    /// Broken variant only: the terminal injects a Request it made up.
    Forge(Msg),
    /// The payer's SE releases the next tick of a stream it pays (RELEASE:
    /// the tick recorded and the element out in one atomic step).
    Release(Se, StreamId),
    /// An SE closes a stream (payee: claim; payer: refund) into a token.
    Close(Se, StreamId),
    /// Broken variant `release_before_record` only: the element of the
    /// next tick left, then power was cut before its record landed.
    ReleaseThenCrash(Se, StreamId),
}

/// Intent numbers from here on are nonces the terminal invented
/// (`unsigned_requests` only).
const FORGED: u8 = 16;

/// The model: a bound and the bugs switched on.
#[derive(Clone, Debug)]
pub struct Model {
    pub bound: Bound,
    pub bugs: Bugs,
}

enum Intent {
    Load(Se, Amount),
    Pay(Se, Amount),
    Redeem(Se, Amount, bool),
    Stream(Se, u8),
}

impl Model {
    pub fn new(bound: Bound) -> Self {
        Model {
            bound,
            bugs: Bugs::default(),
        }
    }
    pub fn with_bugs(bound: Bound, bugs: Bugs) -> Self {
        Model { bound, bugs }
    }

    fn intent(&self, i: usize) -> Intent {
        let b = &self.bound;
        if i < b.loads.len() {
            let (s, a) = b.loads[i];
            return Intent::Load(s, a);
        }
        let i = i - b.loads.len();
        if i < b.payments.len() {
            let (s, a) = b.payments[i];
            return Intent::Pay(s, a);
        }
        let i = i - b.payments.len();
        if i < b.redemptions.len() {
            let (s, a, u) = b.redemptions[i];
            return Intent::Redeem(s, a, u);
        }
        let (s, n) = b.streams[i - b.redemptions.len()];
        Intent::Stream(s, n)
    }

    pub fn init(&self) -> State {
        let n = self.bound.n_se();
        State {
            ses: vec![SeState::default(); n],
            bo: BackOffice {
                accounts: self.bound.accounts.clone(),
                float: 0,
                last_ctr: vec![0; n],
                ..Default::default()
            },
            records: BTreeMap::new(),
            net: BTreeSet::new(),
            used: 0,
            syncs_left: vec![self.bound.syncs; n],
        }
    }

    // ---------------------------------------------------------------- SE

    /// SE step: build and sign a sync request; open requests are closed
    /// (and their closures signed) in the same atomic step.
    fn se_sync(&self, s: &mut State, se: Se, forged: Option<u8>) -> DevReq {
        let st = &mut s.ses[se as usize];
        let open = std::mem::take(&mut st.open);
        st.closed.extend(open);
        st.ctr += 1;
        let packages = st
            .outgoing
            .iter()
            .filter(|(_, o)| o.status == OutStatus::Unacked)
            .map(|(n, _)| RecId::Transfer {
                payer: se,
                nonce: *n,
            })
            .collect();
        let mut closures: Vec<(u8, Amount)> = st.closed.iter().map(|(i, a)| (*i, *a)).collect();
        if let Some(intent) = forged {
            // The terminal claims a request it has seen (amount from the
            // request message): nothing stops it in the broken variant.
            let amount = self.bound.payments[intent as usize - self.bound.loads.len()].1;
            if !closures.contains(&(intent, amount)) {
                closures.push((intent, amount));
                closures.sort();
            }
        }
        // A terminal that writes the upload (broken variant) also drops
        // the fulfilment reports.
        let fulfilled = if self.bugs.no_fulfilment_report || forged.is_some() {
            vec![]
        } else {
            st.received.iter().copied().collect()
        };
        let closes = st.closes.iter().copied().collect();
        DevReq {
            se,
            ctr: st.ctr,
            body: Body::Sync {
                packages,
                closures,
                fulfilled,
                closes,
            },
        }
    }

    /// SE handles a message; returns the messages it emits, or `None` if
    /// it refused or nothing changed.
    fn se_handle(&self, s: &mut State, se: Se, msg: &Msg) -> Option<Vec<Msg>> {
        match *msg {
            Msg::Issued(op) => {
                let rec = RecId::Issue(op);
                let r = s.records.get(&rec)?;
                if r.outputs[0].owner != Key::Se(se) {
                    return None; // not for this SE
                }
                let op_ = OutPoint { rec, idx: 0 };
                let st = &mut s.ses[se as usize];
                if self.bugs.reimport_after_spend {
                    if st.tokens.contains(&op_) {
                        return None;
                    }
                } else if st.imported.contains(&op) {
                    return None;
                }
                st.imported.insert(op);
                st.tokens.insert(op_);
                Some(vec![])
            }
            Msg::Request {
                payee,
                intent,
                amount,
            } => {
                if payee == se {
                    return None;
                }
                let nonce = Nonce::Pay { payee, intent };
                self.pay(s, se, nonce, Key::Se(payee), amount, None, None)
                    .map(|(t, _)| vec![Msg::Package(t)])
            }
            Msg::StreamRequest {
                payee,
                intent,
                ticks,
            } => {
                // OPEN: an offline payment whose output is the stream's.
                if payee == se {
                    return None;
                }
                let nonce = Nonce::Pay { payee, intent };
                self.pay(
                    s,
                    se,
                    nonce,
                    Key::Se(payee),
                    Amount::from(ticks),
                    None,
                    Some(ticks),
                )
                .map(|(t, _)| vec![Msg::Package(t)])
            }
            Msg::Tick { stream, k } => {
                // ACCEPT: only the next tick, only a released element (the
                // message exists only if the payer's SE released it).
                let st = s.ses[se as usize].streams_in.get_mut(&stream)?;
                if st.closed && !self.bugs.close_twice {
                    return None;
                }
                let next = k == st.ticks + 1;
                let skipped = self.bugs.accept_skipped_tick && k > st.ticks + 1;
                if !(next || skipped) || k > st.ticks_max {
                    return None;
                }
                st.ticks = k;
                Some(vec![])
            }
            Msg::Package(t) => {
                let RecId::Transfer {
                    payer,
                    nonce: Nonce::Pay { payee, intent },
                } = t
                else {
                    return None;
                };
                let r = s.records.get(&t)?.clone();
                let st = &mut s.ses[se as usize];
                if st.received.contains(&t) {
                    return None; // same receipt again (already sent)
                }
                if payee != se || r.outputs[0].owner != Key::Se(se) {
                    return None;
                }
                // Verifies against the open request; a closed or unknown
                // request is refused.
                if st.open.get(&intent) != Some(&r.outputs[0].value) {
                    return None;
                }
                // A stream request is paid by an OPEN, any other by a
                // payment (the request's signed ask says which).
                let open = match r.stream {
                    Some(StreamPart::Open { ticks }) => Some(ticks),
                    _ => None,
                };
                if open.is_some() != self.bound.is_stream(intent) {
                    return None;
                }
                st.open.remove(&intent);
                st.received.insert(t);
                match open {
                    // The stream, not a token: its value is spent by the
                    // closes.
                    Some(ticks_max) => {
                        st.streams_in.insert(
                            StreamId {
                                payer,
                                payee,
                                intent,
                            },
                            StreamIn {
                                ticks_max,
                                ticks: 0,
                                closed: false,
                            },
                        );
                    }
                    None => {
                        st.tokens.insert(OutPoint { rec: t, idx: 0 });
                    }
                }
                Some(vec![Msg::Receipt(t)])
            }
            Msg::Receipt(t) => {
                let RecId::Transfer { payer, nonce } = t else {
                    return None;
                };
                if payer != se {
                    return None;
                }
                let o = s.ses[se as usize].outgoing.get_mut(&nonce)?;
                if o.status != OutStatus::Unacked {
                    return None;
                }
                o.status = OutStatus::Acked;
                Some(vec![])
            }
            Msg::Order {
                nonce,
                se: bound_se,
                amount,
                ..
            } => {
                if bound_se != se && !self.bugs.redeem_any_order {
                    return None; // REDEEM only on an order for this SE
                }
                let (t, ctr) = self.pay(s, se, nonce, Key::Dcp, amount, Some(()), None)?;
                Some(vec![Msg::Dev(DevReq {
                    se,
                    ctr: ctr.unwrap(),
                    body: Body::Redeem { nonce, transfer: t },
                })])
            }
            Msg::Settled(t) => {
                let RecId::Transfer { payer, nonce } = t else {
                    return None;
                };
                if payer != se {
                    return None;
                }
                let o = s.ses[se as usize].outgoing.get_mut(&nonce)?;
                if o.status == OutStatus::Settled {
                    return None;
                }
                o.status = OutStatus::Settled;
                Some(vec![])
            }
            Msg::Dev(_) => None,
        }
    }

    /// RELEASE (atomic): the next tick is recorded and its element leaves
    /// in one step. Nothing after the payer's close or past `ticks_max`.
    fn release(&self, s: &mut State, se: Se, id: StreamId) -> bool {
        let Some(o) = s.ses[se as usize].streams_out.get_mut(&id) else {
            return false;
        };
        if (o.closed && !self.bugs.ticks_after_close) || o.released >= o.ticks_max {
            return false;
        }
        o.released += 1;
        s.net.insert(Msg::Tick {
            stream: id,
            k: o.released,
        });
        true
    }

    /// CLOSE (atomic): the payee's SE signs its claim of the ticks it
    /// holds, the payer's SE its refund of the ticks it did not release;
    /// each spends its half into a token and marks the stream closed in
    /// the same step. Closing again changes nothing (the same close is
    /// answered). A close of nothing is a record without outputs here
    /// (the SE writes none), so that settlement sees both halves.
    fn close(&self, s: &mut State, se: Se, id: StreamId) -> bool {
        let st = &mut s.ses[se as usize];
        let (half, ticks, value, part) = if id.payee == se {
            let Some(i) = st.streams_in.get_mut(&id) else {
                return false;
            };
            if i.closed && !self.bugs.close_twice {
                return false;
            }
            i.closed = true;
            (
                Half::Payee,
                i.ticks,
                Amount::from(i.ticks),
                StreamPart::Claim { ticks: i.ticks },
            )
        } else if id.payer == se {
            let Some(o) = st.streams_out.get_mut(&id) else {
                return false;
            };
            if o.closed {
                return false;
            }
            o.closed = true;
            (
                Half::Payer,
                o.released,
                Amount::from(o.ticks_max - o.released),
                StreamPart::Refund {
                    released: o.released,
                },
            )
        } else {
            return false;
        };
        let rec = RecId::Close {
            stream: id,
            half,
            ticks,
        };
        if s.records.contains_key(&rec) {
            return false; // the same close again (close_twice only)
        }
        let mut outputs = vec![];
        if value > 0 {
            outputs.push(Output {
                value,
                owner: Key::Se(se),
            });
            st.tokens.insert(OutPoint { rec, idx: 0 });
        }
        st.closes.insert(rec);
        s.records.insert(
            rec,
            Record {
                inputs: vec![id.half(half)],
                outputs,
                stream: Some(part),
            },
        );
        true
    }

    /// PAY / REDEEM / stream OPEN (atomic): mark inputs spent, store
    /// change, log the outgoing package (and, for an OPEN of `open`
    /// ticks, the stream). The same nonce again changes nothing (the
    /// logged package is resent). Returns the transfer and, for a
    /// redemption, the counter of the Redeem request.
    #[allow(clippy::too_many_arguments)]
    fn pay(
        &self,
        s: &mut State,
        se: Se,
        nonce: Nonce,
        to: Key,
        amount: Amount,
        redeem: Option<()>,
        open: Option<u8>,
    ) -> Option<(RecId, Option<u8>)> {
        let st = &mut s.ses[se as usize];
        if st.outgoing.contains_key(&nonce) {
            return None;
        }
        // Deterministic coin selection: in outpoint order until enough.
        let mut inputs = Vec::new();
        let mut sum = 0;
        for t in &st.tokens {
            if sum >= amount {
                break;
            }
            sum += s.records[&t.rec].outputs[t.idx as usize].value;
            inputs.push(*t);
        }
        if sum < amount {
            return None;
        }
        let id = RecId::Transfer { payer: se, nonce };
        let mut outputs = vec![Output {
            value: amount,
            owner: to,
        }];
        if sum > amount {
            outputs.push(Output {
                value: sum - amount,
                owner: Key::Se(se),
            });
            st.tokens.insert(OutPoint { rec: id, idx: 1 });
        }
        if !(open.is_some() && self.bugs.open_keeps_token) {
            for i in &inputs {
                st.tokens.remove(i);
            }
        }
        if let (Some(ticks_max), Nonce::Pay { payee, intent }) = (open, nonce) {
            st.streams_out.insert(
                StreamId {
                    payer: se,
                    payee,
                    intent,
                },
                StreamOut {
                    ticks_max,
                    released: 0,
                    closed: false,
                },
            );
        }
        let redeem_ctr = redeem.map(|()| {
            st.ctr += 1;
            st.ctr
        });
        st.outgoing.insert(
            nonce,
            Outgoing {
                status: OutStatus::Unacked,
                redeem_ctr,
            },
        );
        let stream = open.map(|ticks| StreamPart::Open { ticks });
        s.records.insert(
            id,
            Record {
                inputs,
                outputs,
                stream,
            },
        );
        Some((id, redeem_ctr))
    }

    // ------------------------------------------------------- back office

    /// Register a transfer and its whole ancestry in the spent registry.
    fn settle(&self, s: &mut State, t: RecId) {
        let mut stack = vec![t];
        while let Some(id) = stack.pop() {
            let Some(r) = s.records.get(&id) else {
                continue;
            };
            for i in r.inputs.clone() {
                self.register(s, i, Consumer::Transfer(id));
                stack.push(i.rec);
            }
        }
    }

    /// Returns false on a conflicting consumer (double spend alert).
    fn register(&self, s: &mut State, o: OutPoint, c: Consumer) -> bool {
        match s.bo.spent.get(&o) {
            Some(x) if *x == c => true,
            Some(_) => {
                s.bo.double_spends = s.bo.double_spends.saturating_add(1);
                false
            }
            None => {
                s.bo.spent.insert(o, c);
                true
            }
        }
    }

    fn issue(&self, s: &mut State, op: Op, to: Se, value: Amount) {
        s.records.entry(RecId::Issue(op)).or_insert(Record {
            inputs: vec![],
            outputs: vec![Output {
                value,
                owner: Key::Se(to),
            }],
            stream: None,
        });
        s.bo.mailbox.entry(to).or_default().insert(op);
    }

    /// The back office handles an SE-signed request. Returns its answer
    /// (the stored one for an identical resend), or `None` if refused.
    fn bo_handle(&self, s: &mut State, req: &DevReq) -> Option<Vec<Msg>> {
        let key = (req.se, req.ctr);
        if let Some(body) = s.bo.answers.get(&key) {
            // Identical resend: the stored answer (already in the network
            // set, so nothing new). Same counter, other content: refused
            // (replay).
            return if *body == req.body {
                Some(vec![])
            } else {
                None
            };
        }
        if req.ctr <= s.bo.last_ctr[req.se as usize] {
            return None; // replay of an old counter
        }
        s.bo.last_ctr[req.se as usize] = req.ctr;
        let se = req.se;
        let ans: Vec<Msg> = match &req.body {
            Body::Load { amount } => {
                let acc = &mut s.bo.accounts[se as usize];
                if *acc < *amount {
                    vec![] // stored error: insufficient funds
                } else {
                    *acc -= amount;
                    s.bo.float += amount;
                    let op = Op::Load { se, ctr: req.ctr };
                    self.issue(s, op, se, *amount);
                    vec![Msg::Issued(op)]
                }
            }
            Body::Order { amount, unload } => {
                let nonce = Nonce::Redeem { se, ctr: req.ctr };
                s.bo.orders.insert(nonce, (se, *amount, *unload));
                vec![Msg::Order {
                    nonce,
                    se,
                    amount: *amount,
                    unload: *unload,
                }]
            }
            Body::Redeem { nonce, transfer } => self.redeem(s, se, *nonce, *transfer),
            Body::Sync {
                packages,
                closures,
                fulfilled,
                closes,
            } => {
                let mut ans = Vec::new();
                for t in packages {
                    match t {
                        RecId::Transfer { payer, .. } if *payer != se => {}
                        _ if !s.records.contains_key(t) => {}
                        // An unacknowledged redemption is settled as one
                        // (once per redemption nonce), not dropped.
                        RecId::Transfer {
                            nonce: nonce @ Nonce::Redeem { .. },
                            ..
                        } => {
                            ans.extend(self.redeem(s, se, *nonce, *t));
                        }
                        _ => {
                            self.settle(s, *t);
                            s.bo.settled.insert(*t);
                            ans.push(Msg::Settled(*t));
                        }
                    }
                }
                for (intent, amount) in closures {
                    s.bo.closures.insert((se, *intent, *amount));
                }
                for t in fulfilled {
                    if let RecId::Transfer {
                        nonce: n @ Nonce::Pay { payee, .. },
                        ..
                    } = t
                        && *payee == se
                    {
                        s.bo.fulfilled.entry(*n).or_insert(*t);
                    }
                }
                for c in closes {
                    // Only the half's own SE signs its close.
                    if let RecId::Close { stream, half, .. } = c {
                        let signer = match half {
                            Half::Payee => stream.payee,
                            Half::Payer => stream.payer,
                        };
                        if signer == se && s.records.contains_key(c) {
                            self.settle(s, *c);
                        }
                    }
                }
                self.pair(s);
                let ops: Vec<Op> =
                    s.bo.mailbox
                        .get(&se)
                        .into_iter()
                        .flatten()
                        .copied()
                        .collect();
                for op in ops {
                    if !self.bugs.no_issue_redelivery || matches!(op, Op::Recover { .. }) {
                        ans.push(Msg::Issued(op));
                    }
                }
                ans
            }
        };
        self.book_streams(s);
        s.bo.answers.insert(key, req.body.clone());
        Some(ans)
    }

    /// Settlement of streams whose two halves are both registered, once
    /// per stream: the claim against the refund's released count. The
    /// leftover (released, never claimed) stays in the float; a claim
    /// above the released count is alerted and its excess booked from the
    /// scheme loss account into the float (T71: detected, not prevented).
    fn book_streams(&self, s: &mut State) {
        let opens: Vec<(StreamId, u8)> = s
            .records
            .iter()
            .filter_map(|(id, r)| match r.stream {
                Some(StreamPart::Open { ticks }) => Some((StreamId::of(*id)?, ticks)),
                _ => None,
            })
            .collect();
        for (id, ticks_max) in opens {
            if s.bo.streams.contains_key(&id) {
                continue;
            }
            let claim = match s.bo.spent.get(&id.half(Half::Payee)) {
                Some(Consumer::Transfer(c)) => match s.records.get(c).and_then(|r| r.stream) {
                    Some(StreamPart::Claim { ticks }) => ticks,
                    _ => continue,
                },
                // Its payee never received it: a claim of nothing.
                Some(Consumer::Recovery | Consumer::Refund) => 0,
                _ => continue,
            };
            let released = match s.bo.spent.get(&id.half(Half::Payer)) {
                Some(Consumer::Transfer(c)) => match s.records.get(c).and_then(|r| r.stream) {
                    Some(StreamPart::Refund { released }) => released,
                    _ => continue,
                },
                _ => continue,
            };
            if claim <= released {
                s.bo.leftover += Amount::from(released - claim);
            } else {
                let excess = Amount::from(claim - released);
                s.bo.stream_alerts = s.bo.stream_alerts.saturating_add(1);
                s.bo.stream_loss += excess;
                s.bo.float += excess;
            }
            s.bo.streams.insert(
                id,
                Booked {
                    ticks_max,
                    claim,
                    released,
                },
            );
        }
    }

    /// Settle a redemption: once per redemption nonce.
    fn redeem(&self, s: &mut State, se: Se, nonce: Nonce, t: RecId) -> Vec<Msg> {
        let Some(&(bound, amount, unload)) = s.bo.orders.get(&nonce) else {
            return vec![];
        };
        if s.bo.redeemed.contains(&nonce) {
            // Settled already (by an earlier request): the same result.
            return if s.bo.spent.get(&OutPoint { rec: t, idx: 0 }) == Some(&Consumer::Redemption) {
                vec![Msg::Receipt(t)]
            } else {
                vec![]
            };
        }
        if bound != se && !self.bugs.redeem_any_order {
            return vec![]; // the request must come from the order's SE
        }
        let RecId::Transfer { nonce: tn, .. } = t else {
            return vec![];
        };
        let Some(r) = s.records.get(&t) else {
            return vec![];
        };
        if tn != nonce
            || r.outputs[0]
                != (Output {
                    value: amount,
                    owner: Key::Dcp,
                })
        {
            return vec![];
        }
        self.settle(s, t);
        s.bo.settled.insert(t);
        if !self.register(s, OutPoint { rec: t, idx: 0 }, Consumer::Redemption) {
            return vec![];
        }
        s.bo.redeemed.insert(nonce);
        if unload {
            s.bo.accounts[bound as usize] += amount;
            s.bo.float -= amount;
            vec![Msg::Receipt(t)]
        } else {
            let op = Op::Renew { nonce };
            self.issue(s, op, bound, amount);
            vec![Msg::Receipt(t), Msg::Issued(op)]
        }
    }

    /// Resolve settled payment packages against the payee's reports:
    /// per request nonce, the transfer the payee received stands; if the
    /// payee closed the request, the first settled matching transfer is
    /// recovered to the payee (once per request); any other settled
    /// transfer for a resolved request is refunded to its payer (once).
    fn pair(&self, s: &mut State) {
        let settled: Vec<RecId> = s.bo.settled.iter().copied().collect();
        for t in settled {
            let RecId::Transfer {
                payer,
                nonce: nonce @ Nonce::Pay { payee, intent },
            } = t
            else {
                continue;
            };
            if s.bo.recovered.contains(&t) || s.bo.refunded.contains(&t) {
                continue;
            }
            let out = s.records[&t].outputs[0];
            let recovered_other =
                s.bo.recovered
                    .iter()
                    .any(|r| matches!(r, RecId::Transfer { nonce: n, .. } if *n == nonce));
            let refund = match s.bo.fulfilled.get(&nonce) {
                Some(r) if *r == t => continue, // the payment the payee received
                Some(_) => true,
                None => {
                    if recovered_other {
                        true
                    } else if s.bo.closures.contains(&(payee, intent, out.value))
                        && out.owner == Key::Se(payee)
                    {
                        false
                    } else {
                        continue; // unresolved: wait for the payee's report
                    }
                }
            };
            let (consumer, op, to) = if refund {
                (Consumer::Refund, Op::Refund { payer, nonce }, payer)
            } else {
                (Consumer::Recovery, Op::Recover { payer, nonce }, payee)
            };
            if !self.register(s, OutPoint { rec: t, idx: 0 }, consumer) {
                continue;
            }
            if refund {
                s.bo.refunded.insert(t);
            } else {
                s.bo.recovered.insert(t);
            }
            // A stream OPEN its payee never received: its payee half is
            // settled as a claim of nothing, and the payer's own refund
            // half returns what it did not release. Paying the whole
            // output out as well would pay the stream twice.
            let open = matches!(s.records[&t].stream, Some(StreamPart::Open { .. }));
            if open && !self.bugs.recover_whole_stream {
                continue;
            }
            self.issue(s, op, to, out.value);
        }
    }

    // ----------------------------------------------------- accounting

    fn value(s: &State, o: &OutPoint) -> Amount {
        s.records
            .get(&o.rec)
            .and_then(|r| r.outputs.get(o.idx as usize))
            .map_or(0, |out| out.value)
    }

    /// Every stream OPEN signed, with its ticks.
    pub fn streams(s: &State) -> impl Iterator<Item = (StreamId, u8)> + '_ {
        s.records.iter().filter_map(|(id, r)| match r.stream {
            Some(StreamPart::Open { ticks }) => Some((StreamId::of(*id)?, ticks)),
            _ => None,
        })
    }

    /// Records (signed closes) consuming a half of stream `id`.
    fn closes_of(s: &State, id: StreamId) -> impl Iterator<Item = (&RecId, &Record)> + '_ {
        let halves = [id.half(Half::Payee), id.half(Half::Payer)];
        s.records
            .iter()
            .filter(move |(_, r)| r.inputs.iter().any(|i| halves.contains(i)))
    }

    /// What a stream output still locks: its value less what its signed
    /// closes pay out. Once both closes are settled this is the leftover
    /// (negative for a claim above the released ticks).
    pub fn stream_remainder(s: &State, id: StreamId, ticks: u8) -> Amount {
        let paid: Amount = Self::closes_of(s, id)
            .flat_map(|(_, r)| r.outputs.iter())
            .map(|o| o.value)
            .sum();
        Amount::from(ticks) - paid
    }

    /// Locked stream value not yet booked by settlement.
    fn streams_unbooked(s: &State) -> Amount {
        Self::streams(s)
            .filter(|(id, _)| !s.bo.streams.contains_key(id))
            .map(|(id, n)| Self::stream_remainder(s, id, n))
            .sum()
    }

    /// Consumers of every outpoint that has one: each signed transfer
    /// spending it, plus a recovery, refund or redemption settlement in
    /// the registry.
    pub fn consumers(s: &State) -> BTreeMap<OutPoint, usize> {
        let mut c: BTreeMap<OutPoint, usize> = BTreeMap::new();
        for r in s.records.values() {
            for i in &r.inputs {
                *c.entry(*i).or_default() += 1;
            }
        }
        for (o, k) in &s.bo.spent {
            if matches!(
                k,
                Consumer::Recovery | Consumer::Refund | Consumer::Redemption
            ) {
                *c.entry(*o).or_default() += 1;
            }
        }
        c
    }

    /// Every output of every record, but a stream's output (its value is
    /// counted by [`Model::stream_remainder`]).
    fn outpoints(s: &State) -> impl Iterator<Item = OutPoint> + '_ {
        s.records.iter().flat_map(|(id, r)| {
            let first = usize::from(matches!(r.stream, Some(StreamPart::Open { .. })));
            (first..r.outputs.len()).map(move |i| OutPoint {
                rec: *id,
                idx: i as u8,
            })
        })
    }

    pub fn held(s: &State) -> Amount {
        s.ses
            .iter()
            .flat_map(|st| st.tokens.iter())
            .map(|o| Self::value(s, o))
            .sum()
    }

    /// Value in flight: outputs not consumed and held by no SE (Issues not
    /// yet imported, packages neither received nor recovered, redemptions
    /// not settled), and what streams lock until settlement books them.
    pub fn in_flight(s: &State) -> Amount {
        let c = Self::consumers(s);
        Self::outpoints(s)
            .filter(|o| !c.contains_key(o) && !s.ses.iter().any(|st| st.tokens.contains(o)))
            .map(|o| Self::value(s, &o))
            .sum::<Amount>()
            + Self::streams_unbooked(s)
    }

    /// Unconsumed offline value (what the float must cover): with what
    /// streams lock and their booked leftover.
    pub fn live(s: &State) -> Amount {
        let c = Self::consumers(s);
        Self::outpoints(s)
            .filter(|o| !c.contains_key(o))
            .map(|o| Self::value(s, &o))
            .sum::<Amount>()
            + Self::streams_unbooked(s)
            + s.bo.leftover
    }

    /// Honest recovery from `s`: every wallet crashed and every message in
    /// flight is lost. Each SE closes the streams it pays or is paid, then
    /// each syncs (uploading its unacknowledged payment and redemption
    /// packages, its closures and its stream closes) and imports what the
    /// sync answer carries, for up to four rounds. Returns the state
    /// reached.
    pub fn drained(&self, s: &State) -> State {
        // Every message in flight is lost: start from an empty network.
        let mut s = State {
            ses: s.ses.clone(),
            bo: s.bo.clone(),
            records: s.records.clone(),
            net: BTreeSet::new(),
            used: s.used,
            syncs_left: s.syncs_left.clone(),
        };
        for se in 0..self.bound.n_se() as Se {
            let st = &s.ses[se as usize];
            let open: Vec<StreamId> = st
                .streams_out
                .iter()
                .filter(|(_, o)| !o.closed)
                .map(|(id, _)| *id)
                .chain(
                    st.streams_in
                        .iter()
                        .filter(|(_, i)| !i.closed)
                        .map(|(id, _)| *id),
                )
                .collect();
            for id in open {
                self.close(&mut s, se, id);
            }
        }
        for _round in 0..4 {
            for se in 0..self.bound.n_se() as Se {
                let req = self.se_sync(&mut s, se, None);
                if let Some(ans) = self.bo_handle(&mut s, &req) {
                    for m in ans {
                        let _ = self.se_handle(&mut s, se, &m);
                    }
                }
            }
            if Self::in_flight(&s) == 0 {
                break;
            }
        }
        s
    }

    fn apply(&self, s: &mut State, a: &Action) -> bool {
        match a {
            Action::Start(i) => {
                let i = *i as usize;
                if s.used & (1 << i) != 0 {
                    return false;
                }
                s.used |= 1 << i;
                match self.intent(i) {
                    Intent::Load(se, amount) => {
                        let st = &mut s.ses[se as usize];
                        st.ctr += 1;
                        s.net.insert(Msg::Dev(DevReq {
                            se,
                            ctr: st.ctr,
                            body: Body::Load { amount },
                        }));
                    }
                    Intent::Pay(payee, amount) => {
                        s.ses[payee as usize].open.insert(i as u8, amount);
                        s.net.insert(Msg::Request {
                            payee,
                            intent: i as u8,
                            amount,
                        });
                    }
                    Intent::Redeem(se, amount, unload) => {
                        let st = &mut s.ses[se as usize];
                        st.ctr += 1;
                        s.net.insert(Msg::Dev(DevReq {
                            se,
                            ctr: st.ctr,
                            body: Body::Order { amount, unload },
                        }));
                    }
                    Intent::Stream(payee, ticks) => {
                        s.ses[payee as usize]
                            .open
                            .insert(i as u8, Amount::from(ticks));
                        s.net.insert(Msg::StreamRequest {
                            payee,
                            intent: i as u8,
                            ticks,
                        });
                    }
                }
                true
            }
            Action::Release(se, id) => self.release(s, *se, *id),
            Action::ReleaseThenCrash(se, id) => {
                let Some(o) = s.ses[*se as usize].streams_out.get(id) else {
                    return false;
                };
                o.released < o.ticks_max
                    && s.net.insert(Msg::Tick {
                        stream: *id,
                        k: o.released + 1,
                    })
            }
            Action::Close(se, id) => self.close(s, *se, *id),
            Action::Forge(m) => s.net.insert(m.clone()),
            Action::Sync(se) | Action::SyncForged(se, _) => {
                let left = &mut s.syncs_left[*se as usize];
                if *left == 0 {
                    return false;
                }
                *left -= 1;
                let forged = if let Action::SyncForged(_, i) = a {
                    Some(*i)
                } else {
                    None
                };
                let r = self.se_sync(s, *se, forged);
                s.net.insert(Msg::Dev(r));
                true
            }
            Action::ToBo(Msg::Dev(r)) => {
                let before = s.bo.clone();
                match self.bo_handle(s, r) {
                    Some(ans) => {
                        s.net.extend(ans);
                        s.bo != before
                    }
                    None => false,
                }
            }
            Action::ToBo(_) => false,
            Action::ToSe(m, se) => match self.se_handle(s, *se, m) {
                Some(out) => {
                    s.net.extend(out);
                    true
                }
                None => false,
            },
        }
    }
}

impl Model {
    /// Cheap pre-check before cloning the state: `false` only where the
    /// handler itself would refuse or change nothing (the handlers keep
    /// every check; this only saves the clone).
    fn may_change(&self, s: &State, a: &Action) -> bool {
        match a {
            Action::ToBo(Msg::Dev(r)) => {
                !s.bo.answers.contains_key(&(r.se, r.ctr)) && r.ctr > s.bo.last_ctr[r.se as usize]
            }
            Action::ToBo(_) => false,
            Action::ToSe(m, se) => {
                let st = &s.ses[*se as usize];
                match m {
                    Msg::Issued(op) => {
                        let owner = s
                            .records
                            .get(&RecId::Issue(*op))
                            .map(|r| r.outputs[0].owner);
                        owner == Some(Key::Se(*se))
                            && (self.bugs.reimport_after_spend || !st.imported.contains(op))
                    }
                    Msg::Request { payee, intent, .. }
                    | Msg::StreamRequest { payee, intent, .. } => {
                        *payee != *se
                            && !st.outgoing.contains_key(&Nonce::Pay {
                                payee: *payee,
                                intent: *intent,
                            })
                    }
                    Msg::Package(t) => !st.received.contains(t),
                    Msg::Receipt(RecId::Transfer { payer, nonce })
                    | Msg::Settled(RecId::Transfer { payer, nonce }) => {
                        *payer == *se
                            && st
                                .outgoing
                                .get(nonce)
                                .is_some_and(|o| o.status != OutStatus::Settled)
                    }
                    Msg::Order {
                        nonce, se: bound, ..
                    } => {
                        (*bound == *se || self.bugs.redeem_any_order)
                            && !st.outgoing.contains_key(nonce)
                    }
                    Msg::Tick { stream, k } => st.streams_in.get(stream).is_some_and(|i| {
                        (!i.closed || self.bugs.close_twice)
                            && (*k == i.ticks + 1
                                || (self.bugs.accept_skipped_tick && *k > i.ticks))
                    }),
                    _ => true,
                }
            }
            _ => true,
        }
    }
}

/// Σ accounts + float = minted + the scheme's stream loss (an overclaim's
/// excess is booked from the loss account into the float), and the float
/// covers the unconsumed offline value.
fn ledger_balances(m: &Model, s: &State) -> bool {
    s.bo.accounts.iter().sum::<Amount>() + s.bo.float == m.bound.total() + s.bo.stream_loss
        && s.bo.float == Model::live(s)
}

/// Σ accounts + held + in flight + booked stream leftover − stream loss
/// = minted.
fn no_value_created(m: &Model, s: &State) -> bool {
    let accounts: Amount = s.bo.accounts.iter().sum();
    accounts + Model::held(s) + Model::in_flight(s) + s.bo.leftover - s.bo.stream_loss
        == m.bound.total()
}

/// The payee's SE never holds more ticks than the payer's SE released.
fn stream_payee_within_released(_: &Model, s: &State) -> bool {
    s.ses.iter().all(|st| {
        st.streams_in.iter().all(|(id, i)| {
            let released = s.ses[id.payer as usize]
                .streams_out
                .get(id)
                .map_or(0, |o| o.released);
            i.ticks <= released
        })
    })
}

/// What a stream's closes pay out never exceeds the stream's value.
fn stream_closes_within_value(_: &Model, s: &State) -> bool {
    Model::streams(s).all(|(id, n)| {
        let paid: Amount = Model::closes_of(s, id)
            .flat_map(|(_, r)| r.outputs.iter())
            .map(|o| o.value)
            .sum();
        paid <= Amount::from(n)
    })
}

/// Each half of a stream is consumed once: one signed close, or (the
/// payee half of a stream never received) one settlement entry.
fn stream_half_closed_once(_: &Model, s: &State) -> bool {
    Model::streams(s).all(|(id, _)| {
        [Half::Payee, Half::Payer].iter().all(|h| {
            let o = id.half(*h);
            let signed = s.records.values().filter(|r| r.inputs.contains(&o)).count();
            let settled = matches!(
                s.bo.spent.get(&o),
                Some(Consumer::Recovery | Consumer::Refund)
            );
            signed + usize::from(settled) <= 1
        })
    })
}

/// Once both halves are settled: what the claim pays + what the refund
/// pays + the booked leftover = the stream's value, the claim being at
/// most the released ticks.
fn stream_settled_exactly(_: &Model, s: &State) -> bool {
    s.bo.streams.iter().all(|(id, b)| {
        let paid_for = |h: Half| -> Amount {
            let o = id.half(h);
            match s.bo.spent.get(&o) {
                Some(Consumer::Transfer(c)) => s.records[c].outputs.iter().map(|x| x.value).sum(),
                Some(Consumer::Recovery) => Model::value(
                    s,
                    &OutPoint {
                        rec: RecId::Issue(Op::Recover {
                            payer: id.payer,
                            nonce: Nonce::Pay {
                                payee: id.payee,
                                intent: id.intent,
                            },
                        }),
                        idx: 0,
                    },
                ),
                _ => 0,
            }
        };
        b.claim <= b.released
            && paid_for(Half::Payee) + paid_for(Half::Payer) + Amount::from(b.released - b.claim)
                == Amount::from(b.ticks_max)
    })
}

fn stream_no_overclaim(_: &Model, s: &State) -> bool {
    s.bo.stream_alerts == 0 && s.bo.stream_loss == 0
}

fn spent_at_most_once(_: &Model, s: &State) -> bool {
    s.bo.double_spends == 0 && Model::consumers(s).values().all(|n| *n <= 1)
}

fn no_se_holds_consumed(_: &Model, s: &State) -> bool {
    let c = Model::consumers(s);
    s.ses
        .iter()
        .all(|st| st.tokens.iter().all(|o| !c.contains_key(o)))
}

/// Per payee request: the payee is credited at most once (received or
/// recovered, never both, never twice); a recovered or refunded transfer
/// was never received; each recovery/refund Issue stands for one
/// registered recovery/refund.
fn recovered_once_never_received(_: &Model, s: &State) -> bool {
    let nonce_of = |t: &RecId| match t {
        RecId::Transfer { nonce, .. } => Some(*nonce),
        _ => None,
    };
    let mut credited: BTreeMap<Nonce, u8> = BTreeMap::new();
    for t in s
        .ses
        .iter()
        .flat_map(|st| st.received.iter())
        .chain(s.bo.recovered.iter())
    {
        *credited.entry(nonce_of(t).unwrap()).or_default() += 1;
    }
    credited.values().all(|c| *c <= 1)
        && s.bo
            .recovered
            .iter()
            .chain(s.bo.refunded.iter())
            .all(|t| !s.ses.iter().any(|st| st.received.contains(t)))
        && s.records.keys().all(|id| match id {
            RecId::Issue(Op::Recover { payer, nonce }) => {
                let t = RecId::Transfer {
                    payer: *payer,
                    nonce: *nonce,
                };
                s.bo.recovered.contains(&t)
                    && s.bo.spent.get(&OutPoint { rec: t, idx: 0 }) == Some(&Consumer::Recovery)
            }
            RecId::Issue(Op::Refund { payer, nonce }) => {
                let t = RecId::Transfer {
                    payer: *payer,
                    nonce: *nonce,
                };
                s.bo.refunded.contains(&t)
                    && s.bo.spent.get(&OutPoint { rec: t, idx: 0 }) == Some(&Consumer::Refund)
            }
            _ => true,
        })
}

fn no_negative_balance(_: &Model, s: &State) -> bool {
    s.bo.float >= 0 && s.bo.accounts.iter().all(|a| *a >= 0)
}

fn redemption_by_bound_se(_: &Model, s: &State) -> bool {
    s.bo.redeemed.iter().all(|n| {
        let (bound, _, _) = s.bo.orders[n];
        s.records.contains_key(&RecId::Transfer {
            payer: bound,
            nonce: *n,
        })
    })
}

fn nothing_lost(m: &Model, s: &State) -> bool {
    let d = m.drained(s);
    Model::in_flight(&d) == 0
        && d.ses.iter().all(|st| st.open.is_empty())
        && Model::streams(&d).all(|(id, _)| d.bo.streams.contains_key(&id))
}

impl SrModel for Model {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.init()]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for i in 0..self.bound.n_intents() {
            if s.used & (1 << i) == 0 {
                out.push(Action::Start(i as u8));
            }
        }
        for se in 0..self.bound.n_se() as Se {
            if s.syncs_left[se as usize] > 0 {
                out.push(Action::Sync(se));
                if self.bugs.terminal_closures {
                    for m in &s.net {
                        if let Msg::Request { payee, intent, .. } = m
                            && *payee == se
                            && *intent < FORGED
                        {
                            out.push(Action::SyncForged(se, *intent));
                        }
                    }
                }
            }
        }
        for se in 0..self.bound.n_se() as Se {
            let st = &s.ses[se as usize];
            for (id, o) in &st.streams_out {
                if o.released < o.ticks_max && (!o.closed || self.bugs.ticks_after_close) {
                    out.push(Action::Release(se, *id));
                    if self.bugs.release_before_record {
                        out.push(Action::ReleaseThenCrash(se, *id));
                    }
                }
                if !o.closed {
                    out.push(Action::Close(se, *id));
                }
            }
            for (id, i) in &st.streams_in {
                if !i.closed || self.bugs.close_twice {
                    out.push(Action::Close(se, *id));
                }
                if self.bugs.accept_skipped_tick && i.ticks + 2 <= i.ticks_max {
                    out.push(Action::Forge(Msg::Tick {
                        stream: *id,
                        k: i.ticks + 2,
                    }));
                }
            }
        }
        if self.bugs.unsigned_requests {
            for m in &s.net {
                // Forge only from genuine requests (the payee's own amount),
                // so the forgeries stay finite.
                if let Msg::Request {
                    payee,
                    intent,
                    amount,
                } = *m
                    && intent < FORGED
                    && self.bound.payments[intent as usize - self.bound.loads.len()].1 == amount
                {
                    // The same nonce for more, or a nonce the payee never made.
                    out.push(Action::Forge(Msg::Request {
                        payee,
                        intent,
                        amount: amount + 1,
                    }));
                    out.push(Action::Forge(Msg::Request {
                        payee,
                        intent: intent + FORGED,
                        amount,
                    }));
                }
            }
        }
        for m in &s.net {
            match m {
                Msg::Dev(_) => out.push(Action::ToBo(m.clone())),
                _ => {
                    for se in 0..self.bound.n_se() as Se {
                        out.push(Action::ToSe(m.clone(), se));
                    }
                }
            }
        }
    }

    fn next_state(&self, s: &State, a: Action) -> Option<State> {
        if !self.may_change(s, &a) {
            return None;
        }
        let mut n = s.clone();
        if self.apply(&mut n, &a) {
            Some(n)
        } else {
            None
        }
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("no value created (conservation)", no_value_created),
            Property::always(
                "ledger balances, float covers offline value",
                ledger_balances,
            ),
            Property::always("each token consumed at most once", spent_at_most_once),
            Property::always("no SE holds a consumed token", no_se_holds_consumed),
            Property::always(
                "each request credited once: recovered at most once, never also received",
                recovered_once_never_received,
            ),
            Property::always("no negative balance", no_negative_balance),
            Property::always(
                "redemption settles only its own SE's order",
                redemption_by_bound_se,
            ),
            Property::always(
                "nothing lost: honest recovery delivers all in-flight value",
                nothing_lost,
            ),
        ];
        if !self.bound.streams.is_empty() {
            p.push(Property::always(
                "stream: the payee never holds more ticks than were released",
                stream_payee_within_released,
            ));
            p.push(Property::always(
                "stream: its closes never pay out more than its value",
                stream_closes_within_value,
            ));
            p.push(Property::always(
                "stream: each half closed once",
                stream_half_closed_once,
            ));
            p.push(Property::always(
                "stream: claim + refund + leftover = value once both halves settle",
                stream_settled_exactly,
            ));
            p.push(Property::always(
                "stream: no claim above the released ticks (no alert)",
                stream_no_overclaim,
            ));
            p.push(Property::sometimes(
                "stream: settled with every tick claimed",
                |_: &Model, s: &State| {
                    s.bo.streams
                        .values()
                        .any(|b| b.claim == b.ticks_max && b.released == b.ticks_max)
                },
            ));
            p.push(Property::sometimes(
                "stream: settled with a released tick left over",
                |_: &Model, s: &State| s.bo.streams.values().any(|b| b.claim < b.released),
            ));
            p.push(Property::sometimes(
                "stream: an OPEN its payee never received settled as a claim of nothing",
                |_: &Model, s: &State| {
                    s.bo.streams.keys().any(|id| {
                        matches!(
                            s.bo.spent.get(&id.half(Half::Payee)),
                            Some(Consumer::Recovery | Consumer::Refund)
                        )
                    })
                },
            ));
            if self.bound.n_se() >= 3 {
                p.push(Property::sometimes(
                    "stream: a surplus OPEN (its request fulfilled by another) settled as a claim of nothing",
                    |_: &Model, s: &State| {
                        s.bo.streams.keys().any(|id| {
                            s.bo.spent.get(&id.half(Half::Payee)) == Some(&Consumer::Refund)
                        })
                    },
                ));
            }
        }
        let payee_redeems = self
            .bound
            .redemptions
            .iter()
            .any(|r| self.bound.streams.iter().any(|st| st.0 == r.0));
        if payee_redeems {
            p.push(Property::sometimes(
                "stream: the payee's claim token is spent on",
                |_: &Model, s: &State| {
                    s.records.values().any(|r| {
                        r.stream.is_none()
                            && r.inputs.iter().any(|i| {
                                matches!(
                                    i.rec,
                                    RecId::Close {
                                        half: Half::Payee,
                                        ..
                                    }
                                )
                            })
                    })
                },
            ));
        }
        // Reachability: the model is not trivial at this bound.
        if !self.bound.payments.is_empty() {
            p.push(Property::sometimes(
                "a payment is received and acked",
                |_: &Model, s: &State| {
                    s.ses.iter().any(|st| {
                        st.outgoing
                            .values()
                            .any(|o| o.status == OutStatus::Acked && o.redeem_ctr.is_none())
                    })
                },
            ));
            p.push(Property::sometimes(
                "an interrupted payment is recovered and imported",
                |_: &Model, s: &State| {
                    s.ses.iter().any(|st| {
                        st.imported
                            .iter()
                            .any(|op| matches!(op, Op::Recover { .. }))
                    })
                },
            ));
        }
        if self.bound.n_se() >= 3 && self.bound.payments.len() >= 2 {
            p.push(Property::sometimes(
                "a surplus payment is refunded to its payer",
                |_: &Model, s: &State| {
                    s.ses
                        .iter()
                        .any(|st| st.imported.iter().any(|op| matches!(op, Op::Refund { .. })))
                },
            ));
        }
        if self.bound.redemptions.iter().any(|r| r.2) {
            p.push(Property::sometimes(
                "an unload is settled",
                |_: &Model, s: &State| s.bo.redeemed.iter().any(|n| s.bo.orders[n].2),
            ));
        }
        if self.bound.redemptions.iter().any(|r| !r.2) {
            p.push(Property::sometimes(
                "a renewal is imported",
                |_: &Model, s: &State| {
                    s.ses
                        .iter()
                        .any(|st| st.imported.iter().any(|op| matches!(op, Op::Renew { .. })))
                },
            ));
        }
        p
    }
}

/// Outcome of one exhaustive check.
#[derive(Debug)]
pub struct Report {
    pub bound: &'static str,
    pub states: usize,
    pub max_depth: usize,
    pub elapsed: std::time::Duration,
    /// Properties with a discovery: a counterexample for an `always`, an
    /// example for a `sometimes`.
    pub discoveries: Vec<&'static str>,
    /// `sometimes` properties without an example.
    pub unreached: Vec<&'static str>,
    /// `always` properties violated.
    pub violated: Vec<&'static str>,
}

/// Exhaustive breadth-first check of `model`.
pub fn check(model: Model, threads: usize) -> Report {
    check_with(model, threads, false)
}

/// As [`check`]; with `stop_at_failure` the search ends at the first
/// violated `always` property (for the broken variants).
pub fn check_with(model: Model, threads: usize, stop_at_failure: bool) -> Report {
    use stateright::{Checker, Expectation};
    let bound = model.bound.name;
    let props = model.properties();
    let t0 = std::time::Instant::now();
    let mut b = model.checker().threads(threads);
    if stop_at_failure {
        b = b.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    let c = b.spawn_bfs().join();
    let elapsed = t0.elapsed();
    let mut discoveries = Vec::new();
    let mut unreached = Vec::new();
    let mut violated = Vec::new();
    for p in &props {
        let found = c.discovery(p.name).is_some();
        if found {
            discoveries.push(p.name);
        }
        match p.expectation {
            Expectation::Always | Expectation::Eventually if found => violated.push(p.name),
            Expectation::Sometimes if !found => unreached.push(p.name),
            _ => {}
        }
    }
    Report {
        bound,
        states: c.unique_state_count(),
        max_depth: c.max_depth(),
        elapsed,
        discoveries,
        unreached,
        violated,
    }
}

/// The counterexample (or example) path for `property`, formatted.
pub fn explain(model: Model, property: &'static str) -> Option<String> {
    use stateright::Checker;
    let c = model
        .checker()
        .finish_when(stateright::HasDiscoveries::AnyOf(
            [property].into_iter().collect(),
        ))
        .spawn_bfs()
        .join();
    let path = c.discovery(property)?;
    let mut out = String::new();
    let last = path.last_state().clone();
    for a in path.into_actions() {
        out.push_str(&format!("{a:?}\n"));
    }
    out.push_str(&format!("last state: {last:#?}\n"));
    Some(out)
}

impl Model {
    /// Names of this model's properties.
    pub fn properties_names(&self) -> Vec<&'static str> {
        SrModel::properties(self).iter().map(|p| p.name).collect()
    }
}
