//! The device's online side: onboarding, sync, load, renewal, unload and
//! online payments against a DCP, through any [`Backend`] (the HTTP client
//! or the in-process connector). Every request is built and signed inside
//! the SE (BUILD REQUEST) with the SE's own counter; the wallet only
//! chooses the user's parameters and carries the bytes.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use tally_core::codec::Cbor;
pub use tally_core::dcp::SealedKind;
use tally_core::dcp::{
    DeviceOp, DeviceRequest, DeviceResponse, MakerCertificate, Registration, RequestReport,
    SyncBundle, SyncUpload, attachment_digest,
};
use tally_core::{Amount, Hash32, Issue, Policy, PublicKey, RevocationList, Suite};
use tally_se::RequestParams;

use crate::link::{SeLink, WalletError};

/// An error from the back office: HTTP-like status, stable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub status: u16,
    pub code: u16,
    pub message: String,
}

impl BackendError {
    /// A refusal the same request will always get (4xx other than 429):
    /// retrying cannot help.
    pub fn is_final(&self) -> bool {
        (400..500).contains(&self.status) && self.status != 429
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "back office refused ({} / code {}): {}",
            self.status, self.code, self.message
        )
    }
}

/// What the device needs from the back office.
pub trait Backend {
    /// Root key, policy and revocation list (what a fresh SE is given).
    fn trust(&mut self) -> Result<(PublicKey, Policy, RevocationList), BackendError>;
    fn register(&mut self, reg: &Registration) -> Result<Hash32, BackendError>;
    /// Seals `plaintext` to settlement's HPKE key after checking that
    /// `root` (the SE's own trust anchor, not one the back office names)
    /// signed that key, so the DCP forwards it unread (DESIGN.md §5).
    fn seal(
        &mut self,
        root: &PublicKey,
        kind: SealedKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError>;
    /// A signed device request (CBOR) → the response (CBOR).
    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    Se(WalletError),
    Backend(BackendError),
    /// The back office answered something else than the operation expects.
    Unexpected,
    /// The SE refused an Issue it was sent (`reason`, e.g. over its
    /// holding limit) and cancelled it: the back office returned `amount`
    /// to the account.
    Cancelled {
        amount: u64,
        reason: WalletError,
    },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Se(e) => write!(f, "{e}"),
            AgentError::Backend(e) => write!(f, "{e}"),
            AgentError::Unexpected => f.write_str("unexpected answer from the back office"),
            AgentError::Cancelled { amount, reason } => write!(
                f,
                "the SE refused the issued token ({reason}) and cancelled it: {amount} went back to the account"
            ),
        }
    }
}

impl From<WalletError> for AgentError {
    fn from(e: WalletError) -> Self {
        AgentError::Se(e)
    }
}
impl From<BackendError> for AgentError {
    fn from(e: BackendError) -> Self {
        AgentError::Backend(e)
    }
}

/// Keep at least this many certified offline keys after a sync.
pub const CERTIFIED_KEYS_MIN: u32 = 4;

pub struct Agent<'a> {
    pub se: &'a mut dyn SeLink,
    pub backend: &'a mut dyn Backend,
    pub se_id: Hash32,
    /// Where the request in flight is kept until its answer is applied
    /// (None: nothing survives the process; tests and the demo).
    pub pending: Option<&'a mut dyn PendingStore>,
}

/// Durable storage, beside the SE, of the one device request in flight:
/// its exact signed bytes, written before they are sent and removed only
/// after the answer has been applied to the SE. A retry resends them
/// unchanged, and the back office answers a repeat with its stored answer
/// (success or refusal), so an operation happens once whatever fails in
/// between.
pub trait PendingStore {
    fn get(&mut self) -> Option<Vec<u8>>;
    fn put(&mut self, request: Option<&[u8]>) -> Result<(), BackendError>;
    /// Redemptions (transfer ids) the back office refused for good: not
    /// tried again, so one of them cannot block every later command.
    fn given_up(&mut self) -> Vec<Hash32> {
        Vec::new()
    }
    fn give_up(&mut self, _transfer_id: Hash32) -> Result<(), BackendError> {
        Ok(())
    }
}

/// What [`Agent::resume`] finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// A request found pending, resent and applied.
    Request(DeviceOp),
    /// A redemption of the SE's (its pending Redeem request, or one the SE
    /// paid and the back office never acknowledged), settled: an unload to
    /// the account or a renewal.
    Redemption { amount: Amount, unload: bool },
    /// A redemption the back office refused for good (`code`): left in the
    /// SE's log, not tried again (an operator's case).
    RedemptionRefused { amount: Amount, code: u16 },
    /// An Issue the SE refused and cancelled: `amount` back to the account.
    Cancelled { amount: u64 },
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finished::Request(op) => match op {
                DeviceOp::Certify { keys } => write!(f, "certification of {} keys", keys.len()),
                DeviceOp::Load { amount, .. } => write!(f, "load of {amount}"),
                DeviceOp::RedemptionRequest { amount, unload } => write!(
                    f,
                    "{} of {amount}",
                    if *unload { "unload" } else { "renewal" }
                ),
                DeviceOp::Redeem { .. } => f.write_str("redemption"),
                DeviceOp::Sync { .. } => f.write_str("sync"),
                DeviceOp::PayOnline { to_account, amount } => {
                    write!(f, "online payment of {amount} to {to_account}")
                }
                DeviceOp::Balance => f.write_str("balance query"),
                DeviceOp::CancelIssue { issue } => write!(
                    f,
                    "cancellation of a refused token of {}",
                    issue.outputs.iter().map(|o| o.value.0).sum::<u64>()
                ),
            },
            Finished::Redemption { amount, unload } => write!(
                f,
                "{} of {amount}",
                if *unload { "unload" } else { "renewal" }
            ),
            Finished::Cancelled { amount } => write!(
                f,
                "token of {amount} the SE refused, cancelled: {amount} back to the account"
            ),
            Finished::RedemptionRefused { amount, code } => write!(
                f,
                "redemption of {amount}, refused for good by the back office (code {code}; left for an operator)"
            ),
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncReport {
    pub uploaded: usize,
    pub closed_requests: usize,
    pub recovered: Amount,
    pub double_spends: u32,
    pub epoch: u32,
}

/// Manufacture: personalises a blank SE with the root of trust (from a
/// file the scheme distributes, never from the network) and certifies its
/// attestation key under the manufacturer's key.
pub fn manufacture(
    se: &mut dyn SeLink,
    device_class: u8,
    root: PublicKey,
    maker_key: &tally_core::SecretKey,
    maker: &str,
) -> Result<MakerCertificate, WalletError> {
    let att = se.personalize(device_class, 0, Suite::Ed25519, root)?;
    Ok(MakerCertificate::sign(maker_key, att, device_class, maker))
}

/// A policy, list or grant the SE already holds (or a newer one) is not
/// an error: a retried sync answer, or a policy installed at onboarding.
fn installed(r: Result<(), WalletError>) -> Result<(), WalletError> {
    match r {
        Err(e) if e.is(&tally_se::SeError::Stale) => Ok(()),
        other => other,
    }
}

/// An SE's refusal of an Issue that no retry can pass: the Issue is
/// cancelled back to the account instead.
fn cancellable(e: &WalletError) -> bool {
    use tally_se::{Limit, SeError};
    e.is(&SeError::LimitExceeded(Limit::Holding))
        || e.is(&SeError::LimitExceeded(Limit::Tokens))
        || e.is(&SeError::LimitExceeded(Limit::Imported))
        || e.is(&SeError::IssueCancelled)
}

/// An Issue the SE already credited is not an error for a retry.
fn credited_once(r: Result<Amount, WalletError>) -> Result<Amount, WalletError> {
    match r {
        Err(e) if e.is(&tally_se::SeError::AlreadyImported) => Ok(Amount::ZERO),
        other => other,
    }
}

impl<'a> Agent<'a> {
    /// Enrols a manufactured SE: installs the back office's policy and
    /// revocation list (the SE checks both against the root it was
    /// personalised with), has the SE sign its enrolment to `account` with
    /// the account's one-time `code`, registers, and syncs (which also
    /// certifies offline keys).
    pub fn onboard(
        se: &'a mut dyn SeLink,
        backend: &'a mut dyn Backend,
        maker_cert: MakerCertificate,
        account: &str,
        code: &str,
    ) -> Result<Agent<'a>, AgentError> {
        let (_, policy, revocations) = backend.trust()?;
        installed(se.install_policy(&policy))?;
        installed(se.install_revocations(&revocations))?;
        let signature = se.enrol(account, code)?;
        let se_id = backend.register(&Registration {
            maker_cert,
            account: account.to_string(),
            signature,
        })?;
        let mut agent = Agent {
            se,
            backend,
            se_id,
            pending: None,
        };
        agent.sync()?;
        Ok(agent)
    }

    /// Sends a request the SE built (with its attachment, if any), after
    /// recording it as pending. A refusal (4xx) is final: the request is no
    /// longer pending. Otherwise the caller applies the answer and then
    /// calls [`Self::done`]; a transport failure or a 5xx leaves it pending
    /// for the next command to resend.
    fn send(&mut self, req: &DeviceRequest) -> Result<DeviceResponse, AgentError> {
        let bytes = req.to_cbor();
        if let Some(p) = self.pending.as_mut() {
            p.put(Some(&bytes))?;
        }
        self.exchange(&bytes)
    }

    fn exchange(&mut self, bytes: &[u8]) -> Result<DeviceResponse, AgentError> {
        match self.backend.device(bytes) {
            Ok(answer) => DeviceResponse::from_cbor(&answer).map_err(|_| AgentError::Unexpected),
            Err(e) => {
                if e.is_final() {
                    self.done()?;
                }
                Err(AgentError::Backend(e))
            }
        }
    }

    /// The answer of the pending request has been applied: forget it.
    fn done(&mut self) -> Result<(), AgentError> {
        if let Some(p) = self.pending.as_mut() {
            p.put(None)?;
        }
        Ok(())
    }

    fn call(&mut self, params: RequestParams) -> Result<DeviceResponse, AgentError> {
        let req = self.se.build_request(&params)?;
        let resp = self.send(&req)?;
        self.done()?;
        Ok(resp)
    }

    /// Finishes what an interrupted command left: the pending request is
    /// resent (identical bytes) and its answer applied, then every
    /// redemption the SE paid that the back office has not acknowledged is
    /// redeemed. Commands call this first, so none starts a second
    /// operation while one is pending.
    pub fn resume(&mut self) -> Result<Vec<Finished>, AgentError> {
        let mut finished = Vec::new();
        let pending = self.pending.as_mut().and_then(|p| p.get());
        if let Some(bytes) = pending {
            let req = DeviceRequest::from_cbor(&bytes).map_err(|_| AgentError::Unexpected)?;
            // A Redeem names its transfer; the SE's log has the amount.
            let redeemed = match &req.op {
                DeviceOp::Redeem { transfer_id, .. } => self
                    .se
                    .outgoing()?
                    .iter()
                    .find(|o| o.transfer_id == *transfer_id)
                    .map(|o| o.amount),
                _ => None,
            };
            let resp = self.exchange(&bytes)?;
            let (cancelled, refused) = match self.apply(&resp) {
                Err(AgentError::Cancelled { amount, .. }) => (Some(amount), Vec::new()),
                other => (None, other?),
            };
            self.done()?;
            self.cancel_refused(&refused)?;
            finished.push(match (cancelled, redeemed) {
                (Some(amount), _) => Finished::Cancelled { amount },
                (None, redeemed) => match redeemed {
                    Some(amount) => Finished::Redemption {
                        amount,
                        unload: matches!(resp, DeviceResponse::Unloaded { .. }),
                    },
                    None => Finished::Request(req.op),
                },
            });
        }
        let given_up = self
            .pending
            .as_mut()
            .map(|p| p.given_up())
            .unwrap_or_default();
        for o in self.se.outgoing()? {
            if o.redemption && !o.acked && !given_up.contains(&o.transfer_id) {
                let package = self.se.resend(&o.transfer_id)?;
                let nonce = tally_core::Package::from_cbor(&package)
                    .map_err(|_| AgentError::Unexpected)?
                    .transfer
                    .nonce;
                match self.redeem_paid(nonce, &package) {
                    Ok(resp) => finished.push(Finished::Redemption {
                        amount: o.amount,
                        unload: matches!(resp, DeviceResponse::Unloaded { .. }),
                    }),
                    Err(AgentError::Backend(e)) if e.is_final() => {
                        if let Some(p) = self.pending.as_mut() {
                            p.give_up(o.transfer_id)?;
                        }
                        finished.push(Finished::RedemptionRefused {
                            amount: o.amount,
                            code: e.code,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // A pending redemption request whose order the SE then paid and
        // the pass above redeemed is one operation: report it once.
        if let Some(Finished::Request(DeviceOp::RedemptionRequest { amount, unload })) =
            finished.first()
        {
            let (amount, unload) = (Amount(*amount), *unload);
            if finished[1..].contains(&Finished::Redemption { amount, unload }) {
                finished.remove(0);
            }
        }
        Ok(finished)
    }

    /// Applies an answer to the SE (idempotent: an Issue already credited,
    /// a receipt already taken, are not errors).
    /// Returns the recovered Issues of a sync answer that the SE refused,
    /// for the caller to cancel once the request is done.
    fn apply(&mut self, resp: &DeviceResponse) -> Result<Vec<Issue>, AgentError> {
        let mut refused = Vec::new();
        match resp {
            DeviceResponse::Certificates(certs) => {
                for c in certs {
                    self.se.install_certificate(c)?;
                }
            }
            DeviceResponse::Issued(issue) => {
                self.credit_or_cancel(issue)?;
            }
            DeviceResponse::Renewed { issue, receipt } => {
                // The redemption is settled whatever becomes of the Issue.
                self.se.ack(receipt)?;
                self.credit_or_cancel(issue)?;
            }
            DeviceResponse::Unloaded { receipt, .. } => self.se.ack(receipt)?,
            DeviceResponse::Synced(bundle) => {
                refused = self.apply_bundle(bundle)?.1;
            }
            DeviceResponse::Redemption(order) => {
                // The SE pays the order; the redemption then goes through
                // `resume`'s unacknowledged-redemption pass.
                self.se.redeem(order)?;
            }
            DeviceResponse::Balance { .. } => {}
        }
        Ok(refused)
    }

    /// Credits an Issue to the SE; if the SE refuses it for a reason that
    /// will not pass (over its holding limit, its token table full, or
    /// cancelled before), has the SE cancel it — the SE records it as never
    /// to be credited and signs the cancellation in one commit — and the
    /// back office returns its value to the account
    /// ([`AgentError::Cancelled`]). Otherwise nothing would ever credit
    /// the value: it would stay in the offline float, held by no one.
    fn credit_or_cancel(&mut self, issue: &Issue) -> Result<Amount, AgentError> {
        let reason = match credited_once(self.se.import_issue(issue)) {
            Ok(a) => return Ok(a),
            Err(e) if cancellable(&e) => e,
            Err(e) => return Err(e.into()),
        };
        let req = self.se.build_request(&RequestParams::CancelIssue {
            issue: alloc::boxed::Box::new(issue.clone()),
        })?;
        match self.send(&req)? {
            DeviceResponse::Balance { .. } => {}
            _ => return Err(AgentError::Unexpected),
        }
        self.done()?;
        Err(AgentError::Cancelled {
            amount: issue.outputs.iter().map(|o| o.value.0).sum(),
            reason,
        })
    }

    /// Has the SE generate and sign `n` fresh keys, and installs their
    /// certificates.
    fn certify(&mut self, n: u8) -> Result<(), AgentError> {
        let DeviceResponse::Certificates(certs) = self.call(RequestParams::Certify { n })? else {
            return Err(AgentError::Unexpected);
        };
        for c in &certs {
            self.se.install_certificate(c)?;
        }
        Ok(())
    }

    /// Builds a request that needs a fresh certified key of the SE's; if
    /// it has none, certifies one first.
    fn build_with_key(&mut self, params: RequestParams) -> Result<DeviceRequest, AgentError> {
        match self.se.build_request(&params) {
            Err(e) if e.is(&tally_se::SeError::NoCertifiedKey) => {
                self.certify(1)?;
                Ok(self.se.build_request(&params)?)
            }
            other => Ok(other?),
        }
    }

    /// Uploads unacknowledged payments and closed requests; installs the
    /// policy, revocation list, sync grant and recovered tokens; tops up
    /// certified keys.
    pub fn sync(&mut self) -> Result<SyncReport, AgentError> {
        let mut packages = Vec::new();
        for o in self.se.outgoing()? {
            if !o.acked && !o.redemption {
                packages.push(self.se.resend(&o.transfer_id)?);
            }
        }
        // Open requests closed and every unacknowledged report signed
        // inside the SE (the SE keeps them until a grant answers the
        // request that carries them).
        let reports: Vec<RequestReport> = self.se.report_requests()?;
        let report_base = SyncReport {
            uploaded: packages.len(),
            closed_requests: reports.iter().filter(|r| r.received.is_none()).count(),
            ..SyncReport::default()
        };
        let root = self.se.root_key()?;
        let sealed = self.backend.seal(
            &root,
            SealedKind::SyncUpload,
            &SyncUpload { packages, reports }.to_cbor(),
        )?;
        let mut req = self.se.build_request(&RequestParams::Sync {
            sealed_digest: attachment_digest(&sealed),
        })?;
        req.attachment = sealed;
        let DeviceResponse::Synced(bundle) = self.send(&req)? else {
            return Err(AgentError::Unexpected);
        };
        let (got, refused) = self.apply_bundle(&bundle)?;
        self.done()?;
        self.cancel_refused(&refused)?;
        let status = self.se.status()?;
        if status.certified_keys < CERTIFIED_KEYS_MIN {
            self.certify((CERTIFIED_KEYS_MIN - status.certified_keys) as u8)?;
        }
        Ok(SyncReport {
            recovered: got,
            double_spends: bundle.double_spends,
            epoch: bundle.grant.epoch,
            ..report_base
        })
    }

    /// Installs a sync answer: policy, revocation list, grant (a stale one
    /// is the answer of a sync already applied), recovered tokens. Returns
    /// what was credited and the recovered Issues the SE refused (over a
    /// limit), which the caller cancels once the sync is done.
    fn apply_bundle(&mut self, bundle: &SyncBundle) -> Result<(Amount, Vec<Issue>), AgentError> {
        installed(self.se.install_policy(&bundle.policy))?;
        installed(self.se.install_revocations(&bundle.revocations))?;
        installed(self.se.sync(&bundle.grant))?;
        let mut got = Amount::ZERO;
        let mut refused = Vec::new();
        for i in &bundle.recovered {
            match credited_once(self.se.import_issue(i)) {
                Ok(a) => got = got.checked_add(a).unwrap_or(got),
                Err(e) if cancellable(&e) => refused.push(i.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok((got, refused))
    }

    /// Cancels recovered Issues the SE refused, one request each.
    fn cancel_refused(&mut self, refused: &[Issue]) -> Result<(), AgentError> {
        for issue in refused {
            match self.credit_or_cancel(issue) {
                Ok(_) | Err(AgentError::Cancelled { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves `amount` from the user's account into the SE.
    pub fn load(&mut self, amount: u64) -> Result<Issue, AgentError> {
        let req = self.build_with_key(RequestParams::Load { amount })?;
        let resp = self.send(&req)?;
        let DeviceResponse::Issued(issue) = &resp else {
            return Err(AgentError::Unexpected);
        };
        self.apply(&resp)?;
        self.done()?;
        Ok(issue.clone())
    }

    fn redeem(&mut self, amount: u64, unload: bool) -> Result<DeviceResponse, AgentError> {
        let DeviceResponse::Redemption(order) =
            self.call(RequestParams::RedemptionRequest { amount, unload })?
        else {
            return Err(AgentError::Unexpected);
        };
        let package = self.se.redeem(&order)?;
        self.redeem_paid(order.request.nonce, &package)
    }

    /// Settles a redemption package the SE has paid: sealed to settlement,
    /// sent in a Redeem request the SE builds, the answer applied (the
    /// fresh token imported, the DCP's receipt acknowledged).
    fn redeem_paid(
        &mut self,
        nonce: [u8; 16],
        package: &[u8],
    ) -> Result<DeviceResponse, AgentError> {
        let root = self.se.root_key()?;
        let sealed = self.backend.seal(&root, SealedKind::Redemption, package)?;
        let mut req = self.build_with_key(RequestParams::Redeem {
            nonce,
            sealed_digest: attachment_digest(&sealed),
        })?;
        req.attachment = sealed;
        let resp = self.send(&req)?;
        if !matches!(
            resp,
            DeviceResponse::Renewed { .. } | DeviceResponse::Unloaded { .. }
        ) {
            return Err(AgentError::Unexpected);
        }
        self.apply(&resp)?;
        self.done()?;
        Ok(resp)
    }

    /// Renews every token: the SE pays them to the DCP, which settles them
    /// and issues one fresh token of the same value per round. A round
    /// takes at most `RECORD_INPUTS_MAX` tokens, in the order the SE's coin
    /// selection merges them, so each round's amount is exactly coverable.
    pub fn renew(&mut self) -> Result<Amount, AgentError> {
        let renewed = self.se.status()?.balance;
        // Each round turns up to 16 tokens into 1; bounded by the token table.
        for _ in 0..tally_se::state::TOKENS_MAX {
            let mut toks = self.se.tokens()?;
            let fresh = toks.len() == 1 && toks[0].lineage_len == 1;
            if toks.is_empty() || fresh {
                break;
            }
            toks.sort_by_key(|t| (t.lineage_len, core::cmp::Reverse(t.value)));
            let amount = Amount::sum(
                toks.iter()
                    .take(tally_core::record::RECORD_INPUTS_MAX)
                    .map(|t| t.value),
            )
            .ok_or(AgentError::Unexpected)?;
            self.redeem(amount.0, false)?;
        }
        Ok(renewed)
    }

    /// Moves `amount` from the SE back to the user's account.
    pub fn unload(&mut self, amount: u64) -> Result<u64, AgentError> {
        match self.redeem(amount, true)? {
            DeviceResponse::Unloaded { balance, .. } => Ok(balance),
            _ => Err(AgentError::Unexpected),
        }
    }

    /// Account-to-account payment through the DCP. Where the policy asks
    /// for cardholder verification, `pin` is presented to the SE first
    /// (the SE refuses to sign the request without it).
    pub fn pay_online(
        &mut self,
        to_account: &str,
        amount: u64,
        pin: Option<&str>,
    ) -> Result<u64, AgentError> {
        if let Some(pin) = pin {
            self.se.verify_pin(pin.as_bytes())?;
        }
        match self.call(RequestParams::PayOnline {
            to_account: to_account.to_string(),
            amount,
        })? {
            DeviceResponse::Balance { balance } => Ok(balance),
            _ => Err(AgentError::Unexpected),
        }
    }

    pub fn account_balance(&mut self) -> Result<u64, AgentError> {
        match self.call(RequestParams::Balance)? {
            DeviceResponse::Balance { balance } => Ok(balance),
            _ => Err(AgentError::Unexpected),
        }
    }
}
