//! A small, focused model of one payment stream (issue 13 item 1,
//! decision 0020), kept beside the main model of the crate root, which
//! has streams too (session 11): this one has no loads, syncs or other
//! payments, so it checks longer chains (N = 4) in milliseconds. One
//! stream of `N` ticks at one unit each between a payer's and a payee's
//! SE, a hostile terminal, crashes, closes by either side in any order and
//! settlement of both halves in any order, any number of times.
//!
//! * **Payer SE**: `released` (durable) and `closed`. RELEASE of tick
//!   `released + 1` is one atomic step: the tick is recorded and the
//!   element leaves together (the SE writes the record before it
//!   answers). A crash before the record is "the step did not happen";
//!   after it, the answer may be lost (message loss). RELEASE of tick
//!   `released` answers the same element again.
//! * **Payee SE**: `ticks` (durable, with the latest element) and
//!   `closed`; it takes only the next tick, and only an element that
//!   exists (released by the payer: finding a preimage is excluded, as
//!   signatures are unforgeable in the main model).
//! * **Terminal/network**: every element ever released stays available
//!   and can be delivered any number of times, in any order, or never.
//! * **Closes**: the payee's claim `k_claim` and the payer's refund count
//!   `k_released` are messages to settlement, delivered any number of
//!   times in any order; each half is registered once (a second, different
//!   close of the same half would be a double spend; the honest SE closes
//!   once and answers the same close again).
//! * **Settlement**: pays the claim `k_claim`, refunds `N − k_released`,
//!   and when both are known books the leftover `k_released − k_claim`
//!   (released, never claimed) or, if the claim exceeds what was
//!   released, refuses it and raises an alert.
//!
//! * **Value binding** (session 10, decision 0020 "as built"): the payer
//!   SE holds one token of the stream's value `N`. The OPEN is an offline
//!   payment: one atomic step spends the token and locks `N` in the two
//!   halves of the OPEN's output (the payee half, the payer half); its
//!   package stays on the network for ever, so it is delivered any number
//!   of times, and the payee's SE takes it once (RECEIVE), and only then
//!   accepts ticks. A close spends its half into a token (the claim `k`,
//!   the refund `N − released`); settlement registers each half once in
//!   the spent registry — a second, different close of a half (a broken
//!   SE) is a double spend, booked as a loss — and books a claim above
//!   the refund's released ticks as a loss too (T71: detected, not
//!   prevented).
//!
//! Properties: the payee never holds more ticks than the payer released;
//! the value the SEs hold (the unspent token, the claim and refund tokens)
//! never exceeds `N`; settlement never pays out more than the stream's
//! value and never books a loss on an honest run; when both halves settled,
//! claim + refund + leftover is exactly the value.

use std::collections::BTreeSet;

use stateright::{Model as SrModel, Property};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamState {
    /// The payer SE still holds its token of value `N` (spent by the OPEN).
    pub token: bool,
    /// The payer SE paid the OPEN (its package is on the network).
    pub opened: bool,
    /// The payee SE took the OPEN's package.
    pub received: bool,
    pub released: u8,
    pub payer_closed: bool,
    pub ticks: u8,
    pub payee_closed: bool,
    /// Elements ever released (by tick): what the terminal can deliver.
    pub net: BTreeSet<u8>,
    /// Close messages ever sent.
    pub claim_sent: Option<u8>,
    pub refund_sent: Option<u8>,
    /// Halves registered at settlement.
    pub claim_settled: Option<u8>,
    pub refund_settled: Option<u8>,
    /// Settlement found a claim above the released ticks (booked as a loss).
    pub alert: bool,
    /// Closes of a half settled after the first (double spends, booked
    /// as losses).
    pub double_closes: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamAction {
    /// The payer SE pays the stream request: the OPEN.
    Open,
    /// The OPEN's package delivered to the payee SE (any number of times).
    Receive,
    Release(u8),
    Accept(u8),
    PayerClose,
    PayeeClose,
    SettleClaim,
    SettleRefund,
    /// Bug `release_before_record` only: the element left, then power was
    /// cut before the tick's record landed.
    ReleaseThenCrash,
    /// Bug `close_twice` only: the payee SE signs a second claim for the
    /// ticks it holds now, and settlement receives it.
    PayeeCloseAgain,
}

/// Deliberately broken variants, each caught by a property.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamBugs {
    /// The payer's SE lets the element out before the tick is durable.
    pub release_before_record: bool,
    /// The payer's SE keeps releasing after its own close.
    pub ticks_after_close: bool,
    /// The payer's SE pays the OPEN without spending its token.
    pub open_keeps_token: bool,
    /// The payee's SE closes again after more ticks (a second claim of
    /// the same half).
    pub close_twice: bool,
}

#[derive(Clone, Debug)]
pub struct StreamModel {
    pub ticks_max: u8,
    pub bugs: StreamBugs,
}

impl StreamModel {
    pub fn new(ticks_max: u8) -> Self {
        StreamModel {
            ticks_max,
            bugs: StreamBugs::default(),
        }
    }
    pub fn with_bugs(mut self, bugs: StreamBugs) -> Self {
        self.bugs = bugs;
        self
    }
}

fn payee_within_released(_: &StreamModel, s: &StreamState) -> bool {
    s.ticks <= s.released
}

/// The value the SEs hold as tokens: the payer's unspent token, the claim
/// (the payee's first close: later ticks it holds are not a token) and
/// the refund.
fn held(m: &StreamModel, s: &StreamState) -> u8 {
    let token = if s.token { m.ticks_max } else { 0 };
    let claim = s.claim_sent.unwrap_or(0);
    let refund = s.refund_sent.map_or(0, |r| m.ticks_max - r);
    token + claim + refund
}

fn holdings_within_value(m: &StreamModel, s: &StreamState) -> bool {
    held(m, s) <= m.ticks_max
}

fn no_double_close(_: &StreamModel, s: &StreamState) -> bool {
    s.double_closes == 0
}

fn no_alert(_: &StreamModel, s: &StreamState) -> bool {
    !s.alert
}

fn never_pays_out_more_than_locked(m: &StreamModel, s: &StreamState) -> bool {
    let claim = s.claim_settled.unwrap_or(0);
    let refund = s.refund_settled.map_or(0, |k| m.ticks_max - k);
    // An alerted claim is refused (not paid).
    let paid = if s.alert { 0 } else { claim };
    paid + refund <= m.ticks_max
}

fn conserved_when_settled(m: &StreamModel, s: &StreamState) -> bool {
    match (s.claim_settled, s.refund_settled) {
        (Some(c), Some(r)) if !s.alert => {
            let leftover = r - c;
            c + (m.ticks_max - r) + leftover == m.ticks_max
        }
        _ => true,
    }
}

impl SrModel for StreamModel {
    type State = StreamState;
    type Action = StreamAction;

    fn init_states(&self) -> Vec<StreamState> {
        vec![StreamState {
            token: true,
            opened: false,
            received: false,
            released: 0,
            payer_closed: false,
            ticks: 0,
            payee_closed: false,
            net: BTreeSet::new(),
            claim_sent: None,
            refund_sent: None,
            claim_settled: None,
            refund_settled: None,
            alert: false,
            double_closes: 0,
        }]
    }

    fn actions(&self, s: &StreamState, out: &mut Vec<StreamAction>) {
        if !s.opened {
            out.push(StreamAction::Open);
            return;
        }
        out.push(StreamAction::Receive);
        let may_release = !s.payer_closed || self.bugs.ticks_after_close;
        if may_release && s.released < self.ticks_max {
            out.push(StreamAction::Release(s.released + 1));
            if self.bugs.release_before_record {
                out.push(StreamAction::ReleaseThenCrash);
            }
        }
        if may_release && s.released > 0 {
            out.push(StreamAction::Release(s.released));
        }
        if !s.payee_closed {
            for &k in &s.net {
                out.push(StreamAction::Accept(k));
            }
        }
        out.push(StreamAction::PayerClose);
        if s.received {
            out.push(StreamAction::PayeeClose);
        }
        if self.bugs.close_twice && s.payee_closed {
            out.push(StreamAction::PayeeCloseAgain);
        }
        if s.claim_sent.is_some() {
            out.push(StreamAction::SettleClaim);
        }
        if s.refund_sent.is_some() {
            out.push(StreamAction::SettleRefund);
        }
    }

    fn next_state(&self, s: &StreamState, a: StreamAction) -> Option<StreamState> {
        let mut n = s.clone();
        match a {
            StreamAction::Open => {
                // One atomic step: the token spent, the halves locked.
                n.opened = true;
                n.token = self.bugs.open_keeps_token;
            }
            StreamAction::Receive => {
                if s.received {
                    return None; // taken once; a redelivery changes nothing
                }
                n.received = true;
            }
            StreamAction::PayeeCloseAgain => {
                // A broken SE: a second claim, for whatever it holds now
                // (more ticks accepted after its close), and settlement
                // sees it: the half's second close is a double spend.
                if s.claim_settled.is_none() || s.double_closes > 0 {
                    return None;
                }
                n.double_closes = 1;
            }
            StreamAction::Release(k) => {
                if k == s.released + 1 {
                    n.released = k;
                }
                n.net.insert(k);
            }
            StreamAction::ReleaseThenCrash => {
                n.net.insert(s.released + 1);
            }
            StreamAction::Accept(k) => {
                if !s.received || s.payee_closed || k != s.ticks + 1 || !s.net.contains(&k) {
                    return None; // refused, nothing changes
                }
                n.ticks = k;
            }
            StreamAction::PayerClose => {
                n.payer_closed = true;
                n.refund_sent = Some(s.refund_sent.unwrap_or(s.released));
            }
            StreamAction::PayeeClose => {
                n.payee_closed = true;
                n.claim_sent = Some(s.claim_sent.unwrap_or(s.ticks));
            }
            StreamAction::SettleClaim => {
                if s.claim_settled.is_none() {
                    n.claim_settled = s.claim_sent;
                }
            }
            StreamAction::SettleRefund => {
                if s.refund_settled.is_none() {
                    n.refund_settled = s.refund_sent;
                }
            }
        }
        // Settlement, once both halves are known: a claim above the
        // released ticks is refused and alerted.
        if let (Some(c), Some(r)) = (n.claim_settled, n.refund_settled)
            && c > r
        {
            n.alert = true;
        }
        if n == *s { None } else { Some(n) }
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "the payee never holds more ticks than were released",
                payee_within_released,
            ),
            Property::always(
                "settlement never pays out more than the locked value",
                never_pays_out_more_than_locked,
            ),
            Property::always(
                "claim + refund + leftover is the value once both settle",
                conserved_when_settled,
            ),
            Property::always("no claim above the released ticks (no alert)", no_alert),
            Property::always(
                "the SEs never hold more than the stream's value",
                holdings_within_value,
            ),
            Property::always(
                "each half is closed once (no double spend)",
                no_double_close,
            ),
            Property::sometimes(
                "the whole stream is claimed",
                |m: &StreamModel, s: &StreamState| {
                    s.claim_settled == Some(m.ticks_max) && s.refund_settled == Some(m.ticks_max)
                },
            ),
            Property::sometimes(
                "a released tick is left over",
                |_: &StreamModel, s: &StreamState| matches!((s.claim_settled, s.refund_settled), (Some(c), Some(r)) if c < r),
            ),
        ]
    }
}

/// Exhaustive check; returns (states, violated always-properties,
/// unreached sometimes-properties).
pub fn check_stream(model: StreamModel) -> (usize, Vec<&'static str>, Vec<&'static str>) {
    use stateright::{Checker, Expectation};
    let props = model.properties();
    let c = model.checker().spawn_bfs().join();
    let mut violated = Vec::new();
    let mut unreached = Vec::new();
    for p in &props {
        let found = c.discovery(p.name).is_some();
        match p.expectation {
            Expectation::Always | Expectation::Eventually if found => violated.push(p.name),
            Expectation::Sometimes if !found => unreached.push(p.name),
            _ => {}
        }
    }
    (c.unique_state_count(), violated, unreached)
}
