//! ABI version detection from a module's exported marker function.

use std::fmt;

/// The Proxy-Wasm ABI versions a host can run. A module says which one it
/// speaks by exporting a function named `proxy_abi_version_<major>_<minor>_<patch>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`: configuration through `proxy_get_configuration`,
    /// two-argument header callbacks, `proxy_continue_request`/`_response`.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`: buffers for configuration, `proxy_continue_stream`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`: adds `proxy_get_log_level`.
    V0_2_1,
}

/// Prefix shared by all version markers.
pub const MARKER_PREFIX: &str = "proxy_abi_version_";

impl AbiVersion {
    /// The name of the export that marks this version.
    pub const fn marker(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "proxy_abi_version_0_1_0",
            AbiVersion::V0_2_0 => "proxy_abi_version_0_2_0",
            AbiVersion::V0_2_1 => "proxy_abi_version_0_2_1",
        }
    }

    /// The version a marker export names, if it is one the host runs.
    pub fn from_marker(export: &str) -> Option<Self> {
        [AbiVersion::V0_1_0, AbiVersion::V0_2_0, AbiVersion::V0_2_1].into_iter().find(|v| v.marker() == export)
    }

    /// Finds the version from a module's export names.
    ///
    /// # Errors
    /// No marker, an unknown marker (e.g. a draft `0_x_x`), or two different markers.
    pub fn detect<'a>(exports: impl IntoIterator<Item = &'a str>) -> Result<Self, AbiVersionError> {
        let mut found: Option<AbiVersion> = None;
        let mut unknown: Option<String> = None;
        for name in exports {
            let Some(_) = name.strip_prefix(MARKER_PREFIX) else { continue };
            match AbiVersion::from_marker(name) {
                Some(v) => match found {
                    Some(prev) if prev != v => {
                        return Err(AbiVersionError::Conflicting(prev, v));
                    }
                    _ => found = Some(v),
                },
                None => unknown = Some(name.to_owned()),
            }
        }
        match (found, unknown) {
            (Some(v), _) => Ok(v),
            (None, Some(name)) => Err(AbiVersionError::Unsupported(name)),
            (None, None) => Err(AbiVersionError::Missing),
        }
    }

    /// Whether header callbacks take the `end_of_stream` argument (0.2.x).
    pub const fn headers_have_end_of_stream(self) -> bool {
        !matches!(self, AbiVersion::V0_1_0)
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        })
    }
}

/// Why a module's ABI version could not be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiVersionError {
    /// No `proxy_abi_version_*` export.
    #[error("missing Proxy-Wasm ABI version: the module exports no proxy_abi_version_* marker (0.1.0, 0.2.0 or 0.2.1)")]
    Missing,
    /// A marker for a version this host does not run.
    #[error("unsupported Proxy-Wasm ABI version: the module exports `{0}`; supported are 0.1.0, 0.2.0 and 0.2.1")]
    Unsupported(String),
    /// Markers of two different versions.
    #[error("conflicting Proxy-Wasm ABI versions: the module exports markers for both {0} and {1}")]
    Conflicting(AbiVersion, AbiVersion),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_known_marker() {
        for v in [AbiVersion::V0_1_0, AbiVersion::V0_2_0, AbiVersion::V0_2_1] {
            assert_eq!(AbiVersion::detect(["memory", v.marker(), "_initialize"]), Ok(v));
        }
    }

    #[test]
    fn rejects_missing_unknown_and_conflicting_markers() {
        assert_eq!(AbiVersion::detect(["memory"]), Err(AbiVersionError::Missing));
        assert_eq!(
            AbiVersion::detect(["proxy_abi_version_0_x_x"]),
            Err(AbiVersionError::Unsupported("proxy_abi_version_0_x_x".into()))
        );
        assert_eq!(
            AbiVersion::detect(["proxy_abi_version_0_1_0", "proxy_abi_version_0_2_1"]),
            Err(AbiVersionError::Conflicting(AbiVersion::V0_1_0, AbiVersion::V0_2_1))
        );
    }
}
