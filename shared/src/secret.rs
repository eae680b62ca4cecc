//! Secret-holding types: where plaintext and data keys live, and for how long.
//!
//! Every credential value and every data key in sealcred lives in one of the two
//! types below. Both zeroize their memory when dropped, and neither can be
//! printed: their `Debug` shows only a length, and they implement no `Display`
//! and no `Serialize`. Code that needs the bytes calls `expose()`, which makes
//! every use of plaintext easy to find with `grep expose`.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// Length in bytes of a data key (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A 256-bit data key. Heap-allocated once, wiped on drop, never printed.
pub struct DataKey(Box<Zeroizing<[u8; DATA_KEY_LEN]>>);

impl DataKey {
    /// A fresh random data key from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut key = Self::zeroed();
        getrandom::fill(&mut key.0[..]).expect("the OS random number generator failed");
        key
    }

    /// Copies `bytes` into a new key. Returns `None` when the length is not 32.
    /// The caller stays responsible for wiping its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != DATA_KEY_LEN {
            return None;
        }
        let mut key = Self::zeroed();
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    fn zeroed() -> Self {
        DataKey(Box::new(Zeroizing::new([0u8; DATA_KEY_LEN])))
    }

    /// The key bytes. Keep the borrow short.
    pub fn expose(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// A credential value (or any plaintext), wiped on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes` (no copy is made).
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// An empty buffer with room for `cap` bytes, so that filling it does not
    /// reallocate (a reallocation would leave an unwiped copy behind).
    pub fn with_capacity(cap: usize) -> Self {
        SecretBytes(Zeroizing::new(Vec::with_capacity(cap)))
    }

    /// Reads `reader` to the end into a zeroizing buffer of `size_hint` bytes.
    /// Unlike `read_to_end`, growing past the hint never leaves an unwiped copy
    /// behind: the contents move into a larger buffer and the old one is wiped.
    pub fn read_all(mut reader: impl std::io::Read, size_hint: usize) -> std::io::Result<Self> {
        let mut buf = Self::with_capacity(size_hint.max(64));
        let mut chunk = Zeroizing::new([0u8; 8192]);
        loop {
            let n = match reader.read(&mut chunk[..]) {
                Ok(0) => return Ok(buf),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.0.capacity() - buf.0.len() < n {
                let mut bigger = Self::with_capacity((buf.0.len() + n).max(2 * buf.0.capacity()));
                bigger.0.extend_from_slice(&buf.0);
                buf = bigger; // the old buffer is wiped as it drops
            }
            buf.0.extend_from_slice(&chunk[..n]);
        }
    }

    /// Copies `bytes` into a new buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut s = Self::with_capacity(bytes.len());
        s.0.extend_from_slice(bytes);
        s
    }

    /// Takes ownership of a `String`'s buffer (no copy is made).
    pub fn from_string(s: String) -> Self {
        SecretBytes::new(s.into_bytes())
    }

    /// The plaintext. Keep the borrow short.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access, for in-place encryption and decryption.
    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wipes the buffer now (it is wiped on drop anyway).
    pub fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let canary = b"CANARY-9f8e7d6c";
        let s = SecretBytes::copy_from(canary);
        let k = DataKey::from_slice(&[0x41; 32]).unwrap();
        let shown = format!("{s:?} {k:?} {s:#?} {k:#?}");
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(!shown.contains("AAAA"), "{shown}");
        assert!(!shown.contains("65"), "{shown}");
        assert!(shown.contains("15 bytes"));
    }

    #[test]
    fn data_key_length_is_checked() {
        assert!(DataKey::from_slice(&[0; 31]).is_none());
        assert!(DataKey::from_slice(&[0; 33]).is_none());
        assert_eq!(DataKey::from_slice(&[7; 32]).unwrap().expose(), &[7; 32]);
    }

    #[test]
    fn read_all_grows_past_the_hint() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let v = SecretBytes::read_all(&data[..], 10).unwrap();
        assert_eq!(v.expose(), &data[..]);
        assert!(SecretBytes::read_all(&b""[..], 0).unwrap().is_empty());
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(DataKey::random().expose(), DataKey::random().expose());
    }
}
