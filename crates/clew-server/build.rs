//! Builds the web UI (TypeScript sources in `ui/`) with its own toolchain, Node.js and Vite,
//! into `$OUT_DIR/ui`, which the server embeds. `CLEW_SKIP_UI=1` builds without Node.js: the
//! server then serves a page that says how to get the UI.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ui = manifest.join("../../ui");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui");
    for input in ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"] {
        println!("cargo:rerun-if-changed={}", ui.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CLEW_SKIP_UI");
    std::fs::create_dir_all(&out).expect("create the UI output directory");

    if std::env::var_os("CLEW_SKIP_UI").is_some_and(|v| v != "0") {
        std::fs::write(
            out.join("index.html"),
            "<!doctype html><title>Clew</title><p>This build of Clew has no web UI (built with CLEW_SKIP_UI). \
             Build it with Node.js installed to get the UI; the API is at <a href=\"/api/v1/openapi.yaml\">/api/v1</a>.</p>",
        )
        .expect("write the placeholder page");
        return;
    }

    let installed = ui.join("node_modules/.package-lock.json");
    if modified(&ui.join("package-lock.json")) > modified(&installed) {
        npm(&ui, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    }
    let out_dir = out.to_str().expect("OUT_DIR is UTF-8");
    npm(&ui, &["run", "build", "--", "--outDir", out_dir, "--emptyOutDir", "--logLevel", "warn"]);
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" }).args(args).current_dir(dir).status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("`npm {}` in {} failed ({status}): see its output above", args.join(" "), dir.display()),
        Err(error) => panic!(
            "the web UI is built with Node.js, and `npm` could not be run ({error}). Install Node.js 20 or later, \
             or set CLEW_SKIP_UI=1 to build Clew without its web UI."
        ),
    }
}
