//! Small helpers shared by the reconcile, the watches and the restart pass.

use kube::api::ObjectMeta;

/// Lowercase hex (the digests the controller writes into annotations).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A background task that is aborted when this handle is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drops what the controller never reads from the cached objects (managedFields and
/// kubectl's last-applied copy), which would otherwise double their size in memory.
pub(crate) fn strip_for_cache(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}
