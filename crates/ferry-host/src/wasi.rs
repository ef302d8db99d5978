//! WASI preview 1 as a sandbox policy, not an operating system: plugins get
//! a clock, randomness, their configured environment, and stdout/stderr that
//! go to the log. There is no file system, no sockets, no arguments.
//!
//! Behaviour per function follows proxy-wasm-cpp-host, so modules built by
//! Go (`GOOS=wasip1`), TinyGo, Rust and C/C++ start and run unmodified. The
//! functions are registered under `wasi_snapshot_preview1` and the older
//! `wasi_unstable`. wasmtime-wasi is not used: it implements a real
//! file system and its synchronous functions block on a Tokio runtime, which
//! must not happen inside our per-thread event loops.

use ferry_abi::LogLevel;
use wasmtime::{Caller, FuncType, Linker, Val, ValType};

use crate::hostcalls::log::{emit, now_nanos};
use crate::limits::MAX_LOG_MESSAGE;
use crate::memory::{read_u32, slice, slice_mut, split, write_u32, write_u64};
use crate::state::HostState;

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;

/// Largest `random_get` a plugin may ask for at once (as Envoy's host).
const MAX_RANDOM_BYTES: u32 = 64 * 1024;

const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// Functions that only answer with a fixed errno, with their parameters
/// (`i` = i32, `I` = i64). Which errno follows proxy-wasm-cpp-host.
const STUBS: &[(&str, &str, i32)] = &[
    ("fd_read", "iiii", ENOSYS),
    ("fd_pread", "iiiIi", ENOSYS),
    ("fd_fdstat_set_flags", "ii", ENOSYS),
    ("fd_prestat_dir_name", "iii", ENOSYS),
    ("fd_filestat_get", "ii", EBADF),
    ("fd_advise", "iIIi", ESUCCESS),
    ("fd_allocate", "iII", ENOSYS),
    ("fd_datasync", "i", ENOSYS),
    ("fd_fdstat_set_rights", "iII", ENOSYS),
    ("fd_filestat_set_size", "iI", ENOSYS),
    ("fd_filestat_set_times", "iIIi", ENOSYS),
    ("fd_sync", "i", ENOSYS),
    ("fd_readdir", "iiiIi", ENOSYS),
    ("fd_renumber", "ii", EBADF),
    ("fd_tell", "ii", EBADF),
    ("path_open", "iiiiiIIii", ENOENT),
    ("path_create_directory", "iii", ENOTSUP),
    ("path_filestat_get", "iiiii", ENOTSUP),
    ("path_filestat_set_times", "iiiiIIi", ENOTSUP),
    ("path_link", "iiiiiii", ENOTSUP),
    ("path_readlink", "iiiiii", ENOTSUP),
    ("path_remove_directory", "iii", ENOTSUP),
    ("path_rename", "iiiiii", ENOTSUP),
    ("path_symlink", "iiiii", ENOTSUP),
    ("path_unlink_file", "iii", ENOTSUP),
    ("sock_accept", "iii", ENOTSUP),
    ("sock_recv", "iiiiii", ENOTSUP),
    ("sock_send", "iiiii", ENOTSUP),
    ("sock_shutdown", "ii", ENOTSUP),
    ("proc_raise", "i", ENOSYS),
];

type WasiCaller<'a> = Caller<'a, HostState>;

/// Links every WASI preview 1 function under both module names.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for module in MODULES {
        add_module(linker, module)?;
    }
    Ok(())
}

fn add_module(linker: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    for &(name, signature, errno) in STUBS {
        let ty = FuncType::new(linker.engine(), params_of(signature), [ValType::I32]);
        linker.func_new(m, name, ty, move |_, _, results| {
            results[0] = Val::I32(errno);
            Ok(())
        })?;
    }
    linker.func_wrap(m, "fd_write", fd_write)?;
    linker.func_wrap(
        m,
        "fd_pwrite",
        |caller: WasiCaller<'_>, fd: i32, iovs: i32, n: i32, _offset: i64, out: i32| fd_write(caller, fd, iovs, n, out),
    )?;
    linker.func_wrap(m, "fd_close", |_: i32| ESUCCESS)?;
    linker.func_wrap(m, "fd_seek", |_: i32, _: i64, _: i32, _: i32| ESUCCESS)?;
    linker.func_wrap(m, "fd_fdstat_get", |mut caller: WasiCaller<'_>, fd: i32, out: i32| {
        if fd != 1 && fd != 2 {
            return EBADF;
        }
        let (mem, _) = split(&mut caller);
        // fdstat: filetype u8, flags u16, rights_base u64, rights_inheriting u64 (24 bytes).
        let Ok(stat) = slice_mut(mem, out, 24) else { return EFAULT };
        stat.fill(0);
        stat[8..16].copy_from_slice(&64u64.to_le_bytes()); // FD_WRITE
        ESUCCESS
    })?;
    linker.func_wrap(m, "fd_prestat_get", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(m, "args_sizes_get", |mut caller: WasiCaller<'_>, argc_out: i32, size_out: i32| {
        let (mem, _) = split(&mut caller);
        errno(write_u32(mem, argc_out, 0).and_then(|()| write_u32(mem, size_out, 0)))
    })?;
    linker.func_wrap(m, "args_get", |_: i32, _: i32| ESUCCESS)?;
    linker.func_wrap(m, "environ_sizes_get", |mut caller: WasiCaller<'_>, count_out: i32, size_out: i32| {
        let (mem, state) = split(&mut caller);
        let env = &state.module.environment;
        let size: usize = env.iter().map(|(k, v)| k.len() + 1 + v.len() + 1).sum();
        errno(write_u32(mem, count_out, env.len() as u32).and_then(|()| write_u32(mem, size_out, size as u32)))
    })?;
    linker.func_wrap(m, "environ_get", environ_get)?;
    linker.func_wrap(m, "clock_time_get", |mut caller: WasiCaller<'_>, id: i32, _precision: i64, out: i32| {
        let now = match id {
            0 => now_nanos(),
            1 => monotonic_nanos(),
            _ => return ENOTSUP,
        };
        let (mem, _) = split(&mut caller);
        errno(write_u64(mem, out, now))
    })?;
    linker.func_wrap(m, "clock_res_get", |mut caller: WasiCaller<'_>, id: i32, out: i32| {
        if id != 0 && id != 1 {
            return ENOTSUP;
        }
        let (mem, _) = split(&mut caller);
        errno(write_u64(mem, out, 1))
    })?;
    linker.func_wrap(m, "random_get", |mut caller: WasiCaller<'_>, buf: i32, len: i32| {
        if len as u32 > MAX_RANDOM_BYTES {
            return EINVAL;
        }
        let (mem, _) = split(&mut caller);
        match slice_mut(mem, buf, len) {
            Ok(dest) => match getrandom::fill(dest) {
                Ok(()) => ESUCCESS,
                Err(_) => EINVAL,
            },
            Err(_) => EFAULT,
        }
    })?;
    // Nothing to wait for: report no event at once (the Go runtime needs success).
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut caller: WasiCaller<'_>, _in: i32, _out: i32, _n: i32, nevents_out: i32| {
            let (mem, _) = split(&mut caller);
            errno(write_u32(mem, nevents_out, 0))
        },
    )?;
    linker.func_wrap(m, "sched_yield", || ESUCCESS)?;
    // Logged, not enforced, as in Envoy: a plugin cannot end the process.
    linker.func_wrap(m, "proc_exit", |caller: WasiCaller<'_>, code: i32| {
        let state = caller.data();
        tracing::error!(target: "wasm", "plugin module {} called proc_exit({code}); ignored", state.module.origin());
    })?;
    Ok(())
}

/// Wasm parameter types from a signature string: `i` = i32, `I` = i64.
fn params_of(signature: &str) -> Vec<ValType> {
    signature.chars().map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 }).collect()
}

fn errno(result: Result<(), ferry_abi::Status>) -> i32 {
    if result.is_ok() { ESUCCESS } else { EFAULT }
}

/// Most buffers one `fd_write` may pass (POSIX's `IOV_MAX`).
const MAX_IOVS: i32 = 1024;

/// stdout becomes an info log line, stderr an error line, one per call,
/// without its trailing newline; at most [`MAX_LOG_MESSAGE`] bytes of it
/// are kept (the rest is reported as written, and the line says it was cut).
fn fd_write(mut caller: WasiCaller<'_>, fd: i32, iovs: i32, iovs_len: i32, written_out: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return EBADF,
    };
    if !(0..=MAX_IOVS).contains(&iovs_len) {
        return EINVAL;
    }
    let (mem, state) = split(&mut caller);
    let mut text = Vec::new();
    let mut written = 0usize;
    for i in 0..iovs_len {
        let at = iovs.wrapping_add(i.wrapping_mul(8));
        let (Ok(ptr), Ok(len)) = (read_u32(mem, at), read_u32(mem, at.wrapping_add(4))) else { return EFAULT };
        let Ok(bytes) = slice(mem, ptr as i32, len as i32) else { return EFAULT };
        written = written.saturating_add(bytes.len());
        let room = (MAX_LOG_MESSAGE + 1).saturating_sub(text.len());
        text.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    let truncated = text.len() > MAX_LOG_MESSAGE;
    if truncated {
        text.truncate(MAX_LOG_MESSAGE);
    } else if text.last() == Some(&b'\n') {
        text.pop();
    }
    if written > 0 && state.shared.log_enabled(level) {
        let mut line = String::from_utf8_lossy(&text).into_owned();
        if truncated {
            line.push_str(&format!("... ({} more bytes not logged)", written - MAX_LOG_MESSAGE));
        }
        emit(level, state.log_prefix(), &line);
    }
    errno(write_u32(mem, written_out, u32::try_from(written).unwrap_or(u32::MAX)))
}

/// `KEY=VALUE\0` strings into `buf`, their addresses into `ptrs`.
fn environ_get(mut caller: WasiCaller<'_>, ptrs: i32, buf: i32) -> i32 {
    let (mem, state) = split(&mut caller);
    let mut at = buf as u32;
    for (i, (k, v)) in state.module.environment.iter().enumerate() {
        let entry = format!("{k}={v}\0");
        let Ok(dest) = slice_mut(mem, at as i32, entry.len() as i32) else { return EFAULT };
        dest.copy_from_slice(entry.as_bytes());
        if write_u32(mem, ptrs.wrapping_add(4 * i as i32), at).is_err() {
            return EFAULT;
        }
        at += entry.len() as u32;
    }
    ESUCCESS
}

/// Nanoseconds on a clock that never goes back, from process start.
fn monotonic_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
