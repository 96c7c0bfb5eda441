//! `avm-verifier profile`: the kernel profile the A-VM introspects a Mon-VM
//! kernel with, built from the stock kernel package's vmlinuz alone (no
//! debug package, no System.map). The work is `vmi::profile::build`; this
//! module reads the image, writes the profile and reports what it holds.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use vmi::kallsyms::Layout;
use vmi::profile::FORMAT_VERSION;
use vmi::profile::build::{self, Built};

use crate::commands::{CommandError, EXIT_OK};
use crate::files;
use crate::hex::Hex;

/// Largest vmlinuz read (Debian's are 8-12 MiB).
pub const MAX_VMLINUZ: u64 = 128 << 20;

/// What `profile` was asked for.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// The kernel package's vmlinuz (bzImage).
    pub kernel: PathBuf,
    /// Where the encoded profile goes (replaced if it exists).
    pub output: PathBuf,
    /// Print the summary as JSON.
    pub json: bool,
}

/// Builds the profile of `opts.kernel`, writes it to `opts.output` and
/// prints a summary (or JSON).
pub fn profile(opts: &ProfileOptions) -> Result<u8, CommandError> {
    let vmlinuz = files::read_operator_file(&opts.kernel, MAX_VMLINUZ)
        .map_err(|e| CommandError(e.to_string()))?;
    let built = build::from_vmlinuz(&vmlinuz)
        .map_err(|e| CommandError(format!("{}: {e}", opts.kernel.display())))?;
    write_replacing(&opts.output, &built.encoded)?;
    let text = if opts.json {
        let mut text = serde_json::to_string_pretty(&summary_json(&built, &opts.output))
            .map_err(|e| CommandError(e.to_string()))?;
        text.push('\n');
        text
    } else {
        summary_text(&built, &opts.output)
    };
    print!("{text}");
    Ok(EXIT_OK)
}

/// The allowed-profile reference of a kernel package's vmlinuz (built as
/// `profile` builds it).
pub fn reference_from_vmlinuz(path: &Path) -> Result<avm_attest::policy::ProfileRef, CommandError> {
    let vmlinuz =
        files::read_operator_file(path, MAX_VMLINUZ).map_err(|e| CommandError(e.to_string()))?;
    let built = build::from_vmlinuz(&vmlinuz)
        .map_err(|e| CommandError(format!("{}: {e}", path.display())))?;
    Ok(avm_attest::policy::ProfileRef {
        sha256: built.digest,
        release: built.profile.kernel.release.clone(),
    })
}

/// The allowed-profile reference of a profile file.
pub fn reference_from_profile(path: &Path) -> Result<avm_attest::policy::ProfileRef, CommandError> {
    let bytes = files::read_operator_file(path, vmi::profile::MAX_PROFILE_LEN as u64)
        .map_err(|e| CommandError(e.to_string()))?;
    let profile = vmi::profile::KernelProfile::decode(&bytes)
        .map_err(|e| CommandError(format!("{}: not a kernel profile: {e:?}", path.display())))?;
    Ok(avm_attest::policy::ProfileRef {
        sha256: vmi::profile::digest(&bytes),
        release: profile.kernel.release,
    })
}

/// Writes `bytes` to a new file next to `path` and renames it over `path`,
/// so a reader never sees half a profile.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    let fail = |e: std::io::Error| CommandError(format!("{}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| CommandError(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::OffsetsFirst { .. } => "offsets-first",
        Layout::OffsetsLast => "offsets-last",
    }
}

fn address(a: u64) -> String {
    format!("{a:#x}")
}

/// The human summary: kernel, image, counts, digest.
pub fn summary_text(built: &Built, output: &Path) -> String {
    let p = &built.profile;
    let named = p.symbols.named();
    let present = named.iter().filter(|(_, a)| a.is_some()).count();
    let compression = built.compression.map_or("none", |c| c.name());
    let t = &built.timings;
    format!(
        "kernel    {release} ({version})\n\
         image     {compression} payload, vmlinux {vmlinux} bytes, {ksyms} kallsyms symbols ({layout})\n\
         symbols   {present} kernel symbols, {slots} system calls (sys_call_table at {table})\n\
         profile   {path}: {size} bytes, format {FORMAT_VERSION}\n\
         digest    sha256:{digest}\n\
         time      {total} ms (decompress {dec} ms, kallsyms {ks} ms, BTF {btf} ms)\n",
        release = p.kernel.release,
        version = p.kernel.version,
        vmlinux = built.vmlinux_len,
        ksyms = built.kallsyms_symbols,
        layout = layout_name(built.kallsyms_layout),
        slots = p.syscall_count(),
        table = address(p.symbols.sys_call_table),
        path = output.display(),
        size = built.encoded.len(),
        digest = Hex(&built.digest),
        total = t.total.as_millis(),
        dec = t.decompress.as_millis(),
        ks = t.kallsyms.as_millis(),
        btf = t.btf.as_millis(),
    )
}

/// The JSON summary: everything the profile holds (addresses in hex), its
/// size and digest.
pub fn summary_json(built: &Built, output: &Path) -> Value {
    let p = &built.profile;
    let symbols: serde_json::Map<String, Value> = p
        .symbols
        .named()
        .iter()
        .map(|(name, a)| {
            (
                name.to_string(),
                a.map_or(Value::Null, |a| address(a).into()),
            )
        })
        .collect();
    let slots: Vec<Value> = p
        .syscalls
        .slots
        .iter()
        .enumerate()
        .map(|(nr, s)| json!({ "nr": nr, "name": s.name, "address": address(s.address) }))
        .collect();
    let t = &built.timings;
    json!({
        "kernel": {
            "release": p.kernel.release,
            "version": p.kernel.version,
            "banner": p.kernel.banner,
        },
        "image": {
            "compression": built.compression.map(|c| c.name()),
            "vmlinux_bytes": built.vmlinux_len,
            "kallsyms_symbols": built.kallsyms_symbols,
            "kallsyms_layout": layout_name(built.kallsyms_layout),
        },
        "profile": {
            "path": output.display().to_string(),
            "bytes": built.encoded.len(),
            "format_version": FORMAT_VERSION,
            "sha256": Hex(&built.digest).to_string(),
        },
        "symbols": symbols,
        "syscalls": {
            "table": address(p.syscalls.address),
            "count": p.syscall_count(),
            "slots": slots,
        },
        "offsets": p.offsets,
        "cross_view": p.cross_view,
        "idt": p.idt.is_some(),
        "text_reference": p.text_reference.is_some(),
        "timings_ms": {
            "decompress": t.decompress.as_millis() as u64,
            "kallsyms": t.kallsyms.as_millis() as u64,
            "btf": t.btf.as_millis() as u64,
            "total": t.total.as_millis() as u64,
        },
    })
}
