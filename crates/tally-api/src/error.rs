//! One mapping from back-office rejections to HTTP statuses, shared by the
//! HTTP layer and the in-process connector, and the JSON error envelope.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_dcp::BackofficeError;
use tally_store::StoreError;
use tally_wallet::agent::BackendError;

use crate::views::{ErrorBody, ErrorEnvelope};

/// The codes the HTTP layer answers with itself, under the names its
/// handlers use. Every number is registered in tally-codes
/// (docs/CODES.md) with its status and meaning; the service's codes
/// ([`BackofficeError::code`]) are used as they are.
pub mod code {
    use tally_codes as codes;

    /// No code: no HTTP answer at all (client side), or an answer without
    /// an error envelope.
    pub const UNREACHABLE: u16 = codes::NO_CODE;
    /// Missing or wrong operator bearer token (401).
    pub const UNAUTHORIZED: u16 = codes::HTTP_UNAUTHORIZED;
    /// Request body above the configured limit (413).
    pub const BODY_TOO_LARGE: u16 = codes::HTTP_BODY_TOO_LARGE;
    /// No route with this path (404).
    pub const NO_ROUTE: u16 = codes::HTTP_NO_ROUTE;
    /// The path exists, the method does not (405).
    pub const METHOD_NOT_ALLOWED: u16 = codes::HTTP_METHOD_NOT_ALLOWED;
    /// The path names something that does not exist (an escrow) (404).
    pub const NOT_FOUND: u16 = codes::HTTP_NOT_FOUND;
    /// A path parameter that does not parse (an alert id that is not a
    /// decimal integer, a key id that is not 64 hex digits) (400).
    pub const BAD_PATH_PARAMETER: u16 = codes::HTTP_BAD_PATH_PARAMETER;
    /// An account name in the path that is empty, longer than 128
    /// characters or has characters other than letters, digits, '-', '_'
    /// (400).
    pub const BAD_ACCOUNT_NAME: u16 = codes::HTTP_BAD_ACCOUNT_NAME;
    /// A query string on a route (no route takes query parameters) (400).
    pub const UNEXPECTED_QUERY: u16 = codes::HTTP_UNEXPECTED_QUERY;
    /// A body whose Content-Type is not the route's (415).
    pub const UNSUPPORTED_MEDIA_TYPE: u16 = codes::HTTP_UNSUPPORTED_MEDIA_TYPE;
    /// Malformed body (CBOR or JSON); the same number as the service's
    /// decode rejection (400).
    pub const MALFORMED: u16 = codes::VERIFY_DECODE;
    /// Store failure or a panic in the service: retry later (500).
    pub const INTERNAL: u16 = codes::NODE_INTERNAL;
    /// Too many device requests from one SE in a short time (429): wait
    /// and retry; nothing was done.
    pub const RATE_LIMITED: u16 = codes::HTTP_RATE_LIMITED;
}

fn store_failure(e: &BackofficeError) -> Option<&StoreError> {
    e.store_failure()
}

/// The HTTP status of a back-office rejection: 4xx for everything the
/// caller can fix or must not retry as is, 5xx only for store failures
/// (503 for a serialization conflict that outlived the retries). The
/// service owns the mapping ([`BackofficeError::status`]): it stores a
/// failed device request's status with its refusal.
pub fn status_for(e: &BackofficeError) -> u16 {
    e.status()
}

/// The message sent to callers: the service's own text, except for
/// store failures, whose details (SQL, hosts) stay in the server's log.
fn public_message(e: &BackofficeError) -> String {
    match store_failure(e) {
        Some(StoreError::Conflict) => "store busy (serialization conflict): retry".into(),
        Some(_) => "store failure: retry later".into(),
        None => e.to_string(),
    }
}

/// A back-office rejection as the wallet sees it, over HTTP or in process.
pub fn backend_error(e: &BackofficeError) -> BackendError {
    BackendError {
        status: status_for(e),
        code: e.code(),
        message: public_message(e),
    }
}

/// An error answer of the HTTP layer: status, stable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(400, code::MALFORMED, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, code::INTERNAL, message)
    }
}

impl From<BackofficeError> for ApiError {
    fn from(e: BackofficeError) -> ApiError {
        if store_failure(&e).is_some() {
            eprintln!("tally-api: store failure: {e}");
        }
        let b = backend_error(&e);
        ApiError::new(b.status, b.code, b.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: self.message,
            },
        };
        // Serializing a struct of a number and a string cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::codec::CodecError;
    use tally_core::verify::VerifyError;
    use tally_directory::DirectoryError;
    use tally_ledger::ledger::LedgerError;
    use tally_ledger::settlement::SettlementError;

    #[test]
    fn store_failures_are_5xx_and_everything_else_4xx() {
        let cases: Vec<(BackofficeError, u16)> = vec![
            (BackofficeError::Decode(CodecError::Truncated), 400),
            (BackofficeError::BadKey, 400),
            (BackofficeError::BadDeviceSignature, 403),
            (BackofficeError::DeviceNotActive, 403),
            (
                BackofficeError::Directory(DirectoryError::BadAttestation),
                403,
            ),
            (BackofficeError::UnknownDevice, 404),
            (
                BackofficeError::Ledger(LedgerError::UnknownAccount("user:x".into())),
                404,
            ),
            (BackofficeError::Replay, 409),
            (BackofficeError::UnknownRedemption, 409),
            (
                BackofficeError::Ledger(LedgerError::IdempotencyKeyReused("k".into())),
                409,
            ),
            (BackofficeError::Verify(VerifyError::BadSignature), 422),
            (BackofficeError::Ledger(LedgerError::ZeroAmount), 422),
            (
                BackofficeError::Settlement(SettlementError::Ledger(
                    LedgerError::InsufficientFunds {
                        account: "a".into(),
                        balance: 1,
                        amount: 2,
                    },
                )),
                422,
            ),
            (BackofficeError::WrongRedemption, 422),
            (BackofficeError::Store(StoreError::Db("x".into())), 500),
            (BackofficeError::Store(StoreError::Conflict), 503),
            (
                BackofficeError::Ledger(LedgerError::Store(StoreError::Db("x".into()))),
                500,
            ),
            (
                BackofficeError::Settlement(SettlementError::Ledger(LedgerError::Store(
                    StoreError::Db("x".into()),
                ))),
                500,
            ),
            (
                BackofficeError::Directory(DirectoryError::Store(StoreError::Db("x".into()))),
                500,
            ),
            (
                BackofficeError::RevocationKeyNotOpened(tally_core::Hash32([1; 32])),
                403,
            ),
            (
                BackofficeError::Directory(DirectoryError::TooManyRevocations {
                    keys: 65,
                    max: 64,
                }),
                400,
            ),
            (
                BackofficeError::Directory(DirectoryError::RevocationListFull {
                    listed: 1024,
                    adding: 1,
                    max: 1024,
                }),
                409,
            ),
            (
                BackofficeError::RefusedBefore {
                    code: 11,
                    status: 422,
                    message: "m".into(),
                },
                422,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(status_for(&e), want, "{e:?}");
            assert_eq!(
                status_for(&e) < 500,
                e.is_client_error(),
                "status and is_client_error disagree for {e:?}"
            );
        }
    }

    #[test]
    fn store_details_are_not_sent_to_callers() {
        let e = BackofficeError::Store(StoreError::Db("password=hunter2".into()));
        let b = backend_error(&e);
        assert_eq!(b.code, 99);
        assert!(!b.message.contains("hunter2"));
    }
}
