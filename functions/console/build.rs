//! Builds the web console (`console/` at the workspace root) with npm from its lockfile and
//! embeds the output: `OUT_DIR/assets.rs` lists every file with its type and a gzipped copy.
//! `npm ci` runs when `node_modules` is missing or older than the lockfile.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let console = manifest.join("../../console");
    for input in [
        "src",
        "public",
        "index.html",
        "build.mjs",
        "package.json",
        "package-lock.json",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", console.join(input).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let dist = out.join("console");
    if let Err(e) = build(&console, &dist).and_then(|()| embed(&dist, &out.join("assets.rs"))) {
        panic!("building the console failed: {e}");
    }
}

fn build(console: &Path, dist: &Path) -> Result<(), String> {
    let installed = console.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&console.join("package-lock.json")) {
        npm(
            console,
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
        )?;
    }
    let _ = std::fs::remove_dir_all(dist);
    let outdir = format!("--outdir={}", dist.display());
    npm(console, &["run", "--silent", "build", "--", &outdir])
}

fn npm(dir: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("npm {}: {e} (is Node.js 20 with npm installed?)", args[0]))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("npm {} exited with {status}", args.join(" ")))
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn embed(dist: &Path, target: &Path) -> Result<(), String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dist)
        .map_err(|e| format!("{}: {e}", dist.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let mut code =
        String::from("/// The console's files, as built.\nstatic ASSETS: &[Asset] = &[\n");
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a UTF-8 name", path.display()))?;
        let body = std::fs::read(&path).map_err(|e| e.to_string())?;
        let gzip = gzip(&body)?;
        let gzip_entry = if gzip.len() + 64 < body.len() {
            let gz_path = path.with_file_name(format!("{name}.gz"));
            std::fs::write(&gz_path, &gzip).map_err(|e| e.to_string())?;
            format!("Some(include_bytes!({:?}))", gz_path.display().to_string())
        } else {
            "None".to_owned()
        };
        let _ = writeln!(
            code,
            "    Asset {{ name: {name:?}, content_type: {:?}, body: include_bytes!({:?}), gzip: {gzip_entry} }},",
            content_type(name)?,
            path.display().to_string(),
        );
    }
    code.push_str("];\n");
    std::fs::write(target, code).map_err(|e| e.to_string())
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

fn content_type(name: &str) -> Result<&'static str, String> {
    let extension = name.rsplit('.').next().unwrap_or_default();
    Ok(match extension {
        "html" => "text/html; charset=utf-8",
        "js" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "json" => "application/json",
        other => return Err(format!("{name}: no content type for .{other}")),
    })
}
