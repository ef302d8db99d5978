//! Logging as Envoy does it: named loggers ("components") with their own
//! levels, and spdlog-style patterns (`--log-format`).
//!
//! Plugin lines are on the `wasm` logger; with `--log-format '%v'` they read
//! exactly as in Envoy, e.g. `wasm log sender: enqueued data: ...`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use ferry_abi::LogLevel;
use ferry_host::WasmLogLevel;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::field::{Field, Visit};

use ferry_proxy::Civil;
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;

/// Envoy's default `--log-format`.
pub const DEFAULT_FORMAT: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v";

/// The loggers ferry logs to, as in Envoy's `--component-log-level`.
const COMPONENTS: &[&str] = &["main", "wasm", "http", "connection", "upstream", "admin", "config", "bridge"];

/// A level of Envoy's: trace 0 … critical 5, off 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvoyLevel(u8);

impl EnvoyLevel {
    /// Parses `trace`, `debug`, `info`, `warning`/`warn`, `error`, `critical` or `off`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(EnvoyLevel(match text.to_ascii_lowercase().as_str() {
            "trace" => 0,
            "debug" => 1,
            "info" => 2,
            "warning" | "warn" => 3,
            "error" => 4,
            "critical" => 5,
            "off" => 6,
            _ => bail!("unknown log level {text:?} (expected trace, debug, info, warning, error, critical or off)"),
        }))
    }

    /// The name Envoy's `/logging` prints.
    pub fn name(self) -> &'static str {
        ["trace", "debug", "info", "warning", "error", "critical", "off"][usize::from(self.0.min(6))]
    }

    /// The level of the host's `wasm` logger.
    pub fn to_wasm(self) -> WasmLogLevel {
        LogLevel::from_raw(u32::from(self.0)).map_or(WasmLogLevel::Off, WasmLogLevel::At)
    }
}

/// The level of each component, shared by the logger's filter and the
/// admin endpoint's `/logging`, which changes them at run time.
#[derive(Clone, Debug)]
pub struct Levels {
    levels: Arc<[(&'static str, AtomicU8)]>,
}

impl Levels {
    /// `--log-level` for every component, then `--component-log-level`
    /// (`name:level,name:level`) on top.
    pub fn parse(default: &str, components: Option<&str>) -> anyhow::Result<Self> {
        let default = EnvoyLevel::parse(default).context("--log-level")?;
        let mut levels: Vec<_> = COMPONENTS.iter().map(|&c| (c, default)).collect();
        for item in components.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
            let (name, level) = item
                .split_once(':')
                .with_context(|| format!("--component-log-level: {item:?} is not <component>:<level>"))?;
            let level = EnvoyLevel::parse(level).context("--component-log-level")?;
            match levels.iter_mut().find(|(c, _)| *c == name) {
                Some(entry) => entry.1 = level,
                // Envoy has many more loggers; accept their names so existing
                // command lines keep working.
                None => tracing::debug!(target: "main", "no logger named {name:?} in ferry; ignored"),
            }
        }
        let levels = levels.into_iter().map(|(c, l)| (c, AtomicU8::new(l.0))).collect();
        Ok(Levels { levels })
    }

    /// The level of `component` (`main` for anything unknown).
    pub fn of(&self, component: &str) -> EnvoyLevel {
        let entry = self.levels.iter().find(|(c, _)| *c == component).unwrap_or(&self.levels[0]);
        EnvoyLevel(entry.1.load(Ordering::Relaxed))
    }

    /// Sets `component` (every one when `None`) to `level`; false if there is
    /// no such component.
    pub fn set(&self, component: Option<&str>, level: EnvoyLevel) -> bool {
        let mut found = false;
        for (name, current) in self.levels.iter() {
            if component.is_none_or(|c| c == *name) {
                current.store(level.0, Ordering::Relaxed);
                found = true;
            }
        }
        found
    }
}

/// What the admin endpoint's `/logging` changes: the components' levels,
/// and the host's level for plugins' logs (`proxy_get_log_level` reports it).
pub struct RuntimeLevels {
    /// The logger's levels.
    pub levels: Levels,
    /// The host whose `wasm` level follows the `wasm` logger.
    pub host: Arc<ferry_host::Host>,
}

impl std::fmt::Debug for RuntimeLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeLevels").field("levels", &self.levels).finish_non_exhaustive()
    }
}

impl ferry_proxy::LogControl for RuntimeLevels {
    fn loggers(&self) -> Vec<(&'static str, &'static str)> {
        let mut loggers: Vec<_> = self
            .levels
            .levels
            .iter()
            .map(|(name, level)| (*name, EnvoyLevel(level.load(Ordering::Relaxed)).name()))
            .collect();
        loggers.sort_unstable();
        loggers
    }

    fn set_level(&self, logger: Option<&str>, level: &str) -> Result<(), String> {
        let level = EnvoyLevel::parse(level).map_err(|e| e.to_string())?;
        if !self.levels.set(logger, level) {
            return Err(format!("unknown logger {:?}", logger.unwrap_or_default()));
        }
        if logger.is_none_or(|l| l == "wasm") {
            self.host.set_wasm_log_level(level.to_wasm());
        }
        Ok(())
    }
}

/// The component of an event: its target if it names one, the NATS
/// client's events under `bridge`, else `main`.
fn component(target: &str) -> &str {
    if COMPONENTS.contains(&target) {
        target
    } else if target.starts_with("async_nats") {
        "bridge"
    } else {
        "main"
    }
}

/// The level an event counts at: the NATS client's own info lines repeat
/// what the bridge says, so they count as debug.
fn counted_level(meta: &tracing::Metadata<'_>) -> EnvoyLevel {
    let level = event_level(meta.level());
    if meta.target().starts_with("async_nats") && level == EnvoyLevel(2) { EnvoyLevel(1) } else { level }
}

fn event_level(level: &Level) -> EnvoyLevel {
    EnvoyLevel(match *level {
        Level::TRACE => 0,
        Level::DEBUG => 1,
        Level::INFO => 2,
        Level::WARN => 3,
        Level::ERROR => 4,
    })
}

/// Installs the global logger. Lines are written by a background thread, so
/// the threads that serve traffic never wait on the terminal or the disk;
/// keep the guard until exit, it flushes what is left.
pub fn init(levels: Levels, format: &str, path: Option<&Path>) -> anyhow::Result<WorkerGuard> {
    let (writer, guard) = match path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("--log-path: cannot open {}", path.display()))?;
            tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(file)
        }
        None => tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr()),
    };
    let filter =
        tracing_subscriber::filter::filter_fn(move |meta| counted_level(meta) >= levels.of(component(meta.target())));
    let layer =
        tracing_subscriber::fmt::layer().event_format(Pattern::parse(format)).with_writer(writer).with_filter(filter);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .context("cannot install the logger")?;
    Ok(guard)
}

/// One piece of a log pattern.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    /// `%x`, one of the flags [`Pattern::write_flag`] knows.
    Flag(char),
}

/// A parsed spdlog-style pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    pieces: Vec<Piece>,
}

impl Pattern {
    /// Parses a pattern; unknown flags are printed as written.
    pub fn parse(pattern: &str) -> Self {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => text.push('%'),
                Some(flag) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Flag(flag));
                }
                None => text.push('%'),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Pattern { pieces }
    }

    fn render(&self, out: &mut String, line: &Line<'_>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Flag(f) => write_flag(out, *f, line),
            }
        }
    }
}

/// What a pattern can show of one event.
struct Line<'a> {
    message: &'a str,
    level: &'static str,
    logger: &'a str,
    file: &'a str,
    line: u32,
    now: Civil,
}

fn write_flag(out: &mut String, flag: char, l: &Line<'_>) {
    let t = &l.now;
    let _ = match flag {
        'v' => write!(out, "{}", l.message),
        'l' => write!(out, "{}", l.level),
        'L' => write!(out, "{}", l.level.chars().next().unwrap_or('?').to_ascii_uppercase()),
        'n' => write!(out, "{}", l.logger),
        't' => write!(out, "{}", thread_id()),
        'P' => write!(out, "{}", std::process::id()),
        'Y' => write!(out, "{:04}", t.year),
        'm' => write!(out, "{:02}", t.month),
        'd' => write!(out, "{:02}", t.day),
        'H' => write!(out, "{:02}", t.hour),
        'M' => write!(out, "{:02}", t.minute),
        'S' => write!(out, "{:02}", t.second),
        'e' => write!(out, "{:03}", t.nanos / 1_000_000),
        'f' => write!(out, "{:06}", t.nanos / 1_000),
        'F' => write!(out, "{:09}", t.nanos),
        'T' => write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
        'g' => write!(out, "{}", l.file),
        's' => write!(out, "{}", l.file.rsplit('/').next().unwrap_or(l.file)),
        '#' => write!(out, "{}", l.line),
        other => write!(out, "%{other}"),
    };
}

/// The OS thread id, as Envoy's `%t`.
fn thread_id() -> u64 {
    thread_local! {
        static ID: u64 = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .unwrap_or(0);
    }
    ID.with(|id| *id)
}

/// Collects an event's message and whether it is critical.
#[derive(Default)]
struct Fields {
    message: String,
    critical: bool,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "critical" {
            self.critical = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        }
    }
}

impl<S, N> FormatEvent<S, N> for Pattern
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match (*meta.level(), fields.critical) {
            (_, true) => "critical",
            (Level::TRACE, _) => "trace",
            (Level::DEBUG, _) => "debug",
            (Level::INFO, _) => "info",
            (Level::WARN, _) => "warning",
            (Level::ERROR, _) => "error",
        };
        let line = Line {
            message: &fields.message,
            level,
            logger: component(meta.target()),
            file: meta.file().unwrap_or(""),
            line: meta.line().unwrap_or(0),
            now: Civil::now(),
        };
        let mut out = String::with_capacity(fields.message.len() + 64);
        self.render(&mut out, &line);
        writeln!(writer, "{out}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(pattern: &str) -> String {
        let mut out = String::new();
        let line = Line {
            message: "wasm log sender: hi",
            level: "info",
            logger: "wasm",
            file: "src/a.rs",
            line: 7,
            now: Civil { year: 2026, month: 1, day: 2, hour: 3, minute: 4, second: 5, nanos: 6_000_000 },
        };
        Pattern::parse(pattern).render(&mut out, &line);
        out
    }

    #[test]
    fn bare_message_and_envoy_default_pattern() {
        assert_eq!(render("%v"), "wasm log sender: hi");
        assert_eq!(
            render("[%Y-%m-%d %T.%e][%l][%n] [%g:%#] %v").as_str(),
            "[2026-01-02 03:04:05.006][info][wasm] [src/a.rs:7] wasm log sender: hi"
        );
        assert_eq!(render("100%% %q"), "100% %q");
    }

    #[test]
    fn component_levels_override_the_default() {
        let levels = Levels::parse("warning", Some("wasm:trace,unknown:debug")).unwrap();
        assert_eq!(levels.of("wasm"), EnvoyLevel(0));
        assert_eq!(levels.of("http"), EnvoyLevel(3));
        assert!(Levels::parse("loud", None).is_err());
        assert!(Levels::parse("info", Some("wasm")).is_err());
    }
}
