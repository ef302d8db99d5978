//! `access_log` on the HTTP connection manager: Envoy's file, stdout and
//! stderr loggers, and their format strings parsed into command operators,
//! so a typo in an operator is an error naming its field, not a log line
//! with the typo in it.

use serde::Deserialize;
use serde_norway::Value;

use crate::model::{
    AccessLog, AccessLogFilter, AccessLogSink, Comparison, ComparisonOp, FormatPiece, HeaderOperand, LogFormat,
    Operator,
};
use crate::{ConfigError, raw};

const FILE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";
const WASM: &str = "envoy.extensions.access_loggers.wasm.v3.WasmAccessLog";

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// One item of `access_log`.
pub(crate) fn access_log(raw: raw::AccessLog, path: &str) -> Result<AccessLog, ConfigError> {
    let filter = raw.filter.map(|f| filter(f, &format!("{path}.filter"))).transpose()?;
    let typed = raw.typed_config.ok_or_else(|| err(path, "typed_config is required"))?;
    let any = crate::decode::unpack_any(typed, &format!("{path}.typed_config"))?;
    if any.type_name == WASM {
        let wasm: raw::WasmFilter = crate::decode::decode(any.fields, &any.path)?;
        let plugin = crate::plugin_config::plugin_config(wasm.config, &format!("{}.config", any.path))?;
        let sink = AccessLogSink::Wasm(Box::new(plugin));
        return Ok(AccessLog { sink, format: LogFormat::Text(Vec::new()), omit_empty_values: false, filter });
    }
    let config: raw::StreamAccessLog = crate::decode::decode(any.fields, &any.path)?;
    let at = |field: &str| format!("{}.{field}", any.path);
    let sink = match any.type_name.as_str() {
        FILE => AccessLogSink::File(config.path.clone().ok_or_else(|| err(at("path"), "required"))?.into()),
        STDOUT | STDERR => {
            for (field, given) in [
                ("path", config.path.is_some()),
                ("format", config.format.is_some()),
                ("json_format", config.json_format.is_some()),
            ] {
                if given {
                    return Err(err(at(field), format!("not a field of {}", any.type_name)));
                }
            }
            if any.type_name == STDOUT { AccessLogSink::Stdout } else { AccessLogSink::Stderr }
        }
        other => return Err(err(at("@type"), format!("access logger {other} is not supported"))),
    };
    let (format, omit_empty_values) = match (config.format, config.json_format, config.log_format) {
        (None, None, None) => (text(DEFAULT_FORMAT, &at("log_format"))?, false),
        (Some(format), None, None) => (text(&format, &at("format"))?, false),
        (None, Some(json), None) => (json_format(json, &at("json_format"))?, false),
        (None, None, Some(log_format)) => {
            let at = |field: &str| format!("{}.log_format.{field}", any.path);
            let omit = log_format.omit_empty_values.unwrap_or(false);
            let format = match (log_format.text_format, log_format.text_format_source, log_format.json_format) {
                (Some(format), None, None) => text(&format, &at("text_format"))?,
                (None, Some(source), None) => {
                    let bytes = crate::decode::format_source(source, &at("text_format_source"))?;
                    let format = String::from_utf8(bytes).map_err(|_| err(at("text_format_source"), "not UTF-8"))?;
                    text(&format, &at("text_format_source"))?
                }
                (None, None, Some(json)) => json_format(json, &at("json_format"))?,
                _ => {
                    return Err(err(
                        format!("{}.log_format", any.path),
                        "exactly one of text_format, text_format_source or json_format",
                    ));
                }
            };
            (format, omit)
        }
        _ => return Err(err(&any.path, "give one of format, json_format or log_format")),
    };
    Ok(AccessLog { sink, format, omit_empty_values, filter })
}

/// `envoy.config.accesslog.v3.AccessLogFilter`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    status_code_filter: Option<RawComparisonFilter>,
    #[serde(default)]
    duration_filter: Option<RawComparisonFilter>,
    #[serde(default)]
    not_health_check_filter: Option<Value>,
    #[serde(default)]
    and_filter: Option<RawFilters>,
    #[serde(default)]
    or_filter: Option<RawFilters>,
    #[serde(default)]
    header_filter: Option<RawHeaderFilter>,
    #[serde(default)]
    response_flag_filter: Option<RawResponseFlagFilter>,
    #[serde(default)]
    traceable_filter: Option<Value>,
    #[serde(default)]
    runtime_filter: Option<Value>,
    #[serde(default)]
    grpc_status_filter: Option<Value>,
    #[serde(default)]
    extension_filter: Option<Value>,
    #[serde(default)]
    metadata_filter: Option<Value>,
    #[serde(default)]
    log_type_filter: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparisonFilter {
    comparison: RawComparison,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparison {
    #[serde(default, deserialize_with = "crate::enums::comparison_op")]
    op: Option<String>,
    value: RawRuntimeUInt32,
}

/// `RuntimeUInt32`: ferry has no runtime, so the default value is the value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeUInt32 {
    #[serde(default)]
    default_value: u32,
    #[serde(default)]
    runtime_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilters {
    #[serde(deserialize_with = "crate::repeated::one_or_many")]
    filters: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderFilter {
    header: crate::matchers::RawHeaderMatcher,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponseFlagFilter {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    flags: Vec<String>,
}

/// The response flags a `response_flag_filter` may name (Envoy's short codes).
const RESPONSE_FLAGS: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
];

/// Reads an access-log filter: exactly one kind.
fn filter(value: Value, path: &str) -> Result<AccessLogFilter, ConfigError> {
    let raw: RawFilter = crate::decode::decode(value, path)?;
    let at = |field: &str| format!("{path}.{field}");
    let unsupported = [
        ("traceable_filter", raw.traceable_filter.is_some()),
        ("runtime_filter", raw.runtime_filter.is_some()),
        ("grpc_status_filter", raw.grpc_status_filter.is_some()),
        ("extension_filter", raw.extension_filter.is_some()),
        ("metadata_filter", raw.metadata_filter.is_some()),
        ("log_type_filter", raw.log_type_filter.is_some()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(err(at(field), "this access log filter is not supported (see docs/access-logs.md)"));
    }
    let mut filters = Vec::new();
    if let Some(f) = raw.status_code_filter {
        filters.push(AccessLogFilter::StatusCode(comparison(f.comparison, &at("status_code_filter.comparison"))?));
    }
    if let Some(f) = raw.duration_filter {
        filters.push(AccessLogFilter::Duration(comparison(f.comparison, &at("duration_filter.comparison"))?));
    }
    if raw.not_health_check_filter.is_some() {
        filters.push(AccessLogFilter::NotHealthCheck);
    }
    for (field, group) in [("and_filter", raw.and_filter), ("or_filter", raw.or_filter)] {
        let Some(group) = group else { continue };
        let inner = group
            .filters
            .into_iter()
            .enumerate()
            .map(|(i, f)| filter(f, &format!("{}.filters[{i}]", at(field))))
            .collect::<Result<Vec<_>, _>>()?;
        if inner.len() < 2 {
            return Err(err(at(field), "needs at least two filters"));
        }
        filters.push(if field == "and_filter" { AccessLogFilter::And(inner) } else { AccessLogFilter::Or(inner) });
    }
    if let Some(f) = raw.header_filter {
        filters.push(AccessLogFilter::Header(crate::matchers::header_matcher(f.header, &at("header_filter.header"))?));
    }
    if let Some(f) = raw.response_flag_filter {
        if let Some(unknown) = f.flags.iter().find(|flag| !RESPONSE_FLAGS.contains(&flag.as_str())) {
            return Err(err(at("response_flag_filter.flags"), format!("{unknown:?} is not a response flag")));
        }
        filters.push(AccessLogFilter::ResponseFlag(f.flags));
    }
    match (filters.pop(), filters.is_empty()) {
        (Some(filter), true) => Ok(filter),
        _ => Err(err(path, "give exactly one filter (status_code_filter, duration_filter, and_filter, ...)")),
    }
}

fn comparison(raw: RawComparison, path: &str) -> Result<Comparison, ConfigError> {
    let _ = raw.value.runtime_key;
    let op = match raw.op.as_deref() {
        None | Some("EQ") => ComparisonOp::Eq,
        Some("GE") => ComparisonOp::Ge,
        Some("LE") => ComparisonOp::Le,
        Some("NE") => ComparisonOp::Ne,
        Some(other) => return Err(err(format!("{path}.op"), format!("{other} is not EQ, GE, LE or NE"))),
    };
    Ok(Comparison { op, value: u64::from(raw.value.default_value) })
}

fn text(format: &str, path: &str) -> Result<LogFormat, ConfigError> {
    parse(format).map(LogFormat::Text).map_err(|message| err(path, message))
}

/// `json_format`: a flat object of format strings (nested objects and
/// non-string values are not supported yet).
fn json_format(map: serde_norway::Mapping, path: &str) -> Result<LogFormat, ConfigError> {
    let mut fields = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else { return Err(err(path, "keys must be strings")) };
        let at = format!("{path}.{key}");
        let Value::String(format) = value else {
            return Err(err(at, "only string values (format strings) are supported yet"));
        };
        fields.push((key, parse(&format).map_err(|message| err(&at, message))?));
    }
    Ok(LogFormat::Json(fields))
}

/// Splits a format string into text and command operators.
///
/// # Errors
/// An operator ferry does not know, or one that is not closed.
pub fn parse(format: &str) -> Result<Vec<FormatPiece>, String> {
    let mut pieces = Vec::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        if start > 0 {
            pieces.push(FormatPiece::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 1..];
        let name_len =
            after.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(after.len());
        let name = &after[..name_len];
        let mut cursor = name_len;
        let mut args = None;
        if after[cursor..].starts_with('(') {
            let close = after[cursor..].find(')').ok_or_else(|| format!("%{name}( is not closed with )"))?;
            args = Some(&after[cursor + 1..cursor + close]);
            cursor += close + 1;
        }
        let mut max_length = None;
        if let Some(digits) = after[cursor..].strip_prefix(':') {
            let len = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
            max_length = Some(digits[..len].parse().map_err(|_| format!("%{name}: needs a length after ':'"))?);
            cursor += 1 + len;
        }
        if !after[cursor..].starts_with('%') || name.is_empty() {
            return Err(format!("a command operator at {:?} is not closed with %", &rest[start..]));
        }
        pieces.push(FormatPiece::Operator(operator(name, args, max_length)?));
        rest = &after[cursor + 1..];
    }
    if !rest.is_empty() {
        pieces.push(FormatPiece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

fn operator(name: &str, args: Option<&str>, max_length: Option<usize>) -> Result<Operator, String> {
    let header = |args: Option<&str>| -> Result<HeaderOperand, String> {
        let args = args.filter(|a| !a.is_empty()).ok_or_else(|| format!("%{name}(...)% needs a header name"))?;
        let (name, alternative) = match args.split_once('?') {
            Some((name, alternative)) => (name, Some(alternative.to_ascii_lowercase())),
            None => (args, None),
        };
        Ok(HeaderOperand { name: name.to_ascii_lowercase(), alternative, max_length })
    };
    let plain = |operator: Operator| match args {
        Some(_) => Err(format!("%{name}% takes no arguments here")),
        None => Ok(operator),
    };
    match name {
        "REQ" => Ok(Operator::Request(header(args)?)),
        "RESP" => Ok(Operator::Response(header(args)?)),
        "START_TIME" => match args {
            None => Ok(Operator::StartTime),
            Some(format) => start_time_format(format),
        },
        "DYNAMIC_METADATA" => {
            let args = args.filter(|a| !a.is_empty()).ok_or("%DYNAMIC_METADATA(...)% needs a namespace")?;
            let mut parts = args.split(':').map(str::to_owned);
            let namespace = parts.next().unwrap_or_default();
            Ok(Operator::DynamicMetadata { namespace, path: parts.collect(), max_length })
        }
        "FILTER_STATE" => {
            let args = args.filter(|a| !a.is_empty()).ok_or("%FILTER_STATE(...)% needs a key")?;
            let (key, plain) = match args.rsplit_once(':') {
                Some((key, "PLAIN")) => (key, true),
                Some((key, "TYPED")) => (key, false),
                Some((_, other)) => return Err(format!("%FILTER_STATE% serializes as PLAIN or TYPED, not {other:?}")),
                None => (args, false),
            };
            Ok(Operator::FilterState { key: key.to_owned(), plain, max_length })
        }
        "PROTOCOL" => plain(Operator::Protocol),
        "RESPONSE_CODE" => plain(Operator::ResponseCode),
        "RESPONSE_FLAGS" => plain(Operator::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => plain(Operator::ResponseCodeDetails),
        "BYTES_RECEIVED" => plain(Operator::BytesReceived),
        "BYTES_SENT" => plain(Operator::BytesSent),
        "DURATION" => plain(Operator::Duration),
        "UPSTREAM_HOST" => plain(Operator::UpstreamHost),
        "UPSTREAM_CLUSTER" => plain(Operator::UpstreamCluster),
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Operator::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => plain(Operator::DownstreamRemoteAddressWithoutPort),
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Operator::DownstreamLocalAddress),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => plain(Operator::DownstreamLocalAddressWithoutPort),
        other => Err(format!("command operator %{other}% is not supported (see docs/access-logs.md)")),
    }
}

/// `%START_TIME(format)%`: strftime, with Envoy's `%f` / `%Nf` (fractions
/// of a second) and `%s` (Unix seconds), all of which chrono knows.
fn start_time_format(format: &str) -> Result<Operator, String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!("%START_TIME({format})% is not a valid time format"));
    }
    Ok(Operator::StartTimeFormatted(format.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoys_default_format_parses() {
        let pieces = parse(DEFAULT_FORMAT).unwrap();
        assert_eq!(pieces[0], FormatPiece::Text("[".into()));
        assert_eq!(pieces[1], FormatPiece::Operator(Operator::StartTime));
        let path =
            HeaderOperand { name: "x-envoy-original-path".into(), alternative: Some(":path".into()), max_length: None };
        assert!(pieces.contains(&FormatPiece::Operator(Operator::Request(path))));
        assert_eq!(pieces.last(), Some(&FormatPiece::Text("\"\n".into())));
    }

    #[test]
    fn lengths_text_and_bad_operators() {
        let pieces = parse("a %REQ(User-Agent):5% b").unwrap();
        let agent = HeaderOperand { name: "user-agent".into(), alternative: None, max_length: Some(5) };
        assert_eq!(
            pieces,
            vec![
                FormatPiece::Text("a ".into()),
                FormatPiece::Operator(Operator::Request(agent)),
                FormatPiece::Text(" b".into())
            ]
        );
        assert!(parse("%NOPE%").unwrap_err().contains("%NOPE% is not supported"));
        assert!(parse("%REQ(x").unwrap_err().contains("not closed"));
        assert!(parse("100% sure").is_err());
        assert!(parse("%REQ()%").is_err());
        assert!(parse("%START_TIME(%Y %Q)%").unwrap_err().contains("not a valid time format"));
        assert!(parse("%FILTER_STATE(k:JSON)%").is_err());
    }

    #[test]
    fn start_time_formats_and_filter_state_keys() {
        let pieces = parse("%START_TIME(%Y-%m-%dT%H:%M:%S.%3f)% %FILTER_STATE(wasm.a:PLAIN):4%").unwrap();
        assert_eq!(pieces[0], FormatPiece::Operator(Operator::StartTimeFormatted("%Y-%m-%dT%H:%M:%S.%3f".into())));
        let state = Operator::FilterState { key: "wasm.a".into(), plain: true, max_length: Some(4) };
        assert_eq!(pieces[2], FormatPiece::Operator(state));
    }
}
