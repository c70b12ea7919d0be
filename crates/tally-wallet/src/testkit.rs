//! Provisioning of test devices against a [`tally_core::testkit::Scheme`]:
//! what the DCP does at onboarding and sync, done in-process.

use alloc::vec::Vec;

use tally_core::testkit::{Scheme, TestEntropy};
use tally_core::{Amount, Hash32, PublicKey, Suite};
use tally_se::dispatch::Card;
use tally_se::storage::MemStorage;
use tally_se::{Applet, Sealing};

use crate::link::{ApduLink, SeLink, WalletError};

/// Storage size of a test SE (two journal slots).
pub const TEST_STORAGE_BYTES: usize = 256 * 1024;

pub type TestCard = Card<MemStorage, TestEntropy>;

/// A fresh, blank SE in memory behind the APDU interface.
pub fn blank_card(label: &[u8]) -> TestCard {
    let applet = match Applet::boot(
        MemStorage::new(TEST_STORAGE_BYTES),
        Sealing::None,
        TestEntropy::new(label),
    ) {
        Ok(a) => a,
        Err(e) => panic!("blank SE failed to boot: {e}"),
    };
    Card::new(applet)
}

/// Personalizes, installs trust, generates and certifies `keys` offline
/// keys and syncs at the scheme's epoch. Returns the SE id.
pub fn provision(
    se: &mut dyn SeLink,
    scheme: &Scheme,
    device_class: u8,
    keys: u8,
) -> Result<Hash32, WalletError> {
    provision_suite(se, scheme, device_class, keys, Suite::Ed25519)
}

pub fn provision_suite(
    se: &mut dyn SeLink,
    scheme: &Scheme,
    device_class: u8,
    keys: u8,
    suite: Suite,
) -> Result<Hash32, WalletError> {
    let att = se.personalize(device_class, 0, suite, scheme.root.public())?;
    se.install_policy(&scheme.policy)?;
    se.install_revocations(&scheme.revocations)?;
    certify_fresh_keys(se, scheme, device_class, keys)?;
    se.sync(&scheme.sync_grant(att.id(), 1))?;
    Ok(att.id())
}

/// Generates `n` keys in the SE and installs the DCP's certificates.
pub fn certify_fresh_keys(
    se: &mut dyn SeLink,
    scheme: &Scheme,
    device_class: u8,
    n: u8,
) -> Result<Vec<PublicKey>, WalletError> {
    let keys = se.generate_keys(n)?;
    for k in &keys {
        se.install_certificate(&scheme.certify(*k, device_class, 0))?;
    }
    Ok(keys)
}

/// Loads `value` into the SE: the DCP issues a genesis token to a fresh
/// certified key of the SE.
pub fn load(
    se: &mut dyn SeLink,
    scheme: &mut Scheme,
    device_class: u8,
    value: u64,
) -> Result<Amount, WalletError> {
    let keys = certify_fresh_keys(se, scheme, device_class, 1)?;
    let issue = scheme.issue(keys[0], value);
    se.import_issue(&issue)
}

/// A provisioned device on the APDU transport, ready to pay and receive.
pub struct TestDevice {
    pub link: ApduLink<TestCard>,
    pub se_id: Hash32,
    pub class: u8,
}

impl TestDevice {
    pub fn new(
        scheme: &Scheme,
        label: &[u8],
        class: u8,
        max_data_per_apdu: usize,
    ) -> Result<TestDevice, WalletError> {
        let mut link = ApduLink::select(blank_card(label), max_data_per_apdu)?;
        let se_id = provision(&mut link, scheme, class, 4)?;
        Ok(TestDevice { link, se_id, class })
    }
    pub fn balance(&mut self) -> Result<Amount, WalletError> {
        Ok(self.link.status()?.balance)
    }
    pub fn applet(&self) -> &Applet<MemStorage, TestEntropy> {
        &self.link.card.applet
    }
}

/// Signs `package`'s transfer again with the key of its first input's
/// owner, read from `payer`'s SE state: a hostile payer SE signing what
/// it altered (a confidential record's signatures cover its audit seal,
/// decision 0034). Tests only: the seed never leaves a real SE.
pub fn sign_as_payer(package: &mut tally_core::Package, payer: &Applet<MemStorage, TestEntropy>) {
    let input = package.transfer.inputs[0];
    let owner = package
        .ancestry
        .iter()
        .find(|r| r.id() == input.record)
        .map(|r| r.outputs()[input.index as usize].owner)
        .expect("the input's record is in the ancestry");
    let key = payer.state().key(&owner).expect("the payer's key");
    let sk = tally_core::SecretKey::from_seed(owner.suite(), &key.seed_for_tests())
        .expect("a key's seed");
    let message = package.transfer.signed_message(&package.transfer.id());
    package.transfer.signatures = alloc::vec![sk.sign(&message.0)];
}
