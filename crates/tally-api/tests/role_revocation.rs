//! Revoking a party's role certificate (issue 11, item 3; THREATS T70):
//! the central bank's operator revokes a stolen DCP or operator key with
//! `POST /central/v1/admin/certificates/revoke`. From then on the central
//! bank refuses that key on a connection opened before the revocation
//! (401, code 1304, before any handler) and at the handshake of a new one;
//! the refused calls change nothing; other parties are not affected; the
//! revocation is in the central bank's database, so another central
//! process on it refuses the key too.

use std::net::SocketAddr;
use std::sync::Arc;

use tally_api::central_router;
use tally_api::refresh_role_revocations;
use tally_central::central::CentralCall;
use tally_central::{CentralBank, CentralKeys, NodeKeys, development_escrow_key};
use tally_core::codec::Cbor;
use tally_store::Store;
use tally_tls::{
    ClientAuth, RevokedKeys, Role, ServerCheck, ServerRevocations, Validity, ca_certificate,
    cert_from_pem, certs_from_pem, client_agent, issue_role_cert, key_from_pem, key_pin,
    party_agent_with, serve_tls, server_config,
};

struct Pki {
    ca_pem: String,
    root: Arc<tally_central::keys::NodeSigner>,
}

impl Pki {
    fn new() -> Pki {
        let root = NodeKeys::development().root;
        let ca_pem = ca_certificate(&*root, Validity::days(1)).expect("CA");
        Pki { ca_pem, root }
    }

    fn role(&self, role: Role) -> (String, String) {
        issue_role_cert(&*self.root, &self.ca_pem, role, &[], Validity::days(1)).expect("role")
    }

    fn agent(&self, pair: &(String, String)) -> ureq::Agent {
        client_agent(&self.ca_pem, Some((&pair.0, &pair.1))).expect("agent")
    }
}

fn bank(db: &std::path::Path) -> Arc<CentralBank> {
    let k = NodeKeys::development();
    Arc::new(
        CentralBank::open(
            Store::sqlite(db).unwrap(),
            Store::sqlite_memory().unwrap(),
            CentralKeys {
                root: k.root.clone(),
                settlement: k.settlement.clone(),
                opening: k.opening.clone(),
            },
            development_escrow_key(),
            None,
            &[(1, k.dcp.public_key()), (2, k.dcp.public_key())],
        )
        .expect("central bank"),
    )
}

/// The central bank's router over mutual TLS on 127.0.0.1, refusing the
/// keys in `revoked`; lives as long as the runtime.
fn serve(
    pki: &Pki,
    bank: Arc<CentralBank>,
    revoked: RevokedKeys,
) -> (tokio::runtime::Runtime, String) {
    serve_router(
        pki,
        Role::Central,
        central_router(bank, revoked.clone()),
        revoked,
    )
}

/// `router` over mutual TLS on 127.0.0.1 as `role`, refusing `revoked`.
fn serve_router(
    pki: &Pki,
    role: Role,
    router: axum::Router,
    revoked: RevokedKeys,
) -> (tokio::runtime::Runtime, String) {
    let (rt, base, _) = serve_router_pinned(pki, role, router, revoked);
    (rt, base)
}

/// [`serve_router`], and the key pin of the certificate it serves with.
fn serve_router_pinned(
    pki: &Pki,
    role: Role,
    router: axum::Router,
    revoked: RevokedKeys,
) -> (tokio::runtime::Runtime, String, [u8; 32]) {
    let (cert, key) = pki.role(role);
    let pin = key_pin(&cert_from_pem(&cert).unwrap()).unwrap();
    let config = server_config(
        certs_from_pem(&cert).unwrap(),
        key_from_pem(&key).unwrap(),
        ClientAuth::RequiredNotRevoked(cert_from_pem(&pki.ca_pem).unwrap(), revoked),
    )
    .expect("TLS configuration");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listen");
    let addr: SocketAddr = listener.local_addr().expect("address");
    rt.spawn(serve_tls(listener, router, config, std::future::pending()));
    (rt, format!("https://{addr}"), pin)
}

/// A DCP's trust read over `agent`: the status and the envelope's code
/// (0 for a success).
fn trust(agent: &ureq::Agent, base: &str) -> Result<(u16, u64), ureq::Error> {
    let mut r = agent
        .post(format!("{base}/central/v1/rpc"))
        .header("content-type", "application/cbor")
        .send(&CentralCall::Trust.to_cbor()[..])?;
    Ok((r.status().as_u16(), code(&mut r)))
}

fn code(r: &mut ureq::http::Response<ureq::Body>) -> u64 {
    if r.status().is_success() {
        return 0;
    }
    let body = r.body_mut().read_to_string().expect("text");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not the envelope ({e}): {body}"));
    v["error"]["code"].as_u64().expect("code")
}

fn json(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut r = agent
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .expect("an answer");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("text");
    (status, serde_json::from_str(&text).expect("JSON"))
}

fn mint(
    agent: &ureq::Agent,
    base: &str,
    key: &str,
) -> Result<(u16, serde_json::Value), ureq::Error> {
    let mut r = agent
        .post(format!("{base}/central/v1/admin/mint"))
        .header("content-type", "application/json")
        .send(
            serde_json::json!({ "dcp": 1, "amount": 500, "idempotency_key": key })
                .to_string()
                .as_bytes(),
        )?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("text");
    Ok((status, serde_json::from_str(&text).expect("JSON")))
}

#[test]
fn a_revoked_role_key_is_refused_on_open_and_new_connections_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("central.db");
    let pki = Pki::new();
    let bank = bank(&db);
    let (_rt, base) = serve(&pki, bank.clone(), RevokedKeys::new());

    let dcp1 = pki.role(Role::Dcp(1));
    let dcp2 = pki.role(Role::Dcp(2));
    let operator = pki.role(Role::Operator);
    let stolen_operator = pki.role(Role::Operator);
    let (a1, a2, op, thief) = (
        pki.agent(&dcp1),
        pki.agent(&dcp2),
        pki.agent(&operator),
        pki.agent(&stolen_operator),
    );

    // Before: everyone is served (each agent keeps its connection open).
    assert_eq!(trust(&a1, &base).unwrap(), (200, 0));
    assert_eq!(trust(&a2, &base).unwrap(), (200, 0));
    assert_eq!(mint(&thief, &base, "before").unwrap().0, 200);
    let minted = bank.invariant().unwrap();

    // The operator revokes DCP 2's and the second operator's keys.
    for (pair, role) in [(&dcp2, "dcp-2"), (&stolen_operator, "operator")] {
        let (status, v) = json(
            &op,
            &base,
            "/central/v1/admin/certificates/revoke",
            serde_json::json!({ "certificate": pair.0 }),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["role"], role);
        assert_eq!(v["new"], true);
        let pin = key_pin(&cert_from_pem(&pair.0).unwrap()).unwrap();
        assert_eq!(v["pin"], hex::encode(pin));
    }
    // Again: idempotent, not new.
    let (status, v) = json(
        &op,
        &base,
        "/central/v1/admin/certificates/revoke",
        serde_json::json!({ "certificate": dcp2.0 }),
    );
    assert_eq!((status, v["new"].clone()), (200, serde_json::json!(false)));

    // On the connections opened before: refused per request, code 1304.
    assert_eq!(
        trust(&a2, &base).unwrap(),
        (401, u64::from(tally_codes::CENTRAL_ROLE_REVOKED))
    );
    let (status, v) = mint(&thief, &base, "after").unwrap();
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], tally_codes::CENTRAL_ROLE_REVOKED);
    // DCP 2's client reads the refusal as no answer, not as "not
    // executed": an earlier copy of a call may have executed, so the DCP
    // must keep its debit in flight (SPEC §10.6) rather than return the
    // customer's money.
    let client = tally_api::CentralClient::new(&base, a2.clone());
    match tally_central::Central::settlement_balance(&client, 2) {
        Err(tally_central::BackofficeError::Remote { code, .. }) => {
            assert_eq!(code, tally_codes::CENTRAL_UNAVAILABLE)
        }
        other => panic!("expected unanswered, got {other:?}"),
    }
    // On new connections: refused at the handshake (no HTTP answer).
    assert!(trust(&pki.agent(&dcp2), &base).is_err());
    assert!(mint(&pki.agent(&stolen_operator), &base, "new").is_err());
    // DCP 2, re-issued a certificate for a new key, is served again.
    let reissued = pki.role(Role::Dcp(2));
    assert_eq!(trust(&pki.agent(&reissued), &base).unwrap(), (200, 0));

    // Nothing was minted by the refused calls; DCP 1 is still served.
    assert_eq!(bank.invariant().unwrap(), minted);
    assert_eq!(trust(&a1, &base).unwrap(), (200, 0));

    // Another central process on the same database refuses the keys from
    // its first read of the revocations.
    let other = self::bank(&db);
    let pins = other.revoked_role_keys().unwrap();
    assert_eq!(pins.len(), 2);
    let revoked = RevokedKeys::new();
    revoked.extend(pins);
    let (_rt2, base2) = serve(&pki, other, revoked);
    assert!(trust(&pki.agent(&dcp2), &base2).is_err());
    assert_eq!(trust(&pki.agent(&dcp1), &base2).unwrap(), (200, 0));
}

#[test]
fn only_an_operator_revokes_and_only_a_role_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let bank = bank(&dir.path().join("central.db"));
    let (_rt, base) = serve(&pki, bank.clone(), RevokedKeys::new());
    let dcp1 = pki.role(Role::Dcp(1));
    let dcp2 = pki.role(Role::Dcp(2));
    let a1 = pki.agent(&dcp1);

    // A DCP cannot revoke another DCP.
    let (status, v) = json(
        &a1,
        &base,
        "/central/v1/admin/certificates/revoke",
        serde_json::json!({ "certificate": dcp2.0 }),
    );
    assert_eq!(status, 401, "{v}");
    assert!(bank.revoked_role_keys().unwrap().is_empty());

    // An operator's malformed requests change nothing.
    let op = pki.agent(&pki.role(Role::Operator));
    for body in [
        serde_json::json!({ "certificate": "not PEM" }),
        serde_json::json!({ "certificate": pki.ca_pem }),
        serde_json::json!({ "cert": dcp2.0 }),
    ] {
        let (status, v) = json(&op, &base, "/central/v1/admin/certificates/revoke", body);
        assert_eq!(status, 400, "{v}");
    }
    assert!(bank.revoked_role_keys().unwrap().is_empty());
    assert_eq!(trust(&pki.agent(&dcp2), &base).unwrap(), (200, 0));
}

/// The MDS refuses the keys the central bank revoked to its own clients:
/// it reads them from the central bank's root-signed list (`GET
/// /central/v1/role-revocations`) into the set its handshake and router
/// check. An operator whose key was revoked can no longer close alerts.
#[test]
fn the_mds_refuses_role_keys_the_central_bank_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let bank = bank(&dir.path().join("central.db"));
    let (_rt, central) = serve(&pki, bank.clone(), RevokedKeys::new());
    let mds_pair = pki.role(Role::Mds);
    let (list_agent, _, revocations) = central_agents(&pki, &mds_pair);
    let root = pki.root.public_key();
    let held =
        refresh_role_revocations(&list_agent, &central, &root, None, &revocations).expect("a list");
    assert!(revocations.revoked().is_empty());
    // Only a party with a role certificate reads the list.
    let r = client_agent(&pki.ca_pem, None)
        .unwrap()
        .get(format!("{central}/central/v1/role-revocations"))
        .call();
    assert!(r.is_err(), "no client certificate, no handshake");

    let mds = Arc::new(
        tally_mds::Mds::open(
            Store::sqlite_memory().unwrap(),
            tally_mds::MdsConfig::new(Vec::new(), Vec::new(), 0),
        )
        .expect("MDS"),
    );
    let revoked = revocations.revoked().clone();
    let (_rt2, base) = serve_router(
        &pki,
        Role::Mds,
        tally_api::mds_router(mds, revoked.clone(), tally_api::RoleRevocationRelay::new()),
        revoked.clone(),
    );
    let honest = pki.agent(&pki.role(Role::Operator));
    let stolen = pki.role(Role::Operator);
    let thief = pki.agent(&stolen);
    let alerts = |a: &ureq::Agent| -> Result<u16, ureq::Error> {
        Ok(a.get(format!("{base}/mds/alerts"))
            .call()?
            .status()
            .as_u16())
    };
    assert_eq!(alerts(&thief).unwrap(), 200);

    let (status, v) = json(
        &honest_central(&pki),
        &central,
        "/central/v1/admin/certificates/revoke",
        serde_json::json!({ "certificate": stolen.0 }),
    );
    assert_eq!(status, 200, "{v}");
    // What the MDS process's refresh does every second.
    let next = refresh_role_revocations(&list_agent, &central, &root, Some(held), &revocations)
        .expect("the next list");
    assert!(next > held, "a revocation signs a new list");
    assert!(revoked.contains(&key_pin(&cert_from_pem(&stolen.0).unwrap()).unwrap()));
    assert_eq!(revoked.len(), 1);
    // The thief's open connection: 401, code 1304; a new one: no handshake.
    let mut r = thief.get(format!("{base}/mds/alerts")).call().unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&mut r)),
        (401, u64::from(tally_codes::CENTRAL_ROLE_REVOKED))
    );
    assert!(alerts(&pki.agent(&stolen)).is_err());
    assert_eq!(alerts(&honest).unwrap(), 200);
}

/// The MDS's own key stolen (THREATS T75): whoever holds it can tell an
/// operator there are no alerts. `tally cb alerts` believes the MDS only
/// under a current root-signed list that does not revoke its key, and
/// the MDS relays the list it believes (`GET /mds/role-revocations`): a
/// relayed list is believed for the root's signature, its serial and its
/// freshness only, so an MDS can neither forge one, nor pass off an older
/// one than the client holds; until it holds a list, nothing is read
/// from it; once its own key is revoked, the operator refuses it.
#[test]
fn an_operator_refuses_a_revoked_mds_key_by_the_list_the_mds_relays() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let bank = bank(&dir.path().join("central.db"));
    let (_rt, central) = serve(&pki, bank.clone(), RevokedKeys::new());
    let root = pki.root.public_key();
    // The MDS process: its refresh from the central bank and its relay.
    let (mds_list_agent, _, mds_revocations) = central_agents(&pki, &pki.role(Role::Mds));
    let relay = tally_api::RoleRevocationRelay::new();
    let mds = Arc::new(
        tally_mds::Mds::open(
            Store::sqlite_memory().unwrap(),
            tally_mds::MdsConfig::new(Vec::new(), Vec::new(), 0),
        )
        .expect("MDS"),
    );
    let revoked = mds_revocations.revoked().clone();
    let (_rt2, base, mds_pin) = serve_router_pinned(
        &pki,
        Role::Mds,
        tally_api::mds_router(mds, revoked.clone(), relay.clone()),
        revoked,
    );
    let mds_refresh = |held| {
        let list = tally_api::refresh_role_revocations_at(
            &mds_list_agent,
            &tally_api::role_revocations_url(&central),
            &root,
            held,
            &mds_revocations,
        )
        .expect("the MDS believes the central bank's list");
        relay.set(&list);
        list
    };
    // The operator's `tally cb alerts`: its two agents to the MDS.
    let (list_agent, calls, revocations) = party_agents(&pki, &pki.role(Role::Operator), Role::Mds);
    let url = tally_api::mds_role_revocations_url(&base);
    let refresh =
        |held| tally_api::refresh_role_revocations_at(&list_agent, &url, &root, held, &revocations);
    let alerts = || calls.get(format!("{base}/mds/alerts")).call();

    // Before the MDS holds a list: 503 (code 1303), and no answer is read.
    let mut r = pki
        .agent(&pki.role(Role::Operator))
        .get(&url)
        .call()
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&mut r)),
        (503, u64::from(tally_codes::CENTRAL_UNAVAILABLE))
    );
    assert!(refresh(None).is_err());
    assert!(alerts().is_err(), "no current list, no call");

    let first = mds_refresh(None);
    let held = refresh(None).expect("the relayed list").serial;
    assert_eq!(held, first.serial);
    assert_eq!(alerts().unwrap().status().as_u16(), 200);

    // A list not signed by the root, relayed: refused, nothing changes.
    let forged = tally_core::policy::RoleRevocations::try_sign(
        &*NodeKeys::development().settlement,
        held + 10,
        first.issued,
        Vec::new(),
    )
    .unwrap();
    relay.set(&forged);
    let err = refresh(Some(held)).unwrap_err();
    assert!(err.contains("not signed by the root"), "{err}");
    // An older list than the operator holds: refused as a replay.
    let (_, v) = json(
        &honest_central(&pki),
        &central,
        "/central/v1/admin/certificates/revoke",
        serde_json::json!({ "certificate": pki.role(Role::Dcp(7)).0 }),
    );
    let newer = mds_refresh(Some(first.serial));
    assert!(newer.serial > first.serial, "{v}");
    let held = refresh(Some(held)).expect("the newer list").serial;
    relay.set(&first);
    let err = refresh(Some(held)).unwrap_err();
    assert!(err.contains("older than the ones held"), "{err}");
    assert_eq!(alerts().unwrap().status().as_u16(), 200);

    // The MDS's own key revoked at the central bank: the MDS relays the
    // list that says so, and the operator refuses the MDS from then on.
    assert!(bank.revoke_role_key(&mds_pin, "mds").unwrap());
    let last = mds_refresh(Some(newer.serial));
    assert!(last.is_revoked(&tally_core::Hash32(mds_pin)));
    refresh(Some(held)).expect("the list revoking the MDS, relayed by it");
    let err = alerts().unwrap_err().to_string();
    assert!(err.contains("the server's key is revoked"), "{err}");
    // A fresh client too, at the handshake.
    let (list_agent2, calls2, revocations2) =
        party_agents(&pki, &pki.role(Role::Operator), Role::Mds);
    tally_api::refresh_role_revocations_at(&list_agent2, &url, &root, None, &revocations2)
        .expect("the relayed list");
    assert!(calls2.get(format!("{base}/mds/alerts")).call().is_err());
}

/// A party's two agents to the central bank, as `tally dcp` and `tally
/// mds` make them: one that fetches the role revocation list (revoked
/// server keys refused), one for every other call (also refused while no
/// believed list is current).
fn central_agents(
    pki: &Pki,
    pair: &(String, String),
) -> (ureq::Agent, ureq::Agent, ServerRevocations) {
    party_agents(pki, pair, Role::Central)
}

/// [`central_agents`] to a server of another role.
fn party_agents(
    pki: &Pki,
    pair: &(String, String),
    server: Role,
) -> (ureq::Agent, ureq::Agent, ServerRevocations) {
    let revocations = ServerRevocations::new();
    let agent = |current| {
        party_agent_with(
            &pki.ca_pem,
            (&pair.0, &pair.1),
            server,
            Some(ServerCheck {
                revocations: revocations.clone(),
                current,
            }),
        )
        .expect("agent")
    };
    (agent(false), agent(true), revocations)
}

/// The central bank's own server key stolen (THREATS T74): whoever holds
/// it can answer a DCP in the central bank's name. The operator revokes it;
/// the DCP learns it from the root-signed list — believed for the root's
/// signature (the root's key is the CA's, pinned at installation), never
/// for the channel it came over — and refuses that key from then on, on
/// the connection already open and at new handshakes; a list signed by
/// another key, an older list, or none at all lets no call through; the
/// central bank's new key is accepted.
#[test]
fn a_dcp_refuses_a_revoked_central_bank_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let bank = bank(&dir.path().join("central.db"));
    let (_rt, central, served) = serve_router_pinned(
        &pki,
        Role::Central,
        central_router(bank.clone(), RevokedKeys::new()),
        RevokedKeys::new(),
    );
    let dcp = pki.role(Role::Dcp(1));
    let (list_agent, calls, revocations) = central_agents(&pki, &dcp);
    let root = pki.root.public_key();

    // No list believed yet: no call leaves (the list's own fetch does).
    assert!(trust(&calls, &central).is_err(), "no current list");
    let held =
        refresh_role_revocations(&list_agent, &central, &root, None, &revocations).expect("a list");
    assert_eq!(trust(&calls, &central).unwrap(), (200, 0));

    // A list under another key is not believed, and changes nothing.
    let other = NodeKeys::development().dcp;
    assert_ne!(other.public_key(), root);
    let before = revocations.revoked().len();
    let err = refresh_role_revocations(
        &list_agent,
        &central,
        &other.public_key(),
        None,
        &revocations,
    )
    .unwrap_err();
    assert!(err.contains("not signed by the root"), "{err}");
    assert_eq!(revocations.revoked().len(), before);
    // An older list than the one held is a replay.
    let err = refresh_role_revocations(
        &list_agent,
        &central,
        &root,
        Some(held + 3_600_000),
        &revocations,
    )
    .unwrap_err();
    assert!(err.contains("older"), "{err}");

    // The central bank's serving key is revoked (what `tally cb
    // revoke-cert central.pem` records for the certificate served, its pin
    // pinned above).
    assert!(bank.revoke_role_key(&served, "central").unwrap());
    refresh_role_revocations(&list_agent, &central, &root, Some(held), &revocations)
        .expect("the list naming the key");
    assert!(revocations.revoked().contains(&served));
    // The open connection is not used again; a new one fails its handshake;
    // the list itself is no longer fetched from that key either.
    assert!(
        trust(&calls, &central).is_err(),
        "revoked key, open connection"
    );
    let (_, fresh_calls, fresh) = central_agents(&pki, &dcp);
    fresh.believe(revocations.revoked().pins(), u64::MAX);
    assert!(
        trust(&fresh_calls, &central).is_err(),
        "revoked key, new handshake"
    );
    assert!(
        refresh_role_revocations(&list_agent, &central, &root, None, &revocations).is_err(),
        "no list from a revoked key"
    );

    // The central bank serves again under a new key: accepted.
    let (_rt2, renewed) = serve(&pki, bank.clone(), RevokedKeys::new());
    let (list2, calls2, revs2) = central_agents(&pki, &dcp);
    revs2.believe(revocations.revoked().pins(), 0);
    refresh_role_revocations(&list2, &renewed, &root, None, &revs2).expect("a list");
    assert_eq!(trust(&calls2, &renewed).unwrap(), (200, 0));
}

/// An operator of the central bank (its own certificate).
fn honest_central(pki: &Pki) -> ureq::Agent {
    pki.agent(&pki.role(Role::Operator))
}
