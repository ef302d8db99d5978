//! `ferry`: a Proxy-Wasm host and HTTP proxy, started like Envoy.
//!
//! ```text
//! ferry -c envoy.yaml [--concurrency N] [-l info] [--component-log-level wasm:trace]
//!       [--log-format '%v'] [--log-path FILE] [--mode serve|validate]
//!       [--service-cluster C] [--service-node N] [--service-zone Z] [--drain-time-s S]
//!       [--admin-address-path FILE] [Envoy's other flags: accepted, with a warning]
//! ```

mod envoy_flags;
mod logging;

/// mimalloc: measured faster than the system allocator on the request path
/// (see docs/benchmarks.md). Without transparent huge pages (`no_thp`),
/// which would count whole 2 MiB pages of mostly unused memory as resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, ValueEnum};
use ferry_config::FailurePolicy;
use ferry_host::{Compilation, Host, HostOptions};
use ferry_proxy::{Plan, RunOptions, WasmSettings};

/// Command line: the subset of Envoy's that ferry understands.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about = "A Proxy-Wasm host and HTTP proxy, configured with Envoy's YAML")]
struct Cli {
    /// Path to the configuration file (Envoy v3 YAML or JSON).
    #[arg(short = 'c', long = "config-path", required_unless_present = "config_yaml")]
    config_path: Option<PathBuf>,
    /// A configuration as YAML text; with --config-path, merged over the
    /// file's (fields replace, nested messages merge, lists append).
    #[arg(long = "config-yaml")]
    config_yaml: Option<String>,
    /// The node's cluster (`node.cluster`), over the configuration's.
    #[arg(long = "service-cluster")]
    service_cluster: Option<String>,
    /// The node's id (`node.id`), over the configuration's.
    #[arg(long = "service-node")]
    service_node: Option<String>,
    /// The node's zone (`node.locality.zone`), over the configuration's.
    #[arg(long = "service-zone")]
    service_zone: Option<String>,
    /// Accepted for Envoy compatibility: ferry has no hot restart.
    #[arg(long = "parent-shutdown-time-s")]
    parent_shutdown_time_s: Option<u64>,
    /// Accepted for Envoy compatibility: ferry has no hot restart.
    #[arg(long = "disable-hot-restart")]
    disable_hot_restart: bool,
    /// Number of worker threads (default: the number of CPU cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Log level of every logger: trace, debug, info, warning, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Levels of single loggers, e.g. `wasm:trace,http:debug`.
    #[arg(long = "component-log-level")]
    component_log_level: Option<String>,
    /// Log line pattern, in spdlog's flags (`%v` is the bare message).
    #[arg(long = "log-format", default_value = logging::DEFAULT_FORMAT)]
    log_format: String,
    /// Write the log to this file instead of standard error.
    #[arg(long = "log-path")]
    log_path: Option<PathBuf>,
    /// `serve` runs the proxy; `validate` checks the configuration and plugins, then exits.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    mode: Mode,
    /// Where compiled plugin modules are cached between runs (default:
    /// `$XDG_CACHE_HOME/ferry/wasm`, else `~/.cache/ferry/wasm`).
    #[arg(long = "wasm-cache-dir")]
    wasm_cache_dir: Option<PathBuf>,
    /// Compile every module at every start instead of using the cache.
    #[arg(long = "no-wasm-cache")]
    no_wasm_cache: bool,
    /// Accepted for Envoy compatibility; ferry needs no shared-memory id.
    #[arg(long = "base-id")]
    base_id: Option<u64>,
    /// Write the admin endpoint's address (`127.0.0.1:9901`) to this file
    /// once it listens.
    #[arg(long = "admin-address-path")]
    admin_address_path: Option<PathBuf>,
    /// Envoy's flags that change nothing here: accepted, each with a warning.
    #[command(flatten)]
    envoy_only: envoy_flags::EnvoyOnlyFlags,
    /// On SIGTERM or SIGINT, how long open HTTP connections may take to
    /// finish their responses before they are cut (Envoy's default, 600).
    #[arg(long = "drain-time-s", default_value_t = 600)]
    drain_time_s: u64,
    /// Most CPU time a plugin callback may use before it is interrupted,
    /// in milliseconds (0: no limit). Default 1000.
    #[arg(long = "wasm-callback-deadline-ms")]
    wasm_callback_deadline_ms: Option<u64>,
    /// Most CPU time each plugin start function (`_initialize`, `proxy_on_vm_start`,
    /// `proxy_on_configure`) may run, in milliseconds (0: no limit). Default 10000.
    #[arg(long = "wasm-start-deadline-ms")]
    wasm_start_deadline_ms: Option<u64>,
    /// Most linear memory one plugin instance may have, in MiB. Default 1024.
    #[arg(long = "wasm-memory-limit-mb", value_parser = clap::value_parser!(u64).range(1..=4096))]
    wasm_memory_limit_mb: Option<u64>,
    /// The failure policy of plugins whose configuration names none
    /// (default: fail-reload, with Envoy's default backoff of 1 s).
    #[arg(long = "wasm-failure-policy", value_enum)]
    wasm_failure_policy: Option<PolicyArg>,
    /// How plugin code is compiled (default: tiered). Overrides the
    /// configuration's `compilation`.
    #[arg(long = "wasm-compilation", value_enum)]
    wasm_compilation: Option<CompilationArg>,
}

/// `--wasm-compilation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CompilationArg {
    /// Serve on quickly made baseline code when the optimised code takes
    /// long, then move to the optimised code.
    Tiered,
    /// Wait for the optimised code (Cranelift).
    Optimizing,
    /// Baseline code only (Winch): the fastest start, slower code.
    Baseline,
}

/// `--wasm-failure-policy`, by Envoy's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PolicyArg {
    /// FAIL_CLOSED: 503 until the configuration changes.
    #[value(name = "fail-closed")]
    Closed,
    /// FAIL_OPEN: skip the plugin from then on.
    #[value(name = "fail-open")]
    Open,
    /// FAIL_RELOAD: restart it after 1 s (more after repeated failures).
    #[value(name = "fail-reload")]
    Reload,
}

/// Splits an argument that holds a flag and its value separated by a space
/// (`"--config-path /etc/envoy.yaml"`, as a Kubernetes Deployment's `args`
/// often pass them) in two, as Envoy's command-line parser (TCLAP) does:
/// at the first space, when what comes before it is a flag that takes a
/// value and the argument is not itself the value of the flag before it.
fn split_flag_arguments(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let command = Cli::command();
    let takes_value = |flag: &str| {
        let known = |a: &&clap::Arg| match flag.strip_prefix("--") {
            Some(long) => a.get_long() == Some(long),
            None => flag.strip_prefix('-').is_some_and(|short| {
                let mut chars = short.chars();
                chars.next().is_some_and(|c| a.get_short() == Some(c)) && chars.next().is_none()
            }),
        };
        command.get_arguments().find(known).is_some_and(|a| a.get_action().takes_values())
    };
    let mut split = Vec::with_capacity(args.len());
    let mut a_value_is_due = false;
    for (index, arg) in args.into_iter().enumerate() {
        let text = arg.to_str().filter(|_| index > 0 && !a_value_is_due);
        a_value_is_due = false;
        let Some(text) = text.filter(|t| t.starts_with('-')) else {
            split.push(arg);
            continue;
        };
        match text.split_once(' ') {
            Some((flag, value)) if !flag.contains('=') && takes_value(flag) => {
                split.push(flag.into());
                split.push(value.into());
            }
            _ => {
                a_value_is_due = !text.contains('=') && takes_value(text);
                split.push(arg);
            }
        }
    }
    split
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serve,
    Validate,
}

/// An error and its causes on one line, each cause once: many of ferry's
/// errors already say their cause, and a chain printed whole would repeat it.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(split_flag_arguments(std::env::args_os().collect()));
    let levels = match logging::Levels::parse(&cli.log_level, cli.component_log_level.as_deref()) {
        Ok(levels) => levels,
        Err(e) => {
            eprintln!("ferry: {}", describe(&e));
            return ExitCode::FAILURE;
        }
    };
    let guard = match logging::init(levels.clone(), &cli.log_format, cli.log_path.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("ferry: {}", describe(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = run(&cli, levels);
    drop(guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // On standard error even when the log goes to a file: the user
            // who started ferry must see why it stopped.
            eprintln!("ferry: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli, levels: logging::Levels) -> anyhow::Result<()> {
    let _ = (cli.base_id, cli.parent_shutdown_time_s, cli.disable_hot_restart);
    for warning in cli.envoy_only.warnings() {
        tracing::warn!(target: "main", "{warning}");
    }
    let path = cli.config_path.as_ref().map_or_else(|| "--config-yaml".to_owned(), |p| p.display().to_string());
    let mut config = load_config(cli).with_context(|| format!("error initializing configuration '{path}'"))?;
    // The command line's node settings win, as Envoy's.
    if let Some(cluster) = &cli.service_cluster {
        config.node.cluster = cluster.clone();
    }
    if let Some(id) = &cli.service_node {
        config.node.id = id.clone();
    }
    if let Some(zone) = &cli.service_zone {
        config.node.locality.1 = zone.clone();
    }
    let module_cache = if cli.no_wasm_cache { None } else { cli.wasm_cache_dir.clone().or_else(default_cache_dir) };
    let upstreams = Some(config.clusters.iter().map(|c| c.name.clone()).collect());
    let node = ferry_proxy::xds::node(&config.node);
    let runtime = ferry_proxy::host_runtime(&config);
    let compilation = match cli.wasm_compilation {
        Some(CompilationArg::Tiered) => Compilation::Tiered,
        Some(CompilationArg::Optimizing) => Compilation::Optimizing,
        Some(CompilationArg::Baseline) => Compilation::Baseline,
        None => runtime.compilation.unwrap_or(Compilation::Tiered),
    };
    let host = Host::new(HostOptions {
        wasm_log_level: levels.of("wasm").to_wasm(),
        module_cache,
        upstreams,
        node,
        hold: runtime.hold,
        queue_bounds: runtime.queue_bounds,
        compilation,
        histogram_buckets: config
            .histogram_buckets
            .iter()
            .map(|setting| {
                let matcher = setting.matcher.clone();
                ferry_host::BucketRule {
                    matches: Arc::new(move |name: &str| matcher.accepts(name)),
                    bounds: Arc::from(&setting.bounds[..]),
                }
            })
            .collect(),
        ..HostOptions::default()
    })?;
    let settings = wasm_settings(cli);
    let plan =
        Plan::build(&config, host, &settings).with_context(|| format!("error initializing configuration '{path}'"))?;
    if cli.mode == Mode::Validate {
        ferry_proxy::check_start(&plan).with_context(|| format!("error initializing configuration '{path}'"))?;
        println!("configuration '{path}' OK");
        return Ok(());
    }
    let concurrency = cli
        .concurrency
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let log_control = Arc::new(logging::RuntimeLevels { levels, host: plan.host.clone() });
    let drain_time = std::time::Duration::from_secs(cli.drain_time_s);
    let admin_address_path = cli.admin_address_path.clone();
    ferry_proxy::run(plan, RunOptions { concurrency, log_control: Some(log_control), drain_time, admin_address_path })?;
    Ok(())
}

/// The configuration from `--config-path`, `--config-yaml`, or both merged.
fn load_config(cli: &Cli) -> Result<ferry_config::Bootstrap, ferry_config::ConfigError> {
    match (&cli.config_path, &cli.config_yaml) {
        (Some(path), None) => ferry_config::from_file(path),
        (None, Some(yaml)) => ferry_config::from_yaml(yaml),
        (Some(path), Some(yaml)) => {
            ferry_config::from_yaml(&ferry_config::merge_yaml(&ferry_config::read_text(path)?, yaml)?)
        }
        (None, None) => Err(ferry_config::ConfigError {
            path: "(command line)".into(),
            message: "give --config-path or --config-yaml".into(),
        }),
    }
}

/// The `--wasm-*` flags.
fn wasm_settings(cli: &Cli) -> WasmSettings {
    let second = std::time::Duration::from_secs(1);
    WasmSettings {
        callback_deadline: cli.wasm_callback_deadline_ms.map(std::time::Duration::from_millis),
        start_deadline: cli.wasm_start_deadline_ms.map(std::time::Duration::from_millis),
        memory_limit_bytes: cli.wasm_memory_limit_mb.map(|mb| mb << 20),
        failure_policy: cli.wasm_failure_policy.map(|policy| match policy {
            PolicyArg::Closed => FailurePolicy::FailClosed,
            PolicyArg::Open => FailurePolicy::FailOpen,
            PolicyArg::Reload => FailurePolicy::FailReload { base_interval: second, max_interval: 10 * second },
        }),
    }
}

/// `$XDG_CACHE_HOME/ferry/wasm`, else `$HOME/.cache/ferry/wasm`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("ferry").join("wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        split_flag_arguments(args).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_flag_and_its_value_in_one_argument_are_split_at_the_first_space() {
        assert_eq!(split(&["ferry", "--config-path /etc/envoy.yaml"]), ["ferry", "--config-path", "/etc/envoy.yaml"]);
        assert_eq!(
            split(&["ferry", "-c /e.yaml", "--log-format [%l] %v"]),
            ["ferry", "-c", "/e.yaml", "--log-format", "[%l] %v"]
        );
    }

    #[test]
    fn values_switches_and_unknown_flags_stay_whole() {
        // The value of the flag before it, even one that starts with a dash.
        assert_eq!(split(&["ferry", "--log-format", "-%l %v"]), ["ferry", "--log-format", "-%l %v"]);
        // `=` joins a flag and its value already.
        assert_eq!(split(&["ferry", "--log-format=%l %v"]), ["ferry", "--log-format=%l %v"]);
        // A switch takes no value; an unknown flag is left for the parser to refuse.
        assert_eq!(split(&["ferry", "--disable-hot-restart x"]), ["ferry", "--disable-hot-restart x"]);
        assert_eq!(split(&["ferry", "--no-such-flag x"]), ["ferry", "--no-such-flag x"]);
    }
}
