//! Throughput of sealcred's value-encryption path against the raw primitives,
//! on one buffer of `--mib` MiB (default 64), one core, median of `--runs`.
//!
//! - `sealcred`: `DerivedKeys::derive` (HKDF-SHA512, commitment) + `DerivedKeys::seal`
//!   (copy into the output buffer, random nonce, AES-256-GCM from the aes-gcm crate).
//! - `aes-gcm`: the same crate's AES-256-GCM, in place, nothing else.
//! - `aws-lc-rs`: AWS-LC's AES-256-GCM, in place.
//!
//! Prints one JSON object: MB/s per implementation (1 MB = 10^6 bytes).

use std::time::Instant;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sealcred_shared::crypto::{DerivedKeys, random_id};
use sealcred_shared::secret::{DataKey, SecretBytes};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mib = get("--mib", 64);
    let runs = get("--runs", 5);
    let len = mib * 1024 * 1024;
    let data = vec![0x5au8; len];
    let plaintext = SecretBytes::copy_from(&data);
    let mbps = |secs: f64| len as f64 / secs / 1e6;

    // sealcred's envelope path
    let mut ours = Vec::new();
    for _ in 0..runs {
        let dk = DataKey::random();
        let t = Instant::now();
        let keys = DerivedKeys::derive(&dk, &random_id());
        let (_nonce, ct) = keys.seal(b"aad", &plaintext);
        ours.push(mbps(t.elapsed().as_secs_f64()));
        assert_eq!(ct.len(), len + 16);
    }

    // raw aes-gcm, in place
    let mut raw = Vec::new();
    let mut buf = data.clone();
    for _ in 0..runs {
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from([7u8; 32]));
        let nonce = Nonce::from([1u8; 12]);
        let t = Instant::now();
        let _tag = cipher
            .encrypt_inout_detached(&nonce, b"aad", buf.as_mut_slice().into())
            .unwrap();
        raw.push(mbps(t.elapsed().as_secs_f64()));
    }

    // raw aes-gcm into a fresh output buffer (what any caller that keeps its
    // plaintext must do): the same memory traffic as our path, minus HKDF.
    let mut fresh = Vec::new();
    for _ in 0..runs {
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from([7u8; 32]));
        let nonce = Nonce::from([1u8; 12]);
        let t = Instant::now();
        let mut out = vec![0u8; len];
        let io = aes_gcm::aead::inout::InOutBuf::new(&data, &mut out).unwrap();
        let _tag = cipher.encrypt_inout_detached(&nonce, b"aad", io).unwrap();
        fresh.push(mbps(t.elapsed().as_secs_f64()));
        assert_eq!(out.len(), len);
    }

    // aws-lc-rs, in place
    let mut lc = Vec::new();
    for _ in 0..runs {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as LcNonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
        let t = Instant::now();
        let _tag = key
            .seal_in_place_separate_tag(
                LcNonce::assume_unique_for_key([1u8; 12]),
                Aad::from(b"aad"),
                &mut buf,
            )
            .unwrap();
        lc.push(mbps(t.elapsed().as_secs_f64()));
    }

    println!(
        "{}",
        serde_json::json!({
            "bytes": len,
            "runs": runs,
            "sealcred_MBps": median(ours),
            "aes_gcm_MBps": median(raw),
            "aes_gcm_fresh_buffer_MBps": median(fresh),
            "aws_lc_rs_MBps": median(lc),
        })
    );
}
