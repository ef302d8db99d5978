//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `build-plugins`: the example and test plugins (Rust for wasm32-wasip1,
//!   and the Go test plugin), installing the Rust target when missing.
//! - `demo`: the shared_queue example end to end: build, start ferry, send
//!   `GET /` to port 18000, print the log, stop. `demo multi`: the
//!   multi-queue example, with a request through its TCP listener too.
//!   `demo fleet`: the fleet example: nats-server (installed when
//!   missing), a receiver and two senders as separate processes.
//! - `test`: build the plugins, then run every test of the workspace.
//! - `bench`: the end-to-end benchmark, side by side with nginx (see docs/benchmarks.md).
//! - `fuzz [SECONDS] [TARGET]`: a coverage-guided run of the fuzz targets
//!   (nightly cargo-fuzz, installed when missing; see docs/reliability.md).
//! - `envoy-configs [--write] [--source TEXT] DIR...`: `ferry --mode
//!   validate` on every Envoy bootstrap under DIR, as a table (with
//!   `--write`, into docs/configuration.md).

mod bench;
mod demo;
mod envoy_configs;
mod fuzz;
mod plugins;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use plugins::{Plugins, build_plugins};

fn main() {
    // One clean message, with its causes on the same line, and no backtrace.
    if let Err(error) = run_task() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run_task() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match task.as_str() {
        "build-plugins" => build_plugins(&root, Plugins::All),
        "demo" => match std::env::args().nth(2).as_deref() {
            None => demo::run(&root, demo::Example::SharedQueue),
            Some("multi") => demo::run(&root, demo::Example::Multi),
            Some("fleet") => demo::fleet(&root),
            Some(other) => {
                anyhow::bail!(
                    "unknown example {other:?}; try `cargo xtask demo`, `cargo xtask demo multi` or `cargo xtask demo fleet`"
                )
            }
        },
        "test" => test(&root),
        "bench" => bench::run(&root),
        "bench-upstream" => bench::upstream::serve(std::env::args().nth(2).as_deref()),
        "fuzz" => {
            let seconds = std::env::args().nth(2).map_or(Ok(60), |s| s.parse()).context("SECONDS is a number")?;
            fuzz::run_fuzz(&root, seconds, std::env::args().nth(3).as_deref())
        }
        "envoy-configs" => envoy_configs::run(&root, &std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!(
                "usage: cargo xtask <build-plugins|demo [multi|fleet]|test|bench|fuzz [SECONDS] [TARGET]|envoy-configs DIR...>"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command, failing with its name if it fails.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Installs with apt-get the Debian package of each `(tool, package)`
/// whose tool is not found; `why` says what needs them.
pub(crate) fn ensure_packages(tools: &[(&str, &str)], why: &str) -> anyhow::Result<()> {
    let found = |tool: &str| {
        Path::new("/usr/sbin").join(tool).is_file()
            || Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = tools.iter().filter(|(tool, _)| !found(tool)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?} with apt-get");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
        .with_context(|| format!("{why} (apt-get install {})", missing.join(" ")))
}

/// `nats-server`, for the queue bridge's tests, demo and benchmark.
pub(crate) fn ensure_nats_server() -> anyhow::Result<()> {
    ensure_packages(&[("nats-server", "nats-server")], "the queue bridge needs nats-server")
}

/// Starts `nats-server -js` on 127.0.0.1:`port` with its store in `store`
/// (`wrapper`: a command line it runs under, e.g. `nice`/`taskset`), and
/// waits until it listens.
pub(crate) fn start_nats_server(port: u16, store: &Path, wrapper: &[&str]) -> anyhow::Result<Child> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map_or_else(|| "nats-server".into(), Path::to_path_buf);
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let mut child = command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start nats-server")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            stop(&mut child);
            bail!("nats-server did not listen on {port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(root: &Path) -> anyhow::Result<()> {
    // The fleet tests start a real broker.
    ensure_nats_server()?;
    build_plugins(root, Plugins::All)?;
    // Four tests at a time on two cores: most of them wait on sockets and
    // child processes, not the CPU.
    // (An environment variable, not `--test-threads`: criterion's bench
    // harnesses run here too and refuse the flag.)
    // Libraries, binaries and tests; not the criterion benches, which
    // `cargo xtask bench` runs and `cargo clippy --all-targets` compiles (a
    // minute of a fresh clone's build spent linking them for a smoke run).
    run(cargo().env("RUST_TEST_THREADS", "4").args(["test", "--workspace", "--lib", "--bins", "--tests"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))
}

/// Stops a child with SIGTERM, then SIGKILL after 5 s.
pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
