//! The back office's signing keys in a PKCS#11 token (an HSM; SoftHSM2 in
//! tests), through the `cryptoki` crate. Only this module links PKCS#11:
//! tally-core and tally-dcp see a [`tally_core::Signer`].
//!
//! Keys are Ed25519 (`CKK_EC_EDWARDS`, signed with `CKM_EDDSA`, pure
//! EdDSA as RFC 8032), found by label: a private key and its public key
//! under one label. Every signature the token returns is verified under
//! the public key before it is used, so a token that answers with another
//! key's signatures (a wrong label, a broken device) is caught before a
//! device or DCP sees its output.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tally_core::{PublicKey, Signature, Signer, Suite};
use tally_dcp::{KeyError, NodeSigner};

use crate::CliError;

/// Where the token is and how to log in.
#[derive(Clone)]
pub struct TokenOptions {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// A file holding the user PIN; `None`: the PIN is in the environment
    /// variable `TALLY_PKCS11_PIN`.
    pub pin_file: Option<PathBuf>,
}

/// Environment variable holding the token's user PIN (when no PIN file).
pub const PIN_ENV: &str = "TALLY_PKCS11_PIN";

/// Default key labels of the node's roles.
pub const ROOT_LABEL: &str = "tally-root";
pub const SETTLEMENT_LABEL: &str = "tally-settlement";
pub const DCP_LABEL: &str = "tally-dcp";

/// DER of the Ed25519 curve OID 1.3.101.112 (RFC 8410), as CKA_EC_PARAMS.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

fn device(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Device(format!("{what}: {e}"))
}

fn read_pin(opts: &TokenOptions) -> Result<AuthPin, CliError> {
    let pin = match &opts.pin_file {
        Some(p) => {
            let s = std::fs::read_to_string(p).map_err(|e| CliError::io(p, e))?;
            s.trim_end_matches(['\r', '\n']).to_string()
        }
        None => std::env::var(PIN_ENV).map_err(|_| {
            CliError::usage(format!(
                "the token's PIN is needed: --pkcs11-pin-file FILE or the environment variable {PIN_ENV}"
            ))
        })?,
    };
    Ok(AuthPin::new(pin.into()))
}

/// A logged-in token.
pub struct Token {
    ctx: Pkcs11,
    slot: Slot,
    /// The session the user logged in on: the login holds while a session
    /// of the application is open, so every signer keeps this one.
    login: Arc<Mutex<Session>>,
}

impl Token {
    /// Loads the module, finds the token by label and logs the user in
    /// (on a first session, kept open for the life of the process).
    pub fn open(opts: &TokenOptions) -> Result<Token, CliError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            CliError::failed(format!("PKCS#11 {}: {what}: {e}", opts.module.display()))
        };
        let ctx = Pkcs11::new(&opts.module).map_err(|e| fail("cannot load the module", &e))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| fail("C_Initialize", &e))?;
        let mut found = None;
        for slot in ctx
            .get_slots_with_initialized_token()
            .map_err(|e| fail("C_GetSlotList", &e))?
        {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| fail("C_GetTokenInfo", &e))?;
            if info.label().trim_end() == opts.token {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            CliError::failed(format!(
                "PKCS#11 {}: no initialized token labelled {:?}",
                opts.module.display(),
                opts.token
            ))
        })?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| fail("C_OpenSession", &e))?;
        session
            .login(UserType::User, Some(&read_pin(opts)?))
            .map_err(|e| fail("C_Login (user PIN)", &e))?;
        Ok(Token {
            ctx,
            slot,
            login: Arc::new(Mutex::new(session)),
        })
    }

    fn session(&self, rw: bool) -> Result<Session, CliError> {
        let s = if rw {
            self.ctx.open_rw_session(self.slot)
        } else {
            self.ctx.open_ro_session(self.slot)
        };
        s.map_err(|e| CliError::failed(format!("PKCS#11 C_OpenSession: {e}")))
    }

    /// The signer of the Ed25519 key labelled `label`, on its own session
    /// (so the three roles do not queue behind one another).
    pub fn signer(&self, label: &str, role: &'static str) -> Result<Arc<NodeSigner>, CliError> {
        let session = self.session(false)?;
        let (private, public) = find_key(&session, label)?;
        let signer = HsmSigner {
            session: Mutex::new(session),
            private,
            public,
            role,
            _login: self.login.clone(),
        };
        Ok(Arc::new(signer))
    }

    /// Generates an Ed25519 key pair labelled `label` in the token: the
    /// private key sensitive and never extractable. Refuses a label in use.
    pub fn generate(&self, session: &Session, label: &str) -> Result<PublicKey, CliError> {
        let taken = session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| CliError::failed(format!("PKCS#11 C_FindObjects: {e}")))?;
        if !taken.is_empty() {
            return Err(CliError::usage(format!(
                "the token already holds an object labelled {label:?}; refusing to add another"
            )));
        }
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_OID.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|e| {
                CliError::failed(format!(
                    "PKCS#11 C_GenerateKeyPair (Ed25519, label {label:?}): {e}"
                ))
            })?;
        let (_, public) = find_key(session, label)?;
        Ok(public)
    }
}

/// The private key and the public key under `label` (exactly one each).
fn find_key(session: &Session, label: &str) -> Result<(ObjectHandle, PublicKey), CliError> {
    let one = |class: ObjectClass| -> Result<ObjectHandle, CliError> {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| CliError::failed(format!("PKCS#11 C_FindObjects: {e}")))?;
        match found.as_slice() {
            [h] => Ok(*h),
            [] => Err(CliError::failed(format!(
                "the token has no {class} labelled {label:?} (generate it with `tally keys pkcs11-generate`)"
            ))),
            _ => Err(CliError::failed(format!(
                "the token has {} objects of class {class} labelled {label:?}; labels must be unique",
                found.len()
            ))),
        }
    };
    let private = one(ObjectClass::PRIVATE_KEY)?;
    let public = one(ObjectClass::PUBLIC_KEY)?;
    let attrs = session
        .get_attributes(public, &[AttributeType::KeyType, AttributeType::EcPoint])
        .map_err(|e| CliError::failed(format!("PKCS#11 C_GetAttributeValue: {e}")))?;
    let mut key_type = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    if key_type != Some(KeyType::EC_EDWARDS) {
        return Err(CliError::failed(format!(
            "key {label:?} is not an Ed25519 key (CKK_EC_EDWARDS); only Ed25519 keys are supported in a token"
        )));
    }
    let point =
        point.ok_or_else(|| CliError::failed(format!("key {label:?} has no CKA_EC_POINT")))?;
    // DER OCTET STRING (as PKCS#11 3.0 says) or the bare 32 bytes.
    let raw: &[u8] = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        p if p.len() == 32 => p,
        _ => {
            return Err(CliError::failed(format!(
                "key {label:?}: CKA_EC_POINT is not an Ed25519 point"
            )));
        }
    };
    let public = PublicKey::new(Suite::Ed25519, raw)
        .map_err(|_| CliError::failed(format!("key {label:?}: not an Ed25519 key")))?;
    tally_core::crypto::check_key(&public)
        .map_err(|_| CliError::failed(format!("key {label:?}: not a usable Ed25519 key")))?;
    Ok((private, public))
}

/// One Ed25519 key in the token.
struct HsmSigner {
    session: Mutex<Session>,
    private: ObjectHandle,
    public: PublicKey,
    role: &'static str,
    _login: Arc<Mutex<Session>>,
}

impl Signer for HsmSigner {
    type Error = KeyError;
    fn public_key(&self) -> PublicKey {
        self.public
    }
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, KeyError> {
        let bytes = {
            let session = self
                .session
                .lock()
                .map_err(|_| KeyError::Device("session lock poisoned".into()))?;
            session
                .sign(
                    &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                    self.private,
                    msg,
                )
                .map_err(|e| device(&format!("C_Sign ({} key)", self.role), e))?
        };
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| KeyError::BadSignature { role: self.role })?;
        let sig = Signature::new(Suite::Ed25519, bytes);
        tally_core::crypto::verify(&self.public, msg, &sig)
            .map_err(|_| KeyError::BadSignature { role: self.role })?;
        Ok(sig)
    }
}

/// Labels of the node's keys in the token.
#[derive(Clone)]
pub struct Labels {
    pub root: String,
    pub settlement: String,
    pub dcp: String,
}

/// The node's three signing keys from the token.
pub fn open_node_keys(
    opts: &TokenOptions,
    labels: &Labels,
) -> Result<[Arc<NodeSigner>; 3], CliError> {
    let token = Token::open(opts)?;
    Ok([
        token.signer(&labels.root, "root")?,
        token.signer(&labels.settlement, "settlement")?,
        token.signer(&labels.dcp, "dcp")?,
    ])
}

/// `tally keys pkcs11-generate`: one Ed25519 key per label; prints each
/// label and the hex of its public key's CBOR (what `--root` files hold),
/// and writes LABEL.pub files into `out` if given.
pub fn generate(
    opts: &TokenOptions,
    labels: &[String],
    out: Option<&Path>,
) -> Result<String, CliError> {
    let token = Token::open(opts)?;
    let session = token.session(true)?;
    let mut report = Vec::with_capacity(labels.len());
    for label in labels {
        let public = token.generate(&session, label)?;
        let cbor = tally_core::codec::Cbor::to_cbor(&public);
        if let Some(dir) = out {
            crate::device::write_atomic(&dir.join(format!("{label}.pub")), &cbor)?;
        }
        report.push(format!("{label} {}", hex::encode(&cbor)));
    }
    Ok(report.join("\n"))
}
