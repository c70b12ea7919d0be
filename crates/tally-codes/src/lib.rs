//! The one registry of Tally's stable result codes.
//!
//! Every refusal a component can answer with carries a `u16` code that
//! never changes meaning: devices in the field read it from the SE
//! (GET DATA `LAST_ERROR`), the back office stores it with a refused
//! device request (a failed request is final), MDS alerts carry it, and
//! callers branch on it. This crate owns all of them. Each code is a
//! constant with an explicit number (never derived from the order of an
//! enum), the component it belongs to, the HTTP status(es) and ISO 7816
//! status word(s) it travels with where relevant, and a one-line meaning.
//!
//! Components own disjoint ranges ([`RANGES`]). The table is checked at
//! compile time ([`check`]): strictly ascending (so no number twice),
//! every code inside its component's ranges, ranges disjoint, every
//! meaning one non-empty line. docs/CODES.md is generated from it
//! (tests/codes_md.rs fails when the file is out of date;
//! `TALLY_WRITE_CODES=1 cargo test -p tally-codes` rewrites it).
//!
//! A code marked [`State::Reserved`] is held for work in progress: no
//! error may answer with it until it is marked [`State::Used`]. A code
//! marked [`State::Retired`] belonged to a rule that is gone: nothing
//! answers with it, and its number is never reused.
//!
//! `no_std`, no dependencies: tally-core and tally-se build on it for
//! microcontrollers.

#![no_std]

/// Who answers with a code. Each component owns the ranges listed in
/// [`RANGES`] and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// No code at all (0): a transport failure, an answer without an
    /// error envelope, an SE with no error recorded.
    Client,
    /// The double-entry core ledger (tally-ledger `LedgerError`).
    Ledger,
    /// Settlement and the spent registry (tally-ledger `SettlementError`).
    Settlement,
    /// The SE directory (tally-directory `DirectoryError`).
    Directory,
    /// A DCP's device protocol and operator calls (tally-dcp
    /// `BackofficeError`).
    Dcp,
    /// The HTTP layer's own input checks (tally-api `code`).
    Http,
    /// Failures of the node itself: store, panics, MDS failures.
    Node,
    /// Package and trust-object verification, rules V1–V12 of SPEC.md §5
    /// (tally-core `VerifyError`); `code / 100` is the rule number.
    Verify,
    /// The secure element applet (tally-se `SeError`), read with GET DATA
    /// `LAST_ERROR` after an error status word.
    Se,
    /// The monitoring and detection service's own failures (tally-mds
    /// `MdsError`): in logs and in `ingestion_failed` alerts, never an
    /// HTTP answer.
    Mds,
    /// The central bank's answers to DCPs (tally-dcp `BackofficeError`,
    /// the `Central` interface between the parties).
    Central,
}

impl Component {
    pub const ALL: [Component; 11] = [
        Component::Client,
        Component::Ledger,
        Component::Settlement,
        Component::Directory,
        Component::Dcp,
        Component::Http,
        Component::Node,
        Component::Verify,
        Component::Se,
        Component::Mds,
        Component::Central,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Component::Client => "client",
            Component::Ledger => "ledger",
            Component::Settlement => "settlement",
            Component::Directory => "directory",
            Component::Dcp => "DCP",
            Component::Http => "HTTP layer",
            Component::Node => "node",
            Component::Verify => "verification",
            Component::Se => "secure element",
            Component::Mds => "MDS",
            Component::Central => "central bank",
        }
    }

    /// Where the codes of this component come from.
    pub const fn source(self) -> &'static str {
        match self {
            Component::Client => "tally-api client, tally-se `LAST_ERROR`",
            Component::Ledger => "tally-ledger `LedgerError`",
            Component::Settlement => "tally-ledger `SettlementError`",
            Component::Directory => "tally-directory `DirectoryError`",
            Component::Dcp => "tally-dcp `BackofficeError`",
            Component::Http => "tally-api `code`",
            Component::Node => "tally-dcp `BackofficeError`, tally-api",
            Component::Verify => "tally-core `VerifyError` (SPEC.md §5)",
            Component::Se => "tally-se `SeError` (docs/APDU.md)",
            Component::Mds => "tally-mds `MdsError`",
            Component::Central => "tally-dcp `BackofficeError` (the `Central` interface)",
        }
    }

    /// Whether `code` lies in one of this component's ranges.
    pub const fn owns(self, code: u16) -> bool {
        owns_in(RANGES, self, code)
    }
}

const fn owns_in(ranges: &[(Component, u16, u16)], c: Component, code: u16) -> bool {
    let mut i = 0;
    while i < ranges.len() {
        let (owner, lo, hi) = ranges[i];
        if owner as u8 == c as u8 && lo <= code && code <= hi {
            return true;
        }
        i += 1;
    }
    false
}

/// The ranges each component owns, inclusive. Disjoint (checked at
/// compile time). The DCP's and the HTTP layer's ranges interleave
/// because both grew before this registry existed; their numbers are
/// kept.
pub const RANGES: &[(Component, u16, u16)] = &[
    (Component::Client, 0, 9),
    (Component::Ledger, 10, 29),
    (Component::Settlement, 30, 39),
    (Component::Directory, 40, 49),
    (Component::Dcp, 50, 59),
    (Component::Http, 60, 63),
    (Component::Dcp, 64, 65),
    (Component::Http, 66, 66),
    (Component::Dcp, 67, 68),
    (Component::Http, 69, 79),
    (Component::Dcp, 80, 89),
    (Component::Node, 90, 99),
    (Component::Verify, 100, 1299),
    (Component::Central, 1300, 1399),
    (Component::Se, 2000, 2199),
    (Component::Mds, 3000, 3099),
];

/// Whether an error answers with a code, or the code is held for work
/// in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Used,
    /// Registered so nobody else takes it; no error answers with it yet.
    Reserved,
    /// Answered once, by a rule that is gone: no error answers with it
    /// and it is never given another meaning.
    Retired,
}

/// One registered code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub code: u16,
    /// The constant's name in this crate.
    pub name: &'static str,
    pub component: Component,
    /// HTTP statuses an answer with this code can have (empty: never an
    /// HTTP answer).
    pub http: &'static [u16],
    /// ISO 7816-4 status words an SE answers with when it records this
    /// code (empty: not an SE code). `0x63C0` stands for `63CX`.
    pub sw: &'static [u16],
    pub state: State,
    pub meaning: &'static str,
}

macro_rules! registry {
    ($(
        $name:ident = $code:literal, $comp:ident,
        http [$($http:literal),*], sw [$($sw:literal),*], $state:ident,
        $meaning:literal;
    )*) => {
        $(
            #[doc = $meaning]
            pub const $name: u16 = $code;
        )*
        /// Every registered code, strictly ascending.
        pub const REGISTRY: &[Code] = &[$(
            Code {
                code: $name,
                name: stringify!($name),
                component: Component::$comp,
                http: &[$($http),*],
                sw: &[$($sw),*],
                state: State::$state,
                meaning: $meaning,
            },
        )*];
    };
}

registry! {
    NO_CODE = 0, Client, http [], sw [], Used,
        "no stable code: no answer at all (connection refused, timeout), an answer without an error envelope, a local failure on the device (file I/O), or (SE `LAST_ERROR`) no error recorded";

    LEDGER_UNKNOWN_ACCOUNT = 10, Ledger, http [404], sw [], Used,
        "unknown account";
    LEDGER_INSUFFICIENT_FUNDS = 11, Ledger, http [422], sw [], Used,
        "insufficient funds";
    LEDGER_IDEMPOTENCY_KEY_REUSED = 12, Ledger, http [409], sw [], Used,
        "idempotency key reused for another transfer";
    LEDGER_ZERO_AMOUNT = 13, Ledger, http [422], sw [], Used,
        "zero amount";
    LEDGER_SAME_ACCOUNT = 14, Ledger, http [422], sw [], Used,
        "debit and credit are the same account";
    LEDGER_ACCOUNT_EXISTS = 15, Ledger, http [409], sw [], Used,
        "account exists";
    LEDGER_OVERFLOW = 16, Ledger, http [422], sw [], Used,
        "amount above i64::MAX or a balance would overflow";
    LEDGER_INVALID_CODE = 17, Ledger, http [422], sw [], Used,
        "transfer code does not fit its accounts (MINT must debit issuance, REDEEM credit it, nothing else touch it)";

    SETTLEMENT_UNKNOWN_ISSUE = 30, Settlement, http [422], sw [], Used,
        "an Issue no DCP registered (counterfeit or stolen issuing key)";
    SETTLEMENT_BEYOND_HORIZON = 31, Settlement, http [422], sw [], Used,
        "a package spends a token that expired before the spent registry's pruning horizon (its entry may be gone): refused";
    SETTLEMENT_QUEUED_BODY_UNREADABLE = 32, Settlement, http [422], sw [], Used,
        "a queued settlement body does not open (HPKE) or decode: stored as the queue row's result by a settlement worker";
    SETTLEMENT_CONFIDENTIAL_UNOPENED = 33, Settlement, http [422], sw [], Used,
        "a confidential Issue or package (SPEC §4.9) without the openings of its amounts: refused, nothing booked (settlement books amounts from openings only)";
    SETTLEMENT_AUDIT_OPENING_INVALID = 34, Settlement, http [422], sw [], Used,
        "C7: a confidential record's audit seal does not open with settlement's key, an opening does not open its commitment or is out of range, or a transfer's opened values do not balance: refused, nothing written, alert raised";

    DIRECTORY_BAD_ATTESTATION = 40, Directory, http [403], sw [], Used,
        "attestation signature does not verify";
    DIRECTORY_CONFLICT = 41, Directory, http [409], sw [], Used,
        "SE registered before with another class or maker";
    DIRECTORY_UNKNOWN_SE = 42, Directory, http [404], sw [], Used,
        "unknown SE";
    DIRECTORY_UNTRUSTED_MANUFACTURER = 43, Directory, http [403], sw [], Used,
        "the SE's attestation key is not certified by a manufacturer the policy trusts";
    DIRECTORY_REVOKED = 44, Directory, http [403], sw [], Used,
        "the SE was revoked: it cannot register again";
    DIRECTORY_TOO_MANY_REVOCATIONS = 45, Directory, http [400], sw [], Used,
        "one revocation names more than `REVOCATION_KEYS_PER_CALL_MAX` (64) keys; nothing changed";
    DIRECTORY_REVOCATION_LIST_FULL = 46, Directory, http [409], sw [], Used,
        "the revocation list would pass `REVOCATION_LIST_ENTRIES_MAX` (1024) keys; nothing changed";

    DCP_UNKNOWN_DEVICE = 50, Dcp, http [404], sw [], Used,
        "unknown device";
    DCP_DEVICE_NOT_ACTIVE = 51, Dcp, http [403], sw [], Used,
        "device suspended or revoked";
    DCP_BAD_DEVICE_SIGNATURE = 52, Dcp, http [403], sw [], Used,
        "device signature does not verify";
    DCP_REPLAY = 53, Dcp, http [409], sw [], Used,
        "replayed or stale request counter";
    DCP_BAD_KEY = 54, Dcp, http [400], sw [], Used,
        "invalid public key";
    DCP_UNKNOWN_REDEMPTION = 55, Dcp, http [409], sw [], Used,
        "no open redemption request for this package";
    DCP_WRONG_REDEMPTION = 56, Dcp, http [422], sw [], Used,
        "package does not pay the redemption request";
    DCP_DOUBLE_SPEND_BY_REDEEMER = 57, Dcp, http [422], sw [], Used,
        "the redeeming device double-spent the tokens it redeems";
    DCP_ESCROW_MISMATCH = 58, Dcp, http [500], sw [], Used,
        "the escrow the DCP made does not verify for the registered identity (never certified)";
    DCP_SEALED = 59, Dcp, http [422], sw [], Used,
        "sealed upload does not open or is malformed";

    HTTP_UNAUTHORIZED = 60, Http, http [401], sw [], Used,
        "missing or wrong operator bearer token";
    HTTP_BODY_TOO_LARGE = 61, Http, http [413], sw [], Used,
        "request body above the configured limit";
    HTTP_NO_ROUTE = 62, Http, http [404], sw [], Used,
        "no such route";
    HTTP_METHOD_NOT_ALLOWED = 63, Http, http [405], sw [], Used,
        "method not allowed on this route";

    DCP_BAD_SETTLEMENT_RESULT = 64, Dcp, http [500], sw [], Used,
        "settlement's signed result does not verify or does not answer this request";
    DCP_MDS_REFUSED = 65, Dcp, http [400], sw [], Used,
        "MDS refused (unknown alert, illegal lifecycle move)";

    HTTP_NOT_FOUND = 66, Http, http [404], sw [], Used,
        "the path names nothing (no escrow for this pseudonym)";

    DCP_OPENING_NOT_SHOWN = 67, Dcp, http [403], sw [], Used,
        "no verified k-of-n opening of this identity in the supervisors' audit log";
    DCP_REVOCATION_KEY_NOT_OPENED = 68, Dcp, http [403], sw [], Used,
        "a revoked key's certificate escrow was not opened to the identity revoked";

    HTTP_RATE_LIMITED = 69, Http, http [429], sw [], Used,
        "too many device requests from this SE: retry later (nothing was done)";
    HTTP_BAD_PATH_PARAMETER = 70, Http, http [400], sw [], Used,
        "a path parameter does not parse (key id not 64 hex digits, alert id not a decimal integer)";
    HTTP_BAD_ACCOUNT_NAME = 71, Http, http [400], sw [], Used,
        "account name empty, longer than 128 characters, or with characters other than letters, digits, `-`, `_`";
    HTTP_UNEXPECTED_QUERY = 72, Http, http [400], sw [], Used,
        "query string on a route (no route takes query parameters)";
    HTTP_UNSUPPORTED_MEDIA_TYPE = 73, Http, http [415], sw [], Used,
        "body Content-Type is not the route's";

    DCP_BAD_ATTACHMENT = 80, Dcp, http [400], sw [], Used,
        "the request's attachment is not the sealed upload whose digest the SE signed";
    DCP_BAD_ENROLMENT = 81, Dcp, http [403], sw [], Used,
        "enrolment refused: no outstanding one-time code of this account matches the SE's signature (unknown accounts answer the same)";
    DCP_ENROLMENT_CODE_USED = 82, Dcp, http [409], sw [], Used,
        "enrolment code already used by another SE";
    DCP_TRANSFER_MISMATCH = 83, Dcp, http [422], sw [], Used,
        "the sealed redemption package is not the transfer the SE signed for";
    DCP_LOAD_ABOVE_HOLDING = 84, Dcp, http [422], sw [], Used,
        "load above the device class's holding limit (refused before anything is debited)";
    DCP_ISSUE_NOT_CANCELLABLE = 85, Dcp, http [422], sw [], Used,
        "CancelIssue of an Issue this DCP did not hand to this SE, or whose token was spent";
    DCP_REPORTS_DIGEST_MISMATCH = 86, Dcp, http [422], sw [], Used,
        "the sync upload's request reports are not those the SE signed for";
    DCP_LOAD_RECLAIMED = 87, Dcp, http [410], sw [], Used,
        "a load whose Issue its device did not collect in time: the DCP cancelled the Issue at the central bank and returned the amount to the account";
    DCP_RESERVED_88 = 88, Dcp, http [], sw [], Reserved,
        "held for the device protocol's next refusals";
    DCP_RESERVED_89 = 89, Dcp, http [], sw [], Reserved,
        "held for the device protocol's next refusals";

    NODE_SIGNER_FAILED = 91, Node, http [500], sw [], Used,
        "a back-office key (file or PKCS#11 token) failed to sign or gave a signature that does not verify: nothing changed, retry (a lost token session needs a restart)";
    NODE_KEYS_IN_DATABASE = 92, Node, http [500], sw [], Used,
        "at start: the database holds key seeds of an older node that are not the keys given (start once with `--keys DIR`, without `--pkcs11-module`, to move them into key files)";
    NODE_KEYS_CHANGED = 93, Node, http [500], sw [], Used,
        "at start: the database was set up with another root, settlement, opening or DCP key than the one given (wrong key directory or token)";

    NODE_MDS_FAILURE = 98, Node, http [500], sw [], Used,
        "MDS failure (its store): retry later";
    NODE_INTERNAL = 99, Node, http [500, 503], sw [], Used,
        "store failure or a panic in the service: retry later (503: serialization conflict that outlived the retries)";

    VERIFY_DECODE = 101, Verify, http [400, 422], sw [0x6A80, 0x6982], Used,
        "V1: not a canonical encoding of a known version (malformed body, CBOR or JSON)";
    VERIFY_HISTORY_BUDGET_EXCEEDED = 201, Verify, http [422], sw [0x6982], Used,
        "V2: more ancestry records than the history budget";
    VERIFY_DUPLICATE_RECORD = 301, Verify, http [422], sw [0x6982], Used,
        "V3: the same record twice in the ancestry";
    VERIFY_MISSING_ANCESTOR = 302, Verify, http [422], sw [0x6982], Used,
        "V3: an input refers to a record that is not earlier in the ancestry";
    VERIFY_UNREACHABLE_RECORD = 303, Verify, http [422], sw [0x6982], Used,
        "V3: an ancestry record the transfer does not depend on";
    VERIFY_UNKNOWN_OUTPUT = 401, Verify, http [422], sw [0x6982], Used,
        "V4: an input names an output index the record does not have";
    VERIFY_EMPTY_RECORD = 402, Verify, http [422], sw [0x6982], Used,
        "V4: a record with no outputs, or a transfer with no inputs";
    VERIFY_AMOUNT_FORM = 403, Verify, http [422], sw [0x6982], Used,
        "V4 (C0): a record with clear amounts under a confidential policy or the reverse, or a transfer whose inputs are of another amount form than its outputs";
    VERIFY_STREAM_TERMS = 404, Verify, http [422], sw [0x6982], Used,
        "V4 (SV1): a stream OPEN whose terms do not fit its output, or a stream in a confidential transfer";
    VERIFY_STREAM_SPEND = 405, Verify, http [422], sw [0x6982], Used,
        "V4 (SV2): a stream half consumed other than by its own close, or a close that consumes no stream half";
    VERIFY_UNKNOWN_ISSUER = 501, Verify, http [422], sw [0x6982], Used,
        "V5: an Issue signed by a key without the ISSUE role, or a certificate by a key without the CERTIFY role";
    VERIFY_CERTIFICATE_EXPIRED = 502, Verify, http [422], sw [0x6982], Used,
        "V5/V7: a DCP or pseudonym certificate past its expiry epoch";
    VERIFY_CERTIFICATE_REVOKED = 503, Verify, http [422], sw [0x6982], Used,
        "V5/V7: a revoked key or certificate";
    VERIFY_TOKEN_EXPIRED = 601, Verify, http [422], sw [0x6982], Used,
        "V6: an Issue whose tokens expired";
    VERIFY_MISSING_CERTIFICATE = 701, Verify, http [422], sw [0x6982], Used,
        "V7: a signer with no certificate in the package";
    VERIFY_UNUSED_CERTIFICATE = 702, Verify, http [422], sw [0x6982], Used,
        "V7: a certificate that signs nothing in the package, or appears twice";
    VERIFY_BAD_CERTIFICATE_SIGNATURE = 703, Verify, http [422], sw [0x6982], Used,
        "V7: a certificate whose issuer signature does not verify";
    VERIFY_BAD_KEY = 704, Verify, http [422], sw [0x6982], Used,
        "V7: a certified key that is not a valid point or is of small order";
    VERIFY_BAD_SIGNATURE = 801, Verify, http [422], sw [0x6982], Used,
        "V8: a record signature that does not verify, or the wrong number of them";
    VERIFY_SUITE_MISMATCH = 802, Verify, http [422], sw [0x6982], Used,
        "V8: a signature in another suite than its key";
    VERIFY_VALUE_NOT_CONSERVED = 901, Verify, http [422], sw [0x6982], Used,
        "V9: inputs and outputs of a transfer differ in value";
    VERIFY_ZERO_VALUE_OUTPUT = 902, Verify, http [422], sw [0x6982], Used,
        "V9: an output of value zero";
    VERIFY_AMOUNT_OVERFLOW = 903, Verify, http [422], sw [0x6982], Used,
        "V9: sums overflow u64";
    VERIFY_RANGE_BITS_MISMATCH = 904, Verify, http [422], sw [0x6982], Used,
        "V9 (C2): a confidential transfer's range proof has another bit-length than the policy's";
    VERIFY_RANGE_PROOF_INVALID = 905, Verify, http [422], sw [0x6982], Used,
        "V9 (C3): a range proof does not verify for the transfer's commitments and context (an output committing to a negative or out-of-range amount, or a proof from another transfer)";
    VERIFY_EXCESS_INVALID = 906, Verify, http [], sw [], Retired,
        "V9 (C4, until decision 0029): a confidential transfer's excess signature does not verify; the excess signature left the wire, the code is never answered nor reused";
    VERIFY_AUDIT_SEAL_INVALID = 907, Verify, http [422], sw [0x6982], Used,
        "V9 (C8): a confidential record without its audit seal (every output's opening sealed to settlement's key), or one not of one opening per output";
    VERIFY_STREAM_CLOSE_VALUE = 908, Verify, http [422], sw [0x6982], Used,
        "V9 (SV3): a stream close paying other than its ticks' value, or counting more ticks than the stream has";
    VERIFY_STREAM_CHAIN = 909, Verify, http [422], sw [0x6982], Used,
        "V9 (SV4): a stream claim whose element does not walk to the anchor: ticks never released";
    VERIFY_COMMITMENTS_UNBALANCED = 910, Verify, http [422], sw [0x6982], Used,
        "V9 (C4): a confidential transfer's output commitments do not sum to the commitments of the outputs it consumes (value created or destroyed)";
    VERIFY_OUTPUT_SPENT_TWICE = 1001, Verify, http [422], sw [0x6982], Used,
        "V10: one output consumed twice inside the package";
    VERIFY_WRONG_PAYEE = 1101, Verify, http [422], sw [0x6982], Used,
        "V11: the first output does not pay the payee's key";
    VERIFY_WRONG_AMOUNT = 1102, Verify, http [422], sw [0x6982], Used,
        "V11: the first output does not carry the requested amount";
    VERIFY_WRONG_NONCE = 1103, Verify, http [422], sw [0x6982], Used,
        "V11: the transfer answers another request";
    VERIFY_OPENING_UNREADABLE = 1104, Verify, http [422], sw [0x6982], Used,
        "V11 (C5): no opening for the payee, or it does not open with the payee's key (sealed: for output 0's commitment and this transfer; derived: no shared secret with its encapsulated key)";
    VERIFY_WRONG_OPENING = 1105, Verify, http [422], sw [0x6982], Used,
        "V11 (C6): the payee's opening does not open output 0's commitment (derived: with the requested amount)";
    VERIFY_WRONG_STREAM = 1106, Verify, http [422], sw [0x6982], Used,
        "V11 (SV5): the transfer does not open the stream the request asked for, or opens one for a one-off request";
    VERIFY_BAD_TRUST_SIGNATURE = 1201, Verify, http [422], sw [0x6982], Used,
        "V12: a policy, revocation list or DCP certificate not signed by the root";

    CENTRAL_UNKNOWN_DCP = 1300, Central, http [403], sw [], Used,
        "the calling party is not a DCP of the policy's trust list (or names an unknown DCP as payee)";
    CENTRAL_FOREIGN_ISSUE = 1301, Central, http [422], sw [], Used,
        "an Issue not signed by the calling DCP's key, without outputs, or of another value than the request's";
    CENTRAL_NOT_DELIVERABLE = 1302, Central, http [409], sw [], Used,
        "a delivery for a mailbox entry that does not wait for this DCP, of another amount, or delivered before with another Issue";
    CENTRAL_UNAVAILABLE = 1303, Central, http [503], sw [], Used,
        "the central bank could not be reached or answered without a result: nothing was decided for this request, retry";
    CENTRAL_ROLE_REVOKED = 1304, Central, http [401], sw [], Used,
        "the calling party's role certificate key was revoked by the central bank's operator (refused at the handshake, and on a connection opened before)";

    SE_STORAGE = 2001, Se, http [], sw [0x6F00], Used,
        "storage failed (reboot needed)";
    SE_STATE_CORRUPT = 2002, Se, http [], sw [0x6F00], Used,
        "stored state unreadable (tampered or wrong device key)";
    SE_HALTED = 2003, Se, http [], sw [0x6F00], Used,
        "halted after a storage error (reboot needed)";
    SE_NOT_PERSONALIZED = 2010, Se, http [], sw [0x6985], Used,
        "not personalized";
    SE_ALREADY_PERSONALIZED = 2011, Se, http [], sw [0x6985], Used,
        "already personalized";
    SE_NO_TRUST = 2012, Se, http [], sw [0x6985], Used,
        "no policy or revocation list installed";
    SE_NO_TIER = 2013, Se, http [], sw [0x6985], Used,
        "the policy has no tier for this SE's class and tier";
    SE_NO_CERTIFIED_KEY = 2014, Se, http [], sw [0x6985], Used,
        "no certified, unexpired offline key (sync first)";
    SE_NOT_FOR_THIS_SE = 2015, Se, http [], sw [0x6982], Used,
        "a certificate, Issue or order for another SE, class or tier";
    SE_STALE = 2016, Se, http [], sw [0x6985], Used,
        "stale or replayed policy, revocation list or sync grant";
    SE_NOT_REDEMPTION = 2017, Se, http [], sw [0x6982], Used,
        "not a redemption order signed by a trusted redemption key";
    SE_INSUFFICIENT_FUNDS = 2020, Se, http [], sw [0x6985], Used,
        "insufficient funds";
    SE_NEEDS_RENEWAL = 2021, Se, http [], sw [0x6985], Used,
        "enough value, but the package would pass the history budget: renew";
    SE_UNKNOWN_REQUEST = 2022, Se, http [], sw [0x6985], Used,
        "no open request for this package";
    SE_UNKNOWN_TRANSFER = 2023, Se, http [], sw [0x6985], Used,
        "a receipt or resend for a transfer this SE did not make";
    SE_BAD_RECEIPT = 2024, Se, http [], sw [0x6982], Used,
        "bad receipt";
    SE_CARDHOLDER_VERIFICATION_REQUIRED = 2025, Se, http [], sw [0x6982], Used,
        "cardholder verification required (VERIFY first)";
    SE_PIN_BLOCKED = 2026, Se, http [], sw [0x6983], Used,
        "PIN blocked (tries exhausted)";
    SE_WRONG_PIN = 2027, Se, http [], sw [0x63C0], Used,
        "wrong PIN (status word 63CX: X tries left)";
    SE_BAD_PIN = 2028, Se, http [], sw [0x6985], Used,
        "no PIN set, or a PIN of the wrong length";
    SE_ALREADY_IMPORTED = 2029, Se, http [], sw [0x6985], Used,
        "Issue already credited to this SE";
    SE_BAD_REQUEST_PARAMS = 2030, Se, http [], sw [0x6A80], Used,
        "request parameters do not fit the SE's state";
    SE_ALREADY_PAID = 2031, Se, http [], sw [0x6985], Used,
        "this request was paid before, in an earlier epoch (its log entry is gone after a sync): not paid twice (the SE remembers the last 128 paid requests)";
    SE_REQUEST_SIGNATURE_INVALID = 2032, Se, http [], sw [0x6982], Used,
        "the payee request's signature does not verify under its certificate's key (altered or invented by the terminal)";
    SE_ISSUE_CANCELLED = 2033, Se, http [], sw [0x6985], Used,
        "this SE cancelled this Issue: it never credits it (the DCP returned its value to the account)";
    SE_CONFLICTING_SPEND = 2034, Se, http [], sw [0x6982], Used,
        "package refused: it consumes an output that a record this SE holds consumes by another transfer (a double spend by a cloned payer, seen offline); nothing changed";
    SE_PROVING_NOT_DELEGATED = 2035, Se, http [], sw [0x6985], Used,
        "a range proof made outside the SE asked of an SE that does not delegate proving (a card, whose host is the payee's terminal, or clear amounts); nothing changed";
    SE_NO_PROVER = 2036, Se, http [], sw [0x6985], Used,
        "this SE makes no range proofs (a phone build whose processor proves): a payment with change goes through PAY P1 1 / P1 2; nothing changed";
    SE_RESERVED_2037 = 2037, Se, http [], sw [], Reserved,
        "held for the applet's next refusals";
    SE_RESERVED_2038 = 2038, Se, http [], sw [], Reserved,
        "held for the applet's next refusals";
    SE_RESERVED_2039 = 2039, Se, http [], sw [], Reserved,
        "held for the applet's next refusals";
    SE_STREAM_REPLAYED = 2040, Se, http [], sw [0x6985], Used,
        "stream tick refused: its element was taken (payee) or released (payer) before; nothing changed";
    SE_STREAM_SKIPPED = 2041, Se, http [], sw [0x6985], Used,
        "stream tick refused: it skips ticks (only the next tick is taken or released); nothing changed";
    SE_STREAM_FORGED = 2042, Se, http [], sw [0x6982], Used,
        "stream tick refused: the element does not hash to the latest one held (not of this chain); nothing changed";
    SE_STREAM_EXHAUSTED = 2043, Se, http [], sw [0x6985], Used,
        "stream tick refused: past the stream's last tick; nothing changed";
    SE_STREAM_CLOSED = 2044, Se, http [], sw [0x6985], Used,
        "stream tick refused: this SE closed the stream; nothing changed";
    SE_STREAM_UNKNOWN = 2045, Se, http [], sw [0x6A80], Used,
        "no stream with this id on this side of this SE";
    SE_STREAM_TERMS = 2046, Se, http [], sw [0x6A80], Used,
        "stream terms out of bounds (zero price or ticks, more than 65,536 ticks, value overflow), stream id in use, or a confidential policy (streams are clear amounts only)";
    SE_LIMIT_PAYMENT_AMOUNT = 2100, Se, http [], sw [0x6985], Used,
        "limit exceeded: per-payment amount";
    SE_LIMIT_HOLDING = 2101, Se, http [], sw [0x6985], Used,
        "limit exceeded: holding";
    SE_LIMIT_RECEIVING = 2102, Se, http [], sw [0x6985], Used,
        "limit exceeded: receiving";
    SE_LIMIT_OFFLINE_SPEND = 2103, Se, http [], sw [0x6985], Used,
        "limit exceeded: cumulative offline spend";
    SE_LIMIT_OFFLINE_PAYMENTS = 2104, Se, http [], sw [0x6985], Used,
        "limit exceeded: number of offline payments";
    SE_LIMIT_OFFLINE_EPOCHS = 2105, Se, http [], sw [0x6985], Used,
        "limit exceeded: offline epochs";
    SE_LIMIT_HISTORY_BUDGET = 2106, Se, http [], sw [0x6985], Used,
        "limit exceeded: history budget";
    SE_LIMIT_TOKENS = 2107, Se, http [], sw [0x6A84], Used,
        "table full: tokens";
    SE_LIMIT_OPEN_REQUESTS = 2108, Se, http [], sw [0x6A84], Used,
        "table full: open requests";
    SE_LIMIT_OUTGOING = 2109, Se, http [], sw [0x6A84], Used,
        "table full: outgoing payment log";
    SE_LIMIT_KEYS = 2110, Se, http [], sw [0x6985], Used,
        "table full: offline keys";
    SE_LIMIT_IMPORTED = 2111, Se, http [], sw [0x6985], Used,
        "table full: imported Issue ids (all unexpired)";
    SE_LIMIT_CERTIFICATES = 2112, Se, http [], sw [0x6985], Used,
        "table full: certificate store (the package is refused rather than stored without its certificates)";
    SE_LIMIT_REPORTS = 2113, Se, http [], sw [0x6985], Used,
        "table full: open requests plus unacknowledged request reports (128): sync first";
    SE_LIMIT_CANCELLED = 2114, Se, http [], sw [0x6985], Used,
        "table full: cancelled Issue ids (all unexpired)";
    SE_LIMIT_STREAMS = 2115, Se, http [], sw [0x6A84], Used,
        "table full: 8 open (unclosed) payment streams on this side";

    MDS_STORE = 3001, Mds, http [], sw [], Used,
        "MDS store failure (retried, not set aside)";
    MDS_UNKNOWN_INPUT = 3010, Mds, http [], sw [], Used,
        "a verified transfer spends an output of a record the MDS never ingested (set aside)";
    MDS_BATCH_TOO_LARGE = 3011, Mds, http [], sw [], Used,
        "ingest batch above `INGEST_BATCH_RECORDS_MAX` (set aside)";
    MDS_OVERFLOW = 3012, Mds, http [], sw [], Used,
        "a count or sum past what the MDS stores (set aside)";
    MDS_AMOUNT_OUT_OF_RANGE = 3013, Mds, http [], sw [], Used,
        "a record's outputs, one or in total, past `AMOUNT_STORED_MAX` = i64::MAX (set aside)";
    MDS_ALERT_NOT_FOUND = 3020, Mds, http [], sw [], Used,
        "no alert with this id";
    MDS_ILLEGAL_TRANSITION = 3021, Mds, http [], sw [], Used,
        "the alert cannot move to that lifecycle state";
    MDS_CORRUPT = 3030, Mds, http [], sw [], Used,
        "a stored MDS row this code did not write that way (retried, not set aside)";
}

/// What is wrong with a registry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not strictly ascending at `code`: a number twice, or out of order.
    NotAscending { code: u16 },
    /// `code` lies outside every range of its component.
    OutOfRange { code: u16 },
    /// Two ranges share a number (`code`), or a range ends before it starts.
    RangesOverlap { code: u16 },
    /// A meaning that is empty or not one line (or would break a
    /// Markdown table).
    BadMeaning { code: u16 },
}

/// Checks a table against a set of ranges. Run on [`REGISTRY`] and
/// [`RANGES`] at compile time, so a registry that breaks a rule does not
/// build.
pub const fn check(table: &[Code], ranges: &[(Component, u16, u16)]) -> Result<(), Problem> {
    let mut i = 0;
    while i < ranges.len() {
        let (_, lo, hi) = ranges[i];
        if lo > hi {
            return Err(Problem::RangesOverlap { code: lo });
        }
        let mut j = i + 1;
        while j < ranges.len() {
            let (_, lo2, hi2) = ranges[j];
            if lo <= hi2 && lo2 <= hi {
                let at = if lo > lo2 { lo } else { lo2 };
                return Err(Problem::RangesOverlap { code: at });
            }
            j += 1;
        }
        i += 1;
    }
    let mut k = 0;
    while k < table.len() {
        let c = table[k];
        if k > 0 && table[k - 1].code >= c.code {
            return Err(Problem::NotAscending { code: c.code });
        }
        if !owns_in(ranges, c.component, c.code) {
            return Err(Problem::OutOfRange { code: c.code });
        }
        let m = c.meaning.as_bytes();
        if m.is_empty() {
            return Err(Problem::BadMeaning { code: c.code });
        }
        let mut b = 0;
        while b < m.len() {
            if m[b] == b'\n' || m[b] == b'|' {
                return Err(Problem::BadMeaning { code: c.code });
            }
            b += 1;
        }
        k += 1;
    }
    Ok(())
}

const _: () = match check(REGISTRY, RANGES) {
    Ok(()) => {}
    Err(_) => {
        panic!("tally-codes: the registry breaks a rule; `cargo test -p tally-codes` says which")
    }
};

/// The registry's entry for `code`, if registered.
pub const fn lookup(code: u16) -> Option<&'static Code> {
    let mut i = 0;
    while i < REGISTRY.len() {
        if REGISTRY[i].code == code {
            return Some(&REGISTRY[i]);
        }
        i += 1;
    }
    None
}

/// Whether `code` is registered, in use (not reserved), and owned by
/// `component`: what a component's `code()` must return.
pub const fn is_used_by(code: u16, component: Component) -> bool {
    match lookup(code) {
        Some(c) => c.component as u8 == component as u8 && matches!(c.state, State::Used),
        None => false,
    }
}
