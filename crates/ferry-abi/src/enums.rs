//! The ABI's enumerations, with the numeric values of ABI 0.2.1 and the
//! host-side superset used by Envoy (`proxy_wasm_common.h`).

/// Result of a host function (`proxy_status_t`). Every host function returns
/// one of these as an `i32`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The call succeeded.
    Ok = 0,
    /// The thing asked for does not exist (key, queue, buffer, ...).
    NotFound = 1,
    /// An argument is out of range or malformed.
    BadArgument = 2,
    /// A value could not be serialized.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// An expression was invalid (host superset).
    BadExpression = 5,
    /// A pointer or length from the plugin is outside its memory.
    InvalidMemoryAccess = 6,
    /// The queue has no item.
    Empty = 7,
    /// Compare-and-swap failed: the value changed since it was read.
    CasMismatch = 8,
    /// A result did not match (host superset).
    ResultMismatch = 9,
    /// The host failed for a reason of its own.
    InternalFailure = 10,
    /// The connection is gone (host superset).
    BrokenConnection = 11,
    /// The host does not implement this function.
    Unimplemented = 12,
}

impl Status {
    /// The value a host function returns to the plugin.
    pub const fn code(self) -> i32 {
        self as i32
    }
}

/// Defines an ABI enumeration with a fallible conversion from the raw `u32`
/// the plugin passes, so unknown values become `BadArgument` at the boundary.
macro_rules! abi_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value for a raw ABI number, or `None` if the ABI does not define it.
            pub const fn from_raw(raw: u32) -> Option<Self> {
                match raw {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

abi_enum!(
    /// Log level of `proxy_log` and `proxy_get_log_level` (`proxy_log_level_t`).
    LogLevel {
        /// Most verbose.
        Trace = 0,
        /// Debugging detail.
        Debug = 1,
        /// Normal operation.
        Info = 2,
        /// Something unexpected that was handled.
        Warn = 3,
        /// A failure.
        Error = 4,
        /// A failure that needs attention now.
        Critical = 5,
    }
);

impl LogLevel {
    /// The name Envoy prints for this level.
    pub const fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

abi_enum!(
    /// Which buffer `proxy_get_buffer_bytes` and friends address (`proxy_buffer_type_t`).
    BufferType {
        /// The HTTP request body.
        HttpRequestBody = 0,
        /// The HTTP response body.
        HttpResponseBody = 1,
        /// Data received from the downstream peer of a TCP connection.
        DownstreamData = 2,
        /// Data received from the upstream peer of a TCP connection.
        UpstreamData = 3,
        /// The body of an HTTP call's response.
        HttpCallResponseBody = 4,
        /// A message received on a gRPC call or stream.
        GrpcCallMessage = 5,
        /// The VM configuration, in `proxy_on_vm_start`.
        VmConfiguration = 6,
        /// The plugin configuration, in `proxy_on_configure`.
        PluginConfiguration = 7,
        /// The arguments of a foreign function call.
        ForeignFunctionArguments = 8,
    }
);

abi_enum!(
    /// Which header map a header-map host function addresses (`proxy_map_type_t`).
    MapType {
        /// Request headers, pseudo-headers first.
        HttpRequestHeaders = 0,
        /// Request trailers.
        HttpRequestTrailers = 1,
        /// Response headers, `:status` first.
        HttpResponseHeaders = 2,
        /// Response trailers.
        HttpResponseTrailers = 3,
        /// Initial metadata of a gRPC call.
        GrpcCallInitialMetadata = 4,
        /// Trailing metadata of a gRPC call.
        GrpcCallTrailingMetadata = 5,
        /// Headers of an HTTP call's response.
        HttpCallResponseHeaders = 6,
        /// Trailers of an HTTP call's response.
        HttpCallResponseTrailers = 7,
    }
);

abi_enum!(
    /// Which direction `proxy_continue_stream` / `proxy_close_stream` address (`proxy_stream_type_t`).
    StreamType {
        /// The HTTP request.
        HttpRequest = 0,
        /// The HTTP response.
        HttpResponse = 1,
        /// The downstream side of a TCP connection.
        Downstream = 2,
        /// The upstream side of a TCP connection.
        Upstream = 3,
    }
);

abi_enum!(
    /// Who closed a connection (`proxy_peer_type_t`).
    PeerType {
        /// Not known.
        Unknown = 0,
        /// This proxy.
        Local = 1,
        /// The other side.
        Remote = 2,
    }
);

abi_enum!(
    /// Kind of a metric defined with `proxy_define_metric` (`proxy_metric_type_t`).
    MetricType {
        /// Only goes up.
        Counter = 0,
        /// Goes up and down.
        Gauge = 1,
        /// Records a distribution.
        Histogram = 2,
    }
);

abi_enum!(
    /// What a header callback returns (Envoy's `FilterHeadersStatus`; the
    /// spec's `proxy_action_t` names only the first two).
    HeadersAction {
        /// Go on to the next filter.
        Continue = 0,
        /// Pause until the plugin resumes the stream (`proxy_action_t` PAUSE).
        StopIteration = 1,
        /// Continue, and end the stream here.
        ContinueAndEndStream = 2,
        /// Pause and buffer the body.
        StopAllIterationAndBuffer = 3,
        /// Pause and buffer the body up to the watermark.
        StopAllIterationAndWatermark = 4,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_round_trip_and_unknown_values_are_rejected() {
        for &m in MapType::ALL {
            assert_eq!(MapType::from_raw(m as u32), Some(m));
        }
        assert_eq!(MapType::from_raw(8), None);
        assert_eq!(BufferType::from_raw(8), Some(BufferType::ForeignFunctionArguments));
        assert_eq!(BufferType::from_raw(9), None);
        assert_eq!(LogLevel::from_raw(6), None);
        assert_eq!(Status::Unimplemented.code(), 12);
        assert_eq!(Status::Empty.code(), 7);
    }
}
