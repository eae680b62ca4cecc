//! A public-key file (`sealcred seal --public-key FILE`, a rule's
//! `public_key:`; read from git) → `RsaPublicKey::parse`. Never panics; what
//! parses renders back to a file that parses to the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealcred_shared::provider::rsa::RsaPublicKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = RsaPublicKey::parse(text, "fuzz.pubkey") {
        let again = RsaPublicKey::parse(&k.render(), "rendered").expect("a rendered file parses");
        assert_eq!(again.arn(), k.arn());
        assert_eq!(again.spec(), k.spec());
        assert_eq!(again.der(), k.der());
    }
});
