//! A handle on one SE. [`SeLink`] is implemented by the applet itself (an
//! SE in the same address space: the in-memory transport) and by
//! [`ApduLink`], which speaks ISO 7816-4 to a card through any
//! [`Transmit`] (NFC field, PC/SC reader, the in-process [`tally_se::dispatch::Card`]),
//! chunking large packages with command chaining and GET RESPONSE.

use alloc::vec::Vec;
use core::fmt;

use tally_core::codec::{Cbor, CodecError, Reader};
#[cfg(feature = "delegated-proving")]
use tally_core::confidential::RangeProof;
#[cfg(feature = "delegated-proving")]
use tally_core::confidential_record::ProvingTask;
use tally_core::crypto::Entropy;
use tally_core::dcp::{DeviceRequest, RedemptionOrder, RequestReport};
use tally_core::{
    Amount, Hash32, Issue, Policy, PseudonymCertificate, PublicKey, Receipt, Request,
    RevocationList, Signature, Suite, SyncGrant,
};
use tally_se::apdu::{ExchangeError, chunk_command, collect_response, sw};
use tally_se::dispatch::{CLA, CLA_ISO, Card, decode_status, decode_u64, ins, tag};
use tally_se::storage::Storage;
use tally_se::{Applet, RequestParams, SeError, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalletError {
    /// The SE refused; `code` is the stable error code (SPEC.md §5 for
    /// verification, docs/APDU.md for the SE's own).
    Refused { code: u16 },
    /// The transport failed (card removed, field lost).
    Transport,
    /// The SE answered bytes that do not decode.
    BadResponse(CodecError),
    /// An ISO status word without a Tally error code.
    Status(u16),
}

impl WalletError {
    pub fn refused(e: SeError) -> WalletError {
        WalletError::Refused { code: e.code() }
    }
    /// True if this is the SE's refusal `e`.
    pub fn is(&self, e: &SeError) -> bool {
        matches!(self, WalletError::Refused { code } if *code == e.code())
    }
}

impl From<SeError> for WalletError {
    fn from(e: SeError) -> Self {
        WalletError::refused(e)
    }
}

impl From<CodecError> for WalletError {
    fn from(e: CodecError) -> Self {
        WalletError::BadResponse(e)
    }
}

impl fmt::Display for WalletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalletError::Refused { code } => write!(f, "the secure element refused (code {code})"),
            WalletError::Transport => f.write_str("transport to the secure element failed"),
            WalletError::BadResponse(e) => {
                write!(f, "the secure element answered malformed data: {e}")
            }
            WalletError::Status(s) => write!(f, "the secure element answered status {s:04X}"),
        }
    }
}

/// Everything a device (or the back office, through the device) asks of
/// its SE.
pub trait SeLink {
    fn personalize(
        &mut self,
        device_class: u8,
        tier: u8,
        suite: Suite,
        root: PublicKey,
    ) -> Result<PublicKey, WalletError>;
    fn install_policy(&mut self, p: &Policy) -> Result<(), WalletError>;
    fn install_revocations(&mut self, l: &RevocationList) -> Result<(), WalletError>;
    fn generate_keys(&mut self, n: u8) -> Result<Vec<PublicKey>, WalletError>;
    fn install_certificate(&mut self, c: &PseudonymCertificate) -> Result<(), WalletError>;
    fn sync(&mut self, g: &SyncGrant) -> Result<(), WalletError>;
    fn import_issue(&mut self, i: &Issue) -> Result<Amount, WalletError>;
    /// BUILD REQUEST: the SE builds and signs one back-office request.
    fn build_request(&mut self, p: &RequestParams) -> Result<DeviceRequest, WalletError>;
    /// ENROL: the SE signs its enrolment to `account` with the one-time code.
    fn enrol(&mut self, account: &str, code: &str) -> Result<Signature, WalletError>;
    /// VERIFY: presents the cardholder's PIN.
    fn verify_pin(&mut self, pin: &[u8]) -> Result<(), WalletError>;
    /// CHANGE REFERENCE DATA: sets the first PIN (`old` = None) or changes it.
    fn change_pin(&mut self, old: Option<&[u8]>, new: &[u8]) -> Result<(), WalletError>;
    fn create_request(&mut self, amount: Amount) -> Result<Request, WalletError>;
    /// CHECK REQUEST: the payer's SE checks the payee's certificate ahead
    /// of PAY (while the user confirms), so that PAY only signs.
    fn check_request(&mut self, r: &Request) -> Result<(), WalletError>;
    fn pay(&mut self, r: &Request) -> Result<Vec<u8>, WalletError>;
    /// PAY, P1 1 (decision 0032): what PAY of `r` commits to, for the
    /// device's application processor to prove. Changes nothing.
    #[cfg(feature = "delegated-proving")]
    fn proving_task(&mut self, r: &Request) -> Result<ProvingTask, WalletError>;
    /// PAY, P1 2 (decision 0032): PAY with the application processor's
    /// range proof (none for a payment of one output), checked by the SE
    /// before it signs.
    #[cfg(feature = "delegated-proving")]
    fn pay_proved(
        &mut self,
        r: &Request,
        proof: Option<&RangeProof>,
    ) -> Result<Vec<u8>, WalletError>;
    fn redeem(&mut self, o: &RedemptionOrder) -> Result<Vec<u8>, WalletError>;
    fn receive(&mut self, package: &[u8]) -> Result<Receipt, WalletError>;
    fn ack(&mut self, r: &Receipt) -> Result<(), WalletError>;
    fn resend(&mut self, transfer_id: &Hash32) -> Result<Vec<u8>, WalletError>;
    /// CLOSE REQUESTS: open requests closed and signed by their keys.
    /// Closes the open requests and returns every unacknowledged request
    /// report (received or closed), signed by the SE.
    fn report_requests(&mut self) -> Result<Vec<RequestReport>, WalletError>;
    fn status(&mut self) -> Result<Status, WalletError>;
    fn attestation_key(&mut self) -> Result<PublicKey, WalletError>;
    /// The root key the SE trusts (GET DATA 05).
    fn root_key(&mut self) -> Result<PublicKey, WalletError>;
    /// The payment log: `(transfer id, amount, acknowledged, redemption)`.
    fn outgoing(&mut self) -> Result<Vec<OutgoingEntry>, WalletError>;
    /// The tokens held (GET DATA 02).
    fn tokens(&mut self) -> Result<Vec<tally_se::TokenInfo>, WalletError>;
}

/// One entry of the SE's payment log (GET DATA 04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEntry {
    pub transfer_id: Hash32,
    pub amount: Amount,
    pub acked: bool,
    pub redemption: bool,
}

impl<S: Storage, E: Entropy> SeLink for Applet<S, E> {
    fn personalize(
        &mut self,
        c: u8,
        t: u8,
        s: Suite,
        root: PublicKey,
    ) -> Result<PublicKey, WalletError> {
        Ok(Applet::personalize(self, c, t, s, root)?)
    }
    fn install_policy(&mut self, p: &Policy) -> Result<(), WalletError> {
        Ok(Applet::install_policy(self, p.clone())?)
    }
    fn install_revocations(&mut self, l: &RevocationList) -> Result<(), WalletError> {
        Ok(Applet::install_revocations(self, l.clone())?)
    }
    fn generate_keys(&mut self, n: u8) -> Result<Vec<PublicKey>, WalletError> {
        Ok(Applet::generate_keys(self, usize::from(n))?)
    }
    fn install_certificate(&mut self, c: &PseudonymCertificate) -> Result<(), WalletError> {
        Ok(Applet::install_certificate(self, c.clone())?)
    }
    fn sync(&mut self, g: &SyncGrant) -> Result<(), WalletError> {
        Ok(Applet::sync(self, g.clone())?)
    }
    fn import_issue(&mut self, i: &Issue) -> Result<Amount, WalletError> {
        Ok(Applet::import_issue(self, i.clone())?)
    }
    fn build_request(&mut self, p: &RequestParams) -> Result<DeviceRequest, WalletError> {
        Ok(Applet::build_request(self, p.clone())?)
    }
    fn enrol(&mut self, account: &str, code: &str) -> Result<Signature, WalletError> {
        Ok(Applet::enrol(self, account, code)?)
    }
    fn verify_pin(&mut self, pin: &[u8]) -> Result<(), WalletError> {
        Ok(Applet::verify_pin(self, pin)?)
    }
    fn change_pin(&mut self, old: Option<&[u8]>, new: &[u8]) -> Result<(), WalletError> {
        Ok(Applet::change_pin(self, old, new)?)
    }
    fn create_request(&mut self, amount: Amount) -> Result<Request, WalletError> {
        Ok(Applet::create_request(self, amount)?)
    }
    fn check_request(&mut self, r: &Request) -> Result<(), WalletError> {
        Ok(Applet::check_request(self, r)?)
    }
    fn pay(&mut self, r: &Request) -> Result<Vec<u8>, WalletError> {
        Ok(Applet::pay(self, r)?)
    }
    #[cfg(feature = "delegated-proving")]
    fn proving_task(&mut self, r: &Request) -> Result<ProvingTask, WalletError> {
        Ok(Applet::proving_task(self, r)?)
    }
    #[cfg(feature = "delegated-proving")]
    fn pay_proved(
        &mut self,
        r: &Request,
        proof: Option<&RangeProof>,
    ) -> Result<Vec<u8>, WalletError> {
        Ok(Applet::pay_proved(self, r, proof.cloned())?)
    }
    fn redeem(&mut self, o: &RedemptionOrder) -> Result<Vec<u8>, WalletError> {
        Ok(Applet::redeem(self, o)?)
    }
    fn receive(&mut self, package: &[u8]) -> Result<Receipt, WalletError> {
        Ok(Applet::receive(self, package)?)
    }
    fn ack(&mut self, r: &Receipt) -> Result<(), WalletError> {
        Ok(Applet::ack(self, r)?)
    }
    fn resend(&mut self, t: &Hash32) -> Result<Vec<u8>, WalletError> {
        Ok(Applet::resend(self, t)?)
    }
    fn report_requests(&mut self) -> Result<Vec<RequestReport>, WalletError> {
        Ok(Applet::report_requests(self)?)
    }
    fn status(&mut self) -> Result<Status, WalletError> {
        Ok(Applet::status(self)?)
    }
    fn attestation_key(&mut self) -> Result<PublicKey, WalletError> {
        Ok(Applet::attestation_public(self)?)
    }
    fn root_key(&mut self) -> Result<PublicKey, WalletError> {
        Ok(Applet::root_key(self)?)
    }
    fn outgoing(&mut self) -> Result<Vec<OutgoingEntry>, WalletError> {
        Ok(Applet::outgoing(self)
            .iter()
            .map(|o| OutgoingEntry {
                transfer_id: o.transfer_id,
                amount: o.amount,
                acked: o.acked,
                redemption: o.redemption,
            })
            .collect())
    }
    fn tokens(&mut self) -> Result<Vec<tally_se::TokenInfo>, WalletError> {
        Ok(Applet::tokens(self))
    }
}

/// Sends one command APDU and returns the response APDU; `Err(())` when
/// the link failed (no response: a reader's or transport's own error is
/// not the wallet's to interpret).
pub trait Transmit {
    #[allow(clippy::result_unit_err)]
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ()>;
}

impl<S: Storage, E: Entropy> Transmit for Card<S, E> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ()> {
        Ok(Card::transmit(self, apdu))
    }
}

/// The terminal side of the APDU interface.
pub struct ApduLink<T: Transmit> {
    pub card: T,
    /// Largest command data per APDU: 255 for short APDUs (NFC), up to
    /// 65535 for readers with extended length.
    pub max_data_per_apdu: usize,
    /// APDUs exchanged (for the measurements in docs/PERFORMANCE.md).
    pub apdus: usize,
}

/// Largest response the terminal accepts.
pub const RESPONSE_MAX: usize = 512 * 1024;

impl<T: Transmit> ApduLink<T> {
    /// Selects the Tally applet.
    pub fn select(card: T, max_data_per_apdu: usize) -> Result<Self, WalletError> {
        let mut l = ApduLink {
            card,
            max_data_per_apdu,
            apdus: 0,
        };
        let mut apdu = alloc::vec![
            0x00,
            ins::SELECT,
            0x04,
            0x00,
            tally_se::dispatch::AID.len() as u8
        ];
        apdu.extend_from_slice(tally_se::dispatch::AID);
        let r = l.card.transmit(&apdu).map_err(|_| WalletError::Transport)?;
        l.apdus += 1;
        if r.len() < 2 || r[r.len() - 2..] != [0x90, 0x00] {
            return Err(WalletError::Status(sw::FILE_NOT_FOUND));
        }
        Ok(l)
    }

    /// One command (chained as needed) and its whole response.
    pub fn command(
        &mut self,
        ins_: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Vec<u8>, WalletError> {
        self.command_in_class(CLA, ins_, p1, p2, data)
    }

    /// [`Self::command`] in another class (ISO interindustry `00`).
    pub fn command_in_class(
        &mut self,
        cla: u8,
        ins_: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
    ) -> Result<Vec<u8>, WalletError> {
        let le = if self.max_data_per_apdu > 255 {
            Some(65_536)
        } else {
            Some(256)
        };
        let chain = chunk_command(cla, ins_, p1, p2, data, self.max_data_per_apdu, le)
            .map_err(|_| WalletError::Status(sw::WRONG_LENGTH))?;
        let mut count = 0usize;
        let card = &mut self.card;
        let res = collect_response(
            |apdu: &[u8]| {
                count += 1;
                card.transmit(apdu)
            },
            &chain,
            RESPONSE_MAX,
        );
        self.apdus += count;
        match res {
            Ok(d) => Ok(d),
            Err(ExchangeError::Transport(())) => Err(WalletError::Transport),
            Err(ExchangeError::Status(s)) => Err(self.last_error(s)),
            Err(_) => Err(WalletError::Status(sw::UNKNOWN)),
        }
    }

    fn last_error(&mut self, status: u16) -> WalletError {
        let apdu = [CLA, ins::GET_DATA, 0x00, tag::LAST_ERROR, 0x00];
        match self.card.transmit(&apdu) {
            Ok(r) if r.len() >= 2 && r[r.len() - 2..] == [0x90, 0x00] => {
                self.apdus += 1;
                match decode_u64(&r[..r.len() - 2]) {
                    Ok(code) if code != 0 => WalletError::Refused { code: code as u16 },
                    _ => WalletError::Status(status),
                }
            }
            _ => WalletError::Status(status),
        }
    }
}

fn unit(d: Vec<u8>) -> Result<(), WalletError> {
    if d.is_empty() {
        Ok(())
    } else {
        Err(WalletError::BadResponse(CodecError::TrailingBytes))
    }
}

impl<T: Transmit> SeLink for ApduLink<T> {
    fn personalize(
        &mut self,
        c: u8,
        t: u8,
        s: Suite,
        root: PublicKey,
    ) -> Result<PublicKey, WalletError> {
        let mut d = alloc::vec![s as u8];
        d.extend_from_slice(&root.to_cbor());
        Ok(PublicKey::from_cbor(&self.command(
            ins::PERSONALIZE,
            c,
            t,
            &d,
        )?)?)
    }
    fn install_policy(&mut self, p: &Policy) -> Result<(), WalletError> {
        unit(self.command(ins::INSTALL_POLICY, 0, 0, &p.to_cbor())?)
    }
    fn install_revocations(&mut self, l: &RevocationList) -> Result<(), WalletError> {
        unit(self.command(ins::INSTALL_REVOCATIONS, 0, 0, &l.to_cbor())?)
    }
    fn generate_keys(&mut self, n: u8) -> Result<Vec<PublicKey>, WalletError> {
        let d = self.command(ins::GENERATE_KEYS, n, 0, &[])?;
        let mut r = Reader::new(&d);
        let v = tally_core::codec::read_vec(&mut r, 255)?;
        if r.position() != d.len() {
            return Err(WalletError::BadResponse(CodecError::TrailingBytes));
        }
        Ok(v)
    }
    fn install_certificate(&mut self, c: &PseudonymCertificate) -> Result<(), WalletError> {
        unit(self.command(ins::INSTALL_CERTIFICATE, 0, 0, &c.to_cbor())?)
    }
    fn sync(&mut self, g: &SyncGrant) -> Result<(), WalletError> {
        unit(self.command(ins::SYNC, 0, 0, &g.to_cbor())?)
    }
    fn import_issue(&mut self, i: &Issue) -> Result<Amount, WalletError> {
        let d = self.command(ins::IMPORT_ISSUE, 0, 0, &i.to_cbor())?;
        decode_u64(&d)
            .map(Amount)
            .map_err(|_| WalletError::BadResponse(CodecError::Malformed))
    }
    fn build_request(&mut self, p: &RequestParams) -> Result<DeviceRequest, WalletError> {
        let d = self.command(ins::BUILD_REQUEST, p.kind() as u8, 0, &p.encode())?;
        Ok(DeviceRequest::from_cbor(&d)?)
    }
    fn enrol(&mut self, account: &str, code: &str) -> Result<Signature, WalletError> {
        let mut w = tally_core::codec::Writer::new();
        w.array(2);
        w.text(account);
        w.text(code);
        Ok(Signature::from_cbor(&self.command(
            ins::ENROL,
            0,
            0,
            &w.into_bytes(),
        )?)?)
    }
    fn verify_pin(&mut self, pin: &[u8]) -> Result<(), WalletError> {
        unit(self.command_in_class(CLA_ISO, ins::VERIFY, 0, 0, pin)?)
    }
    fn change_pin(&mut self, old: Option<&[u8]>, new: &[u8]) -> Result<(), WalletError> {
        match old {
            None => unit(self.command_in_class(CLA_ISO, ins::CHANGE_REFERENCE_DATA, 1, 0, new)?),
            Some(old) => {
                let mut w = tally_core::codec::Writer::new();
                w.array(2);
                w.bytes(old);
                w.bytes(new);
                let d = w.into_bytes();
                unit(self.command_in_class(CLA_ISO, ins::CHANGE_REFERENCE_DATA, 0, 0, &d)?)
            }
        }
    }
    fn create_request(&mut self, amount: Amount) -> Result<Request, WalletError> {
        let d = self.command(
            ins::CREATE_REQUEST,
            0,
            0,
            &tally_se::dispatch::encode_u64(amount.0),
        )?;
        Ok(Request::from_cbor(&d)?)
    }
    fn check_request(&mut self, r: &Request) -> Result<(), WalletError> {
        self.command(ins::CHECK_REQUEST, 0, 0, &r.to_cbor())?;
        Ok(())
    }
    fn pay(&mut self, r: &Request) -> Result<Vec<u8>, WalletError> {
        self.command(ins::PAY, 0, 0, &r.to_cbor())
    }
    #[cfg(feature = "delegated-proving")]
    fn proving_task(&mut self, r: &Request) -> Result<ProvingTask, WalletError> {
        let d = self.command(ins::PAY, 1, 0, &r.to_cbor())?;
        Ok(ProvingTask::from_cbor(&d)?)
    }
    #[cfg(feature = "delegated-proving")]
    fn pay_proved(
        &mut self,
        r: &Request,
        proof: Option<&RangeProof>,
    ) -> Result<Vec<u8>, WalletError> {
        let d = tally_se::dispatch::encode_pay_proved(r, proof);
        self.command(ins::PAY, 2, 0, &d)
    }
    fn redeem(&mut self, o: &RedemptionOrder) -> Result<Vec<u8>, WalletError> {
        self.command(ins::REDEEM, 0, 0, &o.to_cbor())
    }
    fn receive(&mut self, package: &[u8]) -> Result<Receipt, WalletError> {
        Ok(Receipt::from_cbor(&self.command(
            ins::RECEIVE,
            0,
            0,
            package,
        )?)?)
    }
    fn ack(&mut self, r: &Receipt) -> Result<(), WalletError> {
        unit(self.command(ins::ACK, 0, 0, &r.to_cbor())?)
    }
    fn resend(&mut self, t: &Hash32) -> Result<Vec<u8>, WalletError> {
        self.command(ins::RESEND, 0, 0, &t.to_cbor())
    }
    fn report_requests(&mut self) -> Result<Vec<RequestReport>, WalletError> {
        let d = self.command(ins::CLOSE_REQUESTS, 0, 0, &[])?;
        let mut r = Reader::new(&d);
        let v = tally_core::codec::read_vec(&mut r, tally_se::state::REPORTS_MAX)?;
        if r.position() != d.len() {
            return Err(WalletError::BadResponse(CodecError::TrailingBytes));
        }
        Ok(v)
    }
    fn status(&mut self) -> Result<Status, WalletError> {
        Ok(decode_status(&self.command(
            ins::GET_DATA,
            0,
            tag::STATUS,
            &[],
        )?)?)
    }
    fn attestation_key(&mut self) -> Result<PublicKey, WalletError> {
        Ok(PublicKey::from_cbor(&self.command(
            ins::GET_DATA,
            0,
            tag::ATTESTATION_KEY,
            &[],
        )?)?)
    }
    fn root_key(&mut self) -> Result<PublicKey, WalletError> {
        Ok(PublicKey::from_cbor(&self.command(
            ins::GET_DATA,
            0,
            tag::ROOT_KEY,
            &[],
        )?)?)
    }
    fn outgoing(&mut self) -> Result<Vec<OutgoingEntry>, WalletError> {
        let d = self.command(ins::GET_DATA, 0, tag::OUTGOING, &[])?;
        let mut r = Reader::new(&d);
        let n = r.array_max(tally_se::state::OUTGOING_MAX)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            r.array(4)?;
            v.push(OutgoingEntry {
                transfer_id: Hash32::read(&mut r)?,
                amount: Amount(r.u64()?),
                acked: r.bool()?,
                redemption: r.bool()?,
            });
        }
        if r.position() != d.len() {
            return Err(WalletError::BadResponse(CodecError::TrailingBytes));
        }
        Ok(v)
    }
    fn tokens(&mut self) -> Result<Vec<tally_se::TokenInfo>, WalletError> {
        let d = self.command(ins::GET_DATA, 0, tag::TOKENS, &[])?;
        let mut r = Reader::new(&d);
        let n = r.array_max(tally_se::state::TOKENS_MAX)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            r.array(3)?;
            v.push(tally_se::TokenInfo {
                outpoint: tally_core::OutPoint::read(&mut r)?,
                value: Amount(r.u64()?),
                lineage_len: r.u32()?,
            });
        }
        if r.position() != d.len() {
            return Err(WalletError::BadResponse(CodecError::TrailingBytes));
        }
        Ok(v)
    }
}
