//! A deterministic stream of settled records for MDS tests and the
//! ingest benchmark: honest payments among pseudonymous devices (fresh key
//! per device and epoch), loads, renewals and unloads, with injected
//! frauds, plus the indicator values computed independently from what was
//! generated (a simple model, not the MDS's SQL).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use tally_core::package::sign_transfer;
use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Hash32, Issue, OutPoint, Output, PublicKey, Record, SecretKey, Suite};
use tally_mds::{IngestRecord, MdsConfig, Verdict};

/// splitmix64: one seed replays the whole scenario.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub const PAYMENT_MAX: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FraudKind {
    /// A spent token spent again; the fraud branch ends there.
    DoubleSpendLeaf,
    /// A spent token spent again and the fraud branch continues (the
    /// double spend sits in the middle of the later package's ancestry).
    DoubleSpendMiddle,
    /// Settlement's verifier refused it (bad signature).
    BadSignature,
    /// Outputs worth more than inputs.
    NonConserving,
    /// An Issue by a key no root certified.
    UnknownIssuer,
    /// A transfer spending a counterfeit Issue.
    CounterfeitDescendant,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub issued: u64,
    pub redeemed: u64,
    pub payments: u64,
    pub payment_value: u64,
    pub by_epoch: BTreeMap<u32, (u64, u64)>,
    pub redemptions: u64,
    pub hops_total: u64,
    pub holdings: BTreeMap<u8, u64>,
    pub offline_samples: u64,
    pub offline_total: u64,
    pub offline_max: u64,
    pub fraud_losses: u64,
    pub double_spends: u64,
    pub counterfeits: u64,
}

pub struct Scenario {
    pub config: MdsConfig,
    pub batches: Vec<Vec<IngestRecord>>,
    /// Injected fraud records and their kind.
    pub frauds: Vec<(Hash32, FraudKind)>,
    pub expected: Expected,
    pub devices: usize,
}

struct Token {
    op: OutPoint,
    value: u64,
    owner: PublicKey,
}

struct ModelOut {
    value: u64,
    class: u8,
    depth: u64,
    redeemed: bool,
    spent: bool,
}

struct Gen {
    rng: Rng,
    scheme: Scheme,
    keys: HashMap<PublicKey, SecretKey>,
    dev_keys: HashMap<(usize, u32), PublicKey>,
    wallets: Vec<Vec<Token>>,
    classes: Vec<u8>,
    outs: HashMap<OutPoint, ModelOut>,
    spent_history: Vec<Token>,
    exp: Expected,
    batch: Vec<IngestRecord>,
    batches: Vec<Vec<IngestRecord>>,
    batch_records: usize,
    counter: u64,
    fences: u64,
    dcp_key: PublicKey,
}

impl Gen {
    fn dev_key(&mut self, d: usize, epoch: u32) -> PublicKey {
        if let Some(k) = self.dev_keys.get(&(d, epoch)) {
            return *k;
        }
        let sk = key(Suite::Ed25519, format!("mds-dev-{d}-e{epoch}").as_bytes());
        let pk = sk.public();
        self.keys.insert(pk, sk);
        self.dev_keys.insert((d, epoch), pk);
        pk
    }

    fn fence(&mut self) -> PublicKey {
        self.fences += 1;
        let sk = key(
            Suite::Ed25519,
            format!("mds-fence-{}", self.fences).as_bytes(),
        );
        let pk = sk.public();
        self.keys.insert(pk, sk);
        pk
    }

    fn offline(&mut self) -> Option<u32> {
        if self.rng.below(10) == 0 {
            return None;
        }
        let o = self.rng.below(5);
        self.exp.offline_samples += 1;
        self.exp.offline_total += o;
        self.exp.offline_max = self.exp.offline_max.max(o);
        Some(o as u32)
    }

    fn push(&mut self, r: IngestRecord) {
        self.batch.push(r);
        if self.batch.len() >= self.batch_records {
            self.batches.push(std::mem::take(&mut self.batch));
        }
    }

    /// Model bookkeeping for a record the MDS should accept.
    fn accept(&mut self, id: Hash32, inputs: &[OutPoint], outputs: &[(u64, u8, bool)]) -> u64 {
        let mut depth = 0;
        for op in inputs {
            let o = self.outs.get_mut(op).expect("model input");
            if o.spent {
                self.exp.fraud_losses += o.value;
                self.exp.double_spends += 1;
            }
            o.spent = true;
            depth = depth.max(o.depth + 1);
        }
        for (i, (value, class, redeemed)) in outputs.iter().enumerate() {
            self.outs.insert(
                OutPoint {
                    record: id,
                    index: i as u8,
                },
                ModelOut {
                    value: *value,
                    class: *class,
                    depth,
                    redeemed: *redeemed,
                    spent: false,
                },
            );
        }
        depth
    }

    fn issue(&mut self, d: usize, epoch: u32, value: u64) {
        let owner = self.dev_key(d, epoch);
        let i = self.scheme.issue(owner, value);
        let id = i.id();
        self.accept(id, &[], &[(value, self.classes[d], false)]);
        self.exp.issued += value;
        self.wallets[d].push(Token {
            op: OutPoint {
                record: id,
                index: 0,
            },
            value,
            owner,
        });
        let mut r = IngestRecord::new(Record::Issue(i), epoch, Verdict::Verified);
        r.output_classes = vec![self.classes[d]];
        r.offline_epochs = self.offline();
        self.push(r);
    }

    fn sign(&mut self, inputs: &[&Token], outputs: Vec<Output>) -> tally_core::Transfer {
        self.counter += 1;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.rng.next().to_be_bytes());
        let owners: Vec<PublicKey> = inputs.iter().map(|t| t.owner).collect();
        let keys = &self.keys;
        sign_transfer(
            inputs.iter().map(|t| t.op).collect(),
            &owners,
            outputs,
            nonce,
            self.counter,
            &|k| keys.get(k).cloned(),
        )
        .expect("keys known")
    }

    /// Takes 1 or 2 tokens out of device `d`'s wallet.
    fn take(&mut self, d: usize) -> Vec<Token> {
        let n = 1 + self.rng.below(2) as usize;
        let mut v = Vec::new();
        for _ in 0..n.min(self.wallets[d].len()) {
            let i = self.rng.below(self.wallets[d].len() as u64) as usize;
            v.push(self.wallets[d].swap_remove(i));
        }
        v
    }

    fn pay(&mut self, payer: usize, payee: usize, epoch: u32) -> bool {
        if self.wallets[payer].is_empty() {
            return false;
        }
        let tokens = self.take(payer);
        let total: u64 = tokens.iter().map(|t| t.value).sum();
        // Honest amounts stay far from the per-payment limit.
        let amount = (1 + self.rng.below(total)).min(PAYMENT_MAX / 2);
        let payee_key = self.dev_key(payee, epoch);
        let change_key = self.dev_key(payer, epoch);
        let mut outputs = vec![Output {
            value: Amount(amount),
            owner: payee_key,
        }];
        let mut classes = vec![self.classes[payee]];
        if total > amount {
            outputs.push(Output {
                value: Amount(total - amount),
                owner: change_key,
            });
            classes.push(self.classes[payer]);
        }
        let refs: Vec<&Token> = tokens.iter().collect();
        let t = self.sign(&refs, outputs);
        let id = t.id();
        let spec: Vec<(u64, u8, bool)> = t
            .outputs
            .iter()
            .zip(&classes)
            .map(|(o, c)| (o.value.0, *c, false))
            .collect();
        self.accept(id, &t.inputs, &spec);
        self.exp.payments += 1;
        self.exp.payment_value += amount;
        let e = self.exp.by_epoch.entry(epoch).or_default();
        e.0 += 1;
        e.1 += amount;
        self.wallets[payee].push(Token {
            op: OutPoint {
                record: id,
                index: 0,
            },
            value: amount,
            owner: payee_key,
        });
        if total > amount {
            self.wallets[payer].push(Token {
                op: OutPoint {
                    record: id,
                    index: 1,
                },
                value: total - amount,
                owner: change_key,
            });
        }
        let mut r = IngestRecord::new(Record::Transfer(t), epoch, Verdict::Verified);
        r.output_classes = classes;
        r.offline_epochs = self.offline();
        self.push(r);
        self.spent_history.extend(tokens);
        true
    }

    /// Renewal (`reissue`) or unload: every selected token to the DCP.
    fn redeem(&mut self, d: usize, epoch: u32, reissue: bool) {
        if self.wallets[d].is_empty() {
            return;
        }
        let tokens = self.take(d);
        let total: u64 = tokens.iter().map(|t| t.value).sum();
        let refs: Vec<&Token> = tokens.iter().collect();
        let t = self.sign(
            &refs,
            vec![Output {
                value: Amount(total),
                owner: self.dcp_key,
            }],
        );
        let id = t.id();
        let depth = self.accept(id, &t.inputs, &[(total, CLASS_DCP, true)]);
        self.exp.redeemed += total;
        self.exp.redemptions += 1;
        self.exp.hops_total += depth - 1;
        let mut r = IngestRecord::new(Record::Transfer(t), epoch, Verdict::Verified);
        r.offline_epochs = self.offline();
        self.push(r);
        self.spent_history.extend(tokens);
        if reissue {
            self.issue(d, epoch, total);
        }
    }

    fn fraud(&mut self, kind: FraudKind, epoch: u32, frauds: &mut Vec<(Hash32, FraudKind)>) {
        match kind {
            FraudKind::DoubleSpendLeaf | FraudKind::DoubleSpendMiddle => {
                // Earlier half of history: the token has honest descendants.
                let half = (self.spent_history.len() / 2).max(1) as u64;
                let i = self.rng.below(half) as usize;
                let tok = self.spent_history.swap_remove(i);
                let fence = self.fence();
                let x = self.sign(
                    &[&tok],
                    vec![Output {
                        value: Amount(tok.value),
                        owner: fence,
                    }],
                );
                let xid = x.id();
                self.accept(xid, &x.inputs, &[(tok.value, PHONE, false)]);
                let mut r = IngestRecord::new(Record::Transfer(x), epoch, Verdict::Verified);
                r.output_classes = vec![PHONE];
                self.push(r);
                frauds.push((xid, kind));
                if kind == FraudKind::DoubleSpendMiddle {
                    let fence2 = self.fence();
                    let held = Token {
                        op: OutPoint {
                            record: xid,
                            index: 0,
                        },
                        value: tok.value,
                        owner: fence,
                    };
                    let y = self.sign(
                        &[&held],
                        vec![Output {
                            value: Amount(tok.value),
                            owner: fence2,
                        }],
                    );
                    let yid = y.id();
                    self.accept(yid, &y.inputs, &[(tok.value, PHONE, false)]);
                    // Y pays a device-less pseudonym: an offline payment all
                    // the same.
                    self.exp.payments += 1;
                    self.exp.payment_value += tok.value;
                    let e = self.exp.by_epoch.entry(epoch).or_default();
                    e.0 += 1;
                    e.1 += tok.value;
                    let mut r = IngestRecord::new(Record::Transfer(y), epoch, Verdict::Verified);
                    r.output_classes = vec![PHONE];
                    self.push(r);
                }
                // The double-spending branch X is not a payment in the
                // model's honest sense but it is one in the MDS's (a
                // transfer paying a pseudonym): count it.
                self.exp.payments += 1;
                self.exp.payment_value += tok.value;
                let e = self.exp.by_epoch.entry(epoch).or_default();
                e.0 += 1;
                e.1 += tok.value;
            }
            FraudKind::BadSignature | FraudKind::NonConserving => {
                let Some(d) = (0..self.wallets.len()).find(|&d| !self.wallets[d].is_empty()) else {
                    return;
                };
                let tok = self.wallets[d].swap_remove(0);
                let fence = self.fence();
                let extra = if kind == FraudKind::NonConserving {
                    1_000
                } else {
                    0
                };
                let mut t = self.sign(
                    &[&tok],
                    vec![Output {
                        value: Amount(tok.value + extra),
                        owner: fence,
                    }],
                );
                let verdict = if kind == FraudKind::BadSignature {
                    let mut b = *t.signatures[0].bytes();
                    b[0] ^= 1;
                    t.signatures[0] = tally_core::Signature::new(Suite::Ed25519, b);
                    Verdict::Refused(801)
                } else {
                    Verdict::Verified
                };
                frauds.push((t.id(), kind));
                self.exp.counterfeits += 1;
                self.push(IngestRecord::new(Record::Transfer(t), epoch, verdict));
                // Refused: the device still holds its token.
                self.wallets[d].push(tok);
            }
            FraudKind::UnknownIssuer | FraudKind::CounterfeitDescendant => {
                let rogue = key(Suite::Ed25519, b"mds-rogue-issuer");
                let fence = self.fence();
                self.counter += 1;
                let i = Issue::sign(
                    &rogue,
                    self.counter,
                    epoch + 20,
                    vec![Output {
                        value: Amount(7_000),
                        owner: fence,
                    }],
                );
                let iid = i.id();
                frauds.push((iid, FraudKind::UnknownIssuer));
                self.exp.counterfeits += 1;
                self.push(IngestRecord::new(
                    Record::Issue(i),
                    epoch,
                    Verdict::Verified,
                ));
                if kind == FraudKind::CounterfeitDescendant {
                    let fence2 = self.fence();
                    let held = Token {
                        op: OutPoint {
                            record: iid,
                            index: 0,
                        },
                        value: 7_000,
                        owner: fence,
                    };
                    let t = self.sign(
                        &[&held],
                        vec![Output {
                            value: Amount(7_000),
                            owner: fence2,
                        }],
                    );
                    frauds.push((t.id(), kind));
                    self.exp.counterfeits += 1;
                    self.push(IngestRecord::new(
                        Record::Transfer(t),
                        epoch,
                        Verdict::Verified,
                    ));
                }
            }
        }
    }
}

pub const CLASS_DCP: u8 = tally_core::policy::device_class::DCP;

/// `payments` honest payments among `devices` devices over `epochs`
/// settlement epochs, with the given frauds spread evenly through the
/// stream, in batches of `batch_records`.
pub fn generate(
    seed: u64,
    devices: usize,
    payments: usize,
    epochs: u32,
    frauds: &[FraudKind],
    batch_records: usize,
) -> Scenario {
    let scheme = Scheme::new(Suite::Ed25519);
    let dcp_key = scheme.dcp.public();
    let config = MdsConfig::new(vec![dcp_key.id()], vec![dcp_key.id()], PAYMENT_MAX);
    let mut g = Gen {
        rng: Rng::new(seed),
        scheme,
        keys: HashMap::new(),
        dev_keys: HashMap::new(),
        wallets: (0..devices).map(|_| Vec::new()).collect(),
        classes: (0..devices).map(|d| [CARD, PHONE, IOT][d % 3]).collect(),
        outs: HashMap::new(),
        spent_history: Vec::new(),
        exp: Expected::default(),
        batch: Vec::new(),
        batches: Vec::new(),
        batch_records,
        counter: 0,
        fences: 0,
        dcp_key,
    };
    for d in 0..devices {
        g.issue(d, 1, 5_000);
    }
    let mut injected = Vec::new();
    let fraud_every = payments / (frauds.len() + 1);
    let mut next_fraud = 0;
    let mut done = 0usize;
    while done < payments {
        let epoch = 1 + (done as u64 * u64::from(epochs) / payments as u64) as u32;
        if next_fraud < frauds.len() && done >= fraud_every * (next_fraud + 1) {
            g.fraud(frauds[next_fraud], epoch, &mut injected);
            next_fraud += 1;
            continue;
        }
        let roll = g.rng.below(1000);
        let d = g.rng.below(devices as u64) as usize;
        if roll < 20 {
            g.redeem(d, epoch, true);
        } else if roll < 25 {
            g.redeem(d, epoch, false);
        } else if roll < 35 {
            let v = 1_000 + g.rng.below(4_000);
            g.issue(d, epoch, v);
        } else {
            let payee = (d + 1 + g.rng.below(devices as u64 - 1) as usize) % devices;
            if g.pay(d, payee, epoch) {
                done += 1;
            }
        }
    }
    if !g.batch.is_empty() {
        let b = std::mem::take(&mut g.batch);
        g.batches.push(b);
    }
    for o in g.outs.values() {
        if !o.spent && !o.redeemed {
            *g.exp.holdings.entry(o.class).or_default() += o.value;
        }
    }
    Scenario {
        config,
        batches: g.batches,
        frauds: injected,
        expected: g.exp,
        devices,
    }
}

/// The standard fraud mix: double spends at the leaf and in the middle,
/// bad signatures, non-conserving transfers, unknown issuers and a
/// descendant of one.
pub fn fraud_mix(scale: usize) -> Vec<FraudKind> {
    let mut v = Vec::new();
    for i in 0..scale {
        v.push(FraudKind::DoubleSpendLeaf);
        v.push(FraudKind::DoubleSpendMiddle);
        v.push(FraudKind::BadSignature);
        v.push(FraudKind::NonConserving);
        v.push(FraudKind::DoubleSpendMiddle);
        if i % 2 == 0 {
            v.push(FraudKind::UnknownIssuer);
        } else {
            v.push(FraudKind::CounterfeitDescendant);
        }
    }
    v
}
