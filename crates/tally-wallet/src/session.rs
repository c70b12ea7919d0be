//! Payer and payee sessions: the four-message protocol as typed states.
//!
//! ```text
//! payee: PayeeSession::start ──Request──▶ payer: PayerSession::start
//! payee: PayeeSession::on_package ◀──Package── payer
//! payee ──Receipt──▶ payer: PayerSession::on_receipt → Acknowledged
//! ```
//! Each state is consumed by its handler and only the next state can be
//! built from it. Messages cross the device boundary as canonical bytes.

use alloc::vec::Vec;

use tally_core::codec::Cbor;
use tally_core::{Amount, Hash32, Receipt, Request};

use crate::link::{SeLink, WalletError};

/// Payee, after sending its request.
#[derive(Debug, Clone)]
pub struct PayeeSession {
    request: Request,
}

/// Payee, after storing the token.
#[derive(Debug, Clone)]
pub struct Received {
    pub transfer_id: Hash32,
    pub amount: Amount,
    pub receipt: Vec<u8>,
}

impl PayeeSession {
    /// Message 1: asks the payee's SE for a request.
    pub fn start(
        se: &mut dyn SeLink,
        amount: Amount,
    ) -> Result<(PayeeSession, Vec<u8>), WalletError> {
        let request = se.create_request(amount)?;
        let bytes = request.to_cbor();
        Ok((PayeeSession { request }, bytes))
    }
    pub fn request(&self) -> &Request {
        &self.request
    }
    /// Message 3: the SE verifies and stores the package, and signs the
    /// receipt. On refusal the session is handed back for another try.
    #[allow(clippy::result_large_err)] // the session itself, by value: not boxed on a device
    pub fn on_package(
        self,
        se: &mut dyn SeLink,
        package: &[u8],
    ) -> Result<Received, (PayeeSession, WalletError)> {
        match se.receive(package) {
            Ok(r) => Ok(Received {
                transfer_id: r.transfer_id,
                amount: self.request.amount,
                receipt: r.to_cbor(),
            }),
            Err(e) => Err((self, e)),
        }
    }
}

/// Payer, after its SE paid (inputs spent, change stored, payment logged).
#[derive(Debug, Clone)]
pub struct PayerSession {
    transfer_id: Hash32,
    package: Vec<u8>,
}

/// Payer, after the receipt was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    pub transfer_id: Hash32,
}

impl PayerSession {
    /// Message 2: decodes the request and lets the SE pay it.
    /// Message 1 arrived: the SE checks the payee's certificate now, while
    /// the terminal shows the amount and waits for the user, so that
    /// [`PayerSession::start`] after the confirmation only signs and
    /// commits. Optional: `start` checks everything itself.
    pub fn check(se: &mut dyn SeLink, request: &[u8]) -> Result<(), WalletError> {
        se.check_request(&Request::from_cbor(request)?)
    }
    pub fn start(se: &mut dyn SeLink, request: &[u8]) -> Result<PayerSession, WalletError> {
        let req = Request::from_cbor(request)?;
        let package = se.pay(&req)?;
        let pkg = tally_core::Package::from_cbor(&package)?;
        Ok(PayerSession {
            transfer_id: pkg.transfer.id(),
            package,
        })
    }
    /// Message 2 on a device whose application processor makes the range
    /// proof (decision 0032): see [`pay_proving_here`].
    #[cfg(feature = "delegated-proving")]
    pub fn start_proving(
        se: &mut dyn SeLink,
        request: &[u8],
        rng: &mut dyn tally_core::crypto::Entropy,
    ) -> Result<PayerSession, WalletError> {
        let req = Request::from_cbor(request)?;
        let (package, _) = pay_proving_here(se, &req, rng)?;
        let pkg = tally_core::Package::from_cbor(&package)?;
        Ok(PayerSession {
            transfer_id: pkg.transfer.id(),
            package,
        })
    }
    pub fn package(&self) -> &[u8] {
        &self.package
    }
    pub fn transfer_id(&self) -> Hash32 {
        self.transfer_id
    }
    /// The identical package, from the SE's log (after a lost message or
    /// a reboot of the payer device).
    pub fn resend(&self, se: &mut dyn SeLink) -> Result<Vec<u8>, WalletError> {
        se.resend(&self.transfer_id)
    }
    /// Message 4: the SE checks the payee's signature and closes the payment.
    pub fn on_receipt(
        self,
        se: &mut dyn SeLink,
        receipt: &[u8],
    ) -> Result<Acknowledged, (PayerSession, WalletError)> {
        let r = match Receipt::from_cbor(receipt) {
            Ok(r) => r,
            Err(e) => return Err((self, e.into())),
        };
        if r.transfer_id != self.transfer_id {
            return Err((
                self,
                WalletError::Refused {
                    code: tally_se::SeError::BadReceipt.code(),
                },
            ));
        }
        match se.ack(&r) {
            Ok(()) => Ok(Acknowledged {
                transfer_id: self.transfer_id,
            }),
            Err(e) => Err((self, e)),
        }
    }
}

/// What one completed offline payment cost on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub transfer_id: Hash32,
    pub request_bytes: usize,
    pub package_bytes: usize,
    pub receipt_bytes: usize,
}

/// Runs the whole protocol between two SEs with a perfect channel.
pub fn pay_offline(
    payer: &mut dyn SeLink,
    payee: &mut dyn SeLink,
    amount: Amount,
) -> Result<Outcome, WalletError> {
    let (payee_session, request) = PayeeSession::start(payee, amount)?;
    let payer_session = PayerSession::start(payer, &request)?;
    let package_bytes = payer_session.package().len();
    let received = payee_session
        .on_package(payee, payer_session.package())
        .map_err(|(_, e)| e)?;
    let ack = payer_session
        .on_receipt(payer, &received.receipt)
        .map_err(|(_, e)| e)?;
    Ok(Outcome {
        transfer_id: ack.transfer_id,
        request_bytes: request.len(),
        package_bytes,
        receipt_bytes: received.receipt.len(),
    })
}

/// Who made a payment's range proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prover {
    /// The SE (a card; or no proof was needed).
    Se,
    /// This device's application processor, checked by the SE.
    ApplicationProcessor,
}

/// PAY on a device whose application processor can prove (decision 0032):
/// the SE's proving task, the proof made here with the generators of the
/// task's bit-length, then PAY with the proof, which the SE checks before
/// it signs. An SE that does not delegate (a card, clear amounts: 2035)
/// pays with PAY, proving itself; a request paid before (a retry after a
/// lost answer) gets its package back. Returns the package and who
/// proved.
#[cfg(feature = "delegated-proving")]
pub fn pay_proving_here(
    se: &mut dyn SeLink,
    req: &Request,
    rng: &mut dyn tally_core::crypto::Entropy,
) -> Result<(Vec<u8>, Prover), WalletError> {
    use tally_core::confidential::{RANGE_OUTPUTS_MAX, RangeGens};
    match se.proving_task(req) {
        Ok(task) => {
            let proof = if task.needs_proof() {
                let gens = RangeGens::new(task.bits, RANGE_OUTPUTS_MAX)
                    .map_err(|_| WalletError::BadResponse(tally_core::CodecError::Malformed))?;
                task.prove(&gens, rng)
                    .map_err(|_| WalletError::BadResponse(tally_core::CodecError::Malformed))?
            } else {
                None
            };
            let by = match proof {
                Some(_) => Prover::ApplicationProcessor,
                None => Prover::Se,
            };
            Ok((se.pay_proved(req, proof.as_ref())?, by))
        }
        // Paid before: PAY returns its package, whichever way it was paid
        // (or refuses, 2031, once it left the log). Not delegating: PAY.
        Err(e)
            if e.is(&tally_se::SeError::AlreadyPaid)
                || e.is(&tally_se::SeError::ProvingNotDelegated) =>
        {
            Ok((se.pay(req)?, Prover::Se))
        }
        Err(e) => Err(e),
    }
}
