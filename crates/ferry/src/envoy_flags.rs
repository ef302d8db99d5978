//! Envoy command-line flags that deployments pass and that change nothing
//! in ferry (hot restart, file flushing, extension switches, ...). They
//! are accepted, so a unit file or a container's arguments written for
//! Envoy start ferry unchanged, and each one given is named in a warning
//! with the reason it has no effect, so nobody relies on it unknowingly.

use clap::Args;

/// The flags, as Envoy spells them.
#[derive(Args, Debug, Default)]
pub(crate) struct EnvoyOnlyFlags {
    /// Envoy: hot-restart epoch. ferry has no hot restart.
    #[arg(long = "restart-epoch", hide = true)]
    restart_epoch: Option<String>,
    /// Envoy: pick a free shared-memory id. ferry has no hot restart.
    #[arg(long = "use-dynamic-base-id", hide = true)]
    use_dynamic_base_id: bool,
    /// Envoy: write the chosen base id to a file. ferry has no hot restart.
    #[arg(long = "base-id-path", hide = true)]
    base_id_path: Option<String>,
    /// Envoy: skip hot restart when no parent runs. ferry has no hot restart.
    #[arg(long = "skip-hot-restart-on-no-parent", hide = true)]
    skip_hot_restart_on_no_parent: bool,
    /// Envoy: skip the parent's stats on hot restart. ferry has no hot restart.
    #[arg(long = "skip-hot-restart-parent-stats", hide = true)]
    skip_hot_restart_parent_stats: bool,
    /// Envoy: the IP version of the local address. ferry uses the listener's.
    #[arg(long = "local-address-ip-version", hide = true)]
    local_address_ip_version: Option<String>,
    /// Envoy: access-log flush interval. ferry's logs write through.
    #[arg(long = "file-flush-interval-msec", hide = true)]
    file_flush_interval_msec: Option<String>,
    /// Envoy: access-log flush size. ferry's logs write through.
    #[arg(long = "file-flush-min-size-kb", hide = true)]
    file_flush_min_size_kb: Option<String>,
    /// Envoy: gradual or immediate draining. ferry drains gracefully.
    #[arg(long = "drain-strategy", hide = true)]
    drain_strategy: Option<String>,
    /// Envoy: accept unknown static fields. ferry still refuses them.
    #[arg(long = "allow-unknown-static-fields", hide = true)]
    allow_unknown_static_fields: bool,
    /// Envoy: refuse unknown dynamic fields. ferry has no dynamic configuration.
    #[arg(long = "reject-unknown-dynamic-fields", hide = true)]
    reject_unknown_dynamic_fields: bool,
    /// Envoy: ignore unknown dynamic fields. ferry has no dynamic configuration.
    #[arg(long = "ignore-unknown-dynamic-fields", hide = true)]
    ignore_unknown_dynamic_fields: bool,
    /// Envoy: extensions to disable. ferry's are those the configuration names.
    #[arg(long = "disable-extensions", hide = true)]
    disable_extensions: Option<String>,
    /// Envoy: size the worker pool by the CPU set. ferry uses --concurrency or the cores.
    #[arg(long = "cpuset-threads", hide = true)]
    cpuset_threads: bool,
    /// Envoy: mutex contention tracing.
    #[arg(long = "enable-mutex-tracing", hide = true)]
    enable_mutex_tracing: bool,
    /// Envoy: per-file log levels.
    #[arg(long = "enable-fine-grain-logging", hide = true)]
    enable_fine_grain_logging: bool,
    /// Envoy: escape log messages.
    #[arg(long = "log-format-escaped", hide = true)]
    log_format_escaped: bool,
    /// Envoy: enable core dumps.
    #[arg(long = "enable-core-dump", hide = true)]
    enable_core_dump: bool,
    /// Envoy: the hot-restart domain socket.
    #[arg(long = "socket-path", hide = true)]
    socket_path: Option<String>,
    /// Envoy: the hot-restart domain socket's mode.
    #[arg(long = "socket-mode", hide = true)]
    socket_mode: Option<String>,
    /// Envoy: a tag added to every stat.
    #[arg(long = "stats-tag", hide = true)]
    stats_tag: Vec<String>,
}

impl EnvoyOnlyFlags {
    /// One line per flag given: the flag and why it changes nothing here.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let hot_restart = "ferry has no hot restart";
        let given = [
            (self.restart_epoch.is_some(), "--restart-epoch", hot_restart),
            (self.use_dynamic_base_id, "--use-dynamic-base-id", hot_restart),
            (self.base_id_path.is_some(), "--base-id-path", hot_restart),
            (self.skip_hot_restart_on_no_parent, "--skip-hot-restart-on-no-parent", hot_restart),
            (self.skip_hot_restart_parent_stats, "--skip-hot-restart-parent-stats", hot_restart),
            (self.socket_path.is_some(), "--socket-path", hot_restart),
            (self.socket_mode.is_some(), "--socket-mode", hot_restart),
            (
                self.local_address_ip_version.is_some(),
                "--local-address-ip-version",
                "addresses come from the listeners",
            ),
            (
                self.file_flush_interval_msec.is_some(),
                "--file-flush-interval-msec",
                "access logs write each line through",
            ),
            (self.file_flush_min_size_kb.is_some(), "--file-flush-min-size-kb", "access logs write each line through"),
            (self.drain_strategy.is_some(), "--drain-strategy", "draining lets responses finish (see --drain-time-s)"),
            (self.allow_unknown_static_fields, "--allow-unknown-static-fields", "unknown fields are still refused"),
            (
                self.reject_unknown_dynamic_fields,
                "--reject-unknown-dynamic-fields",
                "there is no dynamic configuration",
            ),
            (
                self.ignore_unknown_dynamic_fields,
                "--ignore-unknown-dynamic-fields",
                "there is no dynamic configuration",
            ),
            (self.disable_extensions.is_some(), "--disable-extensions", "only what the configuration names is loaded"),
            (self.cpuset_threads, "--cpuset-threads", "workers are --concurrency or the number of cores"),
            (self.enable_mutex_tracing, "--enable-mutex-tracing", "there is no mutex tracing"),
            (self.enable_fine_grain_logging, "--enable-fine-grain-logging", "levels are per component"),
            (self.log_format_escaped, "--log-format-escaped", "log lines are written as they are"),
            (self.enable_core_dump, "--enable-core-dump", "core dumps follow the process's limits"),
            (!self.stats_tag.is_empty(), "--stats-tag", "use stats_config.stats_tags"),
        ];
        given
            .into_iter()
            .filter(|(set, ..)| *set)
            .map(|(_, flag, why)| format!("{flag} is accepted for Envoy compatibility and has no effect: {why}"))
            .collect()
    }
}
