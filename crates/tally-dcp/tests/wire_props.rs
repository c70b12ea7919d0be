//! Properties of the DCP ↔ central bank wire (docs/SPEC.md §10): random
//! well-formed `CentralRequest`s, `CentralCall`s and `InboxEntry`s
//! round-trip through canonical CBOR, and random bytes — fresh or a vector
//! with bytes flipped — never make a decoder panic, and what a decoder
//! accepts re-encodes to the input (the fuzz targets' checks).

use proptest::prelude::*;
use tally_core::codec::Cbor;
use tally_core::dcp::ACCOUNT_NAME_BYTES_MAX;
use tally_core::{Amount, Hash32, Issue, Output, SecretKey, Suite};
use tally_dcp::central::{CentralCall, CentralRequest, INBOX_BATCH_MAX, InboxEntry};
use tally_dcp::fuzzing::{self, ResultFixture, check_central_objects, check_settlement_result};

fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn account() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9_-]{{1,{ACCOUNT_NAME_BYTES_MAX}}}"))
        .expect("regex")
}

/// An Issue of 1..=4 outputs, signed by a key of a random seed.
fn issue() -> impl Strategy<Value = Issue> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u32>(),
        proptest::collection::vec((1u64..=u64::MAX / 8, any::<u8>()), 1..=4),
    )
        .prop_map(|(seed, serial, expiry, outs)| {
            let issuer = SecretKey::from_seed(Suite::Ed25519, &[seed; 32]).unwrap();
            let outputs = outs
                .into_iter()
                .map(|(v, k)| Output {
                    value: Amount(v),
                    owner: SecretKey::from_seed(Suite::Ed25519, &[k; 32])
                        .unwrap()
                        .public(),
                })
                .collect();
            Issue::sign(&issuer, serial, expiry, outputs)
        })
}

fn request() -> impl Strategy<Value = CentralRequest> {
    prop_oneof![
        (issue(), any::<u8>()).prop_map(|(issue, class)| CentralRequest::Load { issue, class }),
        (
            any::<[u8; 16]>(),
            hash(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<u64>(),
            proptest::option::of(issue()),
            any::<u8>(),
            any::<u32>(),
        )
            .prop_map(
                |(nonce, transfer_id, sealed, amount, renewal, class, last_sync)| {
                    CentralRequest::Redeem {
                        nonce,
                        transfer_id,
                        sealed,
                        amount,
                        renewal,
                        class,
                        last_sync,
                    }
                }
            ),
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            hash(),
            hash(),
            any::<u32>()
        )
            .prop_map(
                |(sealed, reports, mailbox, last_sync)| CentralRequest::Sync {
                    sealed,
                    reports,
                    mailbox,
                    last_sync,
                }
            ),
        (hash(), proptest::collection::vec((hash(), issue()), 0..4))
            .prop_map(|(mailbox, issues)| CentralRequest::Deliver { mailbox, issues }),
        issue().prop_map(|issue| CentralRequest::Cancel { issue }),
        (any::<u32>(), account(), any::<u64>()).prop_map(|(to_dcp, to_account, amount)| {
            CentralRequest::Pay {
                to_dcp,
                to_account,
                amount,
            }
        }),
    ]
}

fn call() -> impl Strategy<Value = CentralCall> {
    let k = fuzzing::WireKeys::new();
    let maker = k.maker_certificate();
    prop_oneof![
        Just(CentralCall::Trust),
        hash().prop_map(CentralCall::Device),
        Just(CentralCall::Enrol(maker)),
        (hash(), hash()).prop_map(|(s, d)| CentralCall::SetIdDigest(s, d)),
        hash().prop_map(CentralCall::IdDigest),
        (hash(), hash(), request()).prop_map(|(op, reply_key, request)| CentralCall::Call {
            op,
            reply_key,
            request
        }),
        Just(CentralCall::Inbox),
        proptest::collection::vec(hash(), 0..=INBOX_BATCH_MAX).prop_map(CentralCall::AckInbox),
        Just(CentralCall::SettlementBalance),
    ]
}

fn inbox_entry() -> impl Strategy<Value = InboxEntry> {
    (
        hash(),
        proptest::option::of(account()),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(op, account, amount, from_dcp)| InboxEntry {
            op,
            account,
            amount,
            from_dcp,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn requests_round_trip(r in request()) {
        let bytes = r.to_cbor();
        prop_assert_eq!(CentralRequest::from_cbor(&bytes), Ok(r));
        // Through the object decoders' check as well.
        let mut input = vec![fuzzing::central_object_selector("CentralRequest")];
        input.extend(&bytes);
        check_central_objects(&input);
    }

    #[test]
    fn calls_round_trip(c in call()) {
        let bytes = c.to_cbor();
        prop_assert_eq!(CentralCall::from_cbor(&bytes), Ok(c));
    }

    #[test]
    fn inbox_entries_round_trip(e in inbox_entry()) {
        prop_assert_eq!(InboxEntry::from_cbor(&e.to_cbor()), Ok(e));
    }

    /// A request cut short or with a byte appended is refused.
    #[test]
    fn truncated_or_extended_requests_are_refused(r in request(), cut in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let bytes = r.to_cbor();
        let n = cut.index(bytes.len());
        prop_assert!(CentralRequest::from_cbor(&bytes[..n]).is_err());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(CentralRequest::from_cbor(&longer).is_err());
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(sel in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut input = vec![sel];
        input.extend(&bytes);
        check_central_objects(&input);
        check_settlement_result(&ResultFixture::new(), &bytes);
    }

    /// Every vector with one byte changed: each decoder still answers
    /// (an error or a value that re-encodes to the input), and a changed
    /// signed result does not open.
    #[test]
    fn mutated_vectors_never_panic_a_decoder(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let vectors = fuzzing::vectors();
        let (name, bytes) = &vectors[which.index(vectors.len())];
        let mut m = bytes.clone();
        let i = at.index(m.len());
        m[i] ^= xor;
        for sel in 0..fuzzing::CENTRAL_OBJECTS.len() as u8 {
            let mut input = vec![sel];
            input.extend(&m);
            check_central_objects(&input);
        }
        let f = ResultFixture::new();
        check_settlement_result(&f, &m);
        if *name == "settlement-result-v2" {
            prop_assert!(
                tally_dcp::SettlementResult::open(&m, &f.settlement, &f.root, &f.op).is_err(),
                "a result with byte {} changed opened", i
            );
        }
    }
}
