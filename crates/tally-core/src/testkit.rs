//! A deterministic scheme for tests, benchmarks, test vectors and the
//! demo: root, one DCP key with every role, a policy with generous tiers.
//! Keys come from fixed seeds (`H("tally/v1/testkit" || label)`), so every
//! run produces the same bytes. Never use these keys outside tests.

use alloc::vec;
use alloc::vec::Vec;

use crate::Hash32;
use crate::amount::{Amount, Epoch};
use crate::cert::{DcpCertificate, PseudonymCertificate, role};
use crate::crypto::{Entropy, PublicKey, SecretKey, Suite, tagged_hash};
use crate::policy::{Policy, RevocationList, SyncGrant, TierLimits, device_class};
use crate::record::{Issue, Output};
use crate::verify::{TrustStore, VerifyParams};

/// Deterministic key from a label. Panics (a test helper) for a suite the
/// build lacks (P-256 under `ed25519-only`) instead of looking for a seed
/// forever.
pub fn key(suite: Suite, label: &[u8]) -> SecretKey {
    assert!(suite.is_supported(), "testkit: suite not in this build");
    let mut n: u32 = 0;
    loop {
        let seed = tagged_hash(b"tally/v1/testkit", &[label, &n.to_be_bytes()]);
        if let Some(k) = SecretKey::from_seed(suite, &seed.0) {
            return k;
        }
        n += 1;
    }
}

/// Deterministic entropy (SHA-256 in counter mode over a seed). For tests.
pub struct TestEntropy {
    seed: [u8; 32],
    counter: u64,
}

impl TestEntropy {
    pub fn new(label: &[u8]) -> Self {
        TestEntropy {
            seed: tagged_hash(b"tally/v1/test-entropy", &[label]).0,
            counter: 0,
        }
    }
}

impl Entropy for TestEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let block = tagged_hash(
                b"tally/v1/test-entropy-block",
                &[&self.seed, &self.counter.to_be_bytes()],
            );
            self.counter += 1;
            chunk.copy_from_slice(&block.0[..chunk.len()]);
        }
    }
}

/// Default tier used by tests: limits far above test amounts, history
/// budget 32.
pub fn default_tier(device_class: u8, tier: u8) -> TierLimits {
    TierLimits {
        device_class,
        tier,
        payment_max: Amount(1_000_000),
        holding_max: Amount(10_000_000),
        receiving_max: Amount(10_000_000),
        offline_spend_max: Amount(10_000_000),
        offline_payments_max: 1_000,
        history_records_max: 32,
        offline_epochs_max: 30,
        cvm_payment_max: Amount(u64::MAX),
        cvm_cumulative_max: Amount(u64::MAX),
        cvm_online: false,
    }
}

/// Root, DCP and trust objects of one test scheme.
pub struct Scheme {
    pub root: SecretKey,
    pub dcp: SecretKey,
    pub dcp_cert: DcpCertificate,
    pub policy: Policy,
    pub revocations: RevocationList,
    pub epoch: Epoch,
    serial: u64,
}

impl Scheme {
    /// A scheme whose keys are all in `suite`.
    pub fn new(suite: Suite) -> Scheme {
        Self::with_tiers(suite, Self::default_tiers())
    }

    pub fn default_tiers() -> Vec<TierLimits> {
        vec![
            default_tier(device_class::CARD, 0),
            default_tier(device_class::PHONE, 0),
            default_tier(device_class::IOT, 0),
            TierLimits {
                history_records_max: 1024,
                ..default_tier(device_class::DCP, 0)
            },
        ]
    }

    pub fn with_tiers(suite: Suite, tiers: Vec<TierLimits>) -> Scheme {
        let root = key(suite, b"root");
        let dcp = key(suite, b"dcp-1");
        let all = role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC;
        let dcp_cert = DcpCertificate::sign(&root, 1, dcp.public(), all, 1_000);
        let policy = Policy::sign(&root, 1, "XTS", tiers, vec![dcp_cert.clone()]);
        let revocations = RevocationList::sign(&root, 1, 1, Vec::new());
        Scheme {
            root,
            dcp,
            dcp_cert,
            policy,
            revocations,
            epoch: 1,
            serial: 0,
        }
    }

    pub fn trust(&self) -> TrustStore {
        // The scheme's own objects are signed correctly by construction.
        match TrustStore::new(
            self.root.public(),
            self.policy.clone(),
            self.revocations.clone(),
        ) {
            Ok(t) => t,
            Err(e) => panic!("testkit trust store: {e}"),
        }
    }

    pub fn params(&self, history_records_max: usize) -> VerifyParams {
        VerifyParams {
            epoch: self.epoch,
            history_records_max,
            signature_batch_max: usize::MAX,
        }
    }

    /// A scheme whose policy makes amounts confidential (SPEC §4.9), with
    /// device holding limits below 2^16 (16-bit range proofs).
    pub fn confidential(suite: Suite) -> Scheme {
        let tiers = Self::default_tiers()
            .into_iter()
            .map(|t| {
                if t.device_class == device_class::DCP {
                    t
                } else {
                    TierLimits {
                        payment_max: Amount(60_000),
                        holding_max: Amount(60_000),
                        receiving_max: Amount(60_000),
                        offline_spend_max: Amount(60_000),
                        ..t
                    }
                }
            })
            .collect();
        let mut s = Self::with_tiers(suite, tiers);
        s.make_confidential();
        s
    }

    /// Seed of the test scheme's settlement sealing key (its X25519
    /// public key is a confidential policy's audit key):
    /// `sealed::OpeningKey::from_seed(&Scheme::AUDIT_SEED)` opens audit seals.
    pub const AUDIT_SEED: [u8; 32] = [0xA5; 32];

    /// The audit key of [`Scheme::AUDIT_SEED`] (RFC 9180 DeriveKeyPair, as
    /// `sealed::OpeningKey::from_seed`).
    #[cfg(feature = "confidential")]
    pub fn audit_key() -> [u8; 32] {
        use hpke::{Kem as _, Serializable};
        let (_, public) = hpke::kem::X25519HkdfSha256::derive_keypair(&Self::AUDIT_SEED);
        let mut k = [0u8; 32];
        k.copy_from_slice(&public.to_bytes());
        k
    }

    /// Re-signs the policy with confidential amounts (same serial: the
    /// scheme's first policy, or call before installing it), its audit
    /// key [`Scheme::audit_key`].
    pub fn make_confidential(&mut self) {
        #[cfg(feature = "confidential")]
        {
            self.policy = self
                .policy
                .clone()
                .resign_confidential(&self.root, Self::audit_key());
        }
        #[cfg(not(feature = "confidential"))]
        {
            self.policy = self
                .policy
                .clone()
                .resign_with_mode(&self.root, crate::policy::amount_mode::CONFIDENTIAL);
        }
    }

    /// Re-signs the policy with new tiers (serial + 1).
    pub fn set_tiers(&mut self, tiers: Vec<TierLimits>) {
        let mode = self.policy.amount_mode;
        let mut p = Policy::sign(
            &self.root,
            self.policy.serial + 1,
            "XTS",
            tiers,
            self.policy.dcps.clone(),
        );
        p.audit_key = self.policy.audit_key;
        self.policy = p.resign_with_mode(&self.root, mode);
    }

    /// Revokes key ids (new list, serial + 1).
    pub fn revoke(&mut self, ids: &[Hash32]) {
        let mut all = self.revocations.revoked.clone();
        all.extend_from_slice(ids);
        self.revocations =
            RevocationList::sign(&self.root, self.revocations.serial + 1, self.epoch, all);
    }

    /// A pseudonym certificate for `key`, valid until `epoch + 10`.
    pub fn certify(&self, key: PublicKey, device_class: u8, tier: u8) -> PseudonymCertificate {
        PseudonymCertificate::sign(
            &self.dcp,
            key,
            self.epoch + 10,
            device_class,
            tier,
            Vec::new(),
        )
    }

    /// A genesis record paying `value` to `owner`.
    /// Under a confidential policy the Issue commits to `value` and
    /// carries its opening sealed to `owner` (SPEC §4.9).
    pub fn issue(&mut self, owner: PublicKey, value: u64) -> Issue {
        self.serial += 1;
        #[cfg(feature = "confidential")]
        if self.policy.is_confidential() {
            let mut rng = TestEntropy::new(&self.serial.to_be_bytes());
            let audit_key = match self.policy.audit_key {
                Some(k) => k,
                None => panic!("a confidential policy has an audit key"),
            };
            return match crate::confidential_record::sign_issue(
                &self.dcp,
                &audit_key,
                self.serial,
                self.epoch + 20,
                &[crate::confidential_record::NewOutput {
                    owner,
                    value: Amount(value),
                }],
                &mut rng,
            ) {
                Ok(Ok((issue, _))) => issue,
                Ok(Err(e)) => panic!("testkit confidential issue: {e}"),
                Err(e) => match e {},
            };
        }
        Issue::sign(
            &self.dcp,
            self.serial,
            self.epoch + 20,
            vec![Output {
                value: Amount(value),
                owner,
            }],
        )
    }

    pub fn sync_grant(&self, se_id: Hash32, sequence: u64) -> SyncGrant {
        SyncGrant::sign(&self.dcp, se_id, self.epoch, sequence)
    }
}
