//! Shared by the in-process back-office tests: a wallet backend that calls
//! the service directly, and devices on in-memory SEs.

#![allow(dead_code)]

use std::sync::Arc;

use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceOp, MakerCertificate, Registration};
use tally_core::{Hash32, Policy, PublicKey, RevocationList, SecretKey, Suite};
use tally_dcp::Backoffice;
use tally_se::RequestParams;
use tally_se::dispatch::Card;
use tally_se::storage::MemStorage;
use tally_wallet::agent::{Agent, Backend, BackendError, SealedKind, manufacture};
use tally_wallet::testkit::blank_card;
use tally_wallet::{ApduLink, SeLink};

pub struct Local(pub Arc<Backoffice>);

pub fn be(e: tally_dcp::BackofficeError) -> BackendError {
    BackendError {
        status: 422,
        code: e.code(),
        message: e.to_string(),
    }
}

impl Backend for Local {
    fn trust(&mut self) -> Result<(PublicKey, Policy, RevocationList), BackendError> {
        Ok((
            self.0.root_key(),
            self.0.policy().map_err(be)?,
            self.0.revocations().map_err(be)?,
        ))
    }
    fn register(&mut self, reg: &Registration) -> Result<Hash32, BackendError> {
        self.0.register(reg).map_err(be)
    }
    fn seal(
        &mut self,
        root: &PublicKey,
        kind: SealedKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let key = self.0.sealing_key();
        key.verify(root).unwrap();
        Ok(tally_core::sealed::seal(&key, kind, plaintext, &mut tally_dcp::OsEntropy).unwrap())
    }
    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.handle_device(request).map_err(be)
    }
}

pub type Link = ApduLink<Card<MemStorage, tally_core::testkit::TestEntropy>>;

pub struct Dev {
    pub link: Link,
    pub se_id: Hash32,
}

/// The test SE manufacturer's key (what a maker keeps in its HSM).
pub fn maker_key() -> SecretKey {
    SecretKey::from_seed(Suite::Ed25519, &[0x4d; 32]).unwrap()
}

/// The maker name the test manufacturer certifies.
pub const MAKER: &str = "acme";

/// A blank SE, personalised and certified by the test manufacturer
/// (whom the back office trusts).
pub fn manufactured(bo: &Arc<Backoffice>, label: &str, class: u8) -> (Link, MakerCertificate) {
    bo.trust_manufacturer(maker_key().public()).unwrap();
    let mut link = ApduLink::select(blank_card(label.as_bytes()), 4096).unwrap();
    let cert = manufacture(&mut link, class, bo.root_key(), &maker_key(), MAKER).unwrap();
    (link, cert)
}

/// Manufactures an SE and enrols it under `account` with a fresh
/// one-time code from the DCP.
pub fn onboard(bo: &Arc<Backoffice>, label: &str, class: u8, account: &str) -> Dev {
    let (mut link, cert) = manufactured(bo, label, class);
    let code = bo.enrolment_code(account).unwrap();
    let mut b = Local(bo.clone());
    let se_id = Agent::onboard(&mut link, &mut b, cert, account, &code)
        .unwrap()
        .se_id;
    Dev { link, se_id }
}

pub fn with_agent<R>(bo: &Arc<Backoffice>, d: &mut Dev, f: impl FnOnce(&mut Agent<'_>) -> R) -> R {
    let mut b = Local(bo.clone());
    let mut a = Agent {
        se: &mut d.link,
        backend: &mut b,
        se_id: d.se_id,
        pending: None,
    };
    f(&mut a)
}

/// A clone of `d`'s SE (its storage copied, as an attacker with the chip's
/// memory would): same keys, same tokens, same SE id and counter.
pub fn clone_dev(d: &mut Dev) -> Dev {
    use tally_se::{Applet, Sealing};
    let a = &mut d.link.card.applet;
    let placeholder = Applet::boot(
        MemStorage::new(1024),
        Sealing::None,
        tally_core::testkit::TestEntropy::new(b"x"),
    )
    .unwrap();
    let real = std::mem::replace(a, placeholder);
    let st = real.into_storage();
    let copy = MemStorage::from_bytes(st.as_bytes().to_vec());
    *a = Applet::boot(
        st,
        Sealing::None,
        tally_core::testkit::TestEntropy::new(b"m1"),
    )
    .unwrap();
    let clone_applet = Applet::boot(
        copy,
        Sealing::None,
        tally_core::testkit::TestEntropy::new(b"m2"),
    )
    .unwrap();
    Dev {
        link: ApduLink::select(Card::new(clone_applet), 4096).unwrap(),
        se_id: d.se_id,
    }
}

/// A request built and signed by `d`'s SE (BUILD REQUEST), with
/// `attachment` (the sealed upload of Sync and Redeem), as CBOR.
pub fn build_request(d: &mut Dev, params: RequestParams, attachment: Vec<u8>) -> Vec<u8> {
    let mut req = d.link.build_request(&params).unwrap();
    req.attachment = attachment;
    req.to_cbor()
}

/// A request the real SE would never build, signed with `d`'s attestation
/// key through the test hook: an attacker who extracted the SE's key.
/// Takes the SE's next counter (the SE burns it on a Balance request it
/// builds and nobody sends), so that the device's own requests go on.
pub fn forge_request(d: &mut Dev, op: DeviceOp, attachment: Vec<u8>) -> Vec<u8> {
    let counter = d
        .link
        .build_request(&RequestParams::Balance)
        .unwrap()
        .counter;
    let mut req = d
        .link
        .card
        .applet
        .sign_request_unchecked(counter, op)
        .unwrap();
    req.attachment = attachment;
    req.to_cbor()
}

/// `plaintext` sealed to settlement, as the wallet does.
pub fn seal_to_settlement(bo: &Arc<Backoffice>, kind: SealedKind, plaintext: &[u8]) -> Vec<u8> {
    Local(bo.clone())
        .seal(&bo.root_key(), kind, plaintext)
        .unwrap()
}

/// Registration as the wallet sends it: the maker's certificate and the
/// SE's enrolment signature over `account` and `code`.
pub fn register(
    bo: &Arc<Backoffice>,
    link: &mut Link,
    maker_cert: MakerCertificate,
    account: &str,
    code: &str,
) -> Result<Hash32, tally_dcp::BackofficeError> {
    let signature = link.enrol(account, code).unwrap();
    bo.register(&Registration {
        maker_cert,
        account: account.to_string(),
        signature,
    })
}
