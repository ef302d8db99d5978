//! Process-wide shared data (`proxy_get_shared_data` / `proxy_set_shared_data`),
//! scoped by vm_id, with compare-and-swap as in proxy-wasm-cpp-host.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use ferry_abi::Status;

use crate::limits::MAX_SHARED_DATA_BYTES;

#[derive(Default)]
struct Store {
    by_vm_id: HashMap<String, Namespace>,
    last_cas: u32,
}

/// The data of one vm_id, and how many bytes its keys and values take.
#[derive(Default)]
struct Namespace {
    entries: HashMap<Bytes, (Bytes, u32)>,
    bytes: usize,
}

/// Key-value data shared by every VM with the same vm_id, on any thread.
#[derive(Default)]
pub struct SharedData {
    store: Mutex<Store>,
}

impl SharedData {
    /// The value of `key` and its CAS token.
    ///
    /// # Errors
    /// [`Status::NotFound`] if the key was never set.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Bytes, u32), Status> {
        let store = self.lock();
        store.by_vm_id.get(vm_id).and_then(|m| m.entries.get(key)).cloned().ok_or(Status::NotFound)
    }

    /// Stores `value` under `key`. A non-zero `cas` must match the key's
    /// current token; 0 writes unconditionally, and a new key is always written.
    ///
    /// # Errors
    /// [`Status::CasMismatch`] if the key changed since `cas` was read;
    /// [`Status::BadArgument`] if the vm_id's data would grow past
    /// [`MAX_SHARED_DATA_BYTES`].
    pub fn set(&self, vm_id: &str, key: &[u8], value: Bytes, cas: u32) -> Result<(), Status> {
        let mut store = self.lock();
        let namespace = store.by_vm_id.entry(vm_id.to_owned()).or_default();
        let old = namespace.entries.get(key);
        if let Some(entry) = old
            && cas != 0
            && cas != entry.1
        {
            return Err(Status::CasMismatch);
        }
        let freed = old.map_or(0, |(v, _)| key.len() + v.len());
        let bytes = namespace.bytes - freed + key.len() + value.len();
        if bytes > MAX_SHARED_DATA_BYTES {
            return Err(Status::BadArgument);
        }
        namespace.bytes = bytes;
        let token = store.next_cas();
        let namespace = store.by_vm_id.get_mut(vm_id).expect("inserted above");
        match namespace.entries.get_mut(key) {
            Some(entry) => *entry = (value, token),
            None => {
                namespace.entries.insert(Bytes::copy_from_slice(key), (value, token));
            }
        }
        Ok(())
    }

    /// Deletes all data of `vm_id`: called when its last module is unloaded.
    pub fn remove_vm_id(&self, vm_id: &str) {
        self.lock().by_vm_id.remove(vm_id);
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// One process-wide counter, skipping 0 (which means "no CAS").
    fn next_cas(&mut self) -> u32 {
        self.last_cas = self.last_cas.wrapping_add(1);
        if self.last_cas == 0 {
            self.last_cas = 1;
        }
        self.last_cas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_cas() {
        let data = SharedData::default();
        assert_eq!(data.get("vm", b"k"), Err(Status::NotFound));
        // A new key is written whatever the CAS says.
        data.set("vm", b"k", Bytes::from_static(b"v1"), 99).unwrap();
        let (value, cas) = data.get("vm", b"k").unwrap();
        assert_eq!(value, "v1");
        assert_ne!(cas, 0);
        data.set("vm", b"k", Bytes::from_static(b"v2"), cas).unwrap();
        // The old token no longer matches.
        assert_eq!(data.set("vm", b"k", Bytes::from_static(b"v3"), cas), Err(Status::CasMismatch));
        assert_eq!(data.get("vm", b"k").unwrap().0, "v2");
        data.set("vm", b"k", Bytes::from_static(b"v4"), 0).unwrap();
        assert_eq!(data.get("vm", b"k").unwrap().0, "v4");
    }

    #[test]
    fn vm_ids_do_not_see_each_other_and_can_be_removed() {
        let data = SharedData::default();
        data.set("a", b"k", Bytes::from_static(b"1"), 0).unwrap();
        assert_eq!(data.get("b", b"k"), Err(Status::NotFound));
        data.remove_vm_id("a");
        assert_eq!(data.get("a", b"k"), Err(Status::NotFound));
    }

    #[test]
    fn a_vm_id_holds_at_most_its_byte_budget() {
        let data = SharedData::default();
        let value = Bytes::from(vec![0u8; 16 << 20]);
        let fits = MAX_SHARED_DATA_BYTES / value.len() - 1;
        for i in 0..fits {
            data.set("vm", format!("k{i}").as_bytes(), value.clone(), 0).unwrap();
        }
        let over = (fits..fits + 2).map(|i| data.set("vm", format!("k{i}").as_bytes(), value.clone(), 0));
        assert!(over.into_iter().any(|r| r == Err(Status::BadArgument)));
        // Replacing a value frees what it held.
        data.set("vm", b"k0", Bytes::from_static(b"small"), 0).unwrap();
        data.set("vm", b"again", value.clone(), 0).unwrap();
        // Other vm_ids have their own budget.
        data.set("other", b"k", value, 0).unwrap();
    }
}
