//! Enum fields as Envoy reads them: by name, or by the number the name
//! has in Envoy's API (protobuf's JSON mapping takes both). Fields go
//! through one of the functions here with `deserialize_with`; the
//! conversion then sees the name either way.

use serde::Deserialize;
use serde::de::{Deserializer, Error};

/// A name or a number, as written.
#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Name(String),
    Number(i64),
}

/// The name for a name or a number of `names` (indexed by number, `""`
/// for numbers the enum does not use).
fn enum_name<'de, D: Deserializer<'de>>(
    deserializer: D,
    enum_name: &str,
    names: &[&str],
) -> Result<Option<String>, D::Error> {
    match Option::<NameOrNumber>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NameOrNumber::Name(name)) => Ok(Some(name)),
        Some(NameOrNumber::Number(number)) => usize::try_from(number)
            .ok()
            .and_then(|i| names.get(i))
            .filter(|name| !name.is_empty())
            .map(|name| Some((*name).to_owned()))
            .ok_or_else(|| D::Error::custom(format!("{number} is not a value of {enum_name}"))),
    }
}

/// `HttpConnectionManager.CodecType`.
pub(crate) fn codec_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "CodecType", &["AUTO", "HTTP1", "HTTP2", "HTTP3"])
}

/// `HttpConnectionManager.ServerHeaderTransformation`.
pub(crate) fn server_header_transformation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "ServerHeaderTransformation", &["OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH"])
}

/// `core.v3.TrafficDirection`, as its number (the `xds.listener_direction` attribute).
pub(crate) fn traffic_direction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    const NAMES: [&str; 3] = ["UNSPECIFIED", "INBOUND", "OUTBOUND"];
    let name = enum_name(d, "TrafficDirection", &NAMES)?;
    Ok(name.and_then(|n| NAMES.iter().position(|&known| known == n)).map(|i| i as i64))
}

/// `Cluster.DiscoveryType`.
pub(crate) fn discovery_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "DiscoveryType", &["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"])
}

/// `Cluster.LbPolicy` (4 is no longer used).
pub(crate) fn lb_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(
        d,
        "LbPolicy",
        &[
            "ROUND_ROBIN",
            "LEAST_REQUEST",
            "RING_HASH",
            "RANDOM",
            "",
            "MAGLEV",
            "CLUSTER_PROVIDED",
            "LOAD_BALANCING_POLICY_CONFIG",
        ],
    )
}

/// `SocketAddress.Protocol`.
pub(crate) fn socket_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "SocketAddress.Protocol", &["TCP", "UDP"])
}

/// `ComparisonFilter.Op`.
pub(crate) fn comparison_op<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "ComparisonFilter.Op", &["EQ", "GE", "LE", "NE"])
}

/// `HeaderValueOption.HeaderAppendAction`.
pub(crate) fn append_action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(
        d,
        "HeaderAppendAction",
        &["APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"],
    )
}

/// `RedirectAction.RedirectResponseCode`.
pub(crate) fn redirect_response_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(
        d,
        "RedirectResponseCode",
        &["MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT"],
    )
}

/// `HttpProtocolOptions.HeadersWithUnderscoresAction`.
pub(crate) fn headers_with_underscores_action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "HeadersWithUnderscoresAction", &["ALLOW", "REJECT_REQUEST", "DROP_HEADER"])
}

/// `TlsParameters.TlsProtocol`.
pub(crate) fn tls_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "TlsProtocol", &["TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"])
}

/// `Rule.KeyValuePair.ValueType`.
pub(crate) fn metadata_value_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "ValueType", &["STRING", "NUMBER", "PROTOBUF_VALUE"])
}

/// `Rule.KeyValuePair.ValueEncode`.
pub(crate) fn metadata_value_encode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "ValueEncode", &["NONE", "BASE64"])
}

/// `Gzip.CompressionLevel` (the aliases `BEST_SPEED` and `BEST_COMPRESSION`
/// are read by name).
pub(crate) fn gzip_compression_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(
        d,
        "CompressionLevel",
        &[
            "DEFAULT_COMPRESSION",
            "COMPRESSION_LEVEL_1",
            "COMPRESSION_LEVEL_2",
            "COMPRESSION_LEVEL_3",
            "COMPRESSION_LEVEL_4",
            "COMPRESSION_LEVEL_5",
            "COMPRESSION_LEVEL_6",
            "COMPRESSION_LEVEL_7",
            "COMPRESSION_LEVEL_8",
            "COMPRESSION_LEVEL_9",
        ],
    )
}

/// `Gzip.CompressionStrategy`.
pub(crate) fn gzip_compression_strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "CompressionStrategy", &["DEFAULT_STRATEGY", "FILTERED", "HUFFMAN_ONLY", "RLE", "FIXED"])
}

/// `Brotli.EncoderMode`.
pub(crate) fn brotli_encoder_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "EncoderMode", &["DEFAULT", "GENERIC", "TEXT", "FONT"])
}

/// `Zstd.Strategy`.
pub(crate) fn zstd_strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(
        d,
        "Strategy",
        &["DEFAULT", "FAST", "DFAST", "GREEDY", "LAZY", "LAZY2", "BTLAZY2", "BTOPT", "BTULTRA", "BTULTRA2"],
    )
}

/// `RoutingPriority`.
pub(crate) fn routing_priority<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, "RoutingPriority", &["DEFAULT", "HIGH"])
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Holder {
        #[serde(default, deserialize_with = "super::codec_type")]
        codec_type: Option<String>,
    }

    #[test]
    fn names_and_numbers() {
        let read = |text: &str| serde_norway::from_str::<Holder>(text).map(|h| h.codec_type);
        assert_eq!(read("codec_type: HTTP1").unwrap().as_deref(), Some("HTTP1"));
        assert_eq!(read("codec_type: 1").unwrap().as_deref(), Some("HTTP1"));
        assert_eq!(read("{}").unwrap(), None);
        assert!(read("codec_type: 9").unwrap_err().to_string().contains("9 is not a value of CodecType"));
    }
}
