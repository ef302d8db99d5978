//! `envoy.filters.http.compressor` and `envoy.filters.http.decompressor`,
//! with the gzip, brotli and zstd libraries Envoy ships.
//!
//! Both filters name a library by `@type`; its settings that change the
//! encoded bytes a client can read (level, window) are kept. Settings that
//! only tune zlib's memory or strategy are accepted and listed in
//! docs/configuration.md as having no effect here.

use serde::Deserialize;
use serde_norway::Value;

use crate::ConfigError;
use crate::decode::{Any, decode, err, join, unpack_any};
use crate::model::{CompressDirection, Compressor, Decompressor, EncoderSettings, Encoding};

const GZIP_COMPRESSOR: &str = "envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI_COMPRESSOR: &str = "envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD_COMPRESSOR: &str = "envoy.extensions.compression.zstd.compressor.v3.Zstd";
const GZIP_DECOMPRESSOR: &str = "envoy.extensions.compression.gzip.decompressor.v3.Gzip";
const BROTLI_DECOMPRESSOR: &str = "envoy.extensions.compression.brotli.decompressor.v3.Brotli";
const ZSTD_DECOMPRESSOR: &str = "envoy.extensions.compression.zstd.decompressor.v3.Zstd";

/// Envoy's default `content_type` list (each also matches with parameters).
const DEFAULT_CONTENT_TYPES: [&str; 8] = [
    "application/javascript",
    "application/json",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/css",
    "text/html",
    "text/plain",
    "text/xml",
];

/// Envoy's default `min_content_length`.
const DEFAULT_MIN_CONTENT_LENGTH: u32 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibrary {
    #[serde(default)]
    name: String,
    typed_config: Option<Value>,
}

/// `RuntimeFeatureFlag`: ferry has no runtime, so the default decides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeatureFlag {
    default_value: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    runtime_key: String,
}

/// `CommonDirectionConfig`: whether a direction compresses, and what.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommonDirection {
    enabled: Option<RawFeatureFlag>,
    min_content_length: Option<u32>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    content_type: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestDirection {
    common_config: Option<RawCommonDirection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponseDirection {
    common_config: Option<RawCommonDirection>,
    #[serde(default)]
    disable_on_etag_header: bool,
    #[serde(default)]
    remove_accept_encoding_header: bool,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    uncompressible_response_codes: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompressor {
    // The top-level fields Envoy deprecated for `response_direction_config`.
    content_length: Option<u32>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    content_type: Vec<String>,
    #[serde(default)]
    disable_on_etag_header: bool,
    #[serde(default)]
    remove_accept_encoding_header: bool,
    runtime_enabled: Option<RawFeatureFlag>,
    compressor_library: Option<RawLibrary>,
    request_direction_config: Option<RawRequestDirection>,
    response_direction_config: Option<RawResponseDirection>,
    #[serde(default)]
    choose_first: bool,
    #[serde(default)]
    weaken_etag_on_compress: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecompressDirection {
    common_config: Option<RawDecompressCommon>,
    /// Request side only: add the library's encoding to `accept-encoding`.
    advertise_accept_encoding: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecompressCommon {
    enabled: Option<RawFeatureFlag>,
    #[serde(default)]
    ignore_no_transform_header: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecompressor {
    decompressor_library: Option<RawLibrary>,
    request_direction_config: Option<RawDecompressDirection>,
    response_direction_config: Option<RawDecompressDirection>,
}

/// Reads `envoy.extensions.filters.http.compressor.v3.Compressor`.
pub(crate) fn compressor(fields: Value, path: &str) -> Result<Compressor, ConfigError> {
    let raw: RawCompressor = decode(fields, path)?;
    let library_path = join(path, "compressor_library");
    let library = raw.compressor_library.ok_or_else(|| err(&library_path, "required"))?;
    let (library_name, any) = library_any(library, &library_path)?;
    let encoder = encoder_settings(any)?;
    let enabled = |flag: Option<RawFeatureFlag>, default: bool| flag.and_then(|f| f.default_value).unwrap_or(default);
    let direction = |common: Option<RawCommonDirection>, length: Option<u32>, types: Vec<String>, default: bool| {
        let common =
            common.unwrap_or(RawCommonDirection { enabled: None, min_content_length: None, content_type: vec![] });
        let types = if common.content_type.is_empty() { types } else { common.content_type };
        enabled(common.enabled, default).then(|| CompressDirection {
            min_content_length: common.min_content_length.or(length).unwrap_or(DEFAULT_MIN_CONTENT_LENGTH),
            content_types: if types.is_empty() {
                DEFAULT_CONTENT_TYPES.iter().map(|t| (*t).to_owned()).collect()
            } else {
                types.into_iter().map(|t| t.to_ascii_lowercase()).collect()
            },
        })
    };
    let on = enabled(raw.runtime_enabled, true);
    let response_raw = raw.response_direction_config.unwrap_or(RawResponseDirection {
        common_config: None,
        disable_on_etag_header: raw.disable_on_etag_header,
        remove_accept_encoding_header: raw.remove_accept_encoding_header,
        uncompressible_response_codes: Vec::new(),
    });
    for (i, code) in response_raw.uncompressible_response_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            let at = join(path, &format!("response_direction_config.uncompressible_response_codes[{i}]"));
            return Err(err(at, format!("{code} is not an HTTP status")));
        }
    }
    let response = direction(response_raw.common_config, raw.content_length, raw.content_type, true);
    // Request compression is off unless its direction is configured.
    let request = raw.request_direction_config.and_then(|r| {
        let common = r.common_config.unwrap_or(RawCommonDirection {
            enabled: None,
            min_content_length: None,
            content_type: vec![],
        });
        direction(Some(common), None, Vec::new(), true)
    });
    Ok(Compressor {
        library_name,
        encoder,
        response: response.filter(|_| on),
        request: request.filter(|_| on),
        disable_on_etag: response_raw.disable_on_etag_header,
        weaken_etag: raw.weaken_etag_on_compress,
        remove_accept_encoding: response_raw.remove_accept_encoding_header,
        uncompressible_codes: response_raw.uncompressible_response_codes,
        choose_first: raw.choose_first,
    })
}

/// Reads `envoy.extensions.filters.http.decompressor.v3.Decompressor`.
pub(crate) fn decompressor(fields: Value, path: &str) -> Result<Decompressor, ConfigError> {
    let raw: RawDecompressor = decode(fields, path)?;
    let library_path = join(path, "decompressor_library");
    let library = raw.decompressor_library.ok_or_else(|| err(&library_path, "required"))?;
    let (library_name, any) = library_any(library, &library_path)?;
    let encoding = match any.type_name.as_str() {
        GZIP_DECOMPRESSOR => {
            let gzip: RawGzipDecompressor = decode(any.fields, &any.path)?;
            if let Some(bits) = gzip.window_bits
                && !(9..=15).contains(&bits)
            {
                return Err(err(join(&any.path, "window_bits"), "must be between 9 and 15"));
            }
            Encoding::Gzip
        }
        BROTLI_DECOMPRESSOR => {
            let _: RawBrotliDecompressor = decode(any.fields, &any.path)?;
            Encoding::Brotli
        }
        ZSTD_DECOMPRESSOR => {
            let zstd: RawZstdDecompressor = decode(any.fields, &any.path)?;
            if !zstd.dictionaries.is_empty() {
                return Err(err(join(&any.path, "dictionaries"), "zstd dictionaries are not supported yet"));
            }
            Encoding::Zstd
        }
        other => return Err(err(join(&any.path, "@type"), format!("decompressor library {other} is not supported"))),
    };
    let side = |raw: Option<RawDecompressDirection>| {
        let raw = raw.unwrap_or(RawDecompressDirection { common_config: None, advertise_accept_encoding: None });
        let common =
            raw.common_config.unwrap_or(RawDecompressCommon { enabled: None, ignore_no_transform_header: false });
        let enabled = common.enabled.and_then(|f| f.default_value).unwrap_or(true);
        (enabled, common.ignore_no_transform_header, raw.advertise_accept_encoding)
    };
    let (request, request_ignore_no_transform, advertise) = side(raw.request_direction_config);
    let (response, response_ignore_no_transform, response_advertise) = side(raw.response_direction_config);
    if response_advertise.is_some() {
        let at = join(path, "response_direction_config.advertise_accept_encoding");
        return Err(err(at, "only the request direction advertises accept-encoding"));
    }
    Ok(Decompressor {
        library_name,
        encoding,
        request,
        response,
        ignore_no_transform: (request_ignore_no_transform, response_ignore_no_transform),
        advertise_accept_encoding: advertise.unwrap_or(true),
    })
}

/// A library's name and its typed config.
fn library_any(library: RawLibrary, path: &str) -> Result<(String, Any), ConfigError> {
    let typed = library.typed_config.ok_or_else(|| err(join(path, "typed_config"), "required"))?;
    Ok((library.name, unpack_any(typed, &join(path, "typed_config"))?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawGzipCompressor {
    memory_level: Option<u32>,
    #[serde(default, deserialize_with = "crate::enums::gzip_compression_level")]
    compression_level: Option<String>,
    #[serde(default, deserialize_with = "crate::enums::gzip_compression_strategy")]
    compression_strategy: Option<String>,
    window_bits: Option<u32>,
    chunk_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawBrotliCompressor {
    quality: Option<u32>,
    #[serde(default, deserialize_with = "crate::enums::brotli_encoder_mode")]
    encoder_mode: Option<String>,
    window_bits: Option<u32>,
    input_block_bits: Option<u32>,
    chunk_size: Option<u32>,
    #[serde(default)]
    disable_literal_context_modeling: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawZstdCompressor {
    compression_level: Option<i32>,
    #[serde(default)]
    enable_checksum: bool,
    #[serde(default, deserialize_with = "crate::enums::zstd_strategy")]
    strategy: Option<String>,
    dictionary: Option<Value>,
    chunk_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawGzipDecompressor {
    window_bits: Option<u32>,
    chunk_size: Option<u32>,
    max_inflate_ratio: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawBrotliDecompressor {
    #[serde(default)]
    disable_ring_buffer_reallocation: bool,
    chunk_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawZstdDecompressor {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    dictionaries: Vec<Value>,
    chunk_size: Option<u32>,
}

/// The encoder a compressor library's typed config asks for.
fn encoder_settings(any: Any) -> Result<EncoderSettings, ConfigError> {
    let path = any.path;
    let bounded = |value: Option<u32>, field: &str, range: std::ops::RangeInclusive<u32>, default: u32| match value {
        None => Ok(default),
        Some(v) if range.contains(&v) => Ok(v),
        Some(_) => Err(err(join(&path, field), format!("must be between {} and {}", range.start(), range.end()))),
    };
    match any.type_name.as_str() {
        GZIP_COMPRESSOR => {
            let gzip: RawGzipCompressor = decode(any.fields, &path)?;
            bounded(gzip.memory_level, "memory_level", 1..=9, 5)?;
            bounded(gzip.window_bits, "window_bits", 9..=15, 12)?;
            // DEFAULT_COMPRESSION is zlib's default, level 6.
            let level = match gzip.compression_level.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("DEFAULT_COMPRESSION") => 6,
                Some("BEST_SPEED") => 1,
                Some("BEST_COMPRESSION") => 9,
                Some(name) => name
                    .strip_prefix("COMPRESSION_LEVEL_")
                    .and_then(|n| n.parse::<i32>().ok())
                    .filter(|n| (1..=9).contains(n))
                    .ok_or_else(|| err(join(&path, "compression_level"), format!("unknown level {name}")))?,
            };
            Ok(EncoderSettings { encoding: Encoding::Gzip, level, window_bits: 0, checksum: false })
        }
        BROTLI_COMPRESSOR => {
            let brotli: RawBrotliCompressor = decode(any.fields, &path)?;
            let quality = bounded(brotli.quality, "quality", 0..=11, 3)?;
            let window_bits = bounded(brotli.window_bits, "window_bits", 10..=24, 18)?;
            bounded(brotli.input_block_bits, "input_block_bits", 16..=24, 24)?;
            Ok(EncoderSettings { encoding: Encoding::Brotli, level: quality as i32, window_bits, checksum: false })
        }
        ZSTD_COMPRESSOR => {
            let zstd: RawZstdCompressor = decode(any.fields, &path)?;
            if zstd.dictionary.is_some() {
                return Err(err(join(&path, "dictionary"), "zstd dictionaries are not supported yet"));
            }
            if zstd.strategy.as_deref().is_some_and(|s| s != "DEFAULT") {
                return Err(err(join(&path, "strategy"), "only DEFAULT is supported yet"));
            }
            let level = zstd.compression_level.unwrap_or(3);
            if !(1..=22).contains(&level) {
                return Err(err(join(&path, "compression_level"), "must be between 1 and 22"));
            }
            Ok(EncoderSettings { encoding: Encoding::Zstd, level, window_bits: 0, checksum: zstd.enable_checksum })
        }
        other => Err(err(join(&path, "@type"), format!("compressor library {other} is not supported"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn a_bare_gzip_compressor_takes_envoys_defaults() {
        let c = compressor(
            yaml(
                "compressor_library:\n  name: text\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip\n",
            ),
            "f",
        )
        .unwrap();
        let response = c.response.unwrap();
        assert_eq!(response.min_content_length, 30);
        assert!(response.content_types.contains(&"application/json".to_owned()));
        assert!(c.request.is_none(), "request compression is off by default");
        assert_eq!(c.encoder.level, 6);
    }

    #[test]
    fn a_bad_level_names_its_field() {
        let error = compressor(
            yaml(
                "compressor_library:\n  name: b\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli\n    quality: 12\n",
            ),
            "f",
        )
        .unwrap_err();
        assert_eq!(error.path, "f.compressor_library.typed_config.quality");
    }

    #[test]
    fn the_deprecated_top_level_fields_still_count() {
        let c = compressor(
            yaml(
                "content_length: 100\ncontent_type: [text/html]\ndisable_on_etag_header: true\ncompressor_library:\n  name: t\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip\n    compression_level: best_compression\n",
            ),
            "f",
        )
        .unwrap();
        let response = c.response.unwrap();
        assert_eq!((response.min_content_length, response.content_types), (100, vec!["text/html".to_owned()]));
        assert!(c.disable_on_etag);
        assert_eq!(c.encoder.level, 9);
    }

    #[test]
    fn a_decompressor_advertises_by_default() {
        let d = decompressor(
            yaml(
                "decompressor_library:\n  name: z\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.compression.zstd.decompressor.v3.Zstd\n",
            ),
            "f",
        )
        .unwrap();
        assert_eq!(d.encoding, Encoding::Zstd);
        assert!(d.request && d.response && d.advertise_accept_encoding);
    }
}
