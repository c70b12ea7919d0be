//! Typed extractors: every part of a request a handler reads is parsed here
//! into a value or refused with the JSON error and its own code, never with
//! axum's plain-text rejections. Handlers list [`Operator`] first, so a
//! caller without the token gets 401 before anything about the path or the
//! body is looked at: the answer to a stranger is the same whether the
//! account (or alert, or pseudonym) named exists, is unknown or does not
//! even parse.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tally_core::Hash32;

use crate::error::{ApiError, code};
use crate::views::{ACCOUNT_NAME_CHARS_MAX, parse_hash};
use crate::{ApiConfig, AppState};

const CBOR: &str = "application/cbor";
const JSON: &str = "application/json";
/// Digits of the largest alert id (`i64::MAX` has 19).
const ALERT_ID_DIGITS_MAX: usize = 19;

/// Proof that the caller showed the operator bearer token.
pub(crate) struct Operator;

/// Constant-time comparison: the token must not leak through timing.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(headers: &HeaderMap, cfg: &ApiConfig) -> Result<Operator, ApiError> {
    let refused = |m: &str| ApiError::new(401, code::UNAUTHORIZED, m);
    if cfg.operator_token.is_empty() {
        return Err(refused(
            "operator endpoints are disabled (no token configured)",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| refused("missing bearer token (Authorization: Bearer <token>)"))?;
    if same_secret(given.trim().as_bytes(), cfg.operator_token.as_bytes()) {
        Ok(Operator)
    } else {
        Err(refused("wrong bearer token"))
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        authorize(&parts.headers, &s.cfg)
    }
}

/// The route's one path parameter as text (percent-decoded, UTF-8).
async fn path_text(parts: &mut Parts, s: &AppState, what: &str) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, s)
        .await
        .map(|Path(t)| t)
        .map_err(|_| {
            ApiError::new(
                400,
                code::BAD_PATH_PARAMETER,
                format!("{what}: not UTF-8 text"),
            )
        })
}

/// `{name}` of the account routes: 1 to [`ACCOUNT_NAME_CHARS_MAX`]
/// characters, letters, digits, '-' and '_' (the names devices can
/// register under).
pub(crate) struct AccountName(pub(crate) String);

impl AccountName {
    pub(crate) fn parse(name: &str) -> Result<AccountName, ApiError> {
        let n = name.chars().count();
        // The service's rule (`valid_account_name`) plus the length bound.
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if n == 0 || n > ACCOUNT_NAME_CHARS_MAX || !plain {
            return Err(ApiError::new(
                400,
                code::BAD_ACCOUNT_NAME,
                format!("account name: 1 to {ACCOUNT_NAME_CHARS_MAX} letters, digits, '-' or '_'"),
            ));
        }
        Ok(AccountName(name.to_owned()))
    }
}

impl FromRequestParts<AppState> for AccountName {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, s).await {
            Ok(Path(name)) => AccountName::parse(&name),
            // Not UTF-8 after percent-decoding: not a name either.
            Err(_) => AccountName::parse(""),
        }
    }
}

/// `{id}` of an MDS alert: decimal digits only (no sign, no spaces),
/// at most `i64::MAX`.
pub(crate) struct AlertId(pub(crate) i64);

impl FromRequestParts<AppState> for AlertId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let t = path_text(parts, s, "alert id").await?;
        let digits = !t.is_empty()
            && t.len() <= ALERT_ID_DIGITS_MAX
            && t.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| t.parse::<i64>().ok())
            .flatten()
            .map(AlertId)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    code::BAD_PATH_PARAMETER,
                    "alert id: a decimal integer from 0 to 9223372036854775807",
                )
            })
    }
}

/// `{key_id}` of a pseudonym: exactly 64 hex digits.
pub(crate) struct KeyId(pub(crate) Hash32);

impl FromRequestParts<AppState> for KeyId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let t = path_text(parts, s, "key id").await?;
        let hex_only = t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
        hex_only
            .then(|| parse_hash(&t))
            .flatten()
            .map(KeyId)
            .ok_or_else(|| ApiError::new(400, code::BAD_PATH_PARAMETER, "key id: 64 hex digits"))
    }
}

/// The media type of the body, without parameters, lower case.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = v.split(';').next().unwrap_or("").trim();
    Some(essence.to_ascii_lowercase())
}

/// The body, after its content type was checked: 415 for another media
/// type (or none), 413 above the limit.
async fn body_of(req: Request, s: &AppState, media: &str) -> Result<Bytes, ApiError> {
    if media_type(req.headers()).as_deref() != Some(media) {
        return Err(ApiError::new(
            415,
            code::UNSUPPORTED_MEDIA_TYPE,
            format!("this route takes Content-Type: {media}"),
        ));
    }
    let limit = s.cfg.body_limit_bytes;
    Bytes::from_request(req, s).await.map_err(|r| {
        if r.status().as_u16() == 413 {
            ApiError::new(
                413,
                code::BODY_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            )
        } else {
            ApiError::malformed(format!("could not read the body: {}", r.body_text()))
        }
    })
}

/// The body of a call between parties (central bank, DCPs, MDS), whose
/// router sets the limit with `DefaultBodyLimit`: above it, 413 in the
/// error envelope (code 61) like every other refusal, not axum's plain
/// text.
pub(crate) struct PartyBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for PartyBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, s: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, s)
            .await
            .map(PartyBody)
            .map_err(|r| {
                if r.status().as_u16() == 413 {
                    ApiError::new(413, code::BODY_TOO_LARGE, "request body exceeds the limit")
                } else {
                    ApiError::malformed(format!("could not read the body: {}", r.body_text()))
                }
            })
    }
}

/// A device body: `Content-Type: application/cbor`, decoded by the service.
pub(crate) struct CborBody(pub(crate) Bytes);

impl FromRequest<AppState> for CborBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, s: &AppState) -> Result<Self, ApiError> {
        body_of(req, s, CBOR).await.map(CborBody)
    }
}

/// An operator body: `Content-Type: application/json`, decoded strictly
/// into `T` (malformed: 101).
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, s: &AppState) -> Result<Self, ApiError> {
        let b = body_of(req, s, JSON).await?;
        serde_json::from_slice(&b)
            .map(JsonBody)
            .map_err(|e| ApiError::malformed(format!("malformed JSON: {e}")))
    }
}

/// Middleware of the matched routes: none takes query parameters, so a
/// query string (well formed or not) is refused rather than ignored.
pub(crate) async fn refuse_query(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return ApiError::new(
            400,
            code::UNEXPECTED_QUERY,
            "this route takes no query parameters",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_bounded_and_plain() {
        assert!(AccountName::parse("alice_1-b").is_ok());
        assert!(AccountName::parse(&"a".repeat(ACCOUNT_NAME_CHARS_MAX)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(ACCOUNT_NAME_CHARS_MAX + 1),
            "ca rol".into(),
            "dcp:1".into(),
            "é".into(),
            "a/b".into(),
        ] {
            let e = AccountName::parse(&bad).err().expect("refused");
            assert_eq!((e.status, e.code), (400, code::BAD_ACCOUNT_NAME), "{bad:?}");
        }
    }
}
