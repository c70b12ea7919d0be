//! ISO 7816-4 front end of the applet (docs/APDU.md).
//!
//! Command data and response data are canonical CBOR wire objects
//! (SPEC.md). Large commands arrive by command chaining (CLA bit 0x10),
//! large responses leave by `61xx` + GET RESPONSE. On an error the card
//! answers a status word only (ISO 7816-4 forbids data with error SWs);
//! the terminal reads the precise error code with GET DATA `LAST_ERROR`.

use alloc::vec::Vec;

use tally_codes as codes;

use tally_core::codec::{Cbor, Writer};
use tally_core::crypto::Entropy;
use tally_core::dcp::RedemptionOrder;
use tally_core::stream::TickError;
use tally_core::{
    Amount, Hash32, Issue, Policy, PseudonymCertificate, PublicKey, Receipt, Request,
    RevocationList, Suite, SyncGrant,
};

use crate::apdu::{AssembledCommand, ChainAssembler, Command, Response, ResponseQueue, sw};
use crate::applet::{Applet, Limit, RequestParams, SeError};
use crate::storage::Storage;

/// Application identifier (proprietary RID range): "TALLY" v1.
pub const AID: &[u8] = &[0xF0, 0x54, 0x41, 0x4C, 0x4C, 0x59, 0x01];
/// Proprietary class byte for Tally commands.
pub const CLA: u8 = 0x80;
/// Largest command data accepted after chaining (a package at the largest
/// history budget fits comfortably).
pub const COMMAND_DATA_MAX: usize = 256 * 1024;

pub mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const GET_DATA: u8 = 0xCA;
    pub const CREATE_REQUEST: u8 = 0x10;
    pub const CHECK_REQUEST: u8 = 0x1C;
    pub const PAY: u8 = 0x20;
    pub const RECEIVE: u8 = 0x30;
    pub const ACK: u8 = 0x40;
    pub const RESEND: u8 = 0x50;
    pub const REDEEM: u8 = 0x52;
    pub const CLOSE_REQUESTS: u8 = 0x54;
    /// Payment streams (decision 0020, docs/APDU.md). P1 = 0: the
    /// paying side, 1: the paid side.
    /// OPEN: P1 1 data `[price, ticks_max]` → the payee's signed stream
    /// request (message 1 of the OPEN payment; the payer's SE opens with
    /// PAY, the payee's with RECEIVE, decision 0020). P1 0 is refused.
    pub const STREAM_OPEN: u8 = 0x70;
    /// TICK: P1 0 (release) data `[id, k]` → element; P1 1 (accept) data
    /// `[id, k, element]` → value streamed so far (8 bytes).
    pub const STREAM_TICK: u8 = 0x72;
    /// CLOSE: data `id`. P1 0 → ticks released (8 bytes); P1 1 →
    /// `[id, ticks, element, value]`.
    pub const STREAM_CLOSE: u8 = 0x74;
    pub const PERSONALIZE: u8 = 0xE0;
    pub const INSTALL_POLICY: u8 = 0xE2;
    pub const INSTALL_REVOCATIONS: u8 = 0xE4;
    pub const GENERATE_KEYS: u8 = 0xE6;
    pub const INSTALL_CERTIFICATE: u8 = 0xE8;
    pub const SYNC: u8 = 0xEA;
    pub const IMPORT_ISSUE: u8 = 0xEC;
    /// P1 = [`tally_core::dcp::RequestKind`]: the SE builds and signs one
    /// back-office request (there is no command that signs a challenge
    /// the terminal chooses).
    pub const BUILD_REQUEST: u8 = 0x60;
    /// Signs this SE's enrolment to an account with its one-time code.
    pub const ENROL: u8 = 0x62;
    /// ISO 7816-4 VERIFY (class 00): the cardholder's PIN.
    pub const VERIFY: u8 = 0x20;
    /// ISO 7816-4 CHANGE REFERENCE DATA (class 00): set or change the PIN.
    pub const CHANGE_REFERENCE_DATA: u8 = 0x24;
}

/// ISO interindustry class (VERIFY, CHANGE REFERENCE DATA).
pub const CLA_ISO: u8 = 0x00;

/// GET DATA tags (P2).
pub mod tag {
    pub const STATUS: u8 = 0x01;
    pub const TOKENS: u8 = 0x02;
    pub const ATTESTATION_KEY: u8 = 0x03;
    pub const OUTGOING: u8 = 0x04;
    /// The root key the SE was personalised with (its trust anchor).
    pub const ROOT_KEY: u8 = 0x05;
    pub const LAST_ERROR: u8 = 0x0E;
}

impl Limit {
    /// The code of a refusal by this limit (registered in tally-codes,
    /// numbered explicitly, not by the order of the variants).
    pub const fn code(self) -> u16 {
        match self {
            Limit::PaymentAmount => codes::SE_LIMIT_PAYMENT_AMOUNT,
            Limit::Holding => codes::SE_LIMIT_HOLDING,
            Limit::Receiving => codes::SE_LIMIT_RECEIVING,
            Limit::OfflineSpend => codes::SE_LIMIT_OFFLINE_SPEND,
            Limit::OfflinePayments => codes::SE_LIMIT_OFFLINE_PAYMENTS,
            Limit::OfflineEpochs => codes::SE_LIMIT_OFFLINE_EPOCHS,
            Limit::HistoryBudget => codes::SE_LIMIT_HISTORY_BUDGET,
            Limit::Tokens => codes::SE_LIMIT_TOKENS,
            Limit::OpenRequests => codes::SE_LIMIT_OPEN_REQUESTS,
            Limit::Outgoing => codes::SE_LIMIT_OUTGOING,
            Limit::Keys => codes::SE_LIMIT_KEYS,
            Limit::Imported => codes::SE_LIMIT_IMPORTED,
            Limit::Certificates => codes::SE_LIMIT_CERTIFICATES,
            Limit::Reports => codes::SE_LIMIT_REPORTS,
            Limit::Cancelled => codes::SE_LIMIT_CANCELLED,
            Limit::Streams => codes::SE_LIMIT_STREAMS,
        }
    }
}

impl SeError {
    /// Stable numeric error code, registered in tally-codes
    /// (docs/CODES.md): verification errors keep their SPEC.md codes
    /// (101–1201); SE errors are 2000–2199.
    pub fn code(&self) -> u16 {
        match self {
            SeError::Verify(e) => e.code(),
            SeError::Decode(_) => codes::VERIFY_DECODE,
            SeError::Storage(_) => codes::SE_STORAGE,
            SeError::StateCorrupt => codes::SE_STATE_CORRUPT,
            SeError::Halted => codes::SE_HALTED,
            SeError::NotPersonalized => codes::SE_NOT_PERSONALIZED,
            SeError::AlreadyPersonalized => codes::SE_ALREADY_PERSONALIZED,
            SeError::NoTrust => codes::SE_NO_TRUST,
            SeError::NoTier => codes::SE_NO_TIER,
            SeError::NoCertifiedKey => codes::SE_NO_CERTIFIED_KEY,
            SeError::NotForThisSe => codes::SE_NOT_FOR_THIS_SE,
            SeError::Stale => codes::SE_STALE,
            SeError::NotRedemption => codes::SE_NOT_REDEMPTION,
            SeError::InsufficientFunds => codes::SE_INSUFFICIENT_FUNDS,
            SeError::NeedsRenewal => codes::SE_NEEDS_RENEWAL,
            SeError::UnknownRequest => codes::SE_UNKNOWN_REQUEST,
            SeError::UnknownTransfer => codes::SE_UNKNOWN_TRANSFER,
            SeError::BadReceipt => codes::SE_BAD_RECEIPT,
            SeError::CardholderVerificationRequired => codes::SE_CARDHOLDER_VERIFICATION_REQUIRED,
            SeError::PinBlocked => codes::SE_PIN_BLOCKED,
            SeError::WrongPin { .. } => codes::SE_WRONG_PIN,
            SeError::BadPin => codes::SE_BAD_PIN,
            SeError::AlreadyImported => codes::SE_ALREADY_IMPORTED,
            SeError::BadRequestParams => codes::SE_BAD_REQUEST_PARAMS,
            SeError::AlreadyPaid => codes::SE_ALREADY_PAID,
            SeError::BadRequestSignature => codes::SE_REQUEST_SIGNATURE_INVALID,
            SeError::IssueCancelled => codes::SE_ISSUE_CANCELLED,
            SeError::ConflictingSpend => codes::SE_CONFLICTING_SPEND,
            SeError::ProvingNotDelegated => codes::SE_PROVING_NOT_DELEGATED,
            SeError::NoProver => codes::SE_NO_PROVER,
            SeError::StreamTick(TickError::Replayed) => codes::SE_STREAM_REPLAYED,
            SeError::StreamTick(TickError::Skipped) => codes::SE_STREAM_SKIPPED,
            SeError::StreamTick(TickError::Forged) => codes::SE_STREAM_FORGED,
            SeError::StreamTick(TickError::Exhausted) => codes::SE_STREAM_EXHAUSTED,
            SeError::StreamClosed => codes::SE_STREAM_CLOSED,
            SeError::UnknownStream => codes::SE_STREAM_UNKNOWN,
            SeError::BadStreamTerms => codes::SE_STREAM_TERMS,
            SeError::LimitExceeded(l) => l.code(),
        }
    }

    /// Inverse of [`SeError::code`] for the terminal side (limits and the
    /// SE's own errors; verification errors come back as `Remote(code)`).
    pub fn status_word(&self) -> u16 {
        match self {
            SeError::Decode(_)
            | SeError::BadRequestParams
            | SeError::UnknownStream
            | SeError::BadStreamTerms => sw::WRONG_DATA,
            SeError::StreamTick(TickError::Forged) => sw::SECURITY_NOT_SATISFIED,
            SeError::WrongPin { tries_left } => sw::wrong_pin(*tries_left),
            SeError::PinBlocked => sw::AUTH_METHOD_BLOCKED,
            SeError::CardholderVerificationRequired => sw::SECURITY_NOT_SATISFIED,
            SeError::Verify(_)
            | SeError::BadReceipt
            | SeError::NotForThisSe
            | SeError::NotRedemption
            | SeError::BadRequestSignature
            | SeError::ConflictingSpend => sw::SECURITY_NOT_SATISFIED,
            SeError::Storage(_) | SeError::StateCorrupt | SeError::Halted => sw::UNKNOWN,
            SeError::LimitExceeded(
                Limit::Tokens | Limit::Outgoing | Limit::OpenRequests | Limit::Streams,
            ) => sw::NOT_ENOUGH_MEMORY,
            _ => sw::CONDITIONS_NOT_SATISFIED,
        }
    }
}

/// The stream commands (decision 0020): strict decoding, nothing
/// trailing, then one applet call.
fn run_stream<S: Storage, E: Entropy>(
    a: &mut Applet<S, E>,
    ins_: u8,
    p1: u8,
    d: &[u8],
) -> Result<Vec<u8>, SeError> {
    let mut r = tally_core::codec::Reader::new(d);
    let out = match (ins_, p1) {
        (ins::STREAM_OPEN, 1) => {
            let ask = tally_core::stream::StreamAsk::read(&mut r)?;
            a.create_stream_request(ask)?.to_cbor()
        }
        (ins::STREAM_TICK, 0) => {
            r.array(2)?;
            let id = Hash32::read(&mut r)?;
            let k = r.u32()?;
            a.release_tick(&id, k)?.to_cbor()
        }
        (ins::STREAM_TICK, 1) => {
            r.array(3)?;
            let id = Hash32::read(&mut r)?;
            let k = r.u32()?;
            let element = Hash32::read(&mut r)?;
            encode_u64(a.accept_tick(&id, k, element)?.0)
        }
        (ins::STREAM_CLOSE, 0) => {
            let id = Hash32::read(&mut r)?;
            encode_u64(u64::from(a.close_stream_out(&id)?))
        }
        (ins::STREAM_CLOSE, 1) => {
            let id = Hash32::read(&mut r)?;
            let c = a.close_stream_in(&id)?;
            let mut w = Writer::new();
            w.array(4);
            c.id.write(&mut w);
            w.u64(u64::from(c.ticks));
            c.element.write(&mut w);
            w.u64(c.value.0);
            w.into_bytes()
        }
        _ => return Err(SeError::Decode(tally_core::CodecError::UnknownCode)),
    };
    if r.position() != d.len() {
        return Err(SeError::Decode(tally_core::CodecError::TrailingBytes));
    }
    Ok(out)
}

/// The interface commands arrive on. A real SE knows it from its hardware
/// (JavaCard: the media bits of `APDU.getProtocol()`): a phone's embedded
/// SE answers its own processor on an internal bus, and may also be
/// routed to the NFC antenna, where any reader nearby — a payee's
/// terminal — can talk to it directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// Contacts or an internal bus: the device's own processor.
    Internal,
    /// ISO/IEC 14443: whatever reader is in the field.
    Contactless,
}

/// The card: applet + APDU state (chaining, pending response, last error).
pub struct Card<S: Storage, E: Entropy> {
    pub applet: Applet<S, E>,
    chain: ChainAssembler,
    out: ResponseQueue,
    selected: bool,
    last_error: u16,
    interface: Interface,
}

impl<S: Storage, E: Entropy> Card<S, E> {
    pub fn new(applet: Applet<S, E>) -> Self {
        Card {
            applet,
            chain: ChainAssembler::new(COMMAND_DATA_MAX),
            out: ResponseQueue::new(),
            selected: false,
            last_error: codes::NO_CODE,
            interface: Interface::Internal,
        }
    }

    /// The interface the next commands arrive on (the hardware's).
    pub fn set_interface(&mut self, interface: Interface) {
        self.interface = interface;
    }

    /// Processes one command APDU and returns the response APDU bytes.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.process(apdu).to_vec()
    }

    fn process(&mut self, apdu: &[u8]) -> Response {
        let cmd = match Command::parse(apdu) {
            Ok(c) => c,
            Err(e) => {
                self.chain.reset();
                return Response::status(e.status_word());
            }
        };
        if let Some(r) = self.out.on_command(&cmd) {
            return r;
        }
        let whole = match self.chain.push(&cmd) {
            Ok(Some(c)) => c,
            Ok(None) => return Response::status(sw::OK),
            Err(e) => return Response::status(e.status_word()),
        };
        let le = whole.le.unwrap_or(256);
        match self.execute(&whole) {
            Ok(data) => {
                self.last_error = codes::NO_CODE;
                if data.is_empty() {
                    Response::status(sw::OK)
                } else {
                    self.out.start(data, le)
                }
            }
            Err(sw_) => Response::status(sw_),
        }
    }

    fn fail(&mut self, e: SeError) -> u16 {
        self.last_error = e.code();
        e.status_word()
    }

    fn execute(&mut self, c: &AssembledCommand) -> Result<Vec<u8>, u16> {
        if c.ins == ins::SELECT {
            if c.cla != 0x00 || c.p1 != 0x04 {
                return Err(sw::WRONG_P1P2);
            }
            if c.data != AID {
                self.selected = false;
                return Err(sw::FILE_NOT_FOUND);
            }
            self.selected = true;
            return Ok(Vec::new());
        }
        if !self.selected {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        if c.cla & !0x10 == CLA_ISO {
            return match c.ins {
                ins::VERIFY => self.run_verify(c).map_err(|e| self.fail(e)),
                ins::CHANGE_REFERENCE_DATA => self.run_change_pin(c).map_err(|e| self.fail(e)),
                _ => Err(sw::INS_NOT_SUPPORTED),
            };
        }
        if c.cla & !0x10 != CLA {
            return Err(sw::CLA_NOT_SUPPORTED);
        }
        const KNOWN: &[u8] = &[
            ins::GET_DATA,
            ins::CREATE_REQUEST,
            ins::CHECK_REQUEST,
            ins::PAY,
            ins::RECEIVE,
            ins::ACK,
            ins::RESEND,
            ins::REDEEM,
            ins::CLOSE_REQUESTS,
            ins::STREAM_OPEN,
            ins::STREAM_TICK,
            ins::STREAM_CLOSE,
            ins::PERSONALIZE,
            ins::INSTALL_POLICY,
            ins::INSTALL_REVOCATIONS,
            ins::GENERATE_KEYS,
            ins::INSTALL_CERTIFICATE,
            ins::SYNC,
            ins::IMPORT_ISSUE,
            ins::BUILD_REQUEST,
            ins::ENROL,
        ];
        if !KNOWN.contains(&c.ins) {
            return Err(sw::INS_NOT_SUPPORTED);
        }
        self.run(c).map_err(|e| self.fail(e))
    }

    fn run(&mut self, c: &AssembledCommand) -> Result<Vec<u8>, SeError> {
        let a = &mut self.applet;
        let d = c.data.as_slice();
        Ok(match c.ins {
            ins::GET_DATA => return self.get_data(c.p2),
            ins::CREATE_REQUEST => a.create_request(Amount(decode_u64(d)?))?.to_cbor(),
            ins::CHECK_REQUEST => {
                a.check_request(&Request::from_cbor(d)?)?;
                Vec::new()
            }
            // P1 0: PAY. A device whose application processor proves
            // (decision 0032): P1 1 the proving task for the request, P1 2
            // PAY with the proof, data `[request]` or `[request, proof]`.
            // The outputs' openings go to the device's own processor only,
            // never over NFC to whatever reader is near (decision 0032).
            #[cfg(feature = "delegated-proving")]
            ins::PAY if c.p1 != 0 && self.interface == Interface::Contactless => {
                return Err(SeError::ProvingNotDelegated);
            }
            ins::PAY => match c.p1 {
                0 => a.pay(&Request::from_cbor(d)?)?,
                #[cfg(feature = "delegated-proving")]
                1 => a.proving_task(&Request::from_cbor(d)?)?.to_cbor(),
                #[cfg(feature = "delegated-proving")]
                2 => {
                    let (request, proof) = decode_pay_proved(d)?;
                    a.pay_proved(&request, proof)?
                }
                // A build without delegated proving never pays for a
                // command that asked for something else.
                #[cfg(not(feature = "delegated-proving"))]
                1 | 2 => return Err(SeError::ProvingNotDelegated),
                _ => return Err(SeError::Decode(tally_core::CodecError::UnknownCode)),
            },
            ins::REDEEM => a.redeem(&RedemptionOrder::from_cbor(d)?)?,
            ins::RECEIVE => a.receive(d)?.to_cbor(),
            ins::ACK => {
                a.ack(&Receipt::from_cbor(d)?)?;
                Vec::new()
            }
            ins::RESEND => a.resend(&Hash32::from_cbor(d)?)?,
            ins::CLOSE_REQUESTS => {
                let reqs = a.report_requests()?;
                let mut w = Writer::new();
                w.array(reqs.len());
                for r in &reqs {
                    r.write(&mut w);
                }
                w.into_bytes()
            }
            ins::STREAM_OPEN | ins::STREAM_TICK | ins::STREAM_CLOSE => {
                return run_stream(a, c.ins, c.p1, d);
            }
            ins::PERSONALIZE => {
                let (&suite, root) = d
                    .split_first()
                    .ok_or(SeError::Decode(tally_core::CodecError::Truncated))?;
                let suite = Suite::from_code(suite)?;
                a.personalize(c.p1, c.p2, suite, PublicKey::from_cbor(root)?)?
                    .to_cbor()
            }
            ins::INSTALL_POLICY => {
                a.install_policy(Policy::from_cbor(d)?)?;
                Vec::new()
            }
            ins::INSTALL_REVOCATIONS => {
                a.install_revocations(RevocationList::from_cbor(d)?)?;
                Vec::new()
            }
            ins::GENERATE_KEYS => {
                let keys = a.generate_keys(usize::from(c.p1))?;
                let mut w = Writer::new();
                tally_core::codec::write_vec(&mut w, &keys);
                w.into_bytes()
            }
            ins::INSTALL_CERTIFICATE => {
                a.install_certificate(PseudonymCertificate::from_cbor(d)?)?;
                Vec::new()
            }
            ins::SYNC => {
                a.sync(SyncGrant::from_cbor(d)?)?;
                Vec::new()
            }
            ins::IMPORT_ISSUE => {
                let v = a.import_issue(Issue::from_cbor(d)?)?;
                encode_u64(v.0)
            }
            ins::BUILD_REQUEST => a.build_request(RequestParams::decode(c.p1, d)?)?.to_cbor(),
            ins::ENROL => {
                let mut r = tally_core::codec::Reader::new(d);
                r.array(2)?;
                let account = r.text_max(tally_core::dcp::ACCOUNT_NAME_BYTES_MAX)?;
                let code = r.text_max(64)?;
                if r.position() != d.len() {
                    return Err(SeError::Decode(tally_core::CodecError::TrailingBytes));
                }
                a.enrol(account, code)?.to_cbor()
            }
            _ => return Err(SeError::Decode(tally_core::CodecError::UnknownCode)),
        })
    }

    /// VERIFY: data = the PIN; empty data asks for the tries left
    /// (`63CX`, or `9000` when this session is already verified).
    fn run_verify(&mut self, c: &AssembledCommand) -> Result<Vec<u8>, SeError> {
        if c.data.is_empty() {
            return match self.applet.pin_tries_left() {
                None => Err(SeError::BadPin),
                Some(0) => Err(SeError::PinBlocked),
                Some(n) if !self.applet.cardholder_verified() => {
                    Err(SeError::WrongPin { tries_left: n })
                }
                Some(_) => Ok(Vec::new()),
            };
        }
        self.applet.verify_pin(&c.data)?;
        Ok(Vec::new())
    }

    /// CHANGE REFERENCE DATA: P1 = 01 sets the first PIN (data = new PIN);
    /// P1 = 00 changes it (data = CBOR `[old, new]`, byte strings).
    fn run_change_pin(&mut self, c: &AssembledCommand) -> Result<Vec<u8>, SeError> {
        match c.p1 {
            0x01 => self.applet.change_pin(None, &c.data),
            0x00 => {
                let d = c.data.as_slice();
                let mut r = tally_core::codec::Reader::new(d);
                r.array(2)?;
                let old = r.bytes_max(crate::state::PIN_BYTES_MAX)?;
                let new = r.bytes_max(crate::state::PIN_BYTES_MAX)?;
                if r.position() != d.len() {
                    return Err(SeError::Decode(tally_core::CodecError::TrailingBytes));
                }
                self.applet.change_pin(Some(old), new)
            }
            _ => Err(SeError::BadPin),
        }?;
        Ok(Vec::new())
    }

    fn get_data(&mut self, t: u8) -> Result<Vec<u8>, SeError> {
        let a = &self.applet;
        Ok(match t {
            tag::STATUS => encode_status(&a.status()?),
            tag::TOKENS => {
                let toks = a.tokens();
                let mut w = Writer::new();
                w.array(toks.len());
                for t in &toks {
                    w.array(3);
                    t.outpoint.write(&mut w);
                    w.u64(t.value.0);
                    w.u64(u64::from(t.lineage_len));
                }
                w.into_bytes()
            }
            tag::ATTESTATION_KEY => a.attestation_public()?.to_cbor(),
            tag::ROOT_KEY => a.root_key()?.to_cbor(),
            tag::OUTGOING => {
                let mut w = Writer::new();
                let out = a.outgoing();
                w.array(out.len());
                for o in out {
                    w.array(4);
                    o.transfer_id.write(&mut w);
                    w.u64(o.amount.0);
                    w.bool(o.acked);
                    w.bool(o.redemption);
                }
                w.into_bytes()
            }
            tag::LAST_ERROR => encode_u64(u64::from(self.last_error)),
            _ => return Err(SeError::Decode(tally_core::CodecError::UnknownCode)),
        })
    }
}

/// PAY WITH PROOF's data (decision 0032): `[request]` (a payment of one
/// output) or `[request, range proof]`, nothing trailing.
#[cfg(feature = "delegated-proving")]
pub fn decode_pay_proved(
    d: &[u8],
) -> Result<(Request, Option<tally_core::confidential::RangeProof>), SeError> {
    let mut r = tally_core::codec::Reader::new(d);
    let n = r.array_max(2)?;
    if n == 0 {
        return Err(SeError::Decode(tally_core::CodecError::Malformed));
    }
    let request = Request::read(&mut r)?;
    let proof = if n == 2 {
        Some(tally_core::confidential::RangeProof::read(&mut r)?)
    } else {
        None
    };
    if r.position() != d.len() {
        return Err(SeError::Decode(tally_core::CodecError::TrailingBytes));
    }
    Ok((request, proof))
}

/// The encoding [`decode_pay_proved`] reads.
#[cfg(feature = "delegated-proving")]
pub fn encode_pay_proved(
    request: &Request,
    proof: Option<&tally_core::confidential::RangeProof>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(1 + usize::from(proof.is_some()));
    request.write(&mut w);
    if let Some(p) = proof {
        p.write(&mut w);
    }
    w.into_bytes()
}

/// Packages are large; everything else fits one short APDU.
pub fn decode_u64(d: &[u8]) -> Result<u64, SeError> {
    let mut r = tally_core::codec::Reader::new(d);
    let v = r.u64()?;
    if r.position() != d.len() {
        return Err(SeError::Decode(tally_core::CodecError::TrailingBytes));
    }
    if encode_u64(v) != d {
        return Err(SeError::Decode(tally_core::CodecError::NonCanonical));
    }
    Ok(v)
}

pub fn encode_u64(v: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(v);
    w.into_bytes()
}

/// Status as a CBOR array (docs/APDU.md lists the fields in order).
pub fn encode_status(s: &crate::applet::Status) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(14);
    s.se_id.write(&mut w);
    w.u64(u64::from(s.device_class));
    w.u64(u64::from(s.tier));
    w.u64(s.balance.0);
    w.u64(u64::from(s.tokens));
    w.u64(s.counter);
    w.u64(u64::from(s.epoch));
    w.u64(u64::from(s.epoch_seen));
    w.u64(s.spent_since_sync.0);
    w.u64(u64::from(s.payments_since_sync));
    w.u64(s.received_since_sync.0);
    w.u64(u64::from(s.unacked));
    w.u64(u64::from(s.open_requests));
    w.u64(u64::from(s.certified_keys));
    w.into_bytes()
}

pub fn decode_status(d: &[u8]) -> Result<crate::applet::Status, tally_core::CodecError> {
    let mut r = tally_core::codec::Reader::new(d);
    r.array(14)?;
    let s = crate::applet::Status {
        se_id: Hash32::read(&mut r)?,
        device_class: r.u8()?,
        tier: r.u8()?,
        balance: Amount(r.u64()?),
        tokens: r.u32()?,
        counter: r.u64()?,
        epoch: r.u32()?,
        epoch_seen: r.u32()?,
        spent_since_sync: Amount(r.u64()?),
        payments_since_sync: r.u32()?,
        received_since_sync: Amount(r.u64()?),
        unacked: r.u32()?,
        open_requests: r.u32()?,
        certified_keys: r.u32()?,
    };
    if r.position() != d.len() {
        return Err(tally_core::CodecError::TrailingBytes);
    }
    Ok(s)
}

#[cfg(test)]
mod code_tests {
    use alloc::collections::BTreeSet;
    use alloc::vec;
    use alloc::vec::Vec;

    use tally_codes as codes;
    use tally_core::codec::CodecError;
    use tally_core::stream::TickError;
    use tally_core::verify::VerifyError;

    use crate::applet::{Limit, SeError};
    use crate::storage::StorageError;

    const LIMITS: [Limit; 16] = [
        Limit::PaymentAmount,
        Limit::Holding,
        Limit::Receiving,
        Limit::OfflineSpend,
        Limit::OfflinePayments,
        Limit::OfflineEpochs,
        Limit::HistoryBudget,
        Limit::Tokens,
        Limit::OpenRequests,
        Limit::Outgoing,
        Limit::Keys,
        Limit::Imported,
        Limit::Certificates,
        Limit::Reports,
        Limit::Cancelled,
        Limit::Streams,
    ];

    /// One of each kind of the SE's own refusals.
    fn every_own_kind() -> Vec<SeError> {
        use SeError::*;
        let mut v = vec![
            Storage(StorageError::Io),
            StateCorrupt,
            Halted,
            NotPersonalized,
            AlreadyPersonalized,
            NoTrust,
            NoTier,
            NoCertifiedKey,
            NotForThisSe,
            Stale,
            NotRedemption,
            InsufficientFunds,
            NeedsRenewal,
            UnknownRequest,
            UnknownTransfer,
            BadReceipt,
            CardholderVerificationRequired,
            PinBlocked,
            WrongPin { tries_left: 2 },
            BadPin,
            AlreadyImported,
            BadRequestParams,
            AlreadyPaid,
            BadRequestSignature,
            IssueCancelled,
            ConflictingSpend,
            ProvingNotDelegated,
            NoProver,
            StreamTick(TickError::Replayed),
            StreamTick(TickError::Skipped),
            StreamTick(TickError::Forged),
            StreamTick(TickError::Exhausted),
            StreamClosed,
            UnknownStream,
            BadStreamTerms,
        ];
        v.extend(LIMITS.iter().map(|l| LimitExceeded(*l)));
        v
    }

    /// The status word the registry gives `code` covers what the card
    /// answers (`63CX` stands for every wrong-PIN word).
    fn registry_sw_covers(code: u16, sw: u16) -> bool {
        let Some(c) = codes::lookup(code) else {
            return false;
        };
        c.sw.iter()
            .any(|w| *w == sw || (*w == 0x63C0 && sw & 0xFFF0 == 0x63C0))
    }

    #[test]
    fn own_codes_are_the_registrys_with_their_status_words() {
        let got: BTreeSet<u16> = every_own_kind().iter().map(|e| e.code()).collect();
        assert_eq!(got.len(), every_own_kind().len(), "two kinds share a code");
        for e in every_own_kind() {
            assert!(codes::is_used_by(e.code(), codes::Component::Se), "{e:?}");
            assert!(registry_sw_covers(e.code(), e.status_word()), "{e:?}");
        }
        let registered: BTreeSet<u16> = codes::REGISTRY
            .iter()
            .filter(|c| c.component == codes::Component::Se && c.state == codes::State::Used)
            .map(|c| c.code)
            .collect();
        assert_eq!(got, registered);
    }

    #[test]
    fn limit_codes_are_explicit_not_the_variant_order() {
        // The numbers devices in the field know (docs/APDU.md): 2100 + n.
        for (n, l) in LIMITS.iter().enumerate() {
            assert_eq!(l.code(), 2100 + n as u16, "{l:?}");
        }
    }

    #[test]
    fn verification_and_decode_refusals_keep_the_verifiers_codes() {
        for (e, code) in [
            (SeError::Decode(CodecError::Malformed), codes::VERIFY_DECODE),
            (
                SeError::Verify(VerifyError::Decode(CodecError::Malformed)),
                codes::VERIFY_DECODE,
            ),
            (
                SeError::Verify(VerifyError::BadSignature),
                codes::VERIFY_BAD_SIGNATURE,
            ),
        ] {
            assert_eq!(e.code(), code);
            assert!(codes::is_used_by(code, codes::Component::Verify));
            assert!(registry_sw_covers(code, e.status_word()), "{e:?}");
        }
    }
}
