//! The device's online side: onboarding, sync, load, renewal, unload and
//! online payments against a DCP, through any [`Backend`] (the HTTP client
//! or the in-process connector). Every request is signed inside the SE
//! (ATTEST) over `(se_id, counter, operation)`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use tally_core::codec::Cbor;
pub use tally_core::dcp::SealedKind;
use tally_core::dcp::{
    ClosedRequest, DeviceOp, DeviceRequest, DeviceResponse, Registration, SyncBundle, SyncUpload,
};
use tally_core::{Amount, Hash32, Issue, Policy, PublicKey, RevocationList, Suite};

use crate::link::{SeLink, WalletError};

/// An error from the back office: HTTP-like status, stable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub status: u16,
    pub code: u16,
    pub message: String,
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
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Se(e) => write!(f, "{e}"),
            AgentError::Backend(e) => write!(f, "{e}"),
            AgentError::Unexpected => f.write_str("unexpected answer from the back office"),
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
    /// Last request counter used (the caller persists it).
    pub counter: u64,
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

impl<'a> Agent<'a> {
    /// Personalizes a blank SE with the back office's root of trust,
    /// registers it (attestation signed inside the SE) under `account`,
    /// and syncs (which also certifies offline keys).
    pub fn onboard(
        se: &'a mut dyn SeLink,
        backend: &'a mut dyn Backend,
        device_class: u8,
        maker: &str,
        account: &str,
    ) -> Result<Agent<'a>, AgentError> {
        let (root, policy, revocations) = backend.trust()?;
        let att = se.personalize(device_class, 0, Suite::Ed25519, root)?;
        se.install_policy(&policy)?;
        se.install_revocations(&revocations)?;
        let challenge = tally_core::dcp::registration_challenge(&att, device_class, maker);
        let signature = se.attest(&challenge)?;
        let se_id = backend.register(&Registration {
            attestation_key: att,
            device_class,
            maker: maker.to_string(),
            account: account.to_string(),
            signature,
        })?;
        let mut agent = Agent {
            se,
            backend,
            se_id,
            counter: 0,
        };
        agent.sync()?;
        Ok(agent)
    }

    fn call(&mut self, op: DeviceOp) -> Result<DeviceResponse, AgentError> {
        self.counter += 1;
        let signature =
            self.se
                .attest(&DeviceRequest::challenge(&self.se_id, self.counter, &op))?;
        let req = DeviceRequest {
            se_id: self.se_id,
            counter: self.counter,
            op,
            signature,
        };
        let bytes = self.backend.device(&req.to_cbor())?;
        DeviceResponse::from_cbor(&bytes).map_err(|_| AgentError::Unexpected)
    }

    fn fresh_key(&mut self) -> Result<PublicKey, AgentError> {
        let keys = self.se.generate_keys(1)?;
        let DeviceResponse::Certificates(certs) =
            self.call(DeviceOp::Certify { keys: keys.clone() })?
        else {
            return Err(AgentError::Unexpected);
        };
        for c in &certs {
            self.se.install_certificate(c)?;
        }
        keys.first().copied().ok_or(AgentError::Unexpected)
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
        let closed: Vec<ClosedRequest> = self
            .se
            .close_requests()?
            .into_iter()
            .map(|r| ClosedRequest {
                nonce: r.nonce,
                amount: r.amount.0,
                key: r.key,
            })
            .collect();
        let report_base = SyncReport {
            uploaded: packages.len(),
            closed_requests: closed.len(),
            ..SyncReport::default()
        };
        let root = self.se.root_key()?;
        let sealed = self.backend.seal(
            &root,
            SealedKind::SyncUpload,
            &SyncUpload { packages, closed }.to_cbor(),
        )?;
        let DeviceResponse::Synced(bundle) = self.call(DeviceOp::Sync { sealed })? else {
            return Err(AgentError::Unexpected);
        };
        let SyncBundle {
            policy,
            revocations,
            grant,
            recovered,
            double_spends,
        } = bundle;
        let stale = |r: Result<(), WalletError>| match r {
            Err(e) if e.is(&tally_se::SeError::Stale) => Ok(()),
            other => other,
        };
        stale(self.se.install_policy(&policy))?;
        stale(self.se.install_revocations(&revocations))?;
        let epoch = grant.epoch;
        self.se.sync(&grant)?;
        let mut got = Amount::ZERO;
        for i in &recovered {
            got = got.checked_add(self.se.import_issue(i)?).unwrap_or(got);
        }
        let status = self.se.status()?;
        if status.certified_keys < CERTIFIED_KEYS_MIN {
            let keys = self
                .se
                .generate_keys((CERTIFIED_KEYS_MIN - status.certified_keys) as u8)?;
            let DeviceResponse::Certificates(certs) = self.call(DeviceOp::Certify { keys })? else {
                return Err(AgentError::Unexpected);
            };
            for c in &certs {
                self.se.install_certificate(c)?;
            }
        }
        Ok(SyncReport {
            recovered: got,
            double_spends,
            epoch,
            ..report_base
        })
    }

    /// Moves `amount` from the user's account into the SE.
    pub fn load(&mut self, amount: u64) -> Result<Issue, AgentError> {
        let key = self.fresh_key()?;
        let DeviceResponse::Issued(issue) = self.call(DeviceOp::Load { amount, key })? else {
            return Err(AgentError::Unexpected);
        };
        self.se.import_issue(&issue)?;
        Ok(issue)
    }

    fn redeem(&mut self, amount: u64, unload: bool) -> Result<DeviceResponse, AgentError> {
        let DeviceResponse::Redemption(request) =
            self.call(DeviceOp::RedemptionRequest { amount, unload })?
        else {
            return Err(AgentError::Unexpected);
        };
        let package = self.se.redeem(&request)?;
        let key = self.fresh_key()?;
        let root = self.se.root_key()?;
        let sealed = self.backend.seal(&root, SealedKind::Redemption, &package)?;
        let resp = self.call(DeviceOp::Redeem {
            nonce: request.nonce,
            sealed,
            key,
        })?;
        match &resp {
            DeviceResponse::Renewed { issue, receipt } => {
                self.se.import_issue(issue)?;
                self.se.ack(receipt)?;
            }
            DeviceResponse::Unloaded { receipt, .. } => self.se.ack(receipt)?,
            _ => return Err(AgentError::Unexpected),
        }
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

    /// Account-to-account payment through the DCP.
    pub fn pay_online(&mut self, to_account: &str, amount: u64) -> Result<u64, AgentError> {
        match self.call(DeviceOp::PayOnline {
            to_account: to_account.to_string(),
            amount,
        })? {
            DeviceResponse::Balance { balance } => Ok(balance),
            _ => Err(AgentError::Unexpected),
        }
    }

    pub fn account_balance(&mut self) -> Result<u64, AgentError> {
        match self.call(DeviceOp::Balance)? {
            DeviceResponse::Balance { balance } => Ok(balance),
            _ => Err(AgentError::Unexpected),
        }
    }
}
