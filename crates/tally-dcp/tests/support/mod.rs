//! Shared by the in-process back-office tests: a wallet backend that calls
//! the service directly, and devices on in-memory SEs.

#![allow(dead_code)]

use std::sync::Arc;

use tally_core::dcp::Registration;
use tally_core::{Hash32, Policy, PublicKey, RevocationList};
use tally_dcp::Backoffice;
use tally_se::dispatch::Card;
use tally_se::storage::MemStorage;
use tally_wallet::ApduLink;
use tally_wallet::agent::{Agent, Backend, BackendError, SealedKind};
use tally_wallet::testkit::blank_card;

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
    pub counter: u64,
}

pub fn onboard(bo: &Arc<Backoffice>, label: &str, class: u8, account: &str) -> Dev {
    let mut link = ApduLink::select(blank_card(label.as_bytes()), 4096).unwrap();
    let mut b = Local(bo.clone());
    let a = Agent::onboard(&mut link, &mut b, class, "acme", account).unwrap();
    let (se_id, counter) = (a.se_id, a.counter);
    Dev {
        link,
        se_id,
        counter,
    }
}

pub fn with_agent<R>(bo: &Arc<Backoffice>, d: &mut Dev, f: impl FnOnce(&mut Agent<'_>) -> R) -> R {
    let mut b = Local(bo.clone());
    let mut a = Agent {
        se: &mut d.link,
        backend: &mut b,
        se_id: d.se_id,
        counter: d.counter,
    };
    let r = f(&mut a);
    d.counter = a.counter;
    r
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
        counter: d.counter,
    }
}

/// The next signed device request of `d` (counter + 1), as CBOR.
pub fn sign_request(d: &mut Dev, op: tally_core::dcp::DeviceOp) -> Vec<u8> {
    use tally_core::codec::Cbor;
    use tally_core::dcp::DeviceRequest;
    use tally_wallet::SeLink;
    d.counter += 1;
    let signature = d
        .link
        .attest(&DeviceRequest::challenge(&d.se_id, d.counter, &op))
        .unwrap();
    DeviceRequest {
        se_id: d.se_id,
        counter: d.counter,
        op,
        signature,
    }
    .to_cbor()
}
