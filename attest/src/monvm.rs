//! What the A-VM's measurement log says about the Mon-VM, and its
//! appraisal against the policy.
//!
//! The record names are the A-VM's contract with the verifier
//! (`docs/protocol.md`, "The A-VM's measurement log"):
//!
//! - PCR 10: the Mon-VM's own IMA entries (`ima-ng` / `ima-sig`, path and
//!   SHA-256 file digest), anchored as IMA made them;
//! - PCR 11, start-up records: `monvm:kernel:RELEASE`, `monvm:module:NAME`,
//!   `monvm:process:PID:COMM` or `monvm:process:PID:COMM:EXE_PATH`,
//!   `monvm:sys_call_table`, `monvm:idt`, `monvm:text`, `monvm:rodata`,
//!   `monvm:ro_after_init`, `monvm:boot_patches`. The digest of a module or
//!   process record is the SHA-256 file digest of its IMA entry, all zero
//!   when the Mon-VM's IMA list has none (measurement evaded), or, in logs
//!   of A-VMs that predate file digests, SHA-256 of the record's name;
//! - PCR 12, events: `monvm:event:N:violation:AREA:DETAIL`,
//!   `monvm:event:N:clean:AREA` and `monvm:event:N:reboot[:DETAIL]` (the
//!   Mon-VM rebooted; start-up records of the new boot follow). How long
//!   a violation counts is the policy's `monvm_violations`.
//!
//! Everything here comes from the node and is only trusted as far as the
//! quote proves it: callers pass the proven prefix
//! ([`crate::verify::MeasurementLogCheck::proven`]). Parsing never panics;
//! what does not parse is a finding of its own (fail closed), never
//! skipped.

use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

use crate::ima::{self, ImaRecord};
use crate::monitor_policy::{self, MonitorPolicy};
use crate::policy::{ReferenceValues, ViolationMemory};
use crate::verify::{MAX_MEASUREMENT_RECORDS, MeasurementLogCheck, MissingReference, Reason};

/// The PCR of the A-VM's configuration (the kernel profile, the monitor
/// policy).
pub const CONFIG_PCR: u32 = 8;
/// The PCR of the Mon-VM's IMA entries.
pub const IMA_PCR: u32 = 10;
/// The PCR of the A-VM's start-up measurements of the Mon-VM.
pub const STARTUP_PCR: u32 = 11;
/// The PCR of the A-VM's monitoring events.
pub const EVENT_PCR: u32 = 12;

/// Longest detail text a finding keeps (the rest is cut, marked `...`).
pub const MAX_DETAIL_LEN: usize = 240;
/// Most findings listed one by one; further ones are only counted.
pub const MAX_LISTED_FINDINGS: usize = 100;
/// Longest `comm` of a Linux task (TASK_COMM_LEN 16, with its NUL).
pub const MAX_COMM_LEN: usize = 15;

/// The kind of a Mon-VM finding; each has its own reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MonVmKind {
    /// A violation event in an area this verifier does not know by name.
    Violation,
    SyscallTableModified,
    IdtModified,
    ImaRewritten,
    TextModified,
    PatchSiteInvalid,
    RodataModified,
    RoAfterInitModified,
    MeasurementEvaded,
    ModuleHidden,
    ProcessHidden,
    CredsTampered,
    PointerTableHooked,
    /// A violation event of area `page_tables`: a process's top-level
    /// page table (or `init_top_pgt`) no longer shares the kernel's mappings.
    PageTablesModified,
    /// A violation event of area `decoy`: the kernel the A-VM watches
    /// stopped ticking, or the one it left at a reboot ticks on.
    KernelDecoy,
    /// A PCR 12 record that is not a well-formed event (counted as a
    /// violation: the A-VM writes nothing else there).
    EventMalformed,
    /// A reboot event `, in place`: a new kernel where the watched one was
    /// (its tick count gone back). A real reboot draws the same KASLR
    /// placement about once in 10^4-10^5 boots; a rootkit that writes the
    /// tick count back makes the A-VM drop its per-boot baselines (the
    /// start-up copies of ro_after_init, `tcp_prot`, the page tables)
    /// and take them again with its hooks in place.
    RebootInPlace,
    /// An IMA entry whose path the allowlist does not list.
    FileNotAllowed,
    /// An IMA entry whose path is listed, but not with this digest.
    FileDigestUnknown,
    /// An IMA entry that cannot be appraised (template other than
    /// `ima-ng`/`ima-sig`, file digest other than SHA-256).
    FileUnappraisable,
    /// A loaded module the policy does not allow by name.
    ModuleNotAllowed,
    /// A module allowed by name, but not with this file digest.
    ModuleDigestUnknown,
    /// A loaded module with no IMA entry (measurement evaded).
    ModuleUnmeasured,
    /// A process whose executable (path and digest) is not allowed.
    ProcessNotAllowed,
    /// A process whose executable has no IMA entry.
    ProcessUnmeasured,
    /// `monvm:boot_patches` holds a digest never learned for the profile.
    BootPatchesUnknown,
    /// The policy learned boot patches for this profile, but the log has
    /// no `monvm:boot_patches` record (yet).
    BootPatchesMissing,
    /// A start-up record of a known kind that does not parse.
    RecordMalformed,
    /// The A-VM watches a Mon-VM (a profile in PCR 8) but its proven log
    /// has no start-up measurement of the Mon-VM's current boot (no
    /// `monvm:kernel:` record, or none since the last reboot event).
    StartupMissing,
    /// The A-VM watches a Mon-VM but measured no monitor policy.
    MonitorPolicyMissing,
    /// The measured monitor policy is invalid: its file did not parse,
    /// its record's name and digest disagree, or it was measured twice.
    MonitorPolicyInvalid,
    /// The A-VM checks the Mon-VM less often than the policy allows.
    MonitorTooSlow,
    /// The A-VM lets a set-uid program run as root that the policy does
    /// not name.
    MonitorSetuidNotAllowed,
}

impl MonVmKind {
    /// All kinds (for documentation checks).
    pub const ALL: [MonVmKind; 33] = [
        Self::Violation,
        Self::SyscallTableModified,
        Self::IdtModified,
        Self::ImaRewritten,
        Self::TextModified,
        Self::PatchSiteInvalid,
        Self::RodataModified,
        Self::RoAfterInitModified,
        Self::MeasurementEvaded,
        Self::ModuleHidden,
        Self::ProcessHidden,
        Self::CredsTampered,
        Self::PointerTableHooked,
        Self::PageTablesModified,
        Self::KernelDecoy,
        Self::EventMalformed,
        Self::RebootInPlace,
        Self::FileNotAllowed,
        Self::FileDigestUnknown,
        Self::FileUnappraisable,
        Self::ModuleNotAllowed,
        Self::ModuleDigestUnknown,
        Self::ModuleUnmeasured,
        Self::ProcessNotAllowed,
        Self::ProcessUnmeasured,
        Self::BootPatchesUnknown,
        Self::BootPatchesMissing,
        Self::RecordMalformed,
        Self::StartupMissing,
        Self::MonitorPolicyMissing,
        Self::MonitorPolicyInvalid,
        Self::MonitorTooSlow,
        Self::MonitorSetuidNotAllowed,
    ];

    /// Stable kebab-case code (documented in docs/protocol.md).
    pub fn code(self) -> &'static str {
        match self {
            Self::Violation => "monvm-violation",
            Self::SyscallTableModified => "monvm-syscall-table-modified",
            Self::IdtModified => "monvm-idt-modified",
            Self::ImaRewritten => "monvm-ima-rewritten",
            Self::TextModified => "monvm-text-modified",
            Self::PatchSiteInvalid => "monvm-patch-site-invalid",
            Self::RodataModified => "monvm-rodata-modified",
            Self::RoAfterInitModified => "monvm-ro-after-init-modified",
            Self::MeasurementEvaded => "monvm-measurement-evaded",
            Self::ModuleHidden => "monvm-module-hidden",
            Self::ProcessHidden => "monvm-process-hidden",
            Self::CredsTampered => "monvm-creds-tampered",
            Self::PointerTableHooked => "monvm-pointer-table-hooked",
            Self::PageTablesModified => "monvm-page-tables-modified",
            Self::KernelDecoy => "monvm-kernel-decoy",
            Self::EventMalformed => "monvm-event-malformed",
            Self::RebootInPlace => "monvm-reboot-in-place",
            Self::FileNotAllowed => "monvm-file-not-allowed",
            Self::FileDigestUnknown => "monvm-file-digest-unknown",
            Self::FileUnappraisable => "monvm-file-unappraisable",
            Self::ModuleNotAllowed => "monvm-module-not-allowed",
            Self::ModuleDigestUnknown => "monvm-module-digest-unknown",
            Self::ModuleUnmeasured => "monvm-module-unmeasured",
            Self::ProcessNotAllowed => "monvm-process-not-allowed",
            Self::ProcessUnmeasured => "monvm-process-unmeasured",
            Self::BootPatchesUnknown => "monvm-boot-patches-unknown",
            Self::BootPatchesMissing => "monvm-boot-patches-missing",
            Self::RecordMalformed => "monvm-record-malformed",
            Self::StartupMissing => "monvm-startup-missing",
            Self::MonitorPolicyMissing => "monvm-monitor-policy-missing",
            Self::MonitorPolicyInvalid => "monvm-monitor-policy-invalid",
            Self::MonitorTooSlow => "monvm-monitor-too-slow",
            Self::MonitorSetuidNotAllowed => "monvm-monitor-setuid-not-allowed",
        }
    }

    /// What it means, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Violation => "the A-VM recorded a violation in the Mon-VM",
            Self::SyscallTableModified => "the Mon-VM's system-call table was modified",
            Self::IdtModified => "the Mon-VM's IDT was modified",
            Self::ImaRewritten => {
                "an anchored entry of the Mon-VM's IMA list was rewritten or removed"
            }
            Self::TextModified => "the Mon-VM's kernel text was modified outside every patch site",
            Self::PatchSiteInvalid => {
                "a patch site of the Mon-VM's kernel holds a value its table does not allow"
            }
            Self::RodataModified => "the Mon-VM's read-only kernel data was modified",
            Self::RoAfterInitModified => "the Mon-VM's read-only-after-init data was modified",
            Self::MeasurementEvaded => {
                "something runs in the Mon-VM that its IMA did not measure (or the A-VM cannot tell: `unwalkable:`, `unjudged:`)"
            }
            Self::ModuleHidden => "a Mon-VM module is hidden from the module list",
            Self::ProcessHidden => "a Mon-VM process is hidden from the task list",
            Self::CredsTampered => "a Mon-VM process holds credentials it was not given by an exec",
            Self::PointerTableHooked => {
                "a function-pointer table of the Mon-VM kernel points outside the kernel"
            }
            Self::PageTablesModified => {
                "a Mon-VM process's page table maps the kernel differently from the kernel's own"
            }
            Self::KernelDecoy => {
                "the Mon-VM kernel the A-VM watches does not run, or the one before a reboot still does"
            }
            Self::EventMalformed => "a monitoring event of the A-VM is malformed",
            Self::RebootInPlace => {
                "a new Mon-VM kernel where the watched one was (tick count gone back): a rare same-place reboot, or a rootkit resetting the A-VM's start-up baselines"
            }
            Self::FileNotAllowed => "the Mon-VM measured a file the allowlist does not list",
            Self::FileDigestUnknown => {
                "the Mon-VM measured a file with a digest the allowlist does not allow"
            }
            Self::FileUnappraisable => "an IMA entry of the Mon-VM cannot be appraised",
            Self::ModuleNotAllowed => "a module is loaded that the policy does not allow",
            Self::ModuleDigestUnknown => "a module is loaded from a file the policy does not allow",
            Self::ModuleUnmeasured => "a module is loaded that the Mon-VM's IMA did not measure",
            Self::ProcessNotAllowed => "a process runs an executable the policy does not allow",
            Self::ProcessUnmeasured => {
                "a process runs an executable the Mon-VM's IMA did not measure"
            }
            Self::BootPatchesUnknown => {
                "the Mon-VM kernel's boot-time patches were never learned for this profile"
            }
            Self::BootPatchesMissing => {
                "the A-VM did not (yet) measure the Mon-VM kernel's boot-time patches"
            }
            Self::RecordMalformed => "a start-up record of the A-VM is malformed",
            Self::StartupMissing => {
                "the A-VM watches a Mon-VM but has not measured its current boot (yet)"
            }
            Self::MonitorPolicyMissing => {
                "the A-VM watches the Mon-VM without a measured monitor policy"
            }
            Self::MonitorPolicyInvalid => "the A-VM's measured monitor policy is invalid",
            Self::MonitorTooSlow => "the A-VM checks the Mon-VM less often than the policy allows",
            Self::MonitorSetuidNotAllowed => {
                "the A-VM lets a set-uid program run as root that the policy does not allow"
            }
        }
    }

    /// The PCR of the records this kind is about.
    pub fn pcr(self) -> u8 {
        match self {
            Self::FileNotAllowed | Self::FileDigestUnknown | Self::FileUnappraisable => 10,
            Self::ModuleNotAllowed
            | Self::ModuleDigestUnknown
            | Self::ModuleUnmeasured
            | Self::ProcessNotAllowed
            | Self::ProcessUnmeasured
            | Self::BootPatchesUnknown
            | Self::BootPatchesMissing
            | Self::RecordMalformed
            | Self::StartupMissing => 11,
            Self::MonitorPolicyMissing
            | Self::MonitorPolicyInvalid
            | Self::MonitorTooSlow
            | Self::MonitorSetuidNotAllowed => 8,
            _ => 12,
        }
    }

    /// The kind of a violation event in `area` (unknown areas are the
    /// generic [`MonVmKind::Violation`]).
    pub fn of_area(area: &[u8]) -> Self {
        match area {
            b"sys_call_table" => Self::SyscallTableModified,
            b"idt" => Self::IdtModified,
            b"ima" => Self::ImaRewritten,
            b"text" => Self::TextModified,
            b"patch_site" => Self::PatchSiteInvalid,
            b"rodata" => Self::RodataModified,
            b"ro_after_init" => Self::RoAfterInitModified,
            b"measurement_evaded" => Self::MeasurementEvaded,
            b"hidden_module" => Self::ModuleHidden,
            b"hidden_process" => Self::ProcessHidden,
            b"creds" => Self::CredsTampered,
            b"pointer_table" => Self::PointerTableHooked,
            b"page_tables" => Self::PageTablesModified,
            b"decoy" => Self::KernelDecoy,
            _ => Self::Violation,
        }
    }

    /// Whether `policy learn` may add what this finding is about (the node
    /// runs something the policy does not know yet), as opposed to what a
    /// known-good node never shows (a violation, an unmeasured module).
    pub fn learnable(self) -> bool {
        matches!(
            self,
            Self::FileNotAllowed
                | Self::FileDigestUnknown
                | Self::ModuleNotAllowed
                | Self::ModuleDigestUnknown
                | Self::ProcessNotAllowed
                | Self::BootPatchesUnknown
                | Self::MonitorTooSlow
                | Self::MonitorSetuidNotAllowed
        )
    }
}

/// One named finding: which kind, which log record, and what (path,
/// module, process, event detail; cut to [`MAX_DETAIL_LEN`], lossy UTF-8,
/// not yet escaped for a terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonVmFinding {
    pub kind: MonVmKind,
    /// Index of the record in the measurement log.
    pub index: usize,
    pub detail: String,
}

impl MonVmFinding {
    fn new(kind: MonVmKind, index: usize, detail: &[u8]) -> Self {
        Self {
            kind,
            index,
            detail: detail_text(detail),
        }
    }
}

/// Lossy UTF-8 of at most [`MAX_DETAIL_LEN`] bytes of `bytes`.
pub fn detail_text(bytes: &[u8]) -> String {
    let cut = bytes.len() > MAX_DETAIL_LEN;
    let bytes = bytes.get(..MAX_DETAIL_LEN).unwrap_or(bytes);
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if cut {
        text.push_str("...");
    }
    text
}

/// What a module or process record says about its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDigest {
    /// The SHA-256 digest of the file's IMA entry.
    Measured([u8; 32]),
    /// All zero: the Mon-VM's IMA list has no entry for the file.
    Unmeasured,
    /// An older A-VM's record, whose digest is SHA-256 of its name: the
    /// file is not named.
    NotRecorded,
}

impl FileDigest {
    fn of(name: &[u8], digest: &[u8; 32]) -> Self {
        if digest == &[0; 32] {
            Self::Unmeasured
        } else if digest[..] == Sha256::digest(name)[..] {
            Self::NotRecorded
        } else {
            Self::Measured(*digest)
        }
    }
}

/// One way of reading a process record's `COMM:EXE_PATH` (a `comm` may
/// itself hold `:/`, so a name can have several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessReading<'a> {
    pub comm: &'a [u8],
    pub exe: &'a [u8],
}

/// A start-up record (PCR 11), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRecord<'a> {
    Kernel {
        release: &'a [u8],
    },
    Module {
        name: &'a [u8],
        file: FileDigest,
    },
    Process {
        pid: u32,
        /// `COMM` (old form) or `COMM:EXE_PATH`, as recorded.
        rest: &'a [u8],
        /// Every reading of `rest` as `COMM:EXE_PATH` (comm at most 15
        /// bytes, path absolute); empty for the old form.
        readings: Vec<ProcessReading<'a>>,
        file: FileDigest,
    },
    BootPatches {
        digest: [u8; 32],
    },
    /// `monvm:sys_call_table`, `monvm:idt`, `monvm:text`, ... (digests the
    /// A-VM checks itself).
    Area {
        area: &'a [u8],
        digest: [u8; 32],
    },
    /// A name this verifier does not know (a newer A-VM); counted only.
    Other,
}

/// Why a start-up record of a known kind does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedRecord;

/// Parses a start-up record's name and digest.
pub fn parse_startup<'a>(
    name: &'a [u8],
    digest: &[u8; 32],
) -> Result<StartupRecord<'a>, MalformedRecord> {
    if let Some(release) = name.strip_prefix(b"monvm:kernel:") {
        return if release.is_empty() {
            Err(MalformedRecord)
        } else {
            Ok(StartupRecord::Kernel { release })
        };
    }
    if let Some(module) = name.strip_prefix(b"monvm:module:") {
        return if module.is_empty() {
            Err(MalformedRecord)
        } else {
            Ok(StartupRecord::Module {
                name: module,
                file: FileDigest::of(name, digest),
            })
        };
    }
    if let Some(process) = name.strip_prefix(b"monvm:process:") {
        let colon = process
            .iter()
            .position(|&b| b == b':')
            .ok_or(MalformedRecord)?;
        let (pid, rest) = process.split_at(colon);
        let rest = rest.get(1..).unwrap_or_default();
        let pid = parse_decimal(pid).ok_or(MalformedRecord)?;
        let file = FileDigest::of(name, digest);
        let readings = if file == FileDigest::NotRecorded {
            Vec::new()
        } else {
            process_readings(rest)
        };
        // A file digest (or the lack of one) belongs to a named executable.
        if file != FileDigest::NotRecorded && readings.is_empty() {
            return Err(MalformedRecord);
        }
        return Ok(StartupRecord::Process {
            pid,
            rest,
            readings,
            file,
        });
    }
    Ok(match name {
        b"monvm:boot_patches" => StartupRecord::BootPatches { digest: *digest },
        b"monvm:sys_call_table"
        | b"monvm:idt"
        | b"monvm:text"
        | b"monvm:rodata"
        | b"monvm:ro_after_init" => StartupRecord::Area {
            area: name.get(6..).unwrap_or_default(),
            digest: *digest,
        },
        _ => StartupRecord::Other,
    })
}

/// Every split of `COMM:EXE_PATH` with a comm of at most 15 bytes and an
/// absolute path.
fn process_readings(rest: &[u8]) -> Vec<ProcessReading<'_>> {
    (0..rest.len().min(MAX_COMM_LEN + 1))
        .filter(|&i| rest.get(i) == Some(&b':') && rest.get(i + 1) == Some(&b'/'))
        .map(|i| ProcessReading {
            comm: &rest[..i],
            exe: &rest[i + 1..],
        })
        .collect()
}

/// An executable path as the A-VM writes it into a record name: a
/// backslash as `\\\\`, a control character or a byte that is not UTF-8 as
/// `\\xNN` (every byte of it), everything else as it is. [`unescape_path`]
/// undoes it.
pub struct EscapedPath<'a>(pub &'a [u8]);

impl core::fmt::Display for EscapedPath<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' {
                    f.write_str("\\\\")?;
                } else if c.is_control() {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                } else {
                    f.write_char(c)?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A process record's executable path as the A-VM escaped it (`\\` for a
/// backslash, `\xNN` for a control or non-UTF-8 byte) back to its bytes;
/// `None` for a broken escape.
pub fn unescape_path(escaped: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'x' => {
                let high = hex(bytes.next()?)?;
                let low = hex(bytes.next()?)?;
                out.push(high << 4 | low);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A decimal number of 1 to 10 digits that fits a u32.
fn parse_decimal(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// A monitoring event (PCR 12), parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Violation {
        number: u32,
        area: &'a [u8],
        detail: &'a [u8],
    },
    Clean {
        number: u32,
        area: &'a [u8],
    },
    /// The Mon-VM rebooted; the A-VM re-measures the new kernel (new
    /// start-up records follow) and starts every area afresh.
    Reboot {
        number: u32,
        detail: &'a [u8],
    },
    /// The A-VM measured the Mon-VM's kernel again after a reboot (its
    /// start-up records are before it). News for a subscriber, which
    /// attests at once; it clears nothing: whether the current boot is
    /// measured is read from the start-up records themselves.
    Remeasured {
        number: u32,
        detail: &'a [u8],
    },
}

impl Event<'_> {
    /// The event's number (the A-VM counts its events from 1).
    pub fn number(&self) -> u32 {
        match self {
            Self::Violation { number, .. }
            | Self::Clean { number, .. }
            | Self::Reboot { number, .. }
            | Self::Remeasured { number, .. } => *number,
        }
    }
}

/// What a reboot event's detail says of a new kernel where the watched
/// one was ([`MonVmKind::RebootInPlace`]).
const IN_PLACE: &[u8] = b", in place";

/// Parses an event's name; `None` if it is not a well-formed event.
pub fn parse_event(name: &[u8]) -> Option<Event<'_>> {
    let rest = name.strip_prefix(b"monvm:event:")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let number = parse_decimal(&rest[..colon])?;
    let rest = &rest[colon + 1..];
    if let Some(area_detail) = rest.strip_prefix(b"violation:") {
        let (area, detail) = match area_detail.iter().position(|&b| b == b':') {
            Some(at) => (&area_detail[..at], &area_detail[at + 1..]),
            None => (area_detail, &[][..]),
        };
        return (!area.is_empty()).then_some(Event::Violation {
            number,
            area,
            detail,
        });
    }
    if rest == b"reboot" {
        return Some(Event::Reboot {
            number,
            detail: &[],
        });
    }
    if let Some(detail) = rest.strip_prefix(b"reboot:") {
        return Some(Event::Reboot { number, detail });
    }
    if let Some(detail) = rest.strip_prefix(b"remeasured:") {
        return Some(Event::Remeasured { number, detail });
    }
    let area = rest.strip_prefix(b"clean:")?;
    (!area.is_empty() && !area.contains(&b':')).then_some(Event::Clean { number, area })
}

/// Counts of what the appraisal looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonVmAppraisal {
    /// Every finding, up to [`MAX_LISTED_FINDINGS`].
    pub findings: Vec<MonVmFinding>,
    /// Findings beyond those listed.
    pub omitted: usize,
    /// Whether the policy's file allowlist was applied (it is known).
    pub allowlist_applied: bool,
    /// IMA entries appraised against the allowlist, and excluded from it.
    pub files_appraised: usize,
    pub files_excluded: usize,
    /// Module and process records appraised.
    pub modules_appraised: usize,
    pub processes_appraised: usize,
    /// Process records of the old form (no executable path).
    pub processes_without_path: usize,
    /// Whether the log shows a Mon-VM (a measured kernel profile): it
    /// then needs a file allowlist to be trusted.
    pub monvm: bool,
}

impl MonVmAppraisal {
    fn push(&mut self, finding: MonVmFinding) {
        if self.findings.len() < MAX_LISTED_FINDINGS {
            self.findings.push(finding);
        } else {
            self.omitted += 1;
        }
    }

    /// The findings as reasons, plus `reference-values-missing` when the
    /// policy has no allowlist for a node with a Mon-VM.
    pub fn reasons(&self) -> impl Iterator<Item = Reason> + '_ {
        let missing = (!self.allowlist_applied && self.monvm)
            .then_some(Reason::ReferenceValuesMissing(MissingReference::MonVmFiles));
        self.findings
            .iter()
            .cloned()
            .map(Reason::MonVm)
            .chain(missing)
    }
}

/// Appraises the proven part of a measurement log (`log`, checked by
/// [`crate::verify::check_measurement_log`] into `check`) against the
/// policy: every violation event is named; with a known file allowlist,
/// every IMA entry (PCR 10), module and process record (PCR 11) is
/// appraised; `monvm:boot_patches` against the digests learned for the
/// measured profile. `excluded` says whether a path is excluded from the
/// allowlist (the verifier compiles the policy's `excludes`).
pub fn appraise(
    log: &[u8],
    check: &MeasurementLogCheck,
    policy: Option<&ReferenceValues>,
    excluded: &dyn Fn(&[u8]) -> bool,
) -> MonVmAppraisal {
    let Ok(records) = ima::parse_list(log, MAX_MEASUREMENT_RECORDS) else {
        // check_measurement_log accepted these bytes; a caller that passes
        // others gets nothing proven.
        return MonVmAppraisal::default();
    };
    // An allowlist with no path and no exclude is not known.
    let files = policy.map(|p| &p.monvm_files).filter(|f| !f.is_empty());
    appraise_records(
        &records,
        check,
        policy,
        files.map(|f| f as &dyn FileIndex),
        excluded,
    )
}

/// Looks up the allowed digests of a path: the policy's
/// [`crate::policy::FileAllowlist`] itself, or an index a host builds from
/// it for large allowlists (a hash map).
pub trait FileIndex {
    fn digests_of(&self, path: &[u8]) -> Option<&[[u8; 32]]>;

    /// Whether `digest` is allowed for `path`: `None` if the path is not
    /// listed, else whether its digests hold `digest`. Always the answer
    /// of [`FileIndex::digests_of`]; an index may find it faster (one
    /// keyed by the digest: an allowed entry is found without a search
    /// by path).
    fn allows(&self, path: &[u8], digest: &[u8; 32]) -> Option<bool> {
        self.digests_of(path)
            .map(|allowed| allowed.contains(digest))
    }

    /// [`FileIndex::allows`] of each `(path, digest)` query, into
    /// `answers` (as many as `queries`; extra ones are left alone). An
    /// index in memory far larger than the caches may answer a batch
    /// faster than one query after the other: its reads for all of them
    /// can be in flight together.
    fn allows_many(&self, queries: &[(&[u8], [u8; 32])], answers: &mut [Option<bool>]) {
        for ((path, digest), answer) in queries.iter().zip(answers) {
            *answer = self.allows(path, digest);
        }
    }

    /// Calls `visit` with each listed path and its digests, in path
    /// order, until it returns true; whether it did. For questions no
    /// lookup by path answers ([`module_file_allowed`]).
    fn any_entry(&self, visit: &mut EntryVisitor<'_>) -> bool;
}

/// What [`FileIndex::any_entry`] calls with each path and its digests.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[[u8; 32]]) -> bool + 'a;

impl FileIndex for crate::policy::FileAllowlist {
    fn digests_of(&self, path: &[u8]) -> Option<&[[u8; 32]]> {
        crate::policy::FileAllowlist::digests_of(self, path)
    }

    fn any_entry(&self, visit: &mut EntryVisitor<'_>) -> bool {
        self.digests
            .iter()
            .any(|(path, digests)| visit(path.as_bytes(), &digests.0))
    }
}

/// What the allowlist says about one IMA entry (PCR 10). Independent per
/// record, so a host may compute them on several threads, for every
/// record, before the replay says which are proven
/// ([`appraise_records_with`] keeps only those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImaOutcome {
    /// Not an IMA entry (another PCR).
    NotIma,
    Excluded,
    Allowed,
    Refused(MonVmFinding),
}

/// The [`ImaOutcome`] of record `index`.
pub fn appraise_ima_record(
    index: usize,
    record: &ImaRecord<'_>,
    files: &dyn FileIndex,
    excluded: &dyn Fn(&[u8]) -> bool,
) -> ImaOutcome {
    if record.pcr != IMA_PCR {
        return ImaOutcome::NotIma;
    }
    ima_outcome(
        index,
        record,
        ima_entry(record),
        excluded,
        |path, digest| files.allows(path, digest),
    )
}

/// The [`ImaOutcome`] of IMA entry `index` (a PCR 10 record), given its
/// [`ima_entry`] and how to ask the allowlist about it (asked at most
/// once, unless the entry is excluded or unappraisable): what
/// [`appraise_ima_record`] does, for a caller that looks entries up in
/// batches ([`FileIndex::allows_many`]).
pub fn ima_outcome<'a>(
    index: usize,
    record: &ImaRecord<'a>,
    entry: Result<(&'a [u8], [u8; 32]), &'a [u8]>,
    excluded: &dyn Fn(&[u8]) -> bool,
    allows: impl FnOnce(&[u8], &[u8; 32]) -> Option<bool>,
) -> ImaOutcome {
    // A violation record (IMA could not measure the file) has no template
    // hash and always extends the same value: nothing proves its path or
    // digest, so neither an exclude nor the allowlist may pass it.
    if record.is_violation() {
        return ImaOutcome::Refused(MonVmFinding::new(
            MonVmKind::FileUnappraisable,
            index,
            b"IMA violation record (its path and digest are not proven)",
        ));
    }
    let (path, digest) = match entry {
        Ok(entry) => entry,
        Err(what) => {
            // An exclude still covers an entry whose path is known.
            return if record.ng_fields().is_ok_and(|f| excluded(f.name)) {
                ImaOutcome::Excluded
            } else {
                ImaOutcome::Refused(MonVmFinding::new(MonVmKind::FileUnappraisable, index, what))
            };
        }
    };
    if excluded(path) {
        return ImaOutcome::Excluded;
    }
    match allows(path, &digest) {
        None => ImaOutcome::Refused(MonVmFinding::new(MonVmKind::FileNotAllowed, index, path)),
        Some(false) => ImaOutcome::Refused(MonVmFinding::new(
            MonVmKind::FileDigestUnknown,
            index,
            &file_detail(path, &digest),
        )),
        Some(true) => ImaOutcome::Allowed,
    }
}

/// [`appraise`] on a parsed log, looking paths up in `files`: the policy's
/// `monvm_files` or an index of them, `None` if the policy has none (no
/// path and no exclude: the allowlist is then not applied). The allowlist
/// is read only through `files`: a host's index may hold the paths that
/// `policy.monvm_files` leaves out.
pub fn appraise_records(
    records: &[ImaRecord<'_>],
    check: &MeasurementLogCheck,
    policy: Option<&ReferenceValues>,
    files: Option<&dyn FileIndex>,
    excluded: &dyn Fn(&[u8]) -> bool,
) -> MonVmAppraisal {
    appraise_records_with(records, check, policy, files, excluded, None)
}

/// [`appraise_records`] with the IMA entries' outcomes computed already
/// (`ima[i]` for `records[i]`, by [`appraise_ima_record`] with the same
/// `files` and `excluded`); a list of another length is not used.
pub fn appraise_records_with(
    records: &[ImaRecord<'_>],
    check: &MeasurementLogCheck,
    policy: Option<&ReferenceValues>,
    files: Option<&dyn FileIndex>,
    excluded: &dyn Fn(&[u8]) -> bool,
    ima: Option<&[ImaOutcome]>,
) -> MonVmAppraisal {
    let ima = ima.filter(|o| o.len() == records.len());
    let mut out = MonVmAppraisal::default();
    let proven = records.get(..check.proven).unwrap_or_default();
    let allowlist = files.filter(|_| policy.is_some());
    out.allowlist_applied = allowlist.is_some();
    out.monvm = check.config_digest.is_some();
    let mut boot_patches_seen = false;
    // The last `monvm:kernel:` start-up record and the last reboot event:
    // the Mon-VM's current boot is measured only if the first follows the
    // second.
    let mut kernel_measured: Option<usize> = None;
    let mut last_reboot: Option<usize> = None;
    let closed = Closed::of(
        proven,
        policy.map(|p| p.monvm_violations).unwrap_or_default(),
    );
    // Findings a `current` policy no longer counts go here, unlisted.
    let mut past = MonVmAppraisal::default();
    for (index, record) in proven.iter().enumerate() {
        match record.pcr {
            IMA_PCR => {
                if let Some(files) = allowlist {
                    let computed;
                    let outcome = match ima.and_then(|o| o.get(index)) {
                        Some(outcome) => outcome,
                        None => {
                            computed = appraise_ima_record(index, record, files, excluded);
                            &computed
                        }
                    };
                    match outcome {
                        ImaOutcome::Excluded => out.files_excluded += 1,
                        ImaOutcome::Allowed => out.files_appraised += 1,
                        ImaOutcome::Refused(finding) => {
                            if finding.kind != MonVmKind::FileUnappraisable {
                                out.files_appraised += 1;
                            }
                            if !closed.by_reboot(index) {
                                out.push(finding.clone());
                            }
                        }
                        ImaOutcome::NotIma => {}
                    }
                }
            }
            STARTUP_PCR => {
                let Ok(fields) = record.ng_fields() else {
                    out.push(MonVmFinding::new(
                        MonVmKind::RecordMalformed,
                        index,
                        record.template_name.as_bytes(),
                    ));
                    continue;
                };
                let digest = <[u8; 32]>::try_from(fields.digest).unwrap_or([0; 32]);
                match parse_startup(fields.name, &digest) {
                    Err(MalformedRecord) => out.push(MonVmFinding::new(
                        MonVmKind::RecordMalformed,
                        index,
                        fields.name,
                    )),
                    Ok(StartupRecord::Kernel { .. }) => kernel_measured = Some(index),
                    Ok(StartupRecord::BootPatches { digest }) => {
                        boot_patches_seen = true;
                        let sink = closed.sink(index, &mut out, &mut past);
                        appraise_boot_patches(index, &digest, check, policy, sink);
                    }
                    Ok(record @ StartupRecord::Module { .. }) if allowlist.is_some() => {
                        let sink = closed.sink(index, &mut out, &mut past);
                        appraise_module(index, &record, policy, allowlist, sink);
                    }
                    Ok(record @ StartupRecord::Process { .. }) => {
                        if let Some(files) = allowlist {
                            let sink = closed.sink(index, &mut out, &mut past);
                            appraise_process(index, &record, files, excluded, sink);
                        }
                    }
                    Ok(_) => {}
                }
            }
            EVENT_PCR => {
                let event = record
                    .ng_fields()
                    .ok()
                    .map(|f| (f.name, parse_event(f.name)));
                match event {
                    Some((_, Some(Event::Clean { .. } | Event::Remeasured { .. }))) => {}
                    Some((_, Some(Event::Reboot { detail, .. }))) => {
                        last_reboot = Some(index);
                        if detail.windows(IN_PLACE.len()).any(|w| w == IN_PLACE)
                            && !closed.by_reboot(index)
                        {
                            out.push(MonVmFinding::new(MonVmKind::RebootInPlace, index, detail));
                        }
                    }
                    Some((_, Some(Event::Violation { area, .. }))) if closed.event(index, area) => {
                    }
                    Some((_, Some(Event::Violation { area, detail, .. }))) => {
                        let mut text = Vec::with_capacity(area.len() + 1 + detail.len());
                        text.extend_from_slice(area);
                        if !detail.is_empty() {
                            text.push(b':');
                            text.extend_from_slice(detail);
                        }
                        out.push(MonVmFinding::new(MonVmKind::of_area(area), index, &text));
                    }
                    Some((name, None)) => {
                        out.push(MonVmFinding::new(MonVmKind::EventMalformed, index, name));
                    }
                    None => out.push(MonVmFinding::new(
                        MonVmKind::EventMalformed,
                        index,
                        record.template_name.as_bytes(),
                    )),
                }
            }
            _ => {}
        }
    }
    if out.monvm {
        appraise_monitor_policy(proven, check, policy, &mut out);
        // Watching a Mon-VM is not measuring it: until the A-VM found the
        // kernel and measured it (again, after a reboot), nothing in the
        // log speaks for what the Mon-VM runs.
        if kernel_measured.is_none_or(|k| last_reboot.is_some_and(|r| k < r)) {
            out.push(MonVmFinding::new(
                MonVmKind::StartupMissing,
                check.proven,
                b"monvm:kernel:",
            ));
        }
    }
    // Learned boot patches must be measured: a missing record is refused.
    if !boot_patches_seen
        && let (Some(profile), Some(policy)) = (check.config_digest, policy)
        && policy.boot_patches_of(&profile).is_some()
    {
        out.push(MonVmFinding::new(
            MonVmKind::BootPatchesMissing,
            check.proven,
            b"monvm:boot_patches",
        ));
    }
    // The counts cover every record, counted or not.
    out.modules_appraised += past.modules_appraised;
    out.processes_appraised += past.processes_appraised;
    out.processes_without_path += past.processes_without_path;
    out
}

/// What a `current` policy ([`ViolationMemory::Current`]) no longer
/// counts, from the events of the proven log: everything before the
/// Mon-VM's last reboot (but malformed records), and violation events of
/// an area the A-VM later recorded clean. Nothing under `sticky`.
#[derive(Default)]
struct Closed<'a> {
    last_reboot: Option<usize>,
    last_clean: alloc::collections::BTreeMap<&'a [u8], usize>,
}

impl<'a> Closed<'a> {
    fn of(records: &[ImaRecord<'a>], memory: ViolationMemory) -> Self {
        let mut closed = Self::default();
        if memory == ViolationMemory::Sticky {
            return closed;
        }
        for (index, record) in records.iter().enumerate() {
            if record.pcr != EVENT_PCR {
                continue;
            }
            match record.ng_fields().ok().and_then(|f| parse_event(f.name)) {
                Some(Event::Reboot { .. }) => closed.last_reboot = Some(index),
                Some(Event::Clean { area, .. }) => {
                    closed.last_clean.insert(area, index);
                }
                _ => {}
            }
        }
        closed
    }

    /// Whether record `index` describes a Mon-VM boot that has ended.
    fn by_reboot(&self, index: usize) -> bool {
        self.last_reboot.is_some_and(|reboot| index < reboot)
    }

    /// Whether the violation event at `index` in `area` no longer holds.
    fn event(&self, index: usize, area: &[u8]) -> bool {
        self.by_reboot(index)
            || self
                .last_clean
                .get(area)
                .is_some_and(|&clean| index < clean)
    }

    /// Where the findings of record `index` go: `out`, or `past` when a
    /// reboot closed them.
    fn sink<'s>(
        &self,
        index: usize,
        out: &'s mut MonVmAppraisal,
        past: &'s mut MonVmAppraisal,
    ) -> &'s mut MonVmAppraisal {
        if self.by_reboot(index) { past } else { out }
    }
}

/// The path and SHA-256 digest of an IMA entry, or what makes it
/// unappraisable.
pub fn ima_entry<'a>(record: &ImaRecord<'a>) -> Result<(&'a [u8], [u8; 32]), &'a [u8]> {
    let fields = record
        .ng_fields()
        .map_err(|_| record.template_name.as_bytes())?;
    if fields.algorithm != "sha256" {
        return Err(fields.name);
    }
    let digest = <[u8; 32]>::try_from(fields.digest).map_err(|_| fields.name)?;
    Ok((fields.name, digest))
}

/// `PATH (sha256:HEX)`.
fn file_detail(path: &[u8], digest: &[u8; 32]) -> Vec<u8> {
    let mut text = Vec::with_capacity(path.len() + 80);
    text.extend_from_slice(path);
    text.extend_from_slice(b" (sha256:");
    text.extend_from_slice(crate::hex::encode(digest).as_bytes());
    text.push(b')');
    text
}

fn appraise_module(
    index: usize,
    record: &StartupRecord<'_>,
    policy: Option<&ReferenceValues>,
    files: Option<&dyn FileIndex>,
    out: &mut MonVmAppraisal,
) {
    let StartupRecord::Module { name, file } = record else {
        return;
    };
    out.modules_appraised += 1;
    if *file == FileDigest::Unmeasured {
        out.push(MonVmFinding::new(MonVmKind::ModuleUnmeasured, index, name));
        return;
    }
    let allowed = policy.and_then(|p| p.monvm_modules.iter().find(|m| m.name.as_bytes() == *name));
    let Some(allowed) = allowed else {
        // Not listed by name: allowed if the file allowlist allows its
        // file (`.../NAME.ko`, as a Keylime policy lists modules).
        let by_file = match (file, files) {
            (FileDigest::Measured(digest), Some(files)) => module_file_allowed(files, name, digest),
            _ => false,
        };
        if !by_file {
            out.push(MonVmFinding::new(MonVmKind::ModuleNotAllowed, index, name));
        }
        return;
    };
    if allowed.sha256.is_empty() {
        return;
    }
    match file {
        FileDigest::Measured(digest) if allowed.sha256.contains(digest) => {}
        FileDigest::Measured(digest) => out.push(MonVmFinding::new(
            MonVmKind::ModuleDigestUnknown,
            index,
            &file_detail(name, digest),
        )),
        // The policy wants a file digest; this record names none.
        _ => out.push(MonVmFinding::new(
            MonVmKind::ModuleDigestUnknown,
            index,
            name,
        )),
    }
}

/// Whether the allowlist allows `digest` for a file named like module
/// `name` (`NAME.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`; `-` and `_` alike,
/// as the kernel treats them in module names).
pub fn module_file_allowed(files: &dyn FileIndex, name: &[u8], digest: &[u8; 32]) -> bool {
    let same = |a: &[u8], b: &[u8]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                let norm = |c: u8| if c == b'-' { b'_' } else { c };
                norm(*x) == norm(*y)
            })
    };
    files.any_entry(&mut |path, digests| {
        let file = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext.as_bytes()));
        stem.is_some_and(|stem| same(stem, name)) && digests.contains(digest)
    })
}

fn appraise_process(
    index: usize,
    record: &StartupRecord<'_>,
    files: &dyn FileIndex,
    excluded: &dyn Fn(&[u8]) -> bool,
    out: &mut MonVmAppraisal,
) {
    let StartupRecord::Process {
        pid,
        rest,
        readings,
        file,
    } = record
    else {
        return;
    };
    let detail = || {
        let mut text = alloc::format!("pid {pid} ").into_bytes();
        text.extend_from_slice(rest);
        text
    };
    let digest = match file {
        FileDigest::NotRecorded => {
            // An older A-VM: the executable is not named; its IMA entry,
            // if any, is appraised in PCR 10.
            out.processes_without_path += 1;
            return;
        }
        FileDigest::Unmeasured => {
            out.processes_appraised += 1;
            out.push(MonVmFinding::new(
                MonVmKind::ProcessUnmeasured,
                index,
                &detail(),
            ));
            return;
        }
        FileDigest::Measured(digest) => digest,
    };
    out.processes_appraised += 1;
    // Every reading of an ambiguous name must pass: a comm holding ":/"
    // cannot move the executable under an exclude.
    let allowed = !readings.is_empty()
        && readings.iter().all(|reading| {
            // The A-VM escapes the path; the allowlist holds it as IMA did.
            unescape_path(reading.exe)
                .is_some_and(|exe| excluded(&exe) || files.allows(&exe, digest) == Some(true))
        });
    if !allowed {
        let mut text = detail();
        text.extend_from_slice(b" (sha256:");
        text.extend_from_slice(crate::hex::encode(digest).as_bytes());
        text.push(b')');
        out.push(MonVmFinding::new(
            MonVmKind::ProcessNotAllowed,
            index,
            &text,
        ));
    }
}

fn appraise_boot_patches(
    index: usize,
    digest: &[u8; 32],
    check: &MeasurementLogCheck,
    policy: Option<&ReferenceValues>,
    out: &mut MonVmAppraisal,
) {
    let learned = check
        .config_digest
        .zip(policy)
        .and_then(|(profile, p)| p.boot_patches_of(&profile));
    if !learned.is_some_and(|known| known.contains(digest)) {
        out.push(MonVmFinding::new(
            MonVmKind::BootPatchesUnknown,
            index,
            alloc::format!("sha256:{}", crate::hex::encode(digest)).as_bytes(),
        ));
    }
}

/// The A-VM's monitor policy as its proven log measured it (PCR 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorPolicyRecord {
    /// No monitor-policy record.
    Missing,
    /// One well-formed record (its index and the periods).
    Valid { index: usize, policy: MonitorPolicy },
    /// A record that must not be trusted: the A-VM's policy file did not
    /// parse, the text is not canonical, the digest is not SHA-256 of the
    /// text (the name is the log's claim; only the digest is in the PCR),
    /// or a second policy record.
    Invalid { index: usize, detail: Vec<u8> },
}

/// Finds the monitor-policy record among `records` (the proven ones).
pub fn monitor_policy_record(records: &[ImaRecord<'_>]) -> MonitorPolicyRecord {
    let mut found = MonitorPolicyRecord::Missing;
    for (index, record) in records.iter().enumerate() {
        if record.pcr != CONFIG_PCR {
            continue;
        }
        let Ok(fields) = record.ng_fields() else {
            continue;
        };
        let invalid = fields.name == monitor_policy::INVALID_RECORD.as_bytes();
        let text = fields
            .name
            .strip_prefix(monitor_policy::RECORD_PREFIX.as_bytes());
        if !invalid && text.is_none() {
            continue;
        }
        if found != MonitorPolicyRecord::Missing {
            return MonitorPolicyRecord::Invalid {
                index,
                detail: b"a second monitor-policy record".to_vec(),
            };
        }
        found = match text.map(|t| (t, MonitorPolicy::parse(t))) {
            None => MonitorPolicyRecord::Invalid {
                index,
                detail: b"the A-VM's monitor-policy file did not parse".to_vec(),
            },
            Some((text, Ok(policy)))
                if fields.algorithm == "sha256"
                    && fields.digest == <[u8; 32]>::from(Sha256::digest(text))
                    && alloc::string::ToString::to_string(&policy).as_bytes() == text =>
            {
                MonitorPolicyRecord::Valid { index, policy }
            }
            Some((text, _)) => MonitorPolicyRecord::Invalid {
                index,
                detail: text.to_vec(),
            },
        };
    }
    found
}

/// The monitor policy the A-VM measured, against the slowest periods the
/// policy allows ([`ReferenceValues::monitor_max`]; a verifier without a
/// policy: the A-VM's defaults).
fn appraise_monitor_policy(
    proven: &[ImaRecord<'_>],
    check: &MeasurementLogCheck,
    policy: Option<&ReferenceValues>,
    out: &mut MonVmAppraisal,
) {
    match monitor_policy_record(proven) {
        MonitorPolicyRecord::Missing => out.push(MonVmFinding::new(
            MonVmKind::MonitorPolicyMissing,
            check.proven,
            monitor_policy::RECORD_PREFIX.as_bytes(),
        )),
        MonitorPolicyRecord::Invalid { index, detail } => out.push(MonVmFinding::new(
            MonVmKind::MonitorPolicyInvalid,
            index,
            &detail,
        )),
        MonitorPolicyRecord::Valid {
            index,
            policy: used,
        } => {
            let max = policy.map(|p| p.monitor_max()).unwrap_or_default();
            for ((key, used), max) in monitor_policy::KEYS
                .iter()
                .zip(used.periods_ms())
                .zip(max.periods_ms())
            {
                if used > max {
                    let detail = alloc::format!("{key}={used} ms, at most {max} ms allowed");
                    out.push(MonVmFinding::new(
                        MonVmKind::MonitorTooSlow,
                        index,
                        detail.as_bytes(),
                    ));
                }
            }
            for path in used
                .setuid
                .iter()
                .filter(|p| !max.allows_setuid(p.as_bytes()))
            {
                out.push(MonVmFinding::new(
                    MonVmKind::MonitorSetuidNotAllowed,
                    index,
                    path.as_bytes(),
                ));
            }
        }
    }
}

/// What [`learn`] added to a policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnedMonVm {
    /// New (path, digest) pairs in `monvm_files`.
    pub files: usize,
    /// New or widened `monvm_modules` entries.
    pub modules: usize,
    /// New `monvm_boot_patches` digests.
    pub boot_patches: usize,
    /// Whether `monvm_monitor_max` was widened to the node's periods.
    pub monitor_policy: bool,
    /// IMA entries that could not be learned (no `ima-ng`/`ima-sig`
    /// SHA-256 digest, a path that is not UTF-8, or an IMA violation
    /// record, whose path and digest nothing proves): a later attestation
    /// names them.
    pub skipped: usize,
}

/// Learns what a known-good node's Mon-VM runs, from the proven part of
/// its log: every IMA entry (PCR 10) as an allowed file, every module that
/// IMA measured (by name and file digest; by name alone from an older
/// A-VM), every process executable, and the boot-patch digest for the
/// measured profile. Learns nothing if the log shows no Mon-VM, or its
/// profile is not one the policy allows (the A-VM's view of the Mon-VM is
/// then not trusted). Unmeasured modules and processes are never learned.
pub fn learn(
    policy: &mut ReferenceValues,
    log: &[u8],
    check: &MeasurementLogCheck,
) -> LearnedMonVm {
    let mut learned = LearnedMonVm::default();
    let Some(profile) = check.config_digest else {
        return learned;
    };
    if !policy.monvm_profiles.iter().any(|p| p.sha256 == profile) {
        return learned;
    }
    let Ok(records) = ima::parse_list(log, MAX_MEASUREMENT_RECORDS) else {
        return learned;
    };
    // A path that is not UTF-8 cannot be written in the TOML policy.
    let allow_file = |policy: &mut ReferenceValues, path: &[u8], digest: [u8; 32]| {
        core::str::from_utf8(path)
            .ok()
            .map(|path| usize::from(policy.monvm_files.allow(path, digest)))
    };
    let proven = records.get(..check.proven).unwrap_or_default();
    if let MonitorPolicyRecord::Valid { policy: used, .. } = monitor_policy_record(proven) {
        learned.monitor_policy = policy.allow_monitor_policy(&used);
    }
    for record in proven {
        match record.pcr {
            // A violation record's path and digest are not proven (it
            // extends 0xff.. whatever its data says): never learned.
            IMA_PCR if record.is_violation() => learned.skipped += 1,
            IMA_PCR => match ima_entry(record) {
                Ok((path, digest)) => match allow_file(policy, path, digest) {
                    Some(new) => learned.files += new,
                    None => learned.skipped += 1,
                },
                Err(_) => learned.skipped += 1,
            },
            STARTUP_PCR => {
                let Ok(fields) = record.ng_fields() else {
                    continue;
                };
                let digest = <[u8; 32]>::try_from(fields.digest).unwrap_or([0; 32]);
                match parse_startup(fields.name, &digest) {
                    Ok(StartupRecord::Module { name, file }) => {
                        let Ok(name) = core::str::from_utf8(name) else {
                            continue;
                        };
                        let digest = match file {
                            FileDigest::Measured(d) => Some(d),
                            FileDigest::NotRecorded => None,
                            FileDigest::Unmeasured => continue,
                        };
                        learned.modules += usize::from(policy.allow_module(name, digest));
                    }
                    Ok(StartupRecord::Process {
                        readings,
                        file: FileDigest::Measured(digest),
                        ..
                    }) if readings.len() == 1 => {
                        match unescape_path(readings[0].exe)
                            .and_then(|exe| allow_file(policy, &exe, digest))
                        {
                            Some(new) => learned.files += new,
                            None => learned.skipped += 1,
                        }
                    }
                    Ok(StartupRecord::BootPatches { digest }) => {
                        learned.boot_patches +=
                            usize::from(policy.allow_boot_patches(profile, digest));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    learned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ima::{ng_record, ng_template_data, replay_sha256};
    use crate::policy::ProfileRef;
    use crate::verify::check_measurement_log;
    use crate::wire::PcrValue;

    /// The PCRs 8-15 a quote of all of `log` would hold.
    fn quoted(log: &[u8]) -> Vec<PcrValue> {
        let records = ima::parse_list(log, MAX_MEASUREMENT_RECORDS).expect("parses");
        let pcrs = replay_sha256(&records, &[[0; 32]; 24]);
        (8u8..16)
            .map(|index| PcrValue {
                index,
                digest: pcrs[usize::from(index)],
            })
            .collect()
    }

    /// The A-VM's configuration records: the kernel profile and the
    /// default monitor policy.
    fn config(profile: &[u8; 32]) -> Vec<u8> {
        let text = alloc::string::ToString::to_string(&MonitorPolicy::default());
        let mut name = String::from(monitor_policy::RECORD_PREFIX);
        name.push_str(&text);
        let mut log = ng_record(CONFIG_PCR, profile, b"avm-config:kernel-profile");
        log.extend(ng_record(
            CONFIG_PCR,
            &Sha256::digest(text.as_bytes()).into(),
            name.as_bytes(),
        ));
        log
    }

    /// A policy that allows the Mon-VM kernel profile `profile`.
    fn watching(profile: [u8; 32]) -> ReferenceValues {
        let mut policy = ReferenceValues::default();
        policy.monvm_profiles.push(ProfileRef {
            sha256: profile,
            release: "6.1".into(),
        });
        policy
    }

    /// A record whose digest is SHA-256 of its name (an event, the
    /// start-up kernel record).
    fn named(pcr: u32, name: &str) -> Vec<u8> {
        ng_record(
            pcr,
            &Sha256::digest(name.as_bytes()).into(),
            name.as_bytes(),
        )
    }

    /// The findings of `kind` in the appraisal of all of `log`, whose
    /// configuration `policy` allows.
    fn count(log: &[u8], policy: &ReferenceValues, kind: MonVmKind) -> usize {
        let check = check_measurement_log(Some(log), &quoted(log)).expect("proven");
        assert_eq!(check.appraise_config(Some(policy)), None);
        appraise(log, &check, Some(policy), &|_| false)
            .findings
            .iter()
            .filter(|f| f.kind == kind)
            .count()
    }

    /// Review finding: an A-VM that watches a Mon-VM (its profile is in
    /// PCR 8) but has not measured it (no start-up records: it has not
    /// found the kernel, or not yet, or not again since the Mon-VM
    /// rebooted) proves nothing of what the Mon-VM runs; that must not
    /// pass as a Mon-VM with nothing to object to.
    #[test]
    fn a_watched_mon_vm_that_was_never_measured_is_not_trusted() {
        let profile = [0x11; 32];
        let mut policy = watching(profile);
        policy.monvm_files.allow("/sbin/init", [0x22; 32]);
        let missing =
            |log: &[u8], policy: &ReferenceValues| count(log, policy, MonVmKind::StartupMissing);

        // Never measured.
        let log = config(&profile);
        assert_eq!(missing(&log, &policy), 1);

        // Measured: nothing missing.
        let mut measured = config(&profile);
        measured.extend(ng_record(10, &[0x22; 32], b"/sbin/init"));
        measured.extend(named(STARTUP_PCR, "monvm:kernel:6.1"));
        measured.extend(ng_record(
            STARTUP_PCR,
            &[0x22; 32],
            b"monvm:process:1:init:/sbin/init",
        ));
        assert_eq!(missing(&measured, &policy), 0);

        // The Mon-VM rebooted and its new boot is not measured (yet):
        // what was measured of the boot before says nothing of it, under
        // either memory of violations.
        let mut rebooted = measured.clone();
        rebooted.extend(named(EVENT_PCR, "monvm:event:1:reboot:slide"));
        for memory in [ViolationMemory::Sticky, ViolationMemory::Current] {
            policy.monvm_violations = memory;
            assert_eq!(missing(&rebooted, &policy), 1, "{memory:?}");
            let mut again = rebooted.clone();
            again.extend(named(STARTUP_PCR, "monvm:kernel:6.1"));
            assert_eq!(missing(&again, &policy), 0, "{memory:?}");
        }
    }

    /// A reboot event `, in place` (the tick count written back, as a
    /// rootkit resetting the A-VM's start-up baselines would) is a
    /// violation; one to a new place is not. Under `current` a later
    /// reboot closes it.
    #[test]
    fn an_in_place_reboot_is_a_finding() {
        let profile = [0x11; 32];
        let mut policy = watching(profile);
        let kernel = || named(STARTUP_PCR, "monvm:kernel:6.1");
        let event = |name: &str| named(EVENT_PCR, name);
        let in_place =
            |log: &[u8], policy: &ReferenceValues| count(log, policy, MonVmKind::RebootInPlace);
        let mut log = config(&profile);
        log.extend(kernel());
        let mut moved = log.clone();
        moved.extend(event(
            "monvm:event:1:reboot:slide 0x1000000->0x2000000, 40 changes held",
        ));
        moved.extend(kernel());
        assert_eq!(in_place(&moved, &policy), 0);
        log.extend(event(
            "monvm:event:1:reboot:slide 0x1000000->0x1000000, in place",
        ));
        log.extend(kernel());
        for memory in [ViolationMemory::Sticky, ViolationMemory::Current] {
            policy.monvm_violations = memory;
            assert_eq!(in_place(&log, &policy), 1, "{memory:?}");
        }
        log.extend(event("monvm:event:2:reboot:slide 0x1000000->0x3000000"));
        log.extend(kernel());
        policy.monvm_violations = ViolationMemory::Current;
        assert_eq!(in_place(&log, &policy), 0);
        policy.monvm_violations = ViolationMemory::Sticky;
        assert_eq!(in_place(&log, &policy), 1);
    }

    /// Review finding: an IMA violation record (all-zero template hash)
    /// extends the constant 0xff.., so the quote proves nothing of the
    /// path and digest in its data: a rootkit in the Mon-VM (or a relay)
    /// writes there what it likes. `policy learn` must not take them into
    /// the allowlist, or the file named there is allowed from then on.
    #[test]
    fn learn_never_takes_the_unproven_path_of_an_ima_violation_record() {
        let profile = [0x11; 32];
        let evil = [0x66; 32];
        let mut log = ng_record(8, &profile, b"avm-config:kernel-profile");
        log.extend(ng_record(10, &[0x22; 32], b"/usr/bin/good"));
        let data = ng_template_data("sha256", &evil, b"/usr/bin/evil", None);
        ImaRecord {
            pcr: 10,
            template_hash: [0; 20],
            template_name: "ima-ng",
            template_data: &data,
        }
        .emit(&mut log);
        let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
        assert_eq!(check.proven, 3);

        let mut policy = ReferenceValues::default();
        policy.monvm_profiles.push(ProfileRef {
            sha256: profile,
            release: "6.1".into(),
        });
        let learned = learn(&mut policy, &log, &check);
        assert!(policy.monvm_files.digests_of(b"/usr/bin/good").is_some());
        assert_eq!(policy.monvm_files.digests_of(b"/usr/bin/evil"), None);
        assert_eq!((learned.files, learned.skipped), (1, 1));

        // What it would let through: the file, measured for real later.
        let mut later = ng_record(8, &profile, b"avm-config:kernel-profile");
        later.extend(ng_record(10, &evil, b"/usr/bin/evil"));
        let check = check_measurement_log(Some(&later), &quoted(&later)).expect("proven");
        let appraisal = appraise(&later, &check, Some(&policy), &|_| false);
        assert!(
            appraisal
                .findings
                .iter()
                .any(|f| f.kind == MonVmKind::FileNotAllowed && f.index == 1),
            "{:?}",
            appraisal.findings
        );
    }
}
