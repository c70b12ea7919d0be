//! The OpenAPI 3.1 document, written by hand (a test checks that it lists
//! exactly the routes of [`crate::ROUTES`]).

use serde_json::{Value, json};

const CBOR: &str = "application/cbor";
const JSON: &str = "application/json";

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn content(media: &str, schema: Value) -> Value {
    json!({ media: { "schema": schema } })
}

/// Every registered code an HTTP error answer can carry.
fn http_codes() -> Vec<u16> {
    tally_codes::REGISTRY
        .iter()
        .filter(|c| c.state == tally_codes::State::Used && !c.http.is_empty())
        .map(|c| c.code)
        .collect()
}

fn error_response(status: u16) -> Value {
    let summary = match status {
        400 => {
            "Malformed body (CBOR or JSON), bad key, a path parameter that does not parse, a bad account name or a query string"
        }
        401 => "Missing or wrong operator bearer token",
        403 => {
            "Device signature does not verify, the device is not active, or an enrolment is refused"
        }
        404 => "Unknown device, account or route",
        409 => {
            "Replayed counter, reused idempotency key, an enrolment code used by another SE, or conflicting state"
        }
        413 => "Body above the configured limit",
        415 => "The body's Content-Type is not the route's",
        422 => "Refused by the rules: package verification, ledger rules, double spend",
        500 => "Store failure; retry later",
        503 => "Store busy (serialization conflict); retry",
        _ => "Error",
    };
    // The codes this status can carry, from the registry (docs/CODES.md).
    let codes: Vec<String> = tally_codes::REGISTRY
        .iter()
        .filter(|c| c.state == tally_codes::State::Used && c.http.contains(&status))
        .map(|c| c.code.to_string())
        .collect();
    let description = if codes.is_empty() {
        summary.to_string()
    } else {
        format!("{summary} (codes {}; docs/CODES.md)", codes.join(", "))
    };
    json!({ "description": description, "content": content(JSON, schema_ref("Error")) })
}

struct Op<'a> {
    summary: &'a str,
    operator: bool,
    request: Option<(&'a str, Value)>,
    ok: (&'a str, Value),
    errors: &'a [u16],
}

fn operation(id: &str, o: Op<'_>) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "200".into(),
        json!({ "description": "OK", "content": content(o.ok.0, o.ok.1) }),
    );
    let mut errors: Vec<u16> = o.errors.to_vec();
    if o.operator {
        errors.push(401);
    }
    if o.request.is_some() {
        errors.extend([413, 415]);
    }
    // Every route refuses a query string.
    errors.extend([400, 500, 503]);
    errors.sort_unstable();
    errors.dedup();
    for s in errors {
        responses.insert(s.to_string(), error_response(s));
    }
    let mut op = json!({
        "operationId": id,
        "summary": o.summary,
        "responses": responses,
    });
    if let Some((media, schema)) = o.request {
        op["requestBody"] = json!({ "required": true, "content": content(media, schema) });
    }
    if o.operator {
        op["security"] = json!([{ "operator": [] }]);
    }
    op
}

fn binary(description: &str) -> Value {
    json!({ "type": "string", "contentMediaType": CBOR, "description": description })
}

fn account_param() -> Value {
    json!([{
        "name": "name", "in": "path", "required": true,
        "description": "User account name: 1 to 128 letters, digits, '-' and '_' (otherwise 400, code 71)",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 1, "maxLength": crate::views::ACCOUNT_NAME_CHARS_MAX }
    }])
}

fn int64(description: &str) -> Value {
    json!({ "type": "integer", "format": "int64", "description": description })
}

/// The whole document.
pub fn document() -> Value {
    let mut deposit = operation(
        "deposit",
        Op {
            summary: "DCP: credit a user account from the DCP settlement account (opens it if needed)",
            operator: true,
            request: Some((JSON, schema_ref("AmountRequest"))),
            ok: (JSON, schema_ref("Balance")),
            errors: &[400, 409, 413, 422],
        },
    );
    deposit["parameters"] = account_param();
    let mut balance = operation(
        "accountBalance",
        Op {
            summary: "Balance of a user account",
            operator: true,
            request: None,
            ok: (JSON, schema_ref("Balance")),
            errors: &[400, 404],
        },
    );
    balance["parameters"] = account_param();
    let mut enrolment = operation(
        "enrolmentCode",
        Op {
            summary: "DCP: a one-time enrolment code for a user account (opens it if needed), to deliver out of band; it enrols one SE",
            operator: true,
            request: None,
            ok: (JSON, schema_ref("EnrolmentCode")),
            errors: &[400],
        },
    );
    enrolment["parameters"] = account_param();
    let path_param = |name: &str, description: &str, schema: Value| json!([{ "name": name, "in": "path", "required": true, "description": description, "schema": schema }]);
    let mut transition = operation(
        "alertTransition",
        Op {
            summary: "Move an MDS alert along its lifecycle: open → escrow_opened → device_revoked → closed (or open → closed)",
            operator: true,
            request: Some((
                JSON,
                json!({ "type": "object", "required": ["to", "note"],
                "properties": { "to": { "type": "string", "enum": ["open", "escrow_opened", "device_revoked", "closed"] },
                                "note": { "type": "string" } } }),
            )),
            ok: (JSON, json!({ "type": "object" })),
            errors: &[400, 404, 409, 413],
        },
    );
    transition["parameters"] = path_param(
        "id",
        "Alert id, decimal digits (otherwise 400, code 70)",
        json!({ "type": "integer", "format": "int64", "minimum": 0 }),
    );
    let mut escrow = operation(
        "escrow",
        Op {
            summary: "The escrow ciphertext (hex) in the settled certificate of a pseudonym, for an opening request",
            operator: true,
            request: None,
            ok: (
                JSON,
                json!({ "type": "object", "required": ["key_id", "escrow"],
                "properties": { "key_id": { "type": "string" }, "escrow": { "type": "string" } } }),
            ),
            errors: &[400, 404],
        },
    );
    escrow["parameters"] = path_param(
        "key_id",
        "Pseudonym key id, 64 hex digits (otherwise 400, code 70)",
        json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" }),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tally back office",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Central bank ledger and settlement, SE directory and DCP of the Tally \
                offline CBDC. Device traffic is canonical CBOR (docs/SPEC.md); operator calls \
                are JSON with a bearer token. Every error is the Error object with a stable code \
                (docs/API.md). No route takes query parameters. Operator routes check the token \
                before anything else, so a caller without it gets the same 401 whatever the path \
                names."
        },
        "paths": {
            "/": { "get": operation("dashboard", Op {
                summary: "Dashboard (server-rendered HTML)",
                operator: false, request: None,
                ok: ("text/html", json!({ "type": "string" })), errors: &[],
            })},
            "/v1/trust": { "get": operation("trust", Op {
                summary: "Root key, policy, revocation list and settlement's root-signed sealing key: CBOR [PublicKey, Policy, RevocationList, SealingKey]",
                operator: false, request: None,
                ok: (CBOR, binary("[root PublicKey, Policy, RevocationList, SealingKey]")), errors: &[],
            })},
            "/v1/trust.json": { "get": operation("trustJson", Op {
                summary: "The trust bundle for people: fields and hex of each canonical encoding, plus the root-certified settlement key (settlement_key) that signs settlement results",
                operator: false, request: None,
                ok: (JSON, schema_ref("TrustJson")), errors: &[],
            })},
            "/v1/devices/register": { "post": operation("registerDevice", Op {
                summary: "Onboarding: register an SE (trusted manufacturer's certificate, the SE's signature over the account's one-time enrolment code) under a user account; idempotent",
                operator: false,
                request: Some((CBOR, binary("Registration [2, MakerCertificate, account, SE's enrolment signature over the account's one-time code]"))),
                ok: (CBOR, binary("se_id: byte string of 32 bytes")),
                errors: &[400, 403, 409, 413],
            })},
            "/v1/devices/request": { "post": operation("deviceRequest", Op {
                summary: "A signed device request (certify, load, redemption, redeem, sync, online payment, balance); idempotent: the same request returns the same bytes",
                operator: false,
                request: Some((CBOR, binary("DeviceRequest [2, se_id, counter, op, signature, attachment], built and signed by the SE"))),
                ok: (CBOR, binary("DeviceResponse [kind, body]")),
                errors: &[400, 403, 404, 409, 413, 422, 429],
            })},
            "/v1/cb/mint": { "post": operation("mint", Op {
                summary: "Central bank: mint into the DCP settlement account; returns the invariant",
                operator: true,
                request: Some((JSON, schema_ref("AmountRequest"))),
                ok: (JSON, schema_ref("Invariant")),
                errors: &[400, 409, 413, 422],
            })},
            "/v1/accounts/{name}/deposit": { "post": deposit },
            "/v1/accounts/{name}": { "get": balance },
            "/v1/accounts/{name}/enrolment-codes": { "post": enrolment },
            "/v1/epoch/advance": { "post": operation("advanceEpoch", Op {
                summary: "Start the next sync epoch",
                operator: true, request: None,
                ok: (JSON, schema_ref("Epoch")), errors: &[],
            })},
            "/v1/devices": { "get": operation("listDevices", Op {
                summary: "The SE directory",
                operator: true, request: None,
                ok: (JSON, json!({ "type": "array", "items": schema_ref("Device") })), errors: &[],
            })},
            "/v1/dcp/reconcile": { "get": operation("reconcileDcp", Op {
                summary: "The DCP's book of its customers' accounts against its settlement account at the central bank",
                operator: true, request: None,
                ok: (JSON, schema_ref("Reconcile")), errors: &[],
            })},
            "/v1/double-spends": { "get": operation("listDoubleSpends", Op {
                summary: "Double spends detected at settlement, oldest first",
                operator: true, request: None,
                ok: (JSON, json!({ "type": "array", "items": schema_ref("DoubleSpend") })), errors: &[],
            })},
            "/v1/mds/alerts": { "get": operation("listAlerts", Op {
                summary: "MDS alerts (double spends, counterfeits, AML signals) with evidence and lifecycle state",
                operator: true, request: None,
                ok: (JSON, json!({ "type": "array", "items": { "type": "object" } })), errors: &[],
            })},
            "/v1/mds/alerts/{id}/transition": { "post": transition },
            "/v1/escrows/{key_id}": { "get": escrow },
            "/v1/directory/revoke": { "post": operation("revokeOpened", Op {
                summary: "Containment: revoke the SE an escrow opening named (identity digest) and list its pseudonyms on the next revocation list",
                operator: true,
                request: Some((JSON, json!({ "type": "object", "required": ["id_digest", "key_ids", "reason"],
                    "properties": { "id_digest": { "type": "string" }, "key_ids": { "type": "array", "items": { "type": "string" } },
                                    "reason": { "type": "string" }, "alert": { "type": "integer" } } }))),
                ok: (JSON, json!({ "type": "object", "required": ["se_id", "revocation_serial", "revoked_keys"] })),
                errors: &[400, 403, 404, 409, 413],
            })},
            "/mds/indicators": { "get": operation("indicators", Op {
                summary: "Econometric indicators of offline money (aggregates only)",
                operator: false, request: None,
                ok: (JSON, json!({ "type": "object" })), errors: &[],
            })},
            "/ledger/invariant": { "get": operation("ledgerInvariant", Op {
                summary: "The ledger invariant, published by the central bank",
                operator: false, request: None,
                ok: (JSON, schema_ref("Invariant")), errors: &[],
            })},
            "/metrics": { "get": operation("metrics", Op {
                summary: "Prometheus text exposition",
                operator: false, request: None,
                ok: ("text/plain", json!({ "type": "string" })), errors: &[],
            })},
            "/openapi.json": { "get": operation("openapi", Op {
                summary: "This document",
                operator: false, request: None,
                ok: (JSON, json!({ "type": "object" })), errors: &[],
            })},
        },
        "components": {
            "securitySchemes": {
                "operator": { "type": "http", "scheme": "bearer", "description": "The node's operator token" }
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"], "additionalProperties": false,
                    "properties": { "error": {
                        "type": "object", "required": ["code", "message"], "additionalProperties": false,
                        "properties": {
                            "code": { "type": "integer", "minimum": 0, "maximum": 65535,
                                "enum": http_codes(),
                                "description": "Stable code: one of the codes docs/CODES.md registers with an HTTP status \
                                    (generated from crates/tally-codes). A failed device request is final: the same bytes \
                                    get the same error again" },
                            "message": { "type": "string" }
                        }
                    }}
                },
                "AmountRequest": {
                    "type": "object", "required": ["idempotency_key", "amount"], "additionalProperties": false,
                    "properties": {
                        "idempotency_key": { "type": "string", "minLength": 1, "maxLength": 128 },
                        "amount": { "type": "integer", "minimum": 1, "description": "Minor units" }
                    }
                },
                "Invariant": {
                    "type": "object",
                    "required": ["minted", "redeemed", "accounts", "offline_float", "loss", "issuance",
                                 "negative_accounts", "journal_entries", "totals_match", "holds"],
                    "properties": {
                        "minted": int64("Minted by the central bank"),
                        "redeemed": int64("Redeemed to the central bank"),
                        "accounts": int64("Sum of DCP and user accounts"),
                        "offline_float": int64("Value held offline in SEs"),
                        "loss": int64("Scheme loss account (<= 0)"),
                        "issuance": int64("Issuance account (= redeemed - minted)"),
                        "negative_accounts": int64("Accounts below zero (must be 0)"),
                        "journal_entries": int64("Transfers in the journal"),
                        "totals_match": { "type": "boolean", "description": "The running totals the ledger keeps per transaction (its O(1) production assertion) equal this full re-sum" },
                        "holds": { "type": "boolean", "description": "accounts + offline_float + loss = minted - redeemed, the running totals match, and the rest" }
                    }
                },
                "EnrolmentCode": { "type": "object", "required": ["account", "code"],
                    "properties": { "account": { "type": "string" }, "code": { "type": "string" } } },
                "Balance": { "type": "object", "required": ["balance"],
                    "properties": { "balance": int64("Minor units") } },
                "Reconcile": { "type": "object",
                    "required": ["dcp", "book_sum", "in_flight", "book_audit_ok", "settlement_account", "matches"],
                    "properties": {
                        "dcp": { "type": "integer", "minimum": 0 },
                        "book_sum": { "type": "integer" },
                        "in_flight": { "type": "integer" },
                        "book_audit_ok": { "type": "boolean" },
                        "settlement_account": { "type": "integer" },
                        "matches": { "type": "boolean" } } },
                "Epoch": { "type": "object", "required": ["epoch"],
                    "properties": { "epoch": { "type": "integer", "minimum": 0 } } },
                "Device": {
                    "type": "object", "required": ["se_id", "class", "class_name", "maker", "status"],
                    "properties": {
                        "se_id": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                        "class": { "type": "integer" },
                        "class_name": { "enum": ["card", "phone", "iot", "dcp", "unknown"] },
                        "maker": { "type": "string" },
                        "status": { "enum": ["active", "suspended", "revoked"] }
                    }
                },
                "DoubleSpend": {
                    "type": "object", "required": ["record", "index", "value", "offender_key"],
                    "properties": {
                        "record": { "type": "string", "description": "Hex id of the record whose output was spent twice" },
                        "index": { "type": "integer" },
                        "value": { "type": "integer" },
                        "offender_key": { "type": "string", "description": "Hex of the pseudonym key (canonical CBOR) that signed both spends" }
                    }
                },
                "TrustJson": {
                    "type": "object", "required": ["epoch", "root", "policy", "revocations", "sealing_key", "settlement_key"],
                    "properties": {
                        "epoch": { "type": "integer" },
                        "root": { "type": "object" },
                        "policy": { "type": "object" },
                        "revocations": { "type": "object" },
                        "sealing_key": { "type": "object" },
                        "settlement_key": { "type": "object", "description": "suite, key (hex), cbor: SettlementKey [1, key, root's signature] (SPEC.md §9.6)" }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_exactly_the_routes_of_the_router() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in crate::ROUTES {
            let op = &paths.get(*path).unwrap_or_else(|| panic!("{path} missing"))[*method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(op["responses"]["200"]["content"].is_object(), "{path}");
            for (status, r) in op["responses"].as_object().expect("responses") {
                if status != "200" {
                    assert_eq!(
                        r["content"][JSON]["schema"]["$ref"],
                        "#/components/schemas/Error"
                    );
                }
            }
        }
        let methods: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum();
        assert_eq!(methods, crate::ROUTES.len());
    }
}
