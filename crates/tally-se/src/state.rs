//! The SE's persistent state and its (internal, versioned) encoding.
//!
//! The whole state is one canonical CBOR object committed atomically by the
//! journal. Records are stored once (deduplicated) and tokens refer to them
//! by id, so a token's ancestry costs 32 bytes per record it shares.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use tally_core::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use tally_core::{
    Amount, Epoch, Hash32, OutPoint, Policy, PseudonymCertificate, PublicKey, Receipt, Record,
    RevocationList, Suite,
};

/// 2: adds the request counter, the imported-Issue set, the PIN and the
/// value paid since the last cardholder verification (version 1 is read
/// with those empty). 3: adds the request reports and the cancelled
/// Issues (versions 1 and 2 are read with those empty).
pub const STATE_VERSION: u8 = 3;
/// Bounds on every table (TigerBeetle: put a limit on everything).
pub const TOKENS_MAX: usize = 256;
pub const KEYS_MAX: usize = 16;
pub const OPEN_REQUESTS_MAX: usize = 8;
pub const OUTGOING_MAX: usize = 128;
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
        // Runs on every PAY: build each lookup set once instead of
        // rescanning the tables per record and per certificate. The sets
        // are filled by `insert`, not `collect`: collecting into a B-tree
        // sorts its input, and each sort instantiation costs the
        // Cortex-M4 payment firmware about 2.5 KiB of flash.
        let mut live: BTreeSet<Hash32> = BTreeSet::new();
        for t in &self.tokens {
            for id in &t.lineage {
                live.insert(*id);
            }
        }
        self.records.retain(|r| live.contains(&r.id));
        let mut by_id: BTreeMap<Hash32, &Record> = BTreeMap::new();
        for r in &self.records {
            by_id.insert(r.id, &r.record);
        }
        // Keys that signed a stored transfer: owners of the outputs it consumed.
        let mut signers: BTreeSet<PublicKey> = BTreeSet::new();
        for op in self.records.iter().flat_map(|r| r.record.inputs().iter()) {
            if let Some(o) = by_id
                .get(&op.record)
                .and_then(|p| p.outputs().get(op.index as usize))
            {
                signers.insert(o.owner);
            }
        }
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
            lineage: read_vec(r, RECORDS_MAX)?,
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
        w.array(3);
        w.bytes(&self.nonce);
        w.u64(self.amount.0);
        self.key.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        Ok(OpenRequest {
            nonce: r.bytes_array()?,
            amount: Amount(r.u64()?),
            key: PublicKey::read(r)?,
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

impl Cbor for State {
    fn write(&self, w: &mut Writer) {
        w.array(25);
        w.u64(u64::from(STATE_VERSION));
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
        write_vec(w, &self.keys);
        write_vec(w, &self.tokens);
        write_vec(w, &self.records);
        write_vec(w, &self.certs);
        write_vec(w, &self.open_requests);
        write_vec(w, &self.outgoing);
        write_vec(w, &self.receipts);
        w.u64(self.request_counter);
        write_vec(w, &self.imported);
        write_opt(w, &self.pin);
        w.u64(self.spent_since_cvm.0);
        write_vec(w, &self.paid);
        write_vec(w, &self.reports);
        write_vec(w, &self.cancelled);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(25)?;
        let version = r.u8()?;
        match (version, n) {
            (1, 18) | (2, 23) | (STATE_VERSION, 25) => {}
            _ => return Err(CodecError::UnsupportedVersion),
        }
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
            records: read_vec(r, RECORDS_MAX)?,
            certs: read_vec(r, CERTS_MAX)?,
            open_requests: read_vec(r, OPEN_REQUESTS_MAX)?,
            outgoing: read_vec(r, OUTGOING_MAX)?,
            receipts: read_vec(r, RECEIPTS_KEPT_MAX)?,
            ..State::default()
        };
        if version >= 2 {
            st.request_counter = r.u64()?;
            st.imported = read_vec(r, IMPORTED_MAX)?;
            st.pin = read_opt(r)?;
            st.spent_since_cvm = Amount(r.u64()?);
            st.paid = read_vec(r, PAID_KEPT_MAX)?;
        }
        if version >= 3 {
            st.reports = read_vec(r, REPORTS_MAX)?;
            st.cancelled = read_vec(r, CANCELLED_MAX)?;
        }
        Ok(st)
    }
}
