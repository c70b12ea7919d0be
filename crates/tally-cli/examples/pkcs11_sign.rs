//! Cost of one back-office signature by where the key lives: a key in
//! memory (key file) versus an Ed25519 key in a PKCS#11 token, through the
//! same `Signer` calls `tally node` makes (each token signature is also
//! verified, as the node does). Prints a Markdown table.
//!
//! ```text
//! SOFTHSM2_CONF=… cargo run --release -p tally-cli --example pkcs11_sign -- \
//!     MODULE TOKEN PIN_FILE LABEL [N]
//! ```

use std::time::Instant;

use tally_cli::pkcs11::{Labels, TokenOptions, open_node_keys};
use tally_core::{SecretKey, Signer, Suite};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: pkcs11_sign MODULE TOKEN PIN_FILE LABEL [N]");
        std::process::exit(2);
    }
    let n: u32 = a.get(5).map_or(2_000, |s| s.parse().expect("N"));
    let opts = TokenOptions {
        module: a[1].clone().into(),
        token: a[2].clone(),
        pin_file: Some(a[3].clone().into()),
    };
    let labels = Labels {
        root: a[4].clone(),
        settlement: a[4].clone(),
        dcp: a[4].clone(),
    };
    let [hsm, _, _] = match open_node_keys(&opts, &labels) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e:?}");
            std::process::exit(1);
        }
    };
    let file = tally_dcp::SoftwareSigner::new(
        SecretKey::from_seed(Suite::Ed25519, &[7; 32]).expect("seed"),
    );
    let msg = [0x5a_u8; 32];
    let time = |s: &dyn Signer<Error = tally_dcp::KeyError>| {
        let t = Instant::now();
        for _ in 0..n {
            s.try_sign(&msg).expect("signs");
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let soft = time(&file);
    let token = time(&*hsm);
    println!("| signer | signatures | µs per signature |");
    println!("|---|---|---|");
    println!("| key file (in memory) | {n} | {soft:.1} |");
    println!("| PKCS#11 token, CKM_EDDSA + verify | {n} | {token:.1} |");
}
