//! A model-checked payment stream (issue 13 item 1, decision 0020): one
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
//! Properties: the payee never holds more ticks than the payer released;
//! settlement never pays out more than the stream's value and never
//! alerts on an honest run; when both halves settled, claim + refund +
//! leftover is exactly the value.

use std::collections::BTreeSet;

use stateright::{Model as SrModel, Property};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamState {
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
    /// Settlement refused a claim above the released ticks.
    pub alert: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamAction {
    Release(u8),
    Accept(u8),
    PayerClose,
    PayeeClose,
    SettleClaim,
    SettleRefund,
    /// Bug `release_before_record` only: the element left, then power was
    /// cut before the tick's record landed.
    ReleaseThenCrash,
}

/// Deliberately broken variants, each caught by a property.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamBugs {
    /// The payer's SE lets the element out before the tick is durable.
    pub release_before_record: bool,
    /// The payer's SE keeps releasing after its own close.
    pub ticks_after_close: bool,
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
        }]
    }

    fn actions(&self, s: &StreamState, out: &mut Vec<StreamAction>) {
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
        out.push(StreamAction::PayeeClose);
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
                if s.payee_closed || k != s.ticks + 1 || !s.net.contains(&k) {
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
