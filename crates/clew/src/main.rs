//! The `clew` binary: command-line parsing and glue. Everything else lives in the library crates.

mod bench;
mod cli;
mod client;
mod demo;
mod docs;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the system allocator: the write path allocates millions of small
/// strings and vectors a second from several threads, and glibc's malloc spent two fifths of
/// the server's CPU in allocation, arena locks and consolidation during sustained ingest, while
/// its per-thread arenas kept memory freed by queries resident.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start: a background thread returns freed pages to the
/// system within a second instead of at the next allocation. `_RJEM_MALLOC_CONF` in the
/// environment still adds its own.
#[cfg(all(not(target_env = "msvc"), target_os = "linux"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer that jemalloc reads as `const char *malloc_conf`.
#[cfg(all(not(target_env = "msvc"), target_os = "linux"))]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a static, immutable C string.
#[cfg(all(not(target_env = "msvc"), target_os = "linux"))]
unsafe impl Sync for MallocConf {}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CLEW_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
