//! Envoy's `HeaderMatcher` (`envoy.config.route.v3.HeaderMatcher`), read
//! into [`crate::model::HeaderMatcher`]: used by access-log header filters
//! (and routes).

use serde::Deserialize;

use crate::ConfigError;
use crate::decode::err;
use crate::model::{HeaderMatcher, HeaderTest, Pattern};
use crate::raw::{RawRegex, RawStringMatcher};

/// The message as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatcher {
    name: String,
    #[serde(default)]
    exact_match: Option<String>,
    #[serde(default)]
    safe_regex_match: Option<RawRegex>,
    #[serde(default)]
    range_match: Option<RawRange>,
    #[serde(default)]
    present_match: Option<bool>,
    #[serde(default)]
    prefix_match: Option<String>,
    #[serde(default)]
    suffix_match: Option<String>,
    #[serde(default)]
    contains_match: Option<String>,
    #[serde(default)]
    string_match: Option<RawStringMatcher>,
    #[serde(default)]
    invert_match: bool,
    #[serde(default)]
    treat_missing_header_as_empty: bool,
}

/// `envoy.type.v3.Int64Range`: `[start, end)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    #[serde(default)]
    start: i64,
    #[serde(default)]
    end: i64,
}

/// A regex that must match a whole value, as Envoy's `safe_regex`.
pub(crate) fn whole_match(raw: &RawRegex, path: &str) -> Result<Pattern, ConfigError> {
    let _ = &raw.google_re2;
    regex::Regex::new(&format!("^(?:{})$", raw.regex))
        .map(Pattern)
        .map_err(|e| err(format!("{path}.regex"), format!("not a valid regular expression: {e}")))
}

/// Reads a `HeaderMatcher`: exactly one way to match (none: present).
pub(crate) fn header_matcher(raw: RawHeaderMatcher, path: &str) -> Result<HeaderMatcher, ConfigError> {
    let mut tests = Vec::new();
    if let Some(v) = raw.exact_match {
        tests.push(HeaderTest::Exact(v, false));
    }
    if let Some(re) = &raw.safe_regex_match {
        tests.push(HeaderTest::Regex(whole_match(re, &format!("{path}.safe_regex_match"))?));
    }
    if let Some(range) = raw.range_match {
        tests.push(HeaderTest::Range(range.start, range.end));
    }
    if let Some(present) = raw.present_match {
        tests.push(if present { HeaderTest::Present } else { HeaderTest::Absent });
    }
    if let Some(v) = raw.prefix_match {
        tests.push(HeaderTest::Prefix(v, false));
    }
    if let Some(v) = raw.suffix_match {
        tests.push(HeaderTest::Suffix(v, false));
    }
    if let Some(v) = raw.contains_match {
        tests.push(HeaderTest::Contains(v, false));
    }
    if let Some(string) = raw.string_match {
        tests.push(string_matcher(string, &format!("{path}.string_match"))?);
    }
    if tests.len() > 1 {
        return Err(err(path, "give one way to match (exact_match, string_match, present_match, ...)"));
    }
    Ok(HeaderMatcher {
        name: raw.name.to_ascii_lowercase(),
        test: tests.pop().unwrap_or(HeaderTest::Present),
        invert: raw.invert_match,
        missing_as_empty: raw.treat_missing_header_as_empty,
    })
}

/// Reads a `StringMatcher`: exactly one of its tests.
pub(crate) fn string_matcher(raw: RawStringMatcher, path: &str) -> Result<HeaderTest, ConfigError> {
    let i = raw.ignore_case;
    let mut tests = Vec::new();
    if let Some(v) = raw.exact {
        tests.push(HeaderTest::Exact(v, i));
    }
    if let Some(v) = raw.prefix {
        tests.push(HeaderTest::Prefix(v, i));
    }
    if let Some(v) = raw.suffix {
        tests.push(HeaderTest::Suffix(v, i));
    }
    if let Some(v) = raw.contains {
        tests.push(HeaderTest::Contains(v, i));
    }
    if let Some(re) = &raw.safe_regex {
        tests.push(HeaderTest::Regex(whole_match(re, &format!("{path}.safe_regex"))?));
    }
    match (tests.pop(), tests.is_empty()) {
        (Some(test), true) => Ok(test),
        _ => Err(err(path, "exactly one of exact, prefix, suffix, contains or safe_regex")),
    }
}
