//! `tally package inspect|verify`.

use std::path::Path;

use tally_core::codec::Cbor;
use tally_core::verify::{
    Expected, NoCache, TrustStore, VerifyError, VerifyParams, verify_package,
    verify_package_for_settlement,
};
use tally_core::{Package, Record, Request};

use crate::CliError;
use crate::device::read_file;

pub fn inspect(path: &Path) -> Result<String, CliError> {
    let bytes = read_file(path)?;
    let p =
        Package::from_cbor(&bytes).map_err(|e| CliError::rule(101, format!("V1 (101): {e}")))?;
    let mut s = format!(
        "package: {} bytes, transfer {}\n",
        bytes.len(),
        p.transfer.id()
    );
    s.push_str(&format!(
        "  nonce {}  counter {}\n",
        hex::encode(p.transfer.nonce),
        p.transfer.counter
    ));
    for i in &p.transfer.inputs {
        s.push_str(&format!("  input  {}:{}\n", i.record, i.index));
    }
    // A confidential package shows commitments, never amounts: only the
    // payee's SE can open its own output (SPEC §4.9).
    let commitments = p.transfer.confidential.as_ref().map(|c| &c.commitments);
    for (n, o) in p.transfer.outputs.iter().enumerate() {
        let amount = match commitments.and_then(|c| c.get(n)) {
            Some(c) => format!("commitment {}", hex::encode(c.as_bytes())),
            None => o.value.to_string(),
        };
        s.push_str(&format!(
            "  output {n}: {amount} to {}\n",
            hex::encode(o.owner.id().0)
        ));
    }
    if let Some(c) = &p.transfer.confidential {
        s.push_str(&format!(
            "  confidential: {}, {}, {}\n",
            match &c.range_proof {
                Some(r) => format!("range proof {} bits × {}", r.bits().bits(), r.outputs()),
                None => "no range proof (one output: the sum of its inputs)".to_string(),
            },
            match &c.audit {
                Some(a) => format!("audit seal of {} opening(s) to settlement", a.openings()),
                None => "no audit seal".to_string(),
            },
            match &c.payee_opening {
                Some(tally_core::confidential::PayeeOpening::Sealed(_)) => {
                    "opening sealed to the payee"
                }
                Some(tally_core::confidential::PayeeOpening::Derived(_)) => {
                    "blinding derived for the payee (key encapsulation only)"
                }
                None => "no payee opening",
            }
        ));
    }
    s.push_str(&format!("ancestry: {} records\n", p.ancestry.len()));
    for r in &p.ancestry {
        match r {
            Record::Issue(i) if i.confidential.is_some() => s.push_str(&format!(
                "  issue    {} serial {} expiry epoch {} confidential, {} output(s)\n",
                i.id(),
                i.serial,
                i.expiry_epoch,
                i.outputs.len()
            )),
            Record::Issue(i) => s.push_str(&format!(
                "  issue    {} serial {} expiry epoch {} value {}\n",
                i.id(),
                i.serial,
                i.expiry_epoch,
                i.outputs.iter().map(|o| o.value.0).sum::<u64>()
            )),
            Record::Transfer(t) => s.push_str(&format!(
                "  transfer {} {} in → {} out, counter {}\n",
                t.id(),
                t.inputs.len(),
                t.outputs.len(),
                t.counter
            )),
        }
    }
    s.push_str(&format!("certificates: {}\n", p.certificates.len()));
    for c in &p.certificates {
        s.push_str(&format!(
            "  pseudonym {} class {} tier {} expiry epoch {}\n",
            hex::encode(c.key.id().0),
            c.device_class,
            c.tier,
            c.expiry_epoch
        ));
    }
    Ok(s)
}

/// The trust bundle as served by GET /v1/trust: `[root, policy,
/// revocations, sealing key]`.
pub fn read_trust(path: &Path) -> Result<TrustStore, CliError> {
    let bytes = read_file(path)?;
    let t = tally_api::TrustBundle::from_cbor(&bytes)
        .map_err(|e| CliError::usage(format!("{}: not a trust bundle: {e}", path.display())))?;
    TrustStore::new(t.root, t.policy, t.revocations)
        .map_err(|e| CliError::failed(format!("trust bundle refused: {e}")))
}

pub fn verify(
    path: &Path,
    trust: &Path,
    request: Option<&Path>,
    epoch: Option<u32>,
    budget: usize,
) -> Result<String, CliError> {
    let trust = read_trust(trust)?;
    let bytes = read_file(path)?;
    let pkg =
        Package::from_cbor(&bytes).map_err(|e| CliError::rule(101, format!("V1 (101): {e}")))?;
    let expected = match request {
        Some(rp) => {
            let r = Request::from_cbor(&read_file(rp)?)
                .map_err(|e| CliError::usage(format!("{}: {e}", rp.display())))?;
            Expected {
                payee: r.payee.key,
                amount: r.amount,
                nonce: r.nonce,
                stream: None,
            }
        }
        // Without the payee's request, check the package pays what it says.
        None => {
            // A transfer with no outputs decodes; it breaks V4 (and pays
            // nothing to compare against).
            let Some(first) = pkg.transfer.outputs.first() else {
                let e = VerifyError::EmptyRecord;
                return Err(CliError::rule(e.code(), format!("invalid: {e}")));
            };
            Expected {
                payee: first.owner,
                amount: first.value,
                nonce: pkg.transfer.nonce,
                stream: None,
            }
        }
    };
    let epoch = epoch.unwrap_or(trust.revocations().epoch);
    let params = VerifyParams {
        epoch,
        history_records_max: budget,
        signature_batch_max: usize::MAX,
    };
    // A confidential payment opens only with the payee's key, which this
    // command does not have: every other rule is checked (settlement's
    // view: no V11, no expiry or revocation).
    if pkg.transfer.confidential.is_some() {
        return match verify_package_for_settlement(pkg, &trust, params, &mut NoCache) {
            Ok(v) => Ok(format!(
                "valid (confidential: the amount opens only with the payee's key; \
                 expiry and revocation not checked): transfer {}, {} ancestry records, \
                 {} signatures checked",
                v.transfer_id(),
                v.ancestry_ids().len(),
                v.signature_checks()
            )),
            Err(e) => Err(CliError::rule(e.code(), format!("invalid: {e}"))),
        };
    }
    match verify_package(pkg, &expected, &trust, params, &mut NoCache) {
        Ok(v) => Ok(format!(
            "valid: pays {} (transfer {}), {} ancestry records, {} signatures checked",
            v.payment().1.value,
            v.transfer_id(),
            v.ancestry_ids().len(),
            v.signature_checks()
        )),
        Err(e) => Err(CliError::rule(e.code(), format!("invalid: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::confidential::fuzzing::PackageFixture;

    /// `tally package inspect` on a confidential package prints
    /// commitments; no amount of the package (payment 250, change 750,
    /// Issue 1000) appears in any encoding.
    #[test]
    fn inspect_shows_commitments_not_amounts() {
        let f = PackageFixture::new();
        let path = std::env::temp_dir().join(format!(
            "tally-inspect-confidential-{}.cbor",
            std::process::id()
        ));
        std::fs::write(&path, f.package.to_cbor()).unwrap();
        let out = inspect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let c = f.package.transfer.confidential.as_ref().unwrap();
        for cm in &c.commitments {
            assert!(out.contains(&hex::encode(cm.as_bytes())), "{out}");
        }
        let words: Vec<&str> = out.split(|ch: char| !ch.is_ascii_alphanumeric()).collect();
        for v in [250u64, 750, 1000] {
            assert!(!words.contains(&v.to_string().as_str()), "{v} in:\n{out}");
            let mut w = tally_core::codec::Writer::new();
            w.u64(v);
            for e in [hex::encode(w.into_bytes()), hex::encode(v.to_be_bytes())] {
                assert!(!out.contains(&e), "{v} as {e} in:\n{out}");
            }
        }
        // The payee opens its own: 250.
        assert_eq!(
            f.verify(f.package.clone()).unwrap().payment().1.value.0,
            250
        );
        assert!(out.contains("range proof 16 bits × 2"), "{out}");
    }

    /// A whole-token package (decision 0031): inspect says it has no range
    /// proof and why, and shows its one commitment, not its amount.
    #[test]
    fn inspect_shows_a_whole_token_has_no_range_proof() {
        let f = PackageFixture::whole();
        let path =
            std::env::temp_dir().join(format!("tally-inspect-whole-{}.cbor", std::process::id()));
        std::fs::write(&path, f.package.to_cbor()).unwrap();
        let out = inspect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            out.contains("no range proof (one output: the sum of its inputs)"),
            "{out}"
        );
        let c = f.package.transfer.confidential.as_ref().unwrap();
        assert!(
            out.contains(&hex::encode(c.commitments[0].as_bytes())),
            "{out}"
        );
        let words: Vec<&str> = out.split(|ch: char| !ch.is_ascii_alphanumeric()).collect();
        assert!(!words.contains(&"1000"), "{out}");
        assert!(out.contains("opening sealed to the payee"), "{out}");
    }
}
