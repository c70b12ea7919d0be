//! The SE's persistent state and its (internal, versioned) encoding.
//!
//! The whole state is one canonical CBOR object: the journal's base state.
//! Each command's change is committed as a delta ([`encode_delta`], one
//! journal log record) and the whole state is written again only when the
//! log is full (docs/decisions/0018-se-journal-log.md). Records are stored
//! once (deduplicated) and tokens refer to them by id, so a token's
//! ancestry costs 32 bytes per record it shares.

use alloc::vec::Vec;

use tally_core::codec::{Cbor, CodecError, Reader, Writer, read_digests, read_vec, write_vec};
use tally_core::sorted::{VecMap, VecSet};
use tally_core::stream::StreamAsk;
use tally_core::{
    Amount, Epoch, Hash32, OutPoint, Policy, PseudonymCertificate, PublicKey, Receipt, Record,
    RevocationList, Signature, Suite,
};

/// 2: adds the request counter, the imported-Issue set, the PIN and the
/// value paid since the last cardholder verification (version 1 is read
/// with those empty). 3: adds the request reports and the cancelled
/// Issues (versions 1 and 2 are read with those empty). 4: adds the
/// recently acknowledged transfers (older versions are read with none).
/// 5: adds the payment streams, paying and paid (older versions are read
/// with none). 6: a stored record is `[id, record]` in the base state, its
/// id no longer recomputed at boot (version 5 is read with the ids
/// recomputed; decision 0024, session 10 addendum). 7: the tables of
/// fixed-size entries (the imported Issues, the paid requests, the
/// acknowledged transfers) are each one byte string of their entries side
/// by side instead of an array of items: boot copies them out in one pass
/// (version 6 is read as before; decision 0024, session 11 addendum).
pub const STATE_VERSION: u8 = 7;
/// Bounds on every table (TigerBeetle: put a limit on everything).
pub const TOKENS_MAX: usize = 256;
pub const KEYS_MAX: usize = 16;
pub const OPEN_REQUESTS_MAX: usize = 8;
pub const OUTGOING_MAX: usize = 128;
// One sync upload carries every unacknowledged payment of the log: the
// grant that answers it clears them all.
const _: () = assert!(OUTGOING_MAX <= tally_core::dcp::UPLOAD_PACKAGES_MAX);
pub const RECEIPTS_KEPT_MAX: usize = 32;
pub const RECORDS_MAX: usize = 4096;
pub const CERTS_MAX: usize = 1024;
/// Issue ids remembered so that an Issue is credited once per SE, ever
/// (pruned once the Issue has expired: an expired Issue is refused anyway).
pub const IMPORTED_MAX: usize = 256;
/// Requests paid, remembered after their log entry is gone (a sync
/// empties the payment log), so that a request replayed later is not paid
/// a second time: the payee accepts one package per request, so a second
/// one would strand its value. Oldest forgotten first.
pub const PAID_KEPT_MAX: usize = 128;
/// Request reports kept until a sync grant answers the upload that
/// carried them; open requests count against it too (every open request
/// ends as a report), so CREATE REQUEST refuses before a payment could
/// find no room.
pub const REPORTS_MAX: usize = 128;
/// Issues this SE refused and will never credit, kept (until they expire)
/// so that their cancellation can be signed again after a lost answer.
pub const CANCELLED_MAX: usize = 16;
/// Payments acknowledged most recently, remembered after their log entry
/// is gone (an acknowledged payment leaves the payment log at once), so
/// that a repeated ACK is still answered as done. Oldest forgotten first.
pub const ACKED_KEPT_MAX: usize = 16;
/// Payment streams open at once on each side (paying, being paid).
pub const STREAMS_MAX: usize = 8;
/// Wrong PIN presentations before the SE blocks.
pub const PIN_TRIES_MAX: u8 = 3;
pub const PIN_BYTES_MIN: usize = 4;
pub const PIN_BYTES_MAX: usize = 12;

/// The cardholder's PIN: a salted digest and the remaining tries.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin {
    pub(crate) salt: [u8; 16],
    pub(crate) digest: [u8; 32],
    pub tries_left: u8,
}

impl core::fmt::Debug for Pin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pin")
            .field("tries_left", &self.tries_left)
            .finish_non_exhaustive()
    }
}

impl Pin {
    pub(crate) fn digest_of(salt: &[u8; 16], pin: &[u8]) -> [u8; 32] {
        tally_core::crypto::tagged_hash(b"tally/v1/se-pin", &[salt, pin]).0
    }
}

/// An Issue this SE imported, remembered until it expires.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Imported {
    pub id: Hash32,
    pub expiry_epoch: Epoch,
}

/// An offline (pseudonym) key pair generated inside the SE. The seed is
/// not visible outside the crate and not printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct OfflineKey {
    pub(crate) seed: [u8; 32],
    pub public: PublicKey,
    pub cert: Option<PseudonymCertificate>,
    /// Handed out in a request already (fresh keys are preferred).
    pub used: bool,
}

/// A token the SE owns.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Token {
    pub outpoint: OutPoint,
    pub value: Amount,
    pub owner: PublicKey,
    /// Ids of the records of its ancestry, topologically ordered, ending
    /// with the record that created it.
    pub lineage: Vec<Hash32>,
    /// A confidential token's blinding (its opening is `value` and this):
    /// the SE needs it to spend the token. `None` for clear amounts.
    pub blinding: Option<[u8; 32]>,
}

/// How one of this SE's requests ended, kept for the payee's report at
/// sync (`tally_core::dcp::RequestReport`, signed when reported).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    pub nonce: [u8; 16],
    pub amount: Amount,
    pub key: PublicKey,
    /// The transfer received for it; `None`: closed unpaid.
    pub received: Option<Hash32>,
    /// The counter of the last Sync request that carried it (0: none yet).
    pub sent_in: u64,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenRequest {
    pub nonce: [u8; 16],
    pub amount: Amount,
    pub key: PublicKey,
    /// A stream request's ask (decision 0020); `None` for a payment.
    pub stream: Option<StreamAsk>,
}

/// A payment this SE made, kept until acknowledged and synced.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Outgoing {
    pub transfer_id: Hash32,
    pub nonce: [u8; 16],
    pub payee: PublicKey,
    pub amount: Amount,
    pub counter: u64,
    /// The exact package bytes, resent verbatim until acknowledged.
    pub package: Vec<u8>,
    pub acked: bool,
    /// A redemption (renewal/unload) to the DCP rather than a payment.
    pub redemption: bool,
}

/// A stream this SE pays (decision 0020), opened by its OPEN transfer
/// `open` (stream output 0). The chain's seed is derived from the SE's
/// secret and `counter` (the OPEN's transaction counter) whenever needed,
/// never stored; the pebbles of its traversal live in RAM only.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamOut {
    /// `stream_id(open, 0)`.
    pub id: Hash32,
    pub price: Amount,
    pub ticks_max: u32,
    /// Ticks released: recorded durably before each element leaves.
    pub released: u32,
    /// Closed by this SE (refunded): no tick is released after it.
    pub closed: bool,
    /// The OPEN transfer's id.
    pub open: Hash32,
    /// The OPEN's counter, from which the chain's seed is derived.
    pub counter: u64,
    /// The OPEN's refund key (one of this SE's), which signs the refund.
    pub refund_key: PublicKey,
    /// The OPEN's ancestry ids ending with the OPEN: the refund token's
    /// lineage before its own record.
    pub lineage: Vec<Hash32>,
}

/// A stream this SE is paid by, from the OPEN transfer it received and
/// verified: only the latest element is kept.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamIn {
    /// `stream_id(open, 0)`.
    pub id: Hash32,
    pub price: Amount,
    pub ticks_max: u32,
    /// Ticks received and checked.
    pub ticks: u32,
    /// The element of tick `ticks` (the anchor while `ticks` is 0).
    pub latest: Hash32,
    /// Closed by this SE (claimed): no tick is taken after it.
    pub closed: bool,
    /// The OPEN transfer's id (its output 0 is the stream output).
    pub open: Hash32,
    /// The stream output's owner (one of this SE's keys), which signs the
    /// claim.
    pub owner: PublicKey,
    /// The OPEN's ancestry ids ending with the OPEN: the claim token's
    /// lineage before its own record.
    pub lineage: Vec<Hash32>,
}

impl StreamIn {
    /// The value streamed so far (`ticks · price`, bounded at open by
    /// `ticks_max · price`, which fits).
    pub fn streamed(&self) -> Amount {
        Amount(self.price.0.saturating_mul(u64::from(self.ticks)))
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredRecord {
    pub id: Hash32,
    pub record: Record,
}

impl OfflineKey {
    /// Certified, and the certificate not expired at `epoch`.
    pub fn certified_at(&self, epoch: Epoch) -> bool {
        self.cert
            .as_ref()
            .map(|c| c.expiry_epoch >= epoch)
            .unwrap_or(false)
    }
}

#[cfg(feature = "test-hooks")]
impl OfflineKey {
    /// The private seed: tests that forge what only this SE could sign.
    pub fn seed_for_tests(&self) -> [u8; 32] {
        self.seed
    }
}

impl core::fmt::Debug for OfflineKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OfflineKey")
            .field("public", &self.public)
            .field("cert", &self.cert)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Personalization {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Personalization")
            .field("device_class", &self.device_class)
            .field("tier", &self.tier)
            .field("suite", &self.suite)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Personalization {
    pub(crate) attestation_seed: [u8; 32],
    pub device_class: u8,
    pub tier: u8,
    pub suite: Suite,
    pub root: PublicKey,
}

#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct State {
    pub personal: Option<Personalization>,
    pub policy: Option<Policy>,
    pub revocations: Option<RevocationList>,
    /// Epoch of the last sync grant.
    pub epoch: Epoch,
    /// Highest epoch seen anywhere (own sync or a payee's request).
    pub epoch_seen: Epoch,
    pub sync_sequence: u64,
    /// Monotonic transaction counter; every Transfer carries the next value.
    pub counter: u64,
    pub spent_since_sync: Amount,
    pub payments_since_sync: u32,
    pub received_since_sync: Amount,
    pub keys: Vec<OfflineKey>,
    pub tokens: Vec<Token>,
    pub records: Vec<StoredRecord>,
    pub certs: Vec<PseudonymCertificate>,
    pub open_requests: Vec<OpenRequest>,
    pub outgoing: Vec<Outgoing>,
    /// Receipts of packages received, so a resent package gets the same
    /// receipt again (exactly-once receive).
    pub receipts: Vec<Receipt>,
    /// Counter of the back-office requests this SE built and signed.
    pub request_counter: u64,
    /// Issues credited, so that none is credited twice.
    pub imported: Vec<Imported>,
    pub pin: Option<Pin>,
    /// Value paid offline without cardholder verification since the last
    /// verified payment.
    pub spent_since_cvm: Amount,
    /// Digests of the requests paid (nonce and payee key), newest last.
    pub paid: Vec<Hash32>,
    /// How requests ended, until a sync grant answers their upload.
    pub reports: Vec<Report>,
    /// Issues refused and cancelled (never credited here).
    pub cancelled: Vec<Imported>,
    /// Transfer ids of the payments acknowledged most recently, newest
    /// last (their log entries are gone).
    pub acked: Vec<Hash32>,
    /// Streams this SE pays.
    pub streams_out: Vec<StreamOut>,
    /// Streams this SE is paid by.
    pub streams_in: Vec<StreamIn>,
}

impl State {
    pub fn balance(&self) -> Amount {
        // Bounded by holding_max on every insert, so this cannot overflow;
        // saturate rather than panic all the same.
        self.tokens.iter().fold(Amount::ZERO, |a, t| {
            a.checked_add(t.value).unwrap_or(Amount(u64::MAX))
        })
    }
    pub fn record(&self, id: &Hash32) -> Option<&Record> {
        self.records.iter().find(|r| r.id == *id).map(|r| &r.record)
    }
    pub fn key(&self, public: &PublicKey) -> Option<&OfflineKey> {
        self.keys.iter().find(|k| k.public == *public)
    }
    pub fn cert_for(&self, key: &PublicKey) -> Option<&PseudonymCertificate> {
        self.certs
            .iter()
            .find(|c| c.key == *key)
            .or_else(|| self.key(key).and_then(|k| k.cert.as_ref()))
    }
    /// Drops records and certificates no token needs any more.
    pub fn collect_garbage(&mut self) {
        // Runs on every PAY: one sorted index of the records, made at
        // once (`VecMap::from_vec`, O(n log n)), instead of B-trees (each
        // B-tree instantiation costs the Cortex-M4 payment firmware
        // 0.6–1 KB of flash, and `collect` into one sorts its input with
        // core's sort, about 2.5 KiB; decision 0022, session 10).
        let by_id: VecMap<Hash32, usize> = VecMap::from_vec(
            self.records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id, i))
                .collect(),
        );
        let mut live = alloc::vec![false; self.records.len()];
        let mut mark = |lineage: &[Hash32]| {
            for id in lineage {
                if let Some(&i) = by_id.get(id) {
                    live[i] = true;
                }
            }
        };
        for t in &self.tokens {
            mark(&t.lineage);
        }
        // An open stream's close becomes a token whose lineage is the
        // OPEN's: kept until the close.
        for s in &self.streams_out {
            if !s.closed {
                mark(&s.lineage);
            }
        }
        for s in &self.streams_in {
            if !s.closed {
                mark(&s.lineage);
            }
        }
        // Keys that signed a kept transfer: owners of the outputs it
        // consumed (in a kept record).
        let mut owners = Vec::new();
        for (r, _) in self.records.iter().zip(&live).filter(|(_, l)| **l) {
            for op in r.record.inputs() {
                if let Some(&i) = by_id.get(&op.record)
                    && live[i]
                    && let Some(o) = self.records[i].record.spendable(op.index)
                {
                    owners.push(o.owner);
                }
            }
        }
        let signers = VecSet::from_vec(owners);
        let mut keep = live.iter();
        self.records
            .retain(|_| keep.next().copied().unwrap_or(false));
        self.certs.retain(|c| signers.contains(&c.key));
    }
}

fn write_opt<T: Cbor>(w: &mut Writer, v: &Option<T>) {
    match v {
        Some(x) => {
            w.array(1);
            x.write(w)
        }
        None => w.array(0),
    }
}

fn read_opt<T: Cbor>(r: &mut Reader<'_>) -> Result<Option<T>, CodecError> {
    match r.array_max(1)? {
        0 => Ok(None),
        _ => Ok(Some(T::read(r)?)),
    }
}

impl Cbor for OfflineKey {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.bytes(&self.seed);
        self.public.write(w);
        write_opt(w, &self.cert);
        w.bool(self.used);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        Ok(OfflineKey {
            seed: r.bytes_array()?,
            public: PublicKey::read(r)?,
            cert: read_opt(r)?,
            used: r.bool()?,
        })
    }
}

/// `[outpoint, value, owner, [lineage]]`, or with a confidential token's
/// blinding `[outpoint, value, owner, [lineage], blinding : bstr 32]`.
impl Cbor for Token {
    fn write(&self, w: &mut Writer) {
        w.array(if self.blinding.is_some() { 5 } else { 4 });
        self.outpoint.write(w);
        w.u64(self.value.0);
        self.owner.write(w);
        write_vec(w, &self.lineage);
        if let Some(b) = &self.blinding {
            w.bytes(b);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(5)?;
        if n != 4 && n != 5 {
            return Err(CodecError::Malformed);
        }
        Ok(Token {
            outpoint: OutPoint::read(r)?,
            value: Amount(r.u64()?),
            owner: PublicKey::read(r)?,
            lineage: read_digests(r, RECORDS_MAX)?,
            blinding: if n == 5 { Some(r.bytes_array()?) } else { None },
        })
    }
}

impl Cbor for Report {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.bytes(&self.nonce);
        w.u64(self.amount.0);
        self.key.write(w);
        write_opt(w, &self.received);
        w.u64(self.sent_in);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        Ok(Report {
            nonce: r.bytes_array()?,
            amount: Amount(r.u64()?),
            key: PublicKey::read(r)?,
            received: read_opt(r)?,
            sent_in: r.u64()?,
        })
    }
}

impl Cbor for OpenRequest {
    fn write(&self, w: &mut Writer) {
        w.array(3 + usize::from(self.stream.is_some()));
        w.bytes(&self.nonce);
        w.u64(self.amount.0);
        self.key.write(w);
        if let Some(a) = &self.stream {
            a.write(w);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(4)?;
        if n < 3 {
            return Err(CodecError::Malformed);
        }
        Ok(OpenRequest {
            nonce: r.bytes_array()?,
            amount: Amount(r.u64()?),
            key: PublicKey::read(r)?,
            stream: if n == 4 {
                Some(StreamAsk::read(r)?)
            } else {
                None
            },
        })
    }
}

impl Cbor for Outgoing {
    fn write(&self, w: &mut Writer) {
        w.array(8);
        self.transfer_id.write(w);
        w.bytes(&self.nonce);
        self.payee.write(w);
        w.u64(self.amount.0);
        w.u64(self.counter);
        w.bytes(&self.package);
        w.bool(self.acked);
        w.bool(self.redemption);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(8)?;
        Ok(Outgoing {
            transfer_id: Hash32::read(r)?,
            nonce: r.bytes_array()?,
            payee: PublicKey::read(r)?,
            amount: Amount(r.u64()?),
            counter: r.u64()?,
            package: r.bytes_max(1 << 20)?.to_vec(),
            acked: r.bool()?,
            redemption: r.bool()?,
        })
    }
}

impl Cbor for StreamOut {
    fn write(&self, w: &mut Writer) {
        w.array(9);
        self.id.write(w);
        w.u64(self.price.0);
        w.u64(u64::from(self.ticks_max));
        w.u64(u64::from(self.released));
        w.bool(self.closed);
        self.open.write(w);
        w.u64(self.counter);
        self.refund_key.write(w);
        write_vec(w, &self.lineage);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(9)?;
        let s = StreamOut {
            id: Hash32::read(r)?,
            price: Amount(r.u64()?),
            ticks_max: r.u32()?,
            released: r.u32()?,
            closed: r.bool()?,
            open: Hash32::read(r)?,
            counter: r.u64()?,
            refund_key: PublicKey::read(r)?,
            lineage: read_digests(r, RECORDS_MAX)?,
        };
        if s.released > s.ticks_max {
            return Err(CodecError::Malformed);
        }
        Ok(s)
    }
}

impl Cbor for StreamIn {
    fn write(&self, w: &mut Writer) {
        w.array(9);
        self.id.write(w);
        w.u64(self.price.0);
        w.u64(u64::from(self.ticks_max));
        w.u64(u64::from(self.ticks));
        self.latest.write(w);
        w.bool(self.closed);
        self.open.write(w);
        self.owner.write(w);
        write_vec(w, &self.lineage);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(9)?;
        let s = StreamIn {
            id: Hash32::read(r)?,
            price: Amount(r.u64()?),
            ticks_max: r.u32()?,
            ticks: r.u32()?,
            latest: Hash32::read(r)?,
            closed: r.bool()?,
            open: Hash32::read(r)?,
            owner: PublicKey::read(r)?,
            lineage: read_digests(r, RECORDS_MAX)?,
        };
        if s.ticks > s.ticks_max {
            return Err(CodecError::Malformed);
        }
        Ok(s)
    }
}

impl Cbor for StoredRecord {
    fn write(&self, w: &mut Writer) {
        // The id is recomputed on load, never trusted from storage.
        self.record.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let record = Record::read(r)?;
        Ok(StoredRecord {
            id: record.id(),
            record,
        })
    }
}

impl StoredRecord {
    /// `[id, record]`: the form of the base state (version 6 on) and of
    /// delta field [`RECORDS_WITH_IDS_FIELD`], the id not hashed again.
    fn write_with_id(&self, w: &mut Writer) {
        w.array(2);
        self.id.write(w);
        self.record.write(w);
    }

    /// Reads [`StoredRecord::write_with_id`]'s form. Stored by this code
    /// with the id it computed (its integrity is the journal's check, as
    /// for every other field); debug builds check it all the same.
    fn read_with_id(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        let id = Hash32::read(r)?;
        let record = Record::read(r)?;
        if cfg!(debug_assertions) && record.id() != id {
            return Err(CodecError::Malformed);
        }
        Ok(StoredRecord { id, record })
    }
}

impl Cbor for Personalization {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.bytes(&self.attestation_seed);
        w.u64(u64::from(self.device_class));
        w.u64(u64::from(self.tier));
        w.u64(self.suite as u64);
        self.root.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        Ok(Personalization {
            attestation_seed: r.bytes_array()?,
            device_class: r.u8()?,
            tier: r.u8()?,
            suite: Suite::from_code(r.u8()?)?,
            root: PublicKey::read(r)?,
        })
    }
}

impl Cbor for Pin {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.bytes(&self.salt);
        w.bytes(&self.digest);
        w.u64(u64::from(self.tries_left));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        Ok(Pin {
            salt: r.bytes_array()?,
            digest: r.bytes_array()?,
            tries_left: r.u8()?,
        })
    }
}

impl Cbor for Imported {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        self.id.write(w);
        w.u64(u64::from(self.expiry_epoch));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        Ok(Imported {
            id: Hash32::read(r)?,
            expiry_epoch: r.u32()?,
        })
    }
}

/// The imported-Issue table as [`read_vec`] reads it, each entry decoded
/// in place (the table is the largest of a long offline run: 128 entries
/// or more, decoded at every boot).
fn read_imported(r: &mut Reader<'_>) -> Result<Vec<Imported>, CodecError> {
    let n = r.array_max(IMPORTED_MAX)?;
    let mut v = alloc::vec![
        Imported {
            id: Hash32::default(),
            expiry_epoch: 0
        };
        n
    ];
    for i in v.iter_mut() {
        r.array(2)?;
        i.id.0.copy_from_slice(r.bytes_exact(32)?);
        i.expiry_epoch = r.u32()?;
    }
    Ok(v)
}

/// A version-7 table of 32-byte digests: one byte string, the digests
/// side by side (`max` of them at most).
fn read_packed_digests(r: &mut Reader<'_>, max: usize) -> Result<Vec<Hash32>, CodecError> {
    let b = r.bytes_max(max * 32)?;
    if b.len() % 32 != 0 {
        return Err(CodecError::Malformed);
    }
    let mut v = alloc::vec![Hash32::default(); b.len() / 32];
    for (h, c) in v.iter_mut().zip(b.chunks_exact(32)) {
        h.0.copy_from_slice(c);
    }
    Ok(v)
}

/// A version-7 imported-Issue table: one byte string, per entry the id
/// (32 bytes) then the expiry epoch (4 bytes, big-endian).
fn read_packed_imported(r: &mut Reader<'_>) -> Result<Vec<Imported>, CodecError> {
    let b = r.bytes_max(IMPORTED_MAX * 36)?;
    if b.len() % 36 != 0 {
        return Err(CodecError::Malformed);
    }
    let mut v = alloc::vec![
        Imported {
            id: Hash32::default(),
            expiry_epoch: 0
        };
        b.len() / 36
    ];
    for (i, c) in v.iter_mut().zip(b.chunks_exact(36)) {
        let (id, epoch) = c.split_at(32);
        i.id.0.copy_from_slice(id);
        i.expiry_epoch = u32::from_be_bytes([epoch[0], epoch[1], epoch[2], epoch[3]]);
    }
    Ok(v)
}

impl Cbor for State {
    fn write(&self, w: &mut Writer) {
        // One encoding, the pieces a compaction writes straight to flash
        // ([`State::encode_in_pieces`]).
        self.encode_in_pieces(&mut |piece| {
            w.append_encoded(piece);
            true
        });
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(28)?;
        let version = r.u8()?;
        match (version, n) {
            (1, 18) | (2, 23) | (3, 25) | (4, 26) | (5, 28) | (6, 28) | (STATE_VERSION, 28) => {}
            _ => return Err(CodecError::UnsupportedVersion),
        }
        let records = |r: &mut Reader<'_>| {
            if version < 6 {
                return read_vec(r, RECORDS_MAX);
            }
            let n = r.array_max(RECORDS_MAX)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(StoredRecord::read_with_id(r)?);
            }
            Ok(v)
        };
        let mut st = State {
            personal: read_opt(r)?,
            policy: read_opt(r)?,
            revocations: read_opt(r)?,
            epoch: r.u32()?,
            epoch_seen: r.u32()?,
            sync_sequence: r.u64()?,
            counter: r.u64()?,
            spent_since_sync: Amount(r.u64()?),
            payments_since_sync: r.u32()?,
            received_since_sync: Amount(r.u64()?),
            keys: read_vec(r, KEYS_MAX)?,
            tokens: read_vec(r, TOKENS_MAX)?,
            records: records(r)?,
            certs: read_vec(r, CERTS_MAX)?,
            open_requests: read_vec(r, OPEN_REQUESTS_MAX)?,
            outgoing: read_vec(r, OUTGOING_MAX)?,
            receipts: read_vec(r, RECEIPTS_KEPT_MAX)?,
            ..State::default()
        };
        if version >= 2 {
            st.request_counter = r.u64()?;
            st.imported = if version >= 7 {
                read_packed_imported(r)?
            } else {
                read_imported(r)?
            };
            st.pin = read_opt(r)?;
            st.spent_since_cvm = Amount(r.u64()?);
            st.paid = if version >= 7 {
                read_packed_digests(r, PAID_KEPT_MAX)?
            } else {
                read_digests(r, PAID_KEPT_MAX)?
            };
        }
        if version >= 3 {
            st.reports = read_vec(r, REPORTS_MAX)?;
            st.cancelled = read_vec(r, CANCELLED_MAX)?;
        }
        if version >= 4 {
            st.acked = if version >= 7 {
                read_packed_digests(r, ACKED_KEPT_MAX)?
            } else {
                read_digests(r, ACKED_KEPT_MAX)?
            };
        }
        if version >= 5 {
            st.streams_out = read_vec(r, STREAMS_MAX)?;
            st.streams_in = read_vec(r, STREAMS_MAX)?;
        }
        Ok(st)
    }
}

impl State {
    /// Decodes a stored state strictly (every field's type, arity and
    /// bound, nothing trailing); an older version (an SE installed by an
    /// earlier release) is read with the fields it lacks empty, and the
    /// next full commit writes the current version.
    ///
    /// Unlike [`Cbor::from_cbor`] it does not re-encode the state to check
    /// that the bytes are the canonical encoding: the stored state is this
    /// code's own output, its integrity is the journal's check (and, where
    /// the storage lies outside the SE, the seal's), nothing signs or
    /// hashes its bytes (a stored record's id is recomputed from the
    /// decoded record), and the re-encoding was about a third of boot
    /// (decision 0024). Tests check that what is stored is canonical
    /// ([`State::encode_in_pieces`] is the encoding, byte for byte).
    pub fn from_stored(bytes: &[u8]) -> Result<State, CodecError> {
        let mut r = Reader::new(bytes);
        let st = State::read(&mut r)?;
        if r.position() != bytes.len() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(st)
    }

    /// The state's encoding handed to `sink` in pieces of at most one
    /// table entry (or the scalar fields together), so that a compaction
    /// writes the state straight to flash without an encoding of its
    /// whole size in RAM; [`Cbor::write`] is these pieces put together.
    /// Stops, answering false, as soon as `sink` answers false.
    pub fn encode_in_pieces(&self, sink: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.encode_as(STATE_VERSION, sink)
    }

    /// [`State::encode_in_pieces`] as state version 7, or (`version` 6 or
    /// 5, for tests of the migration) with the digest tables as arrays
    /// and (5) the records without their ids.
    fn encode_as(&self, version: u8, sink: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        // One buffer for every piece (cleared after each): no allocation
        // per entry.
        fn piece(w: &mut Writer, sink: &mut dyn FnMut(&[u8]) -> bool) -> bool {
            let go_on = sink(w.as_bytes());
            w.clear();
            go_on
        }
        fn table<T: Cbor>(
            w: &mut Writer,
            items: &[T],
            sink: &mut dyn FnMut(&[u8]) -> bool,
        ) -> bool {
            w.array(items.len());
            if !piece(w, sink) {
                return false;
            }
            items.iter().all(|item| {
                item.write(w);
                piece(w, sink)
            })
        }
        // A digest table: from version 7 one byte string.
        fn packed(
            w: &mut Writer,
            version: u8,
            items: &[Hash32],
            sink: &mut dyn FnMut(&[u8]) -> bool,
        ) -> bool {
            if version < 7 {
                return table(w, items, sink);
            }
            w.bytes_head(items.len() * 32);
            piece(w, sink) && items.iter().all(|h| sink(&h.0))
        }
        let mut w = Writer::with_capacity(256);
        let w = &mut w;
        w.array(28);
        w.u64(u64::from(version));
        write_opt(w, &self.personal);
        write_opt(w, &self.policy);
        write_opt(w, &self.revocations);
        w.u64(u64::from(self.epoch));
        w.u64(u64::from(self.epoch_seen));
        w.u64(self.sync_sequence);
        w.u64(self.counter);
        w.u64(self.spent_since_sync.0);
        w.u64(u64::from(self.payments_since_sync));
        w.u64(self.received_since_sync.0);
        piece(w, sink)
            && table(w, &self.keys, sink)
            && table(w, &self.tokens, sink)
            && if version < 6 {
                table(w, &self.records, sink)
            } else {
                // `[id, record]`: boot does not hash every record again.
                w.array(self.records.len());
                piece(w, sink)
                    && self.records.iter().all(|r| {
                        r.write_with_id(w);
                        piece(w, sink)
                    })
            }
            && table(w, &self.certs, sink)
            && table(w, &self.open_requests, sink)
            && table(w, &self.outgoing, sink)
            && table(w, &self.receipts, sink)
            && {
                w.u64(self.request_counter);
                piece(w, sink)
            }
            && if version < 7 {
                table(w, &self.imported, sink)
            } else {
                w.bytes_head(self.imported.len() * 36);
                piece(w, sink)
                    && self.imported.iter().all(|i| {
                        let mut e = [0u8; 36];
                        e[..32].copy_from_slice(&i.id.0);
                        e[32..].copy_from_slice(&i.expiry_epoch.to_be_bytes());
                        sink(&e)
                    })
            }
            && {
                write_opt(w, &self.pin);
                w.u64(self.spent_since_cvm.0);
                piece(w, sink)
            }
            && packed(w, version, &self.paid, sink)
            && table(w, &self.reports, sink)
            && table(w, &self.cancelled, sink)
            && packed(w, version, &self.acked, sink)
            && table(w, &self.streams_out, sink)
            && table(w, &self.streams_in, sink)
    }

    /// Gives back what the tables hold beyond their entries. A command
    /// that changes the state in place grows a table by doubling its
    /// buffer; without this the slack would stay in RAM for good (a state
    /// built beside the old one was a fresh, exact copy every time).
    pub fn fit(&mut self) {
        fn fit<T>(v: &mut Vec<T>) {
            if v.capacity() > v.len() {
                v.shrink_to_fit();
            }
        }
        // The tables that grow without a small bound (the small ones —
        // open requests, acknowledged ids, cancelled Issues, streams —
        // keep what they have: a few hundred bytes at most).
        fit(&mut self.keys);
        fit(&mut self.tokens);
        fit(&mut self.records);
        fit(&mut self.certs);
        fit(&mut self.outgoing);
        fit(&mut self.receipts);
        fit(&mut self.imported);
        fit(&mut self.paid);
        fit(&mut self.reports);
    }
}

// ---- deltas: one journal log record per operation ---------------------------
//
// A delta turns the state before an operation into the state after it. It
// is the body of a journal log record (sealed like the base state), so a
// commit writes what changed instead of the whole state:
//
//   delta   = [sequence, index, [change, ...]]
//   change  = [field, value]      field: the number of a `State` field in
//                                 its encoding order after the version
//                                 (0 personal … 26 streams_in; 27 is one stream tick, see [`STREAM_TICK_FIELD`];
//                                 28 is `records` with each entry `[id, record]`, see [`RECORDS_WITH_IDS_FIELD`])
//   value   = the field's new value, for a scalar or optional field
//           = [edit, ...]         for a table
//   edit    = [0, n]              keep the next n entries
//           | [1, n]              drop the next n entries
//           | [2, [entry, ...]]   insert these entries here
//
// Entries an edit list does not reach are kept. `sequence` and `index`
// are the journal's base sequence number and the record's place in the
// log: a record only applies where it was written (under sealing, the
// AEAD covers them, so records cannot be moved between logs or places).

/// What identifies an entry, for a delta. Objects fixed once made
/// (records, certificates, receipts, trust objects) are identified by what
/// names their content (an id, or a signature over it); the others by
/// every field the applet changes. Cheaper in time and, above all, in code
/// than a deep comparison (the Cortex-M4 payment firmware has no room for
/// the derived `PartialEq` of every type); debug builds check that every
/// delta rebuilds the next state exactly.
///
/// An identity is small and `Copy`: a [`Shape`] keeps the identities of a
/// state's entries, not the entries, so that a command can change the
/// state in place and still write the delta (decision 0024).
trait Ident {
    type Id: Copy + PartialEq;
    fn ident(&self) -> Self::Id;
}

impl Ident for OfflineKey {
    type Id = (PublicKey, bool, Option<Signature>);
    fn ident(&self) -> Self::Id {
        (
            self.public,
            self.used,
            self.cert.as_ref().map(|c| c.signature),
        )
    }
}
impl Ident for Token {
    // An outpoint names one output: its value, owner and ancestry.
    type Id = OutPoint;
    fn ident(&self) -> Self::Id {
        self.outpoint
    }
}
impl Ident for StoredRecord {
    type Id = Hash32;
    fn ident(&self) -> Self::Id {
        self.id
    }
}
impl Ident for PseudonymCertificate {
    type Id = (PublicKey, Signature);
    fn ident(&self) -> Self::Id {
        (self.key, self.signature)
    }
}
impl Ident for OpenRequest {
    type Id = ([u8; 16], Amount, PublicKey);
    fn ident(&self) -> Self::Id {
        (self.nonce, self.amount, self.key)
    }
}
impl Ident for Outgoing {
    // A transfer id names one package.
    type Id = (Hash32, bool);
    fn ident(&self) -> Self::Id {
        (self.transfer_id, self.acked)
    }
}
impl Ident for Receipt {
    type Id = (Hash32, Signature);
    fn ident(&self) -> Self::Id {
        (self.transfer_id, self.signature)
    }
}
impl Ident for Imported {
    type Id = (Hash32, Epoch);
    fn ident(&self) -> Self::Id {
        (self.id, self.expiry_epoch)
    }
}
impl Ident for Hash32 {
    type Id = Hash32;
    fn ident(&self) -> Self::Id {
        *self
    }
}
impl Ident for StreamOut {
    type Id = (Hash32, u32, bool);
    fn ident(&self) -> Self::Id {
        (self.id, self.released, self.closed)
    }
}
impl Ident for StreamIn {
    type Id = (Hash32, u32, bool);
    fn ident(&self) -> Self::Id {
        (self.id, self.ticks, self.closed)
    }
}
impl Ident for Report {
    type Id = ([u8; 16], Option<Hash32>, u64);
    fn ident(&self) -> Self::Id {
        (self.nonce, self.received, self.sent_in)
    }
}

fn idents<T: Ident>(table: &[T]) -> Vec<T::Id> {
    let mut out = Vec::with_capacity(table.len());
    for e in table {
        out.push(e.ident());
    }
    out
}

/// What a delta needs to know of the state before a command: every scalar
/// field (or what identifies it) and the identity of every table entry,
/// not the entries. A command takes the shape, changes the state in
/// place, and [`encode_delta_since`] writes what changed; the state is
/// never held twice (decision 0024).
///
/// The imported-Issue table, the largest that no payment command
/// changes, can be left out ([`Shape::of_payment`]): then only its length
/// is kept, and [`encode_delta_since`] asserts it did not change.
pub struct Shape {
    /// The imported table's length, when its entries are left out.
    imported_len: Option<usize>,
    personal: Option<PublicKey>,
    policy: Option<(u64, Signature)>,
    revocations: Option<(u64, Signature)>,
    epoch: Epoch,
    epoch_seen: Epoch,
    sync_sequence: u64,
    counter: u64,
    spent_since_sync: Amount,
    payments_since_sync: u32,
    received_since_sync: Amount,
    request_counter: u64,
    pin: Option<Pin>,
    spent_since_cvm: Amount,
    keys: Vec<<OfflineKey as Ident>::Id>,
    tokens: Vec<<Token as Ident>::Id>,
    records: Vec<<StoredRecord as Ident>::Id>,
    certs: Vec<<PseudonymCertificate as Ident>::Id>,
    open_requests: Vec<<OpenRequest as Ident>::Id>,
    outgoing: Vec<<Outgoing as Ident>::Id>,
    receipts: Vec<<Receipt as Ident>::Id>,
    imported: Vec<<Imported as Ident>::Id>,
    paid: Vec<Hash32>,
    reports: Vec<<Report as Ident>::Id>,
    cancelled: Vec<<Imported as Ident>::Id>,
    acked: Vec<Hash32>,
    streams_out: Vec<<StreamOut as Ident>::Id>,
    streams_in: Vec<<StreamIn as Ident>::Id>,
}

impl Shape {
    /// The shape of the whole state (any table may change).
    pub fn of(st: &State) -> Shape {
        Shape::of_with(st, true)
    }

    /// The shape for a command that does not change the imported-Issue
    /// table (PAY, RECEIVE, ACK, requests, streams).
    pub fn of_payment(st: &State) -> Shape {
        Shape::of_with(st, false)
    }

    fn of_with(st: &State, imported: bool) -> Shape {
        Shape {
            imported_len: (!imported).then_some(st.imported.len()),
            personal: st.personal.as_ref().map(|p| p.root),
            policy: st.policy.as_ref().map(|p| (p.serial, p.signature)),
            revocations: st.revocations.as_ref().map(|p| (p.serial, p.signature)),
            epoch: st.epoch,
            epoch_seen: st.epoch_seen,
            sync_sequence: st.sync_sequence,
            counter: st.counter,
            spent_since_sync: st.spent_since_sync,
            payments_since_sync: st.payments_since_sync,
            received_since_sync: st.received_since_sync,
            request_counter: st.request_counter,
            pin: st.pin.clone(),
            spent_since_cvm: st.spent_since_cvm,
            keys: idents(&st.keys),
            tokens: idents(&st.tokens),
            records: idents(&st.records),
            certs: idents(&st.certs),
            open_requests: idents(&st.open_requests),
            outgoing: idents(&st.outgoing),
            receipts: idents(&st.receipts),
            imported: if imported {
                idents(&st.imported)
            } else {
                Vec::new()
            },
            paid: idents(&st.paid),
            reports: idents(&st.reports),
            cancelled: idents(&st.cancelled),
            acked: idents(&st.acked),
            streams_out: idents(&st.streams_out),
            streams_in: idents(&st.streams_in),
        }
    }
}

/// One step of a table's edit list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Edit {
    Keep(usize),
    Drop(usize),
    /// Entries `range` of the new table.
    Insert(core::ops::Range<usize>),
}

/// An edit list that turns `old` into `new`: entries that stay are kept,
/// an entry of `old` that `new` no longer holds is dropped, anything else
/// is inserted (a changed entry is dropped and inserted). Linear for the
/// operations the applet makes (removals, appends, one entry changed).
fn edits<T: Ident>(old: &[T::Id], new: &[T]) -> Vec<Edit> {
    edits_by(old.len(), new.len(), &|i, j| old[i] == new[j].ident())
}

/// [`edits`] over indices: `same(i, j)` compares old entry `i` with new
/// entry `j` (one copy of the loop for every table).
#[inline(never)]
fn edits_by(old_len: usize, new_len: usize, same: &dyn Fn(usize, usize) -> bool) -> Vec<Edit> {
    fn push(out: &mut Vec<Edit>, e: Edit) {
        match (out.last_mut(), e) {
            (Some(Edit::Keep(n)), Edit::Keep(m)) => *n += m,
            (Some(Edit::Drop(n)), Edit::Drop(m)) => *n += m,
            (Some(Edit::Insert(r)), Edit::Insert(s)) if r.end == s.start => r.end = s.end,
            (_, e) => out.push(e),
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old_len && j < new_len {
        if same(i, j) {
            push(&mut out, Edit::Keep(1));
            i += 1;
            j += 1;
        } else if !(j..new_len).any(|k| same(i, k)) {
            push(&mut out, Edit::Drop(1));
            i += 1;
        } else {
            push(&mut out, Edit::Insert(j..j + 1));
            j += 1;
        }
    }
    if i < old_len {
        push(&mut out, Edit::Drop(old_len - i));
    }
    if j < new_len {
        push(&mut out, Edit::Insert(j..new_len));
    }
    if matches!(out.last(), Some(Edit::Keep(_))) {
        out.pop();
    }
    out
}

#[inline(never)]
fn write_edits<T: Cbor>(w: &mut Writer, edits: &[Edit], new: &[T]) {
    write_edits_with(w, edits, new, &|w, item| item.write(w));
}

/// [`write_edits`] with each inserted entry written by `entry`.
fn write_edits_with<T>(w: &mut Writer, edits: &[Edit], new: &[T], entry: &dyn Fn(&mut Writer, &T)) {
    w.array(edits.len());
    for e in edits {
        w.array(2);
        match e {
            Edit::Keep(n) => {
                w.u64(0);
                w.u64(*n as u64);
            }
            Edit::Drop(n) => {
                w.u64(1);
                w.u64(*n as u64);
            }
            Edit::Insert(r) => {
                w.u64(2);
                let items = new.get(r.clone()).unwrap_or(&[]);
                w.array(items.len());
                for item in items {
                    entry(w, item);
                }
            }
        }
    }
}

/// A table as the edit loop sees it: the loop is shared, only these few
/// operations exist once per entry type (the Cortex-M4 payment firmware's
/// flash is tight).
trait Table {
    fn entries(&self) -> usize;
    fn remove(&mut self, at: usize, n: usize);
    fn insert_read(&mut self, at: usize, r: &mut Reader<'_>) -> Result<(), CodecError>;
}

/// The records table as delta field [`RECORDS_WITH_IDS_FIELD`] carries
/// it: each inserted entry `[id, record]`, the id stored as in the base
/// state (version 6) instead of hashed again on every replay.
struct RecordsWithIds<'a>(&'a mut Vec<StoredRecord>);

impl Table for RecordsWithIds<'_> {
    fn entries(&self) -> usize {
        self.0.len()
    }
    fn remove(&mut self, at: usize, n: usize) {
        Table::remove(self.0, at, n)
    }
    fn insert_read(&mut self, at: usize, r: &mut Reader<'_>) -> Result<(), CodecError> {
        let entry = StoredRecord::read_with_id(r)?;
        self.0.insert(at.min(self.0.len()), entry);
        Ok(())
    }
}

impl<T: Cbor> Table for Vec<T> {
    fn entries(&self) -> usize {
        self.len()
    }
    fn remove(&mut self, at: usize, n: usize) {
        self.drain(at..at.saturating_add(n).min(self.len()));
    }
    fn insert_read(&mut self, at: usize, r: &mut Reader<'_>) -> Result<(), CodecError> {
        let entry = T::read(r)?;
        self.insert(at.min(self.len()), entry);
        Ok(())
    }
}

/// Applies one table's edit list (see the format above) in place.
#[inline(never)]
fn apply_edits(r: &mut Reader<'_>, table: &mut dyn Table, max: usize) -> Result<(), CodecError> {
    let mut at = 0usize;
    // Every edit but an insert consumes an old entry, and an insert is
    // never empty in a delta this code writes; bound the list by both.
    let n = r.array_max(max.saturating_mul(2).saturating_add(1))?;
    for _ in 0..n {
        r.array(2)?;
        match r.u8()? {
            0 => {
                let k = usize::try_from(r.u64()?).map_err(|_| CodecError::TooLong)?;
                at = at
                    .checked_add(k)
                    .filter(|end| *end <= table.entries())
                    .ok_or(CodecError::Malformed)?;
            }
            1 => {
                let k = usize::try_from(r.u64()?).map_err(|_| CodecError::TooLong)?;
                if at.checked_add(k).is_none_or(|end| end > table.entries()) {
                    return Err(CodecError::Malformed);
                }
                table.remove(at, k);
            }
            2 => {
                let k = r.array_max(max)?;
                for _ in 0..k {
                    if table.entries() >= max {
                        return Err(CodecError::TooLong);
                    }
                    table.insert_read(at, r)?;
                    at += 1;
                }
            }
            _ => return Err(CodecError::UnknownCode),
        }
    }
    Ok(())
}

/// The delta that turns `old` into `new`, as the body of log record
/// `index` on the journal base `sequence`; `None` when nothing changed.
pub fn encode_delta(old: &State, new: &State, sequence: u64, index: u32) -> Option<Vec<u8>> {
    encode_delta_since(&Shape::of(old), new, sequence, index)
}

/// The delta that turns a state of shape `old` into `new` (see
/// [`encode_delta`]).
#[inline(never)]
pub fn encode_delta_since(old: &Shape, new: &State, sequence: u64, index: u32) -> Option<Vec<u8>> {
    // Tables: their edit lists, computed once.
    let imported = match old.imported_len {
        None => edits(&old.imported, &new.imported),
        Some(len) => {
            assert!(
                len == new.imported.len(),
                "a payment command changed the imported table"
            );
            Vec::new()
        }
    };
    let tables = [
        edits(&old.keys, &new.keys),
        edits(&old.tokens, &new.tokens),
        edits(&old.certs, &new.certs),
        edits(&old.open_requests, &new.open_requests),
        edits(&old.outgoing, &new.outgoing),
        edits(&old.receipts, &new.receipts),
        imported,
        edits(&old.paid, &new.paid),
        edits(&old.reports, &new.reports),
        edits(&old.cancelled, &new.cancelled),
        edits(&old.acked, &new.acked),
        edits(&old.streams_out, &new.streams_out),
        edits(&old.streams_in, &new.streams_in),
        edits(&old.records, &new.records),
    ];
    // Field numbers of the tables, in the order above (the records with
    // their ids last, as field 28; field 12 is only read).
    const TABLE_FIELDS: [u64; 14] = [
        10,
        11,
        13,
        14,
        15,
        16,
        18,
        21,
        22,
        23,
        24,
        25,
        26,
        RECORDS_WITH_IDS_FIELD,
    ];
    // A policy or revocation list is replaced only by a newer serial, and
    // its signature covers it.
    let scalars: [bool; 13] = [
        old.personal != new.personal.as_ref().map(|p| p.root),
        old.policy != new.policy.as_ref().map(|p| (p.serial, p.signature)),
        old.revocations != new.revocations.as_ref().map(|p| (p.serial, p.signature)),
        old.epoch != new.epoch,
        old.epoch_seen != new.epoch_seen,
        old.sync_sequence != new.sync_sequence,
        old.counter != new.counter,
        old.spent_since_sync != new.spent_since_sync,
        old.payments_since_sync != new.payments_since_sync,
        old.received_since_sync != new.received_since_sync,
        old.request_counter != new.request_counter,
        old.pin != new.pin,
        old.spent_since_cvm != new.spent_since_cvm,
    ];
    const SCALAR_FIELDS: [u64; 13] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 19, 20];
    let changes =
        scalars.iter().filter(|c| **c).count() + tables.iter().filter(|t| !t.is_empty()).count();
    if changes == 0 {
        return None;
    }
    let mut w = Writer::new();
    w.array(3);
    w.u64(sequence);
    w.u64(u64::from(index));
    w.array(changes);
    // Fields in ascending order, scalars and tables merged.
    let (mut si, mut ti) = (0, 0);
    while si < SCALAR_FIELDS.len() || ti < TABLE_FIELDS.len() {
        let take_scalar = match (SCALAR_FIELDS.get(si), TABLE_FIELDS.get(ti)) {
            (Some(s), Some(t)) => s < t,
            (Some(_), None) => true,
            _ => false,
        };
        if take_scalar {
            let field = SCALAR_FIELDS[si];
            if scalars[si] {
                w.array(2);
                w.u64(field);
                write_scalar(&mut w, new, field);
            }
            si += 1;
        } else {
            let field = TABLE_FIELDS[ti];
            let e = &tables[ti];
            if !e.is_empty() {
                w.array(2);
                w.u64(field);
                match field {
                    10 => write_edits(&mut w, e, &new.keys),
                    11 => write_edits(&mut w, e, &new.tokens),
                    13 => write_edits(&mut w, e, &new.certs),
                    14 => write_edits(&mut w, e, &new.open_requests),
                    15 => write_edits(&mut w, e, &new.outgoing),
                    16 => write_edits(&mut w, e, &new.receipts),
                    18 => write_edits(&mut w, e, &new.imported),
                    21 => write_edits(&mut w, e, &new.paid),
                    22 => write_edits(&mut w, e, &new.reports),
                    23 => write_edits(&mut w, e, &new.cancelled),
                    24 => write_edits(&mut w, e, &new.acked),
                    25 => write_edits(&mut w, e, &new.streams_out),
                    26 => write_edits(&mut w, e, &new.streams_in),
                    _ => write_edits_with(&mut w, e, &new.records, &|w, r| r.write_with_id(w)),
                }
            }
            ti += 1;
        }
    }
    Some(w.into_bytes())
}

fn write_scalar(w: &mut Writer, st: &State, field: u64) {
    match field {
        0 => write_opt(w, &st.personal),
        1 => write_opt(w, &st.policy),
        2 => write_opt(w, &st.revocations),
        3 => w.u64(u64::from(st.epoch)),
        4 => w.u64(u64::from(st.epoch_seen)),
        5 => w.u64(st.sync_sequence),
        6 => w.u64(st.counter),
        7 => w.u64(st.spent_since_sync.0),
        8 => w.u64(u64::from(st.payments_since_sync)),
        9 => w.u64(st.received_since_sync.0),
        17 => w.u64(st.request_counter),
        19 => write_opt(w, &st.pin),
        _ => w.u64(st.spent_since_cvm.0),
    }
}

/// The delta field of one stream tick (decision 0020): not a `State`
/// field but a change to one entry of a stream table, small enough that a
/// tick writes tens of bytes, not the entry again. Value: `[0, slot, k]`
/// (this SE released tick `k` of `streams_out[slot]`) or
/// `[1, slot, k, element]` (it took tick `k` of `streams_in[slot]`).
pub const STREAM_TICK_FIELD: u64 = 27;

/// The delta field of the records table with each inserted entry `[id,
/// record]` (session 11): boot replays a log without hashing the records
/// its deltas insert (a payee's RECEIVE inserts the package's records;
/// a full log of them was most of a payee's boot). Field 12, the same
/// table with bare records (their ids recomputed), is still read: logs
/// written before.
pub const RECORDS_WITH_IDS_FIELD: u64 = 28;

/// One stream tick as a whole delta (the only change of its log record):
/// the form written before session 10, still read at boot; the SE now
/// writes [`encode_tick_record`].
pub fn encode_tick_delta(
    sequence: u64,
    index: u32,
    slot: usize,
    k: u32,
    element: Option<&Hash32>,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.array(3);
    w.u64(sequence);
    w.u64(u64::from(index));
    w.array(1);
    w.array(2);
    w.u64(STREAM_TICK_FIELD);
    match element {
        None => {
            w.array(3);
            w.u64(0);
            w.u64(slot as u64);
            w.u64(u64::from(k));
        }
        Some(e) => {
            w.array(4);
            w.u64(1);
            w.u64(slot as u64);
            w.u64(u64::from(k));
            e.write(&mut w);
        }
    }
    w.into_bytes()
}

/// Applies one tick: only the next tick of an open stream applies (a
/// record that would skip, repeat or follow a close was not written by
/// this code). The payee's element is not re-hashed here: it was checked
/// before the record was written, and the journal's checks (and seal)
/// cover it since.
fn apply_tick(r: &mut Reader<'_>, state: &mut State) -> Result<(), CodecError> {
    let n = r.array_max(4)?;
    let side = r.u8()?;
    let slot = usize::try_from(r.u64()?).map_err(|_| CodecError::TooLong)?;
    let k = r.u32()?;
    match (side, n) {
        (0, 3) => {
            let s = state
                .streams_out
                .get_mut(slot)
                .ok_or(CodecError::Malformed)?;
            if s.closed || s.released.checked_add(1) != Some(k) || k > s.ticks_max {
                return Err(CodecError::Malformed);
            }
            s.released = k;
        }
        (1, 4) => {
            let element = Hash32::read(r)?;
            let s = state
                .streams_in
                .get_mut(slot)
                .ok_or(CodecError::Malformed)?;
            if s.closed || s.ticks.checked_add(1) != Some(k) || k > s.ticks_max {
                return Err(CodecError::Malformed);
            }
            s.ticks = k;
            s.latest = element;
        }
        _ => return Err(CodecError::Malformed),
    }
    Ok(())
}

/// First byte of a payer's compact tick record (SPEC §4.10.3, decision
/// 0020 addendum session 10). A tick record is a log record body that is
/// not a delta (a delta is a CBOR array of 3, first byte `0x83`):
/// `00 ‖ slot ‖ k mod 256` for the payer, `01 ‖ slot ‖ k mod 256 ‖
/// element (32)` for the payee. `k` itself is the stream's next tick
/// (recomputed; its low byte checks it); the record's place is bound by
/// the journal's chained check (base and record index), as a delta's
/// `sequence, index` are. Written since session 10; the delta form of a
/// tick (field 27) is still read.
pub const TICK_RECORD_PAYER: u8 = 0x00;
/// First byte of a payee's compact tick record.
pub const TICK_RECORD_PAYEE: u8 = 0x01;
/// The longest tick record (the payee's).
pub const TICK_RECORD_MAX: usize = 35;

/// One stream tick as a compact record: the bytes and their length.
pub fn encode_tick_record(
    slot: usize,
    k: u32,
    element: Option<&Hash32>,
) -> ([u8; TICK_RECORD_MAX], usize) {
    assert!(slot < STREAMS_MAX, "a stream slot");
    let mut b = [0u8; TICK_RECORD_MAX];
    b[1] = slot as u8;
    b[2] = k as u8;
    match element {
        None => {
            b[0] = TICK_RECORD_PAYER;
            (b, 3)
        }
        Some(e) => {
            b[0] = TICK_RECORD_PAYEE;
            b[3..].copy_from_slice(&e.0);
            (b, TICK_RECORD_MAX)
        }
    }
}

/// Applies a compact tick record: only the next tick of an open stream
/// (its low byte must match), as [`apply_tick`].
pub fn apply_tick_record(state: &mut State, body: &[u8]) -> Result<(), CodecError> {
    match body {
        [TICK_RECORD_PAYER, slot, k_lo] => {
            let s = state
                .streams_out
                .get_mut(usize::from(*slot))
                .ok_or(CodecError::Malformed)?;
            let k = s.released.checked_add(1).ok_or(CodecError::Malformed)?;
            if s.closed || k > s.ticks_max || k as u8 != *k_lo {
                return Err(CodecError::Malformed);
            }
            s.released = k;
        }
        [TICK_RECORD_PAYEE, slot, k_lo, element @ ..] if element.len() == 32 => {
            let s = state
                .streams_in
                .get_mut(usize::from(*slot))
                .ok_or(CodecError::Malformed)?;
            let k = s.ticks.checked_add(1).ok_or(CodecError::Malformed)?;
            if s.closed || k > s.ticks_max || k as u8 != *k_lo {
                return Err(CodecError::Malformed);
            }
            s.ticks = k;
            s.latest.0.copy_from_slice(element);
        }
        _ => return Err(CodecError::Malformed),
    }
    Ok(())
}

/// Applies one log record body for record `index` on base `sequence`: a
/// compact tick record ([`apply_tick_record`]) or a delta
/// ([`apply_delta`]). Same contract as [`apply_delta`].
pub fn apply_record(
    state: &mut State,
    bytes: &[u8],
    sequence: u64,
    index: u32,
) -> Result<(), CodecError> {
    match bytes.first() {
        Some(&(TICK_RECORD_PAYER | TICK_RECORD_PAYEE)) => apply_tick_record(state, bytes),
        _ => apply_delta(state, bytes, sequence, index),
    }
}

/// Applies a delta written by [`encode_delta`] for log record `index` on
/// base `sequence`. A delta for another place, an unknown field, a field
/// twice or out of order, an edit past the table's end or over its bound,
/// or trailing bytes: an error, and `state` must then be discarded (it
/// may be half-changed).
#[inline(never)]
pub fn apply_delta(
    state: &mut State,
    bytes: &[u8],
    sequence: u64,
    index: u32,
) -> Result<(), CodecError> {
    let mut r = Reader::new(bytes);
    r.array(3)?;
    if r.u64()? != sequence || r.u64()? != u64::from(index) {
        return Err(CodecError::Malformed);
    }
    let n = r.array_max(28)?;
    let mut last: Option<u64> = None;
    for _ in 0..n {
        r.array(2)?;
        let field = r.u64()?;
        if last.is_some_and(|l| l >= field) {
            return Err(CodecError::NonCanonical);
        }
        last = Some(field);
        match field {
            0 => state.personal = read_opt(&mut r)?,
            1 => state.policy = read_opt(&mut r)?,
            2 => state.revocations = read_opt(&mut r)?,
            3 => state.epoch = r.u32()?,
            4 => state.epoch_seen = r.u32()?,
            5 => state.sync_sequence = r.u64()?,
            6 => state.counter = r.u64()?,
            7 => state.spent_since_sync = Amount(r.u64()?),
            8 => state.payments_since_sync = r.u32()?,
            9 => state.received_since_sync = Amount(r.u64()?),
            10 => apply_edits(&mut r, &mut state.keys, KEYS_MAX)?,
            11 => apply_edits(&mut r, &mut state.tokens, TOKENS_MAX)?,
            12 => apply_edits(&mut r, &mut state.records, RECORDS_MAX)?,
            13 => apply_edits(&mut r, &mut state.certs, CERTS_MAX)?,
            14 => apply_edits(&mut r, &mut state.open_requests, OPEN_REQUESTS_MAX)?,
            15 => apply_edits(&mut r, &mut state.outgoing, OUTGOING_MAX)?,
            16 => apply_edits(&mut r, &mut state.receipts, RECEIPTS_KEPT_MAX)?,
            17 => state.request_counter = r.u64()?,
            18 => apply_edits(&mut r, &mut state.imported, IMPORTED_MAX)?,
            19 => state.pin = read_opt(&mut r)?,
            20 => state.spent_since_cvm = Amount(r.u64()?),
            21 => apply_edits(&mut r, &mut state.paid, PAID_KEPT_MAX)?,
            22 => apply_edits(&mut r, &mut state.reports, REPORTS_MAX)?,
            23 => apply_edits(&mut r, &mut state.cancelled, CANCELLED_MAX)?,
            24 => apply_edits(&mut r, &mut state.acked, ACKED_KEPT_MAX)?,
            25 => apply_edits(&mut r, &mut state.streams_out, STREAMS_MAX)?,
            26 => apply_edits(&mut r, &mut state.streams_in, STREAMS_MAX)?,
            STREAM_TICK_FIELD => apply_tick(&mut r, state)?,
            RECORDS_WITH_IDS_FIELD => {
                apply_edits(&mut r, &mut RecordsWithIds(&mut state.records), RECORDS_MAX)?
            }
            _ => return Err(CodecError::UnknownCode),
        }
    }
    if r.position() != bytes.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applet::Applet;
    use crate::seal::Sealing;
    use crate::storage::{HEADER_LEN, Journal, MemStorage};
    use tally_core::crypto::SecretKey;
    use tally_core::testkit::TestEntropy;

    fn key(i: u8) -> PublicKey {
        SecretKey::from_seed(Suite::Ed25519, &[i; 32])
            .expect("key")
            .public()
    }

    fn token(i: u8, value: u64) -> Token {
        Token {
            outpoint: OutPoint {
                record: Hash32([i; 32]),
                index: 0,
            },
            value: Amount(value),
            owner: key(1),
            lineage: alloc::vec![Hash32([i; 32])],
            blinding: None,
        }
    }

    /// A state with value in it, not personalised (so that `personalize`
    /// is a command that commits).
    fn holding() -> State {
        State {
            counter: 7,
            spent_since_sync: Amount(5),
            tokens: alloc::vec![token(1, 100), token(2, 250)],
            paid: alloc::vec![Hash32([9; 32])],
            ..State::default()
        }
    }

    #[test]
    fn deltas_rebuild_the_next_state() {
        let old = holding();
        assert_eq!(encode_delta(&old, &old, 1, 0), None);
        let mut cases = Vec::new();
        let mut next = old.clone();
        next.tokens.remove(0);
        next.tokens.push(token(3, 40));
        next.counter += 1;
        cases.push(next);
        let mut next = old.clone();
        next.tokens.insert(1, token(4, 1));
        next.paid.clear();
        next.acked.push(Hash32([5; 32]));
        cases.push(next);
        let mut next = old.clone();
        next.tokens.reverse();
        next.pin = Some(Pin {
            salt: [1; 16],
            digest: [2; 32],
            tries_left: 3,
        });
        cases.push(next);
        cases.push(State {
            epoch: 3,
            ..State::default()
        });
        for (i, next) in cases.iter().enumerate() {
            let delta = encode_delta(&old, next, 4, i as u32).expect("a change");
            let mut got = old.clone();
            apply_delta(&mut got, &delta, 4, i as u32).expect("applies");
            assert_eq!(&got, next, "case {i}");
            // Only at its own place.
            for (seq, index) in [(5, i as u32), (4, i as u32 + 1)] {
                let mut other = old.clone();
                assert_eq!(
                    apply_delta(&mut other, &delta, seq, index),
                    Err(CodecError::Malformed)
                );
            }
        }
    }

    #[test]
    fn malformed_deltas_are_refused() {
        let old = holding();
        let enc = |f: &dyn Fn(&mut Writer)| {
            let mut w = Writer::new();
            w.array(3);
            w.u64(1);
            w.u64(0);
            f(&mut w);
            w.into_bytes()
        };
        let edit = |w: &mut Writer, kind: u64, n: u64| {
            w.array(2);
            w.u64(kind);
            w.u64(n);
        };
        let cases: [(Vec<u8>, CodecError); 5] = [
            // Keep or drop past the table's end.
            (
                enc(&|w| {
                    w.array(1);
                    w.array(2);
                    w.u64(11);
                    w.array(1);
                    edit(w, 0, 3);
                }),
                CodecError::Malformed,
            ),
            (
                enc(&|w| {
                    w.array(1);
                    w.array(2);
                    w.u64(11);
                    w.array(1);
                    edit(w, 1, 3);
                }),
                CodecError::Malformed,
            ),
            // An unknown edit, an unknown field, fields out of order.
            (
                enc(&|w| {
                    w.array(1);
                    w.array(2);
                    w.u64(11);
                    w.array(1);
                    edit(w, 7, 0);
                }),
                CodecError::UnknownCode,
            ),
            (
                enc(&|w| {
                    w.array(1);
                    w.array(2);
                    w.u64(29);
                    w.u64(0);
                }),
                CodecError::UnknownCode,
            ),
            (
                enc(&|w| {
                    w.array(2);
                    w.array(2);
                    w.u64(6);
                    w.u64(1);
                    w.array(2);
                    w.u64(3);
                    w.u64(1);
                }),
                CodecError::NonCanonical,
            ),
        ];
        for (i, (bytes, err)) in cases.iter().enumerate() {
            let mut st = old.clone();
            assert_eq!(apply_delta(&mut st, bytes, 1, 0), Err(*err), "case {i}");
        }
        // Past a table's bound.
        let mut full = State {
            acked: (0..ACKED_KEPT_MAX as u8).map(|i| Hash32([i; 32])).collect(),
            ..State::default()
        };
        let bytes = enc(&|w| {
            w.array(1);
            w.array(2);
            w.u64(24);
            w.array(1);
            w.array(2);
            w.u64(2);
            w.array(1);
            Hash32([0xEE; 32]).write(w);
        });
        assert_eq!(
            apply_delta(&mut full, &bytes, 1, 0),
            Err(CodecError::TooLong)
        );
        // Trailing bytes.
        let mut bytes = encode_delta(&State::default(), &old, 1, 0).unwrap();
        bytes.push(0);
        let mut st = State::default();
        assert_eq!(
            apply_delta(&mut st, &bytes, 1, 0),
            Err(CodecError::TrailingBytes)
        );
    }

    /// The encoding of `st` as state version 3 (before `acked` and the
    /// streams).
    fn as_version_3(st: &State) -> Vec<u8> {
        assert!(st.acked.is_empty() && st.streams_out.is_empty() && st.streams_in.is_empty());
        let mut bytes = as_version_5(st);
        // array(28) → array(25), version 5 → 3, the empty `acked`,
        // `streams_out` and `streams_in` dropped.
        assert_eq!(&bytes[..3], &[0x98, 28, 5]);
        bytes[1] = 25;
        bytes[2] = 3;
        for _ in 0..3 {
            assert_eq!(bytes.pop(), Some(0x80));
        }
        bytes
    }

    /// The encoding of `st` as state version 5 (records without their ids).
    fn as_version_5(st: &State) -> Vec<u8> {
        let mut bytes = Vec::new();
        st.encode_as(5, &mut |piece| {
            bytes.extend_from_slice(piece);
            true
        });
        bytes
    }

    /// A signed Issue of 100 to `key(1)`, as a stored record would hold it.
    fn issue_record(serial: u64) -> Record {
        Record::Issue(tally_core::Issue {
            issuer: Hash32([1; 32]),
            serial,
            expiry_epoch: 9,
            outputs: alloc::vec![tally_core::record::Output {
                value: Amount(100),
                owner: key(1),
            }],
            signature: SecretKey::from_seed(Suite::Ed25519, &[3; 32])
                .expect("key")
                .sign(b"issue"),
            confidential: None,
        })
    }

    /// A delta inserts records as `[id, record]` (field 28): replay does not
    /// hash them. A log written before (field 12, bare records) still
    /// replays, the ids recomputed; in debug builds a wrong id is refused.
    #[test]
    fn deltas_carry_record_ids_and_older_deltas_still_apply() {
        let old = holding();
        let mut new = old.clone();
        let record = issue_record(2);
        let id = record.id();
        new.records.push(StoredRecord {
            id,
            record: record.clone(),
        });
        let bytes = encode_delta(&old, &new, 1, 0).expect("a change");
        // [1, 0, [[28, [[0, k], [2, [[id, record]]]]]]]: the id is in it.
        assert!(bytes.windows(32).any(|w| w == id.0), "the id is carried");
        let mut st = old.clone();
        apply_delta(&mut st, &bytes, 1, 0).expect("applies");
        assert_eq!(st, new);

        // The same change as a delta written before: field 12, bare records.
        let mut w = Writer::new();
        w.array(3);
        w.u64(1);
        w.u64(0);
        w.array(1);
        w.array(2);
        w.u64(12);
        write_edits(
            &mut w,
            &edits(&Shape::of(&old).records, &new.records),
            &new.records,
        );
        let mut st = old.clone();
        apply_delta(&mut st, &w.into_bytes(), 1, 0).expect("an older delta applies");
        assert_eq!(st, new, "its id recomputed");

        // A wrong id under field 28 (debug builds check it).
        if cfg!(debug_assertions) {
            let mut wrong = bytes.clone();
            let at = wrong.windows(32).position(|w| w == id.0).expect("id");
            wrong[at] ^= 1;
            let mut st = old.clone();
            assert_eq!(
                apply_delta(&mut st, &wrong, 1, 0),
                Err(CodecError::Malformed)
            );
        }
    }

    #[test]
    fn a_version_5_state_is_read_with_its_record_ids_recomputed() {
        let mut st = holding();
        let record = issue_record(1);
        st.records.push(StoredRecord {
            id: record.id(),
            record,
        });
        let v7 = st.to_cbor();
        assert_eq!(&v7[..3], &[0x98, 28, 7]);
        assert_eq!(State::from_cbor(&v7).as_ref(), Ok(&st));
        // A wrong id is refused where it is checked (debug builds).
        if cfg!(debug_assertions) {
            let mut wrong = st.clone();
            wrong.records[0].id = Hash32([7; 32]);
            assert_eq!(
                State::from_stored(&wrong.to_cbor()),
                Err(CodecError::Malformed)
            );
        }
        let v5 = as_version_5(&st);
        assert_eq!(&v5[..3], &[0x98, 28, 5]);
        assert_ne!(v5, st.to_cbor(), "version 6 and later store the ids");
        assert_eq!(State::from_stored(&v5).unwrap(), st);
        assert!(State::from_cbor(&v5).is_err(), "not the current version");
    }

    /// The encoding of `st` as state version 6 (digest tables as arrays).
    fn as_version_6(st: &State) -> Vec<u8> {
        let mut bytes = Vec::new();
        st.encode_as(6, &mut |piece| {
            bytes.extend_from_slice(piece);
            true
        });
        bytes
    }

    fn with_digest_tables() -> State {
        let mut st = holding();
        for i in 0..40u8 {
            st.imported.push(Imported {
                id: Hash32([i; 32]),
                expiry_epoch: 0x0102_0300 + u32::from(i),
            });
            st.paid.push(Hash32([i ^ 0x55; 32]));
        }
        for i in 0..3u8 {
            st.acked.push(Hash32([i ^ 0xAA; 32]));
        }
        st
    }

    /// Version 7 packs the imported Issues, the paid requests and the
    /// acknowledged transfers into one byte string each; version 6 (an SE
    /// installed by the previous release) is read with its arrays, and the
    /// next compaction writes version 7.
    #[test]
    fn a_version_6_state_is_read_and_version_7_packs_the_digest_tables() {
        let st = with_digest_tables();
        let v7 = st.to_cbor();
        assert_eq!(&v7[..3], &[0x98, 28, 7]);
        assert_eq!(State::from_cbor(&v7).as_ref(), Ok(&st));
        let v6 = as_version_6(&st);
        assert_eq!(&v6[..3], &[0x98, 28, 6]);
        assert_eq!(State::from_stored(&v6).as_ref(), Ok(&st));
        assert!(State::from_cbor(&v6).is_err(), "not the current version");
        // 83 entries, each an array or byte string head fewer.
        assert!(v7.len() + 83 <= v6.len(), "{} vs {}", v7.len(), v6.len());
        // The packed imported table: 40 entries of 36 bytes, the epoch
        // big-endian after the id.
        let mut entry = [0u8; 36];
        entry[..32].copy_from_slice(&[39; 32]);
        entry[32..].copy_from_slice(&0x0102_0327u32.to_be_bytes());
        let head = [0x59, 0x05, 0xA0]; // bstr(1440)
        let at = v7
            .windows(3)
            .position(|w| w == head)
            .expect("the imported table's head");
        assert_eq!(&v7[at + 3 + 39 * 36..at + 3 + 40 * 36], &entry);
    }

    /// A packed table whose length is not a whole number of entries, or
    /// over its bound, is refused.
    #[test]
    fn a_packed_table_of_the_wrong_length_is_refused() {
        let bstr = |b: &[u8]| {
            let mut w = Writer::new();
            w.bytes(b);
            w.into_bytes()
        };
        let digests = |b: &[u8], max| read_packed_digests(&mut Reader::new(&bstr(b)), max);
        assert_eq!(
            digests(&[0u8; 33], PAID_KEPT_MAX),
            Err(CodecError::Malformed)
        );
        assert_eq!(
            read_packed_imported(&mut Reader::new(&bstr(&[0u8; 35]))),
            Err(CodecError::Malformed)
        );
        assert_eq!(
            digests(&alloc::vec![0u8; (ACKED_KEPT_MAX + 1) * 32], ACKED_KEPT_MAX),
            Err(CodecError::TooLong)
        );
        assert_eq!(
            digests(&[7u8; 64], PAID_KEPT_MAX),
            Ok(alloc::vec![Hash32([7; 32]), Hash32([7; 32])])
        );
    }

    /// The encoding of `st` as state version 4 (before the streams).
    fn as_version_4(st: &State) -> Vec<u8> {
        assert!(st.streams_out.is_empty() && st.streams_in.is_empty());
        let mut bytes = as_version_5(st);
        assert_eq!(&bytes[..3], &[0x98, 28, 5]);
        bytes[1] = 26;
        bytes[2] = 4;
        for _ in 0..2 {
            assert_eq!(bytes.pop(), Some(0x80));
        }
        bytes
    }

    #[test]
    fn a_version_4_state_is_read_with_no_streams() {
        let st = holding();
        let v4 = as_version_4(&st);
        assert_eq!(State::from_stored(&v4).unwrap(), st);
        assert!(State::from_cbor(&v4).is_err(), "not the current version");
    }

    #[test]
    fn an_installed_se_of_the_previous_formats_keeps_its_value_and_migrates() {
        // State version 3 in a journal of format 2, as the previous release
        // wrote it.
        let st = holding();
        let mut mem = MemStorage::new(2 * (HEADER_LEN + 8192));
        {
            let (mut j, _) = Journal::open(&mut mem).unwrap();
            j.commit(&as_version_3(&st)).unwrap();
        }
        let header = &mut mem.as_bytes_mut()[..HEADER_LEN];
        header[4] = 2;
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&header[..56]).into();
        header[56..].copy_from_slice(&hash);

        let mut se = Applet::boot(mem, Sealing::None, TestEntropy::new(b"old")).unwrap();
        assert_eq!(se.state(), &st);
        assert_eq!(se.state().balance(), Amount(350));
        // The first command cannot append to a format-2 slot: it writes the
        // whole state, as format 3 and state version 4.
        se.personalize(0, 0, Suite::Ed25519, key(9)).unwrap();
        let mem = se.into_storage();
        let slot_1 = HEADER_LEN + 8192;
        let version = &mem.as_bytes()[slot_1 + 4..slot_1 + 6];
        assert_eq!(version, &3u16.to_le_bytes());
        let mut se = Applet::boot(mem, Sealing::None, TestEntropy::new(b"new")).unwrap();
        assert_eq!(se.state().balance(), Amount(350));
        assert_eq!(se.state().counter, 7);
        assert!(se.state().personal.is_some());
        // And the next one appends.
        let before = se.journal_log_bytes();
        se.change_pin(None, b"1234").unwrap();
        assert!(se.journal_log_bytes() > before);
        let st = se.state().clone();
        let mem = se.into_storage();
        let again = Applet::boot(mem, Sealing::None, TestEntropy::new(b"again")).unwrap();
        assert_eq!(again.state(), &st);
    }

    /// Compaction writes the pieces straight to flash and boot checks
    /// the stored bytes against them: they must be the encoding, byte for
    /// byte, or the next boot refuses (or reads another) state.
    #[test]
    fn pieces_are_the_encoding() {
        let mut streams = State::default();
        streams.streams_out.push(StreamOut {
            id: Hash32([1; 32]),
            price: Amount(2),
            ticks_max: 3,
            released: 1,
            closed: false,
            open: Hash32([5; 32]),
            counter: 7,
            refund_key: tally_core::testkit::key(Suite::Ed25519, b"refund").public(),
            lineage: alloc::vec![Hash32([6; 32]), Hash32([5; 32])],
        });
        streams.streams_in.push(StreamIn {
            id: Hash32([2; 32]),
            price: Amount(2),
            ticks_max: 3,
            ticks: 0,
            latest: Hash32([9; 32]),
            closed: true,
            open: Hash32([8; 32]),
            owner: tally_core::testkit::key(Suite::Ed25519, b"owner").public(),
            lineage: alloc::vec![Hash32([8; 32])],
        });
        let mut full = holding();
        full.streams_out = streams.streams_out.clone();
        full.streams_in = streams.streams_in.clone();
        full.imported.push(Imported {
            id: Hash32([3; 32]),
            expiry_epoch: 9,
        });
        full.acked.push(Hash32([4; 32]));
        full.request_counter = 300;
        full.spent_since_cvm = Amount(70_000);
        full.pin = Some(Pin {
            salt: [1; 16],
            digest: [2; 32],
            tries_left: 3,
        });
        for st in [State::default(), holding(), streams, full] {
            let mut bytes = Vec::new();
            let mut pieces = 0;
            assert!(st.encode_in_pieces(&mut |p| {
                bytes.extend_from_slice(p);
                pieces += 1;
                true
            }));
            assert_eq!(bytes, st.to_cbor());
            assert!(pieces > 14, "one piece per entry and table head");
            assert_eq!(State::from_stored(&bytes).as_ref(), Ok(&st));
            // A sink that says stop is obeyed at once.
            let mut calls = 0;
            assert!(!st.encode_in_pieces(&mut |_| {
                calls += 1;
                false
            }));
            assert_eq!(calls, 1);
        }
    }

    /// A stored state is read strictly (trailing bytes, a wrong type
    /// refused) but not re-encoded: a longer encoding of the same integer
    /// reads as that integer, and the next compaction writes the state
    /// canonically again.
    #[test]
    fn a_stored_state_is_read_strictly_but_not_re_encoded() {
        let st = holding();
        let bytes = st.to_cbor();
        // [28 fields: version 7, three empty options, epoch, epoch seen,
        // sync sequence, counter 7, ...]
        assert_eq!(&bytes[2..10], &[7, 0x80, 0x80, 0x80, 0, 0, 0, 7]);
        let mut long = bytes[..9].to_vec();
        long.extend_from_slice(&[0x18, 7]);
        long.extend_from_slice(&bytes[10..]);
        assert_eq!(State::from_stored(&long).as_ref(), Ok(&st));
        assert_eq!(State::from_cbor(&long), Err(CodecError::NonCanonical));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            State::from_stored(&trailing),
            Err(CodecError::TrailingBytes)
        );
        let mut wrong_type = bytes.clone();
        wrong_type[9] = 0x40; // an empty byte string for the counter
        assert!(State::from_stored(&wrong_type).is_err());
        assert_eq!(State::from_stored(&bytes), Ok(st));
    }
}

#[cfg(test)]
mod stream_tick_records {
    use super::*;

    fn hex(b: &[u8]) -> alloc::string::String {
        use core::fmt::Write;
        let mut s = alloc::string::String::new();
        for x in b {
            let _ = write!(s, "{x:02x}");
        }
        s
    }

    /// SPEC §4.10.4 `stream-tick-payer` and `stream-tick-payee` (the
    /// compact records), then the delta form still read (the vectors
    /// before session 10).
    #[test]
    fn tick_records_are_the_spec_vectors() {
        let h1 = Hash32([
            0x8e, 0xb7, 0x5e, 0x0d, 0xbd, 0x8b, 0xc4, 0x23, 0x69, 0xf7, 0x8f, 0x76, 0x10, 0x60,
            0x1b, 0x67, 0x26, 0x48, 0x66, 0x9d, 0xd5, 0xed, 0xce, 0xcb, 0x00, 0x60, 0x8a, 0xed,
            0xc8, 0x76, 0x2f, 0xa2,
        ]);
        let (r, n) = encode_tick_record(0, 1, None);
        assert_eq!(hex(&r[..n]), "000001");
        let (r, n) = encode_tick_record(0, 1, Some(&h1));
        assert_eq!(
            hex(&r[..n]),
            "0100018eb75e0dbd8bc42369f78f7610601b672648669dd5edcecb00608aedc8\
             762fa2"
        );
        assert_eq!(
            hex(&encode_tick_delta(1, 0, 0, 1, None)),
            "8301008182181b83000001"
        );
        let h1 = Hash32([
            0x8e, 0xb7, 0x5e, 0x0d, 0xbd, 0x8b, 0xc4, 0x23, 0x69, 0xf7, 0x8f, 0x76, 0x10, 0x60,
            0x1b, 0x67, 0x26, 0x48, 0x66, 0x9d, 0xd5, 0xed, 0xce, 0xcb, 0x00, 0x60, 0x8a, 0xed,
            0xc8, 0x76, 0x2f, 0xa2,
        ]);
        assert_eq!(
            hex(&encode_tick_delta(1, 0, 0, 1, Some(&h1))),
            "8301008182181b8401000158208eb75e0dbd8bc42369f78f7610601b67264866\
             9dd5edcecb00608aedc8762fa2"
        );
    }

    fn with_streams() -> State {
        let mut st = State::default();
        st.streams_out.push(StreamOut {
            id: Hash32([1; 32]),
            price: Amount(2),
            ticks_max: 3,
            released: 0,
            closed: false,
            open: Hash32([5; 32]),
            counter: 7,
            refund_key: tally_core::testkit::key(Suite::Ed25519, b"refund").public(),
            lineage: alloc::vec![Hash32([6; 32]), Hash32([5; 32])],
        });
        st.streams_in.push(StreamIn {
            id: Hash32([2; 32]),
            price: Amount(2),
            ticks_max: 3,
            ticks: 0,
            latest: Hash32([9; 32]),
            closed: false,
            open: Hash32([8; 32]),
            owner: tally_core::testkit::key(Suite::Ed25519, b"owner").public(),
            lineage: alloc::vec![Hash32([8; 32])],
        });
        st
    }

    #[test]
    fn only_the_next_tick_of_an_open_stream_applies() {
        let mut st = with_streams();
        apply_delta(&mut st, &encode_tick_delta(5, 0, 0, 1, None), 5, 0).unwrap();
        assert_eq!(st.streams_out[0].released, 1);
        let e = Hash32([4; 32]);
        apply_delta(&mut st, &encode_tick_delta(5, 1, 0, 1, Some(&e)), 5, 1).unwrap();
        assert_eq!((st.streams_in[0].ticks, st.streams_in[0].latest), (1, e));
        for (k, slot, el) in [
            (1, 0, None),
            (3, 0, None),
            (1, 0, Some(&e)),
            (2, 1, Some(&e)),
        ] {
            let mut t = st.clone();
            assert!(apply_delta(&mut t, &encode_tick_delta(5, 2, slot, k, el), 5, 2).is_err());
        }
        let mut closed = st.clone();
        closed.streams_out[0].closed = true;
        assert!(apply_delta(&mut closed, &encode_tick_delta(5, 2, 0, 2, None), 5, 2).is_err());
        // Past the end.
        st.streams_out[0].released = 3;
        assert!(apply_delta(&mut st, &encode_tick_delta(5, 2, 0, 4, None), 5, 2).is_err());
    }

    #[test]
    fn only_the_next_tick_of_an_open_stream_applies_as_a_compact_record() {
        let mut st = with_streams();
        let rec = |slot, k, el| {
            let (r, n) = encode_tick_record(slot, k, el);
            r[..n].to_vec()
        };
        apply_record(&mut st, &rec(0, 1, None), 5, 0).unwrap();
        assert_eq!(st.streams_out[0].released, 1);
        let e = Hash32([4; 32]);
        apply_record(&mut st, &rec(0, 1, Some(&e)), 5, 1).unwrap();
        assert_eq!((st.streams_in[0].ticks, st.streams_in[0].latest), (1, e));
        // A delta still applies through the same entry point.
        apply_record(&mut st, &encode_tick_delta(5, 2, 0, 2, None), 5, 2).unwrap();
        assert_eq!(st.streams_out[0].released, 2);
        for (k, slot, el) in [
            (2, 0, None),
            (4, 0, None),
            (1, 0, Some(&e)),
            (2, 1, Some(&e)),
            (2, 1, None),
        ] {
            let mut t = st.clone();
            assert!(apply_record(&mut t, &rec(slot, k, el), 5, 3).is_err());
        }
        // Truncated, padded, or of an unknown kind.
        let good = rec(0, 2, Some(&e));
        for bad in [
            &good[..34],
            &[&good[..], &[0]].concat()[..],
            &[2, 0, 2][..],
            &[0, 0][..],
        ] {
            let mut t = st.clone();
            assert!(apply_record(&mut t, bad, 5, 3).is_err());
        }
        let mut closed = st.clone();
        closed.streams_out[0].closed = true;
        assert!(apply_record(&mut closed, &rec(0, 3, None), 5, 3).is_err());
        // Past the end.
        st.streams_out[0].released = 3;
        assert!(apply_record(&mut st, &rec(0, 4, None), 5, 3).is_err());
    }

    #[test]
    fn streams_round_trip_in_the_state_and_in_deltas() {
        let st = with_streams();
        assert_eq!(State::from_cbor(&st.to_cbor()).unwrap(), st);
        let mut next = st.clone();
        next.streams_in[0].closed = true;
        next.streams_out.remove(0);
        let d = encode_delta(&st, &next, 1, 0).unwrap();
        let mut t = st.clone();
        apply_delta(&mut t, &d, 1, 0).unwrap();
        assert_eq!(t, next);
    }
}
