//! The supervisors' k-of-n key set: dealer-free generation, the public
//! parameters every verifier needs, and each supervisor's secret share.

use std::fmt;

use elastic_elgamal::dkg::{self, ParticipantCollectingCommitments};
use elastic_elgamal::group::Ristretto;
use elastic_elgamal::sharing::{ActiveParticipant, Params, PublicKeySet};
use elastic_elgamal::{PublicKey as ElGamalKey, SecretKey as ElGamalSecret};
use tally_core::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use tally_core::crypto::{Entropy, check_key, tagged_hash};
use tally_core::escrow::{EntropyRng, JointKey};
use tally_core::{Hash32, PublicKey, Suite};

use crate::{PARTICIPANTS_MAX, SupervisorError};

pub const SETUP_VERSION: u8 = 1;

/// What every verifier of shares, openings and the audit log needs: the
/// threshold k, the joint key escrows are made for, each supervisor's
/// public key share (to check its decryption shares) and Ed25519 audit key
/// (to check what it signs in the log). Supervisor `i` (0-based) owns
/// `share_keys[i]` and `audit_keys[i]`.
///
/// Wire: `[1, k, n, joint_key, [share_key; n], [audit_key; n]]`. Decoding
/// checks that the share keys are consistent with one degree-(k−1)
/// polynomial whose value at 0 is the joint key.
#[derive(Clone)]
pub struct JointParams {
    key_set: PublicKeySet<Ristretto>,
    joint_key: JointKey,
    audit_keys: Vec<PublicKey>,
}

fn check_audit_keys(n: usize, audit_keys: &[PublicKey]) -> Result<(), SupervisorError> {
    if audit_keys.len() != n {
        return Err(SupervisorError::InvalidParams);
    }
    for (i, k) in audit_keys.iter().enumerate() {
        if k.suite() != Suite::Ed25519 || check_key(k).is_err() || audit_keys[..i].contains(k) {
            return Err(SupervisorError::InvalidParams);
        }
    }
    Ok(())
}

fn params(threshold: usize, participants: usize) -> Result<Params, SupervisorError> {
    if threshold == 0 || threshold > participants || participants > PARTICIPANTS_MAX {
        return Err(SupervisorError::InvalidParams);
    }
    // Checked above: `Params::new` would panic where we return an error.
    Ok(Params::new(participants, threshold))
}

impl JointParams {
    fn new(
        key_set: PublicKeySet<Ristretto>,
        audit_keys: Vec<PublicKey>,
    ) -> Result<JointParams, SupervisorError> {
        let p = key_set.params();
        params(p.threshold, p.shares)?;
        check_audit_keys(p.shares, &audit_keys)?;
        let joint_key = JointKey::from_elgamal(key_set.shared_key().clone())?;
        Ok(JointParams {
            key_set,
            joint_key,
            audit_keys,
        })
    }
    /// k: shares needed to open.
    pub fn threshold(&self) -> usize {
        self.key_set.params().threshold
    }
    /// n: supervisors.
    pub fn participants(&self) -> usize {
        self.key_set.params().shares
    }
    /// The key escrows are encrypted to.
    pub fn joint_key(&self) -> &JointKey {
        &self.joint_key
    }
    pub fn audit_key(&self, index: u8) -> Option<&PublicKey> {
        self.audit_keys.get(usize::from(index))
    }
    pub fn audit_keys(&self) -> &[PublicKey] {
        &self.audit_keys
    }
    /// The supervisor index an audit key belongs to.
    pub fn audit_index(&self, key: &PublicKey) -> Option<u8> {
        self.audit_keys
            .iter()
            .position(|k| k == key)
            .and_then(|i| u8::try_from(i).ok())
    }
    /// The `elastic-elgamal` view (participant key shares, share checks).
    pub fn key_set(&self) -> &PublicKeySet<Ristretto> {
        &self.key_set
    }
    /// `H("tally/v1/supervisor-params", cbor)`: names this key set.
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/supervisor-params", &[&self.to_cbor()])
    }
}

impl PartialEq for JointParams {
    fn eq(&self, other: &Self) -> bool {
        self.to_cbor() == other.to_cbor()
    }
}
impl Eq for JointParams {}

impl fmt::Debug for JointParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JointParams({} of {}, {:?})",
            self.threshold(),
            self.participants(),
            self.joint_key
        )
    }
}

struct ShareKey(ElGamalKey<Ristretto>);
impl Cbor for ShareKey {
    fn write(&self, w: &mut Writer) {
        w.bytes(self.0.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let b: [u8; 32] = r.bytes_array()?;
        ElGamalKey::from_bytes(&b)
            .map(ShareKey)
            .map_err(|_| CodecError::Malformed)
    }
}

impl Cbor for JointParams {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        w.u64(u64::from(SETUP_VERSION));
        w.u64(self.threshold() as u64);
        w.u64(self.participants() as u64);
        self.joint_key.write(w);
        w.array(self.participants());
        for k in self.key_set.participant_keys() {
            w.bytes(k.as_bytes());
        }
        write_vec(w, &self.audit_keys);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(SETUP_VERSION)?;
        let k = usize::from(r.u8()?);
        let n = usize::from(r.u8()?);
        let p = params(k, n).map_err(|_| CodecError::Malformed)?;
        let joint_key = JointKey::read(r)?;
        let shares: Vec<ShareKey> = read_vec(r, PARTICIPANTS_MAX)?;
        let audit_keys: Vec<PublicKey> = read_vec(r, PARTICIPANTS_MAX)?;
        if shares.len() != n {
            return Err(CodecError::Malformed);
        }
        let key_set = PublicKeySet::from_participants(p, shares.into_iter().map(|s| s.0).collect())
            .map_err(|_| CodecError::Malformed)?;
        let params = JointParams::new(key_set, audit_keys).map_err(|_| CodecError::Malformed)?;
        if params.joint_key != joint_key {
            return Err(CodecError::Malformed);
        }
        Ok(params)
    }
}

/// One supervisor's secret: its index, its share of the joint secret, and
/// the public parameters. Wire: `[1, index, secret_share (bstr 32), params]`;
/// decoding checks the share against the index's public key share. Keep it
/// sealed; it is never sent to anyone.
pub struct SupervisorKey {
    participant: ActiveParticipant<Ristretto>,
    joint: JointParams,
}

impl SupervisorKey {
    /// 0-based supervisor index.
    pub fn index(&self) -> u8 {
        // Indexes are below PARTICIPANTS_MAX (checked at construction).
        self.participant.index() as u8
    }
    pub fn joint(&self) -> &JointParams {
        &self.joint
    }
    pub(crate) fn participant(&self) -> &ActiveParticipant<Ristretto> {
        &self.participant
    }
}

impl fmt::Debug for SupervisorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SupervisorKey(index {}, {:?})", self.index(), self.joint)
    }
}

impl Cbor for SupervisorKey {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.u64(u64::from(SETUP_VERSION));
        w.u64(u64::from(self.index()));
        w.bytes(&self.participant.secret_share().expose_scalar().to_bytes());
        self.joint.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        r.version(SETUP_VERSION)?;
        let index = usize::from(r.u8()?);
        let secret: [u8; 32] = r.bytes_array()?;
        let joint = JointParams::read(r)?;
        if index >= joint.participants() {
            return Err(CodecError::Malformed);
        }
        let secret = ElGamalSecret::from_bytes(&secret).ok_or(CodecError::Malformed)?;
        let participant = ActiveParticipant::new(joint.key_set.clone(), index, secret)
            .map_err(|_| CodecError::Malformed)?;
        Ok(SupervisorKey { participant, joint })
    }
}

fn dkg_fault(e: dkg::Error) -> SupervisorError {
    SupervisorError::KeySetup(match e {
        dkg::Error::InvalidSecret => "a secret share is not on its sender's polynomial",
        dkg::Error::InvalidCommitment => "a polynomial does not match its commitment",
        dkg::Error::DuplicateShare => "a secret share was sent twice",
        dkg::Error::MalformedParticipantProof(_) => "a polynomial or its proof is malformed",
        dkg::Error::InconsistentPublicShares(_) => "the public key shares are inconsistent",
        _ => "participant misbehaved",
    })
}

/// Generates a k-of-n key set with elastic-elgamal's committed Pedersen DKG
/// (no dealer ever holds the joint secret): every supervisor commits to its
/// polynomial, then publishes it with a proof of possession, then sends
/// every other supervisor its secret share, each step checked by every
/// receiver. `audit_keys[i]` is supervisor i's Ed25519 audit key; `n` is
/// their count.
///
/// All n participants run here, in one process: right for tests, the demo
/// and a single-site ceremony. A ceremony across sites runs the same three
/// rounds of `elastic_elgamal::dkg` with one participant per machine and
/// `SupervisorKey`/`JointParams` made from the result (the CLI step).
pub fn key_setup(
    threshold: usize,
    audit_keys: &[PublicKey],
    rng: &mut dyn Entropy,
) -> Result<(JointParams, Vec<SupervisorKey>), SupervisorError> {
    let n = audit_keys.len();
    let p = params(threshold, n)?;
    check_audit_keys(n, audit_keys)?;
    let mut rng = EntropyRng(rng);

    // Round 1: commitments to each participant's key share.
    let mut round1: Vec<ParticipantCollectingCommitments<Ristretto>> = (0..n)
        .map(|i| ParticipantCollectingCommitments::new(p, i, &mut rng))
        .collect();
    let commitments: Vec<[u8; 32]> = round1.iter().map(|q| q.commitment()).collect();
    for (i, q) in round1.iter_mut().enumerate() {
        for (j, c) in commitments.iter().enumerate() {
            if i != j {
                q.insert_commitment(j, *c);
            }
        }
    }

    // Round 2: public polynomials with proofs of possession and openings.
    let mut round2: Vec<_> = round1
        .into_iter()
        .map(|q| q.finish_commitment_phase())
        .collect();
    let infos: Vec<_> = round2
        .iter()
        .map(|q| q.public_info().into_owned())
        .collect();
    for (i, q) in round2.iter_mut().enumerate() {
        for (j, info) in infos.iter().enumerate() {
            if i != j {
                q.insert_public_polynomial(j, info.clone())
                    .map_err(dkg_fault)?;
            }
        }
    }

    // Round 3: secret shares, point to point.
    let mut round3: Vec<_> = round2
        .into_iter()
        .map(|q| q.finish_polynomials_phase())
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let s = round3[i].secret_share_for_participant(j);
                round3[j].insert_secret_share(i, s).map_err(dkg_fault)?;
            }
        }
    }
    let participants: Vec<ActiveParticipant<Ristretto>> = round3
        .into_iter()
        .map(|q| q.complete())
        .collect::<Result<_, _>>()
        .map_err(dkg_fault)?;

    let joint = JointParams::new(participants[0].key_set().clone(), audit_keys.to_vec())?;
    // Every participant must have derived the same public key set.
    for q in &participants {
        if q.key_set().participant_keys() != joint.key_set.participant_keys() {
            return Err(SupervisorError::KeySetup(
                "participants derived different key sets",
            ));
        }
    }
    let keys = participants
        .into_iter()
        .map(|participant| SupervisorKey {
            participant,
            joint: joint.clone(),
        })
        .collect();
    Ok((joint, keys))
}
