//! A SealedStorageCred manifest (YAML, as read from git) → the structural
//! checks. Neither may panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealcred_shared::crd::SealedStorageCred;
use sealcred_shared::format::ParsedSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(obj) = serde_saphyr::from_str::<SealedStorageCred>(text)
        && let Ok(parsed) = ParsedSpec::parse(&obj.spec)
    {
        // Whatever parses is internally consistent.
        assert!(parsed.head < parsed.data_keys.len());
        for e in parsed.entries.values() {
            assert!(e.data_key < parsed.data_keys.len());
        }
    }
});
