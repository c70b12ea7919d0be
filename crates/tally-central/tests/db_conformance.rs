//! Conformance suite of the central bank's store (`src/db.rs`): every
//! method of [`CentralDb`] and [`KeyCustodyDb`] held to its contract,
//! written once over a `&Store` and run on SQLite (in memory) and
//! PostgreSQL (a fresh schema; skipped loudly without
//! TALLY_TEST_DATABASE_URL, a failure under `CI`). Then the guard: no SQL
//! and no positional column read anywhere in `src/` but `db.rs`.

use tally_central::db::{
    CentralDb, ClosedReport, ClosedRow, InboxCredit, KeyCustodyDb, MailboxRow, NewMailboxEntry,
    NewUpload, OutboxBacklog, UploadRow, WaitingDelivery,
};
use tally_central::schema::{CENTRAL_KEY_CUSTODY_MIGRATIONS, CENTRAL_MIGRATIONS};
use tally_central::{InboxEntry, central};
use tally_core::Hash32;
use tally_store::{Store, StoreError, Tx};

// ---- harness ------------------------------------------------------------------

fn migrate(s: &Store) {
    s.migrate(&central::migrations())
        .and_then(|_| s.migrate(&[&CENTRAL_KEY_CUSTODY_MIGRATIONS]))
        .unwrap_or_else(|e| panic!("migrations: {e}"));
}

fn sqlite_store() -> Store {
    let s = Store::sqlite_memory().unwrap_or_else(|e| panic!("sqlite: {e}"));
    migrate(&s);
    s
}

/// A migrated PostgreSQL schema, or `None` without a database (a failure
/// under `CI`).
fn postgres_store(test: &str) -> Option<(Store, String)> {
    let r = tally_store::test_postgres_store(test);
    if r.is_none() && std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
    }
    let (s, schema) = r?;
    migrate(&s);
    Some((s, schema))
}

fn drop_schema(s: &Store, schema: &str) {
    let _ = s.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
}

/// Runs each named `fn(&Store)` once on SQLite and once on PostgreSQL.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::sqlite_store());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some((s, schema)) = super::postgres_store(test) {
                        super::$name(&s);
                        super::drop_schema(&s, &schema);
                    }
                }
            )*
        }
    };
}

fn run<R>(s: &Store, f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>) -> R {
    s.transact(f)
        .unwrap_or_else(|e| panic!("transaction failed: {e}"))
}

fn fails<R: std::fmt::Debug>(
    s: &Store,
    f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>,
) -> StoreError {
    match s.transact(f) {
        Ok(r) => panic!("expected a failure, got {r:?}"),
        Err(e) => e,
    }
}

fn is_constraint(e: &StoreError) -> bool {
    matches!(e, StoreError::Constraint(_))
}

fn h(n: u8) -> Hash32 {
    Hash32([n; 32])
}

// ---- epoch and signed documents ---------------------------------------------

fn epoch_starts_at_one_and_advances(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.epoch()?, 1);
        tx.advance_epoch()?;
        tx.advance_epoch()?;
        assert_eq!(tx.epoch()?, 3);
        Ok(())
    });
}

fn documents_round_trip(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.policy_doc()?, None);
        assert_eq!(tx.manufacturers_doc()?, None);
        tx.insert_policy_doc(b"policy 1")?;
        assert_eq!(tx.policy_doc()?, Some(b"policy 1".to_vec()));
        tx.update_policy_doc(b"policy 2")?;
        assert_eq!(tx.policy_doc()?, Some(b"policy 2".to_vec()));
        tx.replace_manufacturers_doc(b"m1")?;
        tx.replace_manufacturers_doc(b"m2")?;
        assert_eq!(
            tx.manufacturers_doc()?,
            Some(b"m2".to_vec()),
            "replaced, not added"
        );
        assert_eq!(
            tx.policy_doc()?,
            Some(b"policy 2".to_vec()),
            "documents are apart"
        );
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_policy_doc(b"another"));
    assert!(is_constraint(&e), "a second first policy: {e:?}");
}

fn role_revocations_are_kept_once_in_pin_order(s: &Store) {
    run(s, |tx| {
        assert!(tx.role_revocations()?.is_empty());
        assert!(tx.insert_role_revocation(&[9; 32], "dcp:2", 100)?, "new");
        assert!(tx.insert_role_revocation(&[3; 32], "mds", 101)?, "new");
        assert!(
            !tx.insert_role_revocation(&[9; 32], "dcp:2", 200)?,
            "a second revocation of one key is not new"
        );
        assert_eq!(tx.role_revocations()?, vec![[3; 32], [9; 32]]);
        Ok(())
    });
}

fn stored_replies_are_written_once(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.stored_reply(&h(1))?, None);
        tx.insert_reply(&h(1), b"sealed")?;
        assert_eq!(tx.stored_reply(&h(1))?, Some(b"sealed".to_vec()));
        assert_eq!(tx.stored_reply(&h(2))?, None);
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_reply(&h(1), b"other"));
    assert!(is_constraint(&e), "a second answer: {e:?}");
    assert_eq!(
        run(s, |tx| tx.stored_reply(&h(1))),
        Some(b"sealed".to_vec())
    );
}

// ---- inbox --------------------------------------------------------------------

fn inbox_per_dcp_in_op_order(s: &Store) {
    let credit = |op: &'static Hash32, dcp, account, amount, from_dcp| InboxCredit {
        op,
        dcp,
        account,
        amount,
        from_dcp,
    };
    static OPS: [Hash32; 4] = [
        Hash32([3; 32]),
        Hash32([1; 32]),
        Hash32([2; 32]),
        Hash32([9; 32]),
    ];
    run(s, |tx| {
        assert!(tx.inbox(2, 256)?.is_empty());
        tx.insert_inbox(&credit(&OPS[0], 2, Some("alice"), 5, 3))?;
        tx.insert_inbox(&credit(&OPS[1], 2, None, i64::MAX as u64, 0))?;
        tx.insert_inbox(&credit(&OPS[2], 2, Some("bob"), 1, u32::MAX))?;
        tx.insert_inbox(&credit(&OPS[3], 3, Some("carol"), 7, 2))?;
        let got = tx.inbox(2, 256)?;
        assert_eq!(
            got,
            vec![
                InboxEntry {
                    op: h(1),
                    account: None,
                    amount: i64::MAX as u64,
                    from_dcp: 0
                },
                InboxEntry {
                    op: h(2),
                    account: Some("bob".into()),
                    amount: 1,
                    from_dcp: u32::MAX
                },
                InboxEntry {
                    op: h(3),
                    account: Some("alice".into()),
                    amount: 5,
                    from_dcp: 3
                },
            ],
            "by op, NULL account kept, only dcp 2's"
        );
        assert_eq!(tx.inbox(2, 2)?.len(), 2, "limited");
        assert_eq!(tx.delete_inbox(3, &h(1))?, 0, "another DCP's credit stays");
        assert_eq!(tx.delete_inbox(2, &h(1))?, 1);
        assert_eq!(tx.delete_inbox(2, &h(1))?, 0, "idempotent");
        assert_eq!(tx.inbox(2, 256)?.len(), 2);
        assert_eq!(tx.inbox(3, 256)?.len(), 1);
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_inbox(&credit(&OPS[3], 2, None, 1, 1)));
    assert!(is_constraint(&e), "a used op: {e:?}");
}

// ---- escrows, redemptions, SE owners ------------------------------------------

fn escrows_redemptions_and_device_owners(s: &Store) {
    let nonce = [7u8; 16];
    run(s, |tx| {
        assert_eq!(tx.escrow(&h(1))?, None);
        assert!(!tx.has_escrow(&h(1))?);
        tx.insert_escrow(&h(1), b"ciphertext")?;
        assert!(tx.has_escrow(&h(1))?);
        assert_eq!(tx.escrow(&h(1))?, Some(b"ciphertext".to_vec()));
        assert_eq!(tx.redemption_op(&nonce)?, None);
        tx.insert_redemption(&nonce, &h(4))?;
        assert_eq!(tx.redemption_op(&nonce)?, Some(h(4).0.to_vec()));
        assert_eq!(tx.redemption_op(&[8u8; 16])?, None);
        assert_eq!(tx.device_dcp(&h(5))?, None);
        tx.insert_device_dcp(&h(5), u32::MAX)?;
        assert_eq!(tx.device_dcp(&h(5))?, Some(i64::from(u32::MAX)));
        Ok(())
    });
    for (what, e) in [
        ("escrow", fails(s, |tx| tx.insert_escrow(&h(1), b"x"))),
        (
            "redemption",
            fails(s, |tx| tx.insert_redemption(&nonce, &h(6))),
        ),
        ("SE owner", fails(s, |tx| tx.insert_device_dcp(&h(5), 1))),
    ] {
        assert!(is_constraint(&e), "second {what}: {e:?}");
    }
    run(s, |tx| {
        assert_eq!(
            tx.redemption_op(&nonce)?,
            Some(h(4).0.to_vec()),
            "first stands"
        );
        assert_eq!(tx.device_dcp(&h(5))?, Some(i64::from(u32::MAX)));
        Ok(())
    });
}

// ---- MDS outbox ---------------------------------------------------------------

fn outbox_queue_backlog_and_ack(s: &Store) {
    run(s, |tx| {
        assert_eq!(
            tx.outbox_backlog()?,
            OutboxBacklog {
                pending: 0,
                oldest_queued_at: 0
            }
        );
        assert!(tx.outbox_rows(64)?.is_empty());
        assert!(!tx.outbox_has(&h(2))?);
        tx.insert_outbox(&h(2), b"two", 100)?;
        tx.insert_outbox(&h(1), b"one", 0)?;
        tx.insert_outbox(&h(3), b"three", 50)?;
        assert!(tx.outbox_has(&h(2))?);
        assert_eq!(
            tx.outbox_backlog()?,
            OutboxBacklog {
                pending: 3,
                oldest_queued_at: 50
            },
            "0 means unknown, not oldest"
        );
        let rows = tx.outbox_rows(2)?;
        assert_eq!(
            rows.iter()
                .map(|r| (r.op.clone(), r.body.clone()))
                .collect::<Vec<_>>(),
            vec![
                (h(1).0.to_vec(), b"one".to_vec()),
                (h(2).0.to_vec(), b"two".to_vec())
            ],
            "by op, limited"
        );
        assert_eq!(tx.delete_outbox(&h(1).0)?, 1);
        assert_eq!(tx.delete_outbox(&h(1).0)?, 0, "idempotent");
        assert_eq!(tx.outbox_backlog()?.pending, 2);
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_outbox(&h(2), b"again", 1));
    assert!(is_constraint(&e), "a used op: {e:?}");
}

// ---- uploads, reports, mailboxes ------------------------------------------------

fn mailbox_entries_and_deliveries(s: &Store) {
    let entry = |tid: &'static Hash32, mailbox: &'static Hash32, refund, dcp| NewMailboxEntry {
        transfer_id: tid,
        mailbox,
        amount: i64::MAX,
        refund,
        dcp,
    };
    static T: [Hash32; 3] = [Hash32([30; 32]), Hash32([10; 32]), Hash32([20; 32])];
    static M: Hash32 = Hash32([1; 32]);
    run(s, |tx| {
        assert_eq!(tx.mailbox_entry(&T[0])?, None);
        assert!(tx.waiting_deliveries(&M, 1)?.is_empty());
        tx.insert_mailbox(&entry(&T[0], &M, false, 1))?;
        tx.insert_mailbox(&entry(&T[1], &M, true, 1))?;
        tx.insert_mailbox(&entry(&T[2], &M, false, 2))?;
        assert_eq!(
            tx.mailbox_entry(&T[0])?,
            Some(MailboxRow {
                mailbox: M,
                amount: i64::MAX,
                issue: None,
                dcp: 1
            })
        );
        assert_eq!(
            tx.waiting_deliveries(&M, 1)?,
            vec![
                WaitingDelivery {
                    transfer_id: T[1],
                    amount: i64::MAX
                },
                WaitingDelivery {
                    transfer_id: T[0],
                    amount: i64::MAX
                },
            ],
            "by transfer id, this DCP's only"
        );
        tx.set_delivered(&T[0], b"issue")?;
        assert_eq!(
            tx.mailbox_entry(&T[0])?.and_then(|m| m.issue),
            Some(b"issue".to_vec())
        );
        assert_eq!(
            tx.waiting_deliveries(&M, 1)?.len(),
            1,
            "delivered ones are not waiting"
        );
        // At most 64 at once.
        for i in 0..70u8 {
            let mut tid = Hash32([0xEE; 32]);
            tid.0[1] = i;
            tx.insert_mailbox(&NewMailboxEntry {
                transfer_id: &tid,
                mailbox: &h(99),
                amount: 1,
                refund: false,
                dcp: 1,
            })?;
        }
        let w = tx.waiting_deliveries(&h(99), 1)?;
        assert_eq!(w.len(), 64);
        let mut first = Hash32([0xEE; 32]);
        first.0[1] = 0;
        assert_eq!(w[0].transfer_id, first, "lowest transfer ids first");
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_mailbox(&entry(&T[0], &M, false, 1)));
    assert!(is_constraint(&e), "a transfer's value waits once: {e:?}");
}

fn uploads_reports_and_recoveries(s: &Store) {
    let nonce = [5u8; 16];
    let key = b"payee key".to_vec();
    run(s, |tx| {
        assert!(!tx.upload_exists(&h(2))?);
        assert!(tx.uploads_for(&nonce, &key)?.is_empty());
        for (tid, amount) in [(h(2), 10), (h(1), i64::MAX)] {
            tx.insert_upload(&NewUpload {
                transfer_id: &tid,
                nonce: &nonce,
                payee_key: &key,
                amount,
                mailbox: &h(50),
                dcp: 2,
            })?;
        }
        assert!(tx.upload_exists(&h(2))?);
        // An upload from before refunds has no mailbox (NULL).
        tx.execute(
            "INSERT INTO cb_uploads (transfer_id, nonce, payee_key, amount) VALUES ($1, $2, $3, 3)",
            &[
                h(3).0.to_vec().into(),
                nonce.to_vec().into(),
                key.clone().into(),
            ],
        )?;
        assert_eq!(
            tx.uploads_for(&nonce, &key)?,
            vec![
                UploadRow {
                    transfer_id: h(1),
                    amount: i64::MAX,
                    mailbox: Some(h(50)),
                    dcp: 2
                },
                UploadRow {
                    transfer_id: h(2),
                    amount: 10,
                    mailbox: Some(h(50)),
                    dcp: 2
                },
                UploadRow {
                    transfer_id: h(3),
                    amount: 3,
                    mailbox: None,
                    dcp: 1
                },
            ],
            "by transfer id; NULL mailbox and default DCP kept"
        );
        assert!(tx.uploads_for(&nonce, b"other key")?.is_empty());
        assert!(tx.uploads_for(&[6u8; 16], &key)?.is_empty());

        assert!(!tx.closed_exists(&nonce, &key)?);
        assert_eq!(tx.closed_report(&nonce, &key)?, None);
        tx.insert_closed(&ClosedReport {
            nonce: &nonce,
            payee_key: &key,
            mailbox: &h(60),
            amount: 10,
            received: None,
            dcp: 3,
        })?;
        tx.insert_closed(&ClosedReport {
            nonce: &nonce,
            payee_key: b"second key",
            mailbox: &h(61),
            amount: 4,
            received: Some(&h(2)),
            dcp: 1,
        })?;
        assert!(tx.closed_exists(&nonce, &key)?);
        assert_eq!(
            tx.closed_report(&nonce, &key)?,
            Some(ClosedRow {
                mailbox: h(60),
                amount: 10,
                received: None,
                dcp: 3
            })
        );
        assert_eq!(
            tx.closed_report(&nonce, b"second key")?
                .and_then(|r| r.received),
            Some(h(2))
        );

        // Credited: a recovery (not a refund) of one of the request's
        // uploads in the payee's mailbox.
        assert!(!tx.recovery_credited(&h(60), &nonce, &key)?);
        tx.insert_mailbox(&NewMailboxEntry {
            transfer_id: &h(2),
            mailbox: &h(60),
            amount: 10,
            refund: true,
            dcp: 3,
        })?;
        assert!(
            !tx.recovery_credited(&h(60), &nonce, &key)?,
            "a refund is no recovery"
        );
        tx.insert_mailbox(&NewMailboxEntry {
            transfer_id: &h(1),
            mailbox: &h(60),
            amount: 10,
            refund: false,
            dcp: 3,
        })?;
        assert!(tx.recovery_credited(&h(60), &nonce, &key)?);
        assert!(
            !tx.recovery_credited(&h(61), &nonce, &key)?,
            "another mailbox"
        );
        assert!(
            !tx.recovery_credited(&h(60), &nonce, b"second key")?,
            "another request"
        );
        Ok(())
    });
    let e = fails(s, |tx| {
        tx.insert_closed(&ClosedReport {
            nonce: &nonce,
            payee_key: &key,
            mailbox: &h(62),
            amount: 1,
            received: None,
            dcp: 1,
        })
    });
    assert!(is_constraint(&e), "a second closing report: {e:?}");
}

// ---- key custody ----------------------------------------------------------------

fn pinned_keys_are_first_come(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.pinned_key("node_public_keys", "root")?, None);
        tx.pin_key_if_absent("node_public_keys", "root", b"key A")?;
        tx.pin_key_if_absent("node_public_keys", "root", b"key B")?;
        assert_eq!(
            tx.pinned_key("node_public_keys", "root")?,
            Some(b"key A".to_vec()),
            "the first key stays"
        );
        assert_eq!(tx.pinned_key("node_public_keys", "settlement")?, None);
        assert_eq!(tx.migration_version("central")?, 1);
        assert_eq!(tx.migration_version("central_key_custody")?, 2);
        assert_eq!(tx.migration_version("no such component")?, 0);
        Ok(())
    });
}

fn legacy_seeds_are_read_back(s: &Store) {
    // A store from before key custody: the seed table still exists.
    s.migrate(&[&CENTRAL_MIGRATIONS])
        .unwrap_or_else(|e| panic!("{e}"));
    run(s, |tx| {
        assert_eq!(tx.legacy_seed("node_secrets", "root")?, None);
        tx.execute(
            "INSERT INTO node_secrets (role, suite, seed) VALUES ('root', 1, $1)",
            &[vec![4u8; 32].into()],
        )?;
        assert_eq!(tx.legacy_seed("node_secrets", "root")?, Some(vec![4u8; 32]));
        assert_eq!(tx.legacy_seed("node_secrets", "seal")?, None);
        assert_eq!(tx.migration_version("central_key_custody")?, 0);
        Ok(())
    });
}

/// The group commit's one-statement forms: answers, outbox rows and
/// waiting deliveries of many requests at once, each as its one-request
/// form reads or writes it.
fn batched_replies_outbox_and_deliveries(s: &Store) {
    run(s, |tx| {
        assert!(tx.stored_replies(&[h(1), h(2)])?.is_empty());
        tx.insert_replies(&[(h(1), b"one".to_vec()), (h(2), b"two".to_vec())])?;
        tx.insert_replies(&[])?;
        let found = tx.stored_replies(&[h(2), h(3), h(1), h(2)])?;
        assert_eq!(found.len(), 2);
        assert_eq!(found.get(&h(1)), Some(&b"one".to_vec()));
        assert_eq!(found.get(&h(2)), Some(&b"two".to_vec()));
        assert_eq!(tx.stored_reply(&h(2))?, Some(b"two".to_vec()));

        tx.insert_outboxes(&[(h(5), b"five".to_vec()), (h(4), b"four".to_vec())], 7)?;
        tx.insert_outboxes(&[], 7)?;
        assert!(tx.outbox_has(&h(4))? && tx.outbox_has(&h(5))?);
        assert_eq!(
            tx.outbox_rows(64)?
                .iter()
                .map(|r| (r.op.clone(), r.body.clone()))
                .collect::<Vec<_>>(),
            vec![
                (h(4).0.to_vec(), b"four".to_vec()),
                (h(5).0.to_vec(), b"five".to_vec())
            ]
        );

        // Mailbox 10 at DCP 1: 70 waiting, one delivered; mailbox 11 at
        // DCPs 1 and 2; mailbox 12 empty.
        for i in 0..70u8 {
            let mut tid = Hash32([0xE0; 32]);
            tid.0[1] = 69 - i;
            tx.insert_mailbox(&NewMailboxEntry {
                transfer_id: &tid,
                mailbox: &h(10),
                amount: i64::from(i),
                refund: false,
                dcp: 1,
            })?;
        }
        let mut delivered = Hash32([0xE0; 32]);
        delivered.0[1] = 0;
        tx.set_delivered(&delivered, b"issue")?;
        for (n, dcp) in [(1u8, 1i64), (2, 2), (3, 1)] {
            tx.insert_mailbox(&NewMailboxEntry {
                transfer_id: &Hash32([0xF0 + n; 32]),
                mailbox: &h(11),
                amount: 5,
                refund: true,
                dcp,
            })?;
        }
        let asked = [(h(10), 1), (h(11), 1), (h(11), 2), (h(12), 1), (h(10), 2)];
        let all = tx.waiting_deliveries_of(&asked)?;
        for (m, dcp) in asked {
            let one = tx.waiting_deliveries(&m, dcp)?;
            assert_eq!(
                all.get(&(m, dcp)).cloned().unwrap_or_default(),
                one,
                "mailbox {m:?} at DCP {dcp}"
            );
        }
        assert_eq!(all.get(&(h(10), 1)).map(Vec::len), Some(64));
        assert!(!all.contains_key(&(h(12), 1)) && !all.contains_key(&(h(10), 2)));
        assert!(tx.waiting_deliveries_of(&[])?.is_empty());
        Ok(())
    });
    let e = fails(s, |tx| {
        tx.insert_replies(&[(h(3), b"x".to_vec()), (h(1), b"again".to_vec())])
    });
    assert!(is_constraint(&e), "an op is answered once: {e:?}");
    let e = fails(s, |tx| tx.insert_outboxes(&[(h(4), b"again".to_vec())], 8));
    assert!(is_constraint(&e), "an outbox op is queued once: {e:?}");
}

conformance!(
    epoch_starts_at_one_and_advances,
    documents_round_trip,
    role_revocations_are_kept_once_in_pin_order,
    stored_replies_are_written_once,
    inbox_per_dcp_in_op_order,
    escrows_redemptions_and_device_owners,
    outbox_queue_backlog_and_ack,
    mailbox_entries_and_deliveries,
    uploads_reports_and_recoveries,
    batched_escrows_uploads_and_closed_requests,
    batched_replies_outbox_and_deliveries,
    pinned_keys_are_first_come,
);

#[test]
fn sqlite_legacy_seeds_are_read_back() {
    let s = Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}"));
    legacy_seeds_are_read_back(&s);
}

#[test]
fn postgres_legacy_seeds_are_read_back() {
    let test = "db_conformance::postgres_legacy_seeds_are_read_back";
    let r = tally_store::test_postgres_store(test);
    if r.is_none() && std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
    }
    if let Some((s, schema)) = r {
        legacy_seeds_are_read_back(&s);
        drop_schema(&s, &schema);
    }
}

/// The batched look-ups and inserts of a sync upload: they see exactly
/// the rows the one-row methods see, across more rows than one statement
/// carries, and an empty batch is no statement at all.
fn batched_escrows_uploads_and_closed_requests(s: &Store) {
    run(s, |tx| {
        assert!(tx.escrows_known(&[])?.is_empty());
        tx.insert_escrows(&[])?;
        tx.insert_escrow(&h(1), b"one")?;
        // 600 keys: more than one statement's rows.
        let ids: Vec<Hash32> = (0..600u32)
            .map(|i| tally_core::crypto::tagged_hash(b"conformance", &[&i.to_be_bytes()]))
            .collect();
        let escrows: Vec<(Hash32, &[u8])> = ids.iter().map(|k| (*k, &b"e"[..])).collect();
        tx.insert_escrows(&escrows)?;
        let mut asked = ids.clone();
        asked.push(h(1));
        asked.push(h(2));
        let known = tx.escrows_known(&asked)?;
        assert_eq!(known.len(), 601);
        assert!(known.contains(&h(1)) && !known.contains(&h(2)));
        assert!(ids.iter().all(|k| tx.has_escrow(k).unwrap_or(false)));
        assert_eq!(tx.escrow(&ids[599])?, Some(b"e".to_vec()));

        assert!(tx.uploads_known(&[])?.is_empty());
        tx.insert_uploads(&[])?;
        let nonces: Vec<[u8; 16]> = (0..520u32)
            .map(|i| {
                let mut n = [0u8; 16];
                n[..4].copy_from_slice(&i.to_be_bytes());
                n
            })
            .collect();
        let mailbox = h(9);
        let uploads: Vec<NewUpload<'_>> = ids[..520]
            .iter()
            .zip(&nonces)
            .map(|(tid, nonce)| NewUpload {
                transfer_id: tid,
                nonce,
                payee_key: b"payee",
                amount: i64::MAX,
                mailbox: &mailbox,
                dcp: 2,
            })
            .collect();
        tx.insert_uploads(&uploads)?;
        let known = tx.uploads_known(&ids)?;
        assert_eq!(known.len(), 520);
        assert!(known.contains(&ids[0]) && !known.contains(&ids[520]));
        assert!(tx.upload_exists(&ids[519])?);
        assert_eq!(
            tx.uploads_for(&nonces[7], b"payee")?,
            vec![UploadRow {
                transfer_id: ids[7],
                amount: i64::MAX,
                mailbox: Some(mailbox),
                dcp: 2,
            }]
        );

        assert!(tx.closed_requests(&nonces)?.is_empty());
        for (n, key) in [
            (&nonces[3], &b"k1"[..]),
            (&nonces[3], b"k2"),
            (&nonces[515], b"k1"),
        ] {
            tx.insert_closed(&ClosedReport {
                nonce: n,
                payee_key: key,
                mailbox: &mailbox,
                amount: 5,
                received: None,
                dcp: 1,
            })?;
        }
        let closed = tx.closed_requests(&nonces)?;
        let expected: std::collections::BTreeSet<([u8; 16], Vec<u8>)> = [
            (nonces[3], b"k1".to_vec()),
            (nonces[3], b"k2".to_vec()),
            (nonces[515], b"k1".to_vec()),
        ]
        .into();
        assert_eq!(closed, expected);
        assert!(tx.closed_requests(&nonces[4..515])?.is_empty());
        Ok(())
    });
    // A second copy of a stored escrow or upload is refused whole.
    let e = fails(s, |tx| {
        tx.insert_escrows(&[(h(3), &b"x"[..]), (h(1), &b"y"[..])])
    });
    assert!(is_constraint(&e), "{e:?}");
    run(s, |tx| {
        assert!(!tx.has_escrow(&h(3))?);
        assert_eq!(tx.escrow(&h(1))?, Some(b"one".to_vec()));
        Ok(())
    });
}

// ---- the guard ------------------------------------------------------------------

#[path = "../../tally-store/tests/common/sql_guard.rs"]
mod sql_guard;

#[test]
fn the_guard_finds_each_kind_of_violation() {
    sql_guard::self_test();
}

/// SQL lives in `src/db.rs` only.
#[test]
fn sql_lives_only_in_db_rs() {
    let found = sql_guard::scan_crate(env!("CARGO_MANIFEST_DIR"), &["db.rs"]);
    assert!(
        found.is_empty(),
        "SQL or positional row reads outside src/db.rs:\n{}",
        found.join("\n")
    );
}
