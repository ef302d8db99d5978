//! `access_log` on the HTTP connection manager: Envoy's file, stdout and
//! stderr loggers, and their format strings parsed into command operators,
//! so a typo in an operator is an error naming its field, not a log line
//! with the typo in it.

use serde_norway::Value;

use crate::model::{AccessLog, AccessLogSink, FormatPiece, HeaderOperand, LogFormat, Operator};
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
    if raw.filter.is_some() {
        return Err(err(format!("{path}.filter"), "access log filters are not supported yet"));
    }
    let typed = raw.typed_config.ok_or_else(|| err(path, "typed_config is required"))?;
    let any = crate::convert::unpack_any(typed, &format!("{path}.typed_config"))?;
    if any.type_name == WASM {
        let wasm: raw::WasmFilter = crate::convert::decode(any.fields, &any.path)?;
        let plugin = crate::convert::plugin_config(wasm.config, &format!("{}.config", any.path))?;
        let sink = AccessLogSink::Wasm(Box::new(plugin));
        return Ok(AccessLog { sink, format: LogFormat::Text(Vec::new()), omit_empty_values: false });
    }
    let config: raw::StreamAccessLog = crate::convert::decode(any.fields, &any.path)?;
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
                    let bytes = crate::convert::format_source(source, &at("text_format_source"))?;
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
    Ok(AccessLog { sink, format, omit_empty_values })
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
        "START_TIME" => plain(Operator::StartTime),
        "PROTOCOL" => plain(Operator::Protocol),
        "RESPONSE_CODE" => plain(Operator::ResponseCode),
        "RESPONSE_FLAGS" => plain(Operator::ResponseFlags),
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
    }
}
