//! `/memory` and the `server.memory_*` gauges: what the kernel says of the
//! process (`/proc/self/status`), in Envoy's field names.
//!
//! Envoy reads tcmalloc's counters; ferry's allocator (mimalloc) keeps no
//! page heap or thread caches Envoy's fields could name, so those read 0
//! and the two that mean something here come from the kernel.

/// The process's memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    /// Resident anonymous memory (`RssAnon`): what the allocator holds in RAM.
    pub allocated: u64,
    /// The data segment and anonymous mappings (`VmData`): the heap's size.
    pub heap_size: u64,
    /// Resident memory in all (`VmRSS`).
    pub physical: u64,
}

impl Memory {
    /// Reads `/proc/self/status` (zeros where it cannot be read).
    pub(crate) fn read() -> Memory {
        std::fs::read_to_string("/proc/self/status").map(|status| Memory::parse(&status)).unwrap_or_default()
    }

    fn parse(status: &str) -> Memory {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory { allocated: field("RssAnon"), heap_size: field("VmData"), physical: field("VmRSS") }
    }

    /// Envoy's `/memory` JSON (numbers as strings, as protobuf's JSON
    /// mapping writes 64-bit integers).
    pub(crate) fn json(&self) -> String {
        serde_json::json!({
            "allocated": self.allocated.to_string(),
            "heap_size": self.heap_size.to_string(),
            "pageheap_unmapped": "0",
            "pageheap_free": "0",
            "total_thread_cache": "0",
            "total_physical_bytes": self.physical.to_string(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_proc_status_in_bytes() {
        let status = "Name:\tferry\nVmData:\t  2048 kB\nVmRSS:\t  1000 kB\nRssAnon:\t   600 kB\n";
        let memory = Memory::parse(status);
        assert_eq!(memory, Memory { allocated: 600 * 1024, heap_size: 2048 * 1024, physical: 1000 * 1024 });
        let json: serde_json::Value = serde_json::from_str(&memory.json()).unwrap();
        assert_eq!(json["total_physical_bytes"], "1024000");
        assert!(Memory::read().physical > 0, "this process has resident memory");
    }
}
