//! The central bank's and the MDS's routers answer every refusal in the
//! error envelope (`{"error": {"code", "message"}}`), as the device-facing router
//! does: an unknown route (404, code 62), a wrong method (405, code 63)
//! and a body above the router's limit (413, code 61) — not axum's plain
//! text — and nothing is executed.

use std::sync::Arc;

use tally_api::{CENTRAL_BODY_BYTES_MAX, MDS_BODY_BYTES_MAX, central_router, mds_router};
use tally_central::{CentralBank, CentralKeys, NodeKeys, development_escrow_key};
use tally_mds::{Mds, MdsConfig};
use tally_store::Store;

/// Serves `router` over plain HTTP on 127.0.0.1 (the role certificate is
/// not what these refusals depend on) and returns its base URL; the
/// server lives as long as the returned runtime.
fn serve(router: axum::Router) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listen");
    let addr = listener.local_addr().expect("address");
    rt.spawn(async move { axum::serve(listener, router).await });
    (rt, format!("http://{addr}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and the envelope's code.
fn envelope(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, u64) {
    let mut r = r.expect("an HTTP answer");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().expect("a text body");
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("not the JSON error envelope ({e}): {body:?}"));
    let code = v["error"]["code"].as_u64().expect("code");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, code)
}

fn bank() -> Arc<CentralBank> {
    let k = NodeKeys::development();
    Arc::new(
        CentralBank::open(
            Store::sqlite_memory().unwrap(),
            Store::sqlite_memory().unwrap(),
            CentralKeys {
                root: k.root.clone(),
                settlement: k.settlement.clone(),
                opening: k.opening.clone(),
            },
            development_escrow_key(),
            None,
            &[(1, k.dcp.public_key())],
        )
        .expect("central bank"),
    )
}

#[test]
fn the_central_banks_router_refuses_in_the_envelope_and_executes_nothing() {
    let bank = bank();
    let before = bank.invariant().expect("invariant");
    let (_rt, base) = serve(central_router(bank.clone(), tally_tls::RevokedKeys::new()));
    let a = agent();
    assert_eq!(
        envelope(a.get(format!("{base}/central/v1/no-such-route")).call()),
        (404, u64::from(tally_codes::HTTP_NO_ROUTE))
    );
    assert_eq!(
        envelope(a.get(format!("{base}/central/v1/rpc")).call()),
        (405, u64::from(tally_codes::HTTP_METHOD_NOT_ALLOWED))
    );
    // One byte above the limit, on the DCP interface and on an admin route.
    let big = vec![0u8; CENTRAL_BODY_BYTES_MAX + 1];
    for path in [
        "/central/v1/rpc",
        "/central/v1/admin/mint",
        "/central/v1/mds/ack",
    ] {
        assert_eq!(
            envelope(
                a.post(format!("{base}{path}"))
                    .header("content-type", "application/cbor")
                    .send(&big[..])
            ),
            (413, u64::from(tally_codes::HTTP_BODY_TOO_LARGE)),
            "{path}"
        );
    }
    assert_eq!(bank.invariant().expect("invariant"), before);
}

#[test]
fn the_mds_router_refuses_in_the_envelope() {
    let mds = Arc::new(
        Mds::open(
            Store::sqlite_memory().unwrap(),
            MdsConfig::new(Vec::new(), Vec::new(), 0),
        )
        .expect("MDS"),
    );
    let (_rt, base) = serve(mds_router(
        mds.clone(),
        tally_tls::RevokedKeys::new(),
        tally_api::RoleRevocationRelay::new(),
    ));
    let a = agent();
    assert_eq!(
        envelope(a.get(format!("{base}/mds/nothing")).call()),
        (404, u64::from(tally_codes::HTTP_NO_ROUTE))
    );
    assert_eq!(
        envelope(a.post(format!("{base}/mds/indicators")).send("")),
        (405, u64::from(tally_codes::HTTP_METHOD_NOT_ALLOWED))
    );
    let big = vec![b' '; MDS_BODY_BYTES_MAX + 1];
    assert_eq!(
        envelope(
            a.post(format!("{base}/mds/alerts/1/transition"))
                .header("content-type", "application/json")
                .send(&big[..])
        ),
        (413, u64::from(tally_codes::HTTP_BODY_TOO_LARGE))
    );
    assert!(mds.alerts().expect("alerts").is_empty());
}
