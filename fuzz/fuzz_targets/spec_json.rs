//! Entry decoding: an arbitrary JSON spec (as the controller receives it from
//! the API server) → `ParsedSpec::parse`, and the base64 field decoder on
//! arbitrary text. Neither may panic; what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealcred_shared::crd::SealedStorageCredSpec;
use sealcred_shared::format::{ParsedSpec, decode_b64, encode_b64};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Canonical base64 only: whatever decodes encodes back to the input.
        if let Ok(bytes) = decode_b64("field", text, None) {
            assert_eq!(encode_b64(&bytes), text);
        }
        for n in [12, 16, 32] {
            if let Ok(bytes) = decode_b64("field", text, Some(n)) {
                assert_eq!(bytes.len(), n);
            }
        }
    }
    if let Ok(spec) = serde_json::from_slice::<SealedStorageCredSpec>(data)
        && let Ok(parsed) = ParsedSpec::parse(&spec)
    {
        assert!(parsed.head < parsed.data_keys.len());
        assert_eq!(parsed.entries.len(), spec.entries.len());
        for (name, e) in &parsed.entries {
            assert!(e.data_key < parsed.data_keys.len());
            assert!(parsed.data_keys[e.data_key].names.contains(name));
        }
    }
});
