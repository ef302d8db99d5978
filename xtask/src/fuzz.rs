//! `cargo xtask fuzz [SECONDS] [TARGET]`: a coverage-guided run of each fuzz
//! target (or one), SECONDS each (default 60), with cargo-fuzz on a pinned
//! nightly toolchain, both installed when missing. Without a sanitizer, so
//! a short run spends its time fuzzing; a crash fails the task and leaves
//! the input in `fuzz/artifacts/<target>/`. See docs/reliability.md.

use std::path::Path;
use std::process::Command;

use crate::run;

/// The nightly cargo-fuzz is known to work with here.
pub(crate) const NIGHTLY: &str = "nightly-2026-10-29";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const TARGETS: [&str; 3] = ["pairs", "config", "host_calls"];

pub(crate) fn run_fuzz(root: &Path, seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let toolchains = Command::new("rustup").args(["toolchain", "list"]).output()?;
    if !String::from_utf8_lossy(&toolchains.stdout).lines().any(|l| l.starts_with(NIGHTLY)) {
        run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))?;
    }
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))?;
    }
    let targets: Vec<&str> = TARGETS.into_iter().filter(|t| only.is_none_or(|o| o == *t)).collect();
    anyhow::ensure!(!targets.is_empty(), "no fuzz target {only:?}; they are {TARGETS:?}");
    for target in targets {
        eprintln!("fuzzing {target} for {seconds} s");
        run(Command::new("cargo")
            .arg(format!("+{NIGHTLY}"))
            .args(["fuzz", "run", "--sanitizer", "none", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args(["-max_len=4096", "-timeout=10", "-print_final_stats=1"])
            .current_dir(root))?;
    }
    Ok(())
}
