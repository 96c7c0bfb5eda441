//! Building a [`KernelProfile`] from a kernel package's vmlinuz alone (no
//! debug package, no System.map), host side (feature `builder`):
//! decompress the bzImage ([`crate::kernel_image`]), recover the symbol
//! table from the kallsyms tables inside ([`crate::kallsyms`], both
//! layouts), read struct member offsets from the image's `.BTF` (btfparse),
//! and read `sys_call_table`'s slots from the image's rodata, each resolved
//! to the handler symbol at that address.
//!
//! Every member offset is checked against the size the Linux layer reads
//! there (e.g. `task_struct.comm` must be a 16-byte array): a kernel whose
//! layout differs from what [`crate::linux`] assumes is refused here, not
//! misread in the A-VM.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

use super::{
    KernelIdentity, KernelProfile, KernelSymbols, MAX_RELEASE_LEN, MAX_SYSCALLS, NamedAddress,
    ProfileError, StructOffsets, StructSizes, SyscallTable,
};
use crate::kallsyms::{Kallsyms, KallsymsError, Layout, Limits, SymbolTable};
use crate::kernel_image::{BzImage, Compression, ImageError, MAX_VMLINUX_SIZE, Vmlinux};
use crate::linux::crossview::{
    CACHED_STACKS, CSS_SET_BUCKETS, CrossViewReference, PointerTable, XA_SLOTS,
};
use crate::linux::kaslr::MAX_BANNER;
use crate::linux::{CredOffsets, ImaOffsets, ModuleOffsets, PathOffsets, TaskOffsets};

/// Why no profile was built.
#[derive(Debug)]
pub enum BuildError {
    /// The vmlinuz is no bzImage, its compression is unknown, it does not
    /// decompress, or the result is no x86-64 ELF.
    Image(ImageError),
    /// No kallsyms tables in the image.
    Kallsyms(KallsymsError),
    /// The image has no `.BTF` section (a kernel without
    /// `CONFIG_DEBUG_INFO_BTF`).
    NoBtf,
    /// `.BTF` does not parse.
    Btf(String),
    /// A symbol the A-VM needs is not in kallsyms.
    MissingSymbol(&'static str),
    /// A symbol the A-VM needs has several addresses.
    AmbiguousSymbol(&'static str),
    /// A struct or member the Linux layer reads is missing from BTF, or
    /// has another size than it assumes.
    Layout(String),
    /// The image contradicts itself (banner, kallsyms base, syscall table).
    Inconsistent(String),
    /// The result does not validate (should not happen for a real kernel).
    Profile(ProfileError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Image(e) => write!(f, "{e}"),
            BuildError::Kallsyms(e) => write!(f, "kallsyms not found in the kernel image: {e}"),
            BuildError::NoBtf => write!(
                f,
                "the kernel image has no .BTF section (built without CONFIG_DEBUG_INFO_BTF)"
            ),
            BuildError::Btf(e) => write!(f, "the kernel's .BTF does not parse: {e}"),
            BuildError::MissingSymbol(name) => {
                write!(f, "required symbol {name} is missing from kallsyms")
            }
            BuildError::AmbiguousSymbol(name) => {
                write!(
                    f,
                    "required symbol {name} has several addresses in kallsyms"
                )
            }
            BuildError::Layout(e) => write!(f, "kernel structure layout: {e}"),
            BuildError::Inconsistent(e) => write!(f, "inconsistent kernel image: {e}"),
            BuildError::Profile(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<ImageError> for BuildError {
    fn from(e: ImageError) -> Self {
        BuildError::Image(e)
    }
}

/// How long each step took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub decompress: Duration,
    pub kallsyms: Duration,
    pub btf: Duration,
    pub total: Duration,
}

/// A built profile with its encoding, digest and how it was made.
#[derive(Debug)]
pub struct Built {
    pub profile: KernelProfile,
    /// The canonical encoding (what is written to the profile file).
    pub encoded: Vec<u8>,
    /// SHA-256 of `encoded`.
    pub digest: [u8; 32],
    /// `None` when built from a vmlinux directly.
    pub compression: Option<Compression>,
    pub vmlinux_len: usize,
    /// Symbols kallsyms recovered (the profile keeps a few of them).
    pub kallsyms_symbols: usize,
    pub kallsyms_layout: Layout,
    pub timings: Timings,
}

/// Builds the profile of the kernel in `vmlinuz` (a bzImage).
pub fn from_vmlinuz(vmlinuz: &[u8]) -> Result<Built, BuildError> {
    let start = Instant::now();
    let image = BzImage::parse(vmlinuz)?;
    let vmlinux = image.decompress(MAX_VMLINUX_SIZE)?;
    let decompress = start.elapsed();
    let mut built = from_vmlinux(&vmlinux)?;
    built.compression = Some(image.compression);
    built.timings.decompress = decompress;
    built.timings.total = start.elapsed();
    Ok(built)
}

/// Builds the profile of a decompressed kernel image (vmlinux ELF).
pub fn from_vmlinux(vmlinux: &[u8]) -> Result<Built, BuildError> {
    let start = Instant::now();
    let elf = Vmlinux::parse(vmlinux)?;

    let t = Instant::now();
    let kallsyms = Kallsyms::parse(vmlinux, &Limits::default()).map_err(BuildError::Kallsyms)?;
    let kallsyms_time = t.elapsed();

    let t = Instant::now();
    let section = elf.section(".BTF").ok_or(BuildError::NoBtf)?;
    let btf = Btf::parse(section)?;
    let offsets = struct_offsets(&btf)?;
    let btf_time = t.elapsed();

    let symbols = kernel_symbols(&elf, &kallsyms)?;
    let kernel = identity(&elf, symbols.linux_banner)?;
    let syscalls = syscall_table(&elf, &kallsyms.symbols, &symbols)?;

    let text_reference = super::text_build::text_reference(&elf, &kallsyms.symbols, &symbols)?;
    let idt = idt_reference(&elf, &btf, &kallsyms.symbols, &symbols)?;
    let profile = KernelProfile {
        kernel,
        symbols,
        syscalls,
        offsets,
        idt: Some(idt),
        text_reference: Some(text_reference),
        cross_view: Some(cross_view(&btf, &kallsyms.symbols)?),
    };
    let encoded = profile.encode().map_err(BuildError::Profile)?;
    let digest = super::digest(&encoded);
    Ok(Built {
        profile,
        encoded,
        digest,
        compression: None,
        vmlinux_len: vmlinux.len(),
        kallsyms_symbols: kallsyms.symbols.len(),
        kallsyms_layout: kallsyms.layout,
        timings: Timings {
            decompress: Duration::ZERO,
            kallsyms: kallsyms_time,
            btf: btf_time,
            total: start.elapsed(),
        },
    })
}

/// The one address of `name`.
fn required(symbols: &SymbolTable, name: &'static str) -> Result<u64, BuildError> {
    let mut all = symbols.lookup_all(name);
    let first = all.next().ok_or(BuildError::MissingSymbol(name))?;
    if all.any(|s| s.address != first.address) {
        return Err(BuildError::AmbiguousSymbol(name));
    }
    Ok(first.address)
}

fn optional(symbols: &SymbolTable, name: &'static str) -> Result<Option<u64>, BuildError> {
    match required(symbols, name) {
        Ok(a) => Ok(Some(a)),
        Err(BuildError::MissingSymbol(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn kernel_symbols(elf: &Vmlinux<'_>, k: &Kallsyms) -> Result<KernelSymbols, BuildError> {
    let s = &k.symbols;
    let text = required(s, "_text")?;
    if k.relative_base != text {
        return Err(BuildError::Inconsistent(format!(
            "kallsyms base {:#x} is not _text {text:#x}",
            k.relative_base
        )));
    }
    // 6.1 does not list its own tables: the base's link address is where
    // the recovery found it, mapped through the ELF. 6.4+ lists it: both
    // must agree.
    let relative_base = elf
        .address_of_offset(k.locations.relative_base)
        .ok_or_else(|| {
            BuildError::Inconsistent("kallsyms_relative_base is in no load segment".into())
        })?;
    if let Some(listed) = optional(s, "kallsyms_relative_base")?
        && listed != relative_base
    {
        return Err(BuildError::Inconsistent(format!(
            "kallsyms_relative_base listed at {listed:#x}, found at {relative_base:#x}"
        )));
    }
    if elf.read_u64(relative_base) != Some(text) {
        return Err(BuildError::Inconsistent(
            "kallsyms_relative_base does not hold _text".into(),
        ));
    }
    Ok(KernelSymbols {
        text,
        etext: required(s, "_etext")?,
        start_rodata: required(s, "__start_rodata")?,
        end_rodata: required(s, "__end_rodata")?,
        start_ro_after_init: required(s, "__start_ro_after_init")?,
        end_ro_after_init: required(s, "__end_ro_after_init")?,
        end: required(s, "_end")?,
        sys_call_table: required(s, "sys_call_table")?,
        x64_sys_call: required(s, "x64_sys_call")?,
        ia32_sys_call: optional(s, "ia32_sys_call")?,
        idt_table: required(s, "idt_table")?,
        init_task: required(s, "init_task")?,
        init_top_pgt: required(s, "init_top_pgt")?,
        init_cred: required(s, "init_cred")?,
        modules: required(s, "modules")?,
        ima_measurements: required(s, "ima_measurements")?,
        linux_banner: required(s, "linux_banner")?,
        kallsyms_relative_base: relative_base,
        phys_base: required(s, "phys_base")?,
        page_offset_base: required(s, "page_offset_base")?,
        pgdir_shift: optional(s, "pgdir_shift")?,
        per_cpu_offset: required(s, "__per_cpu_offset")?,
        jiffies_64: required(s, "jiffies_64")?,
    })
}

/// Release and version out of `linux_banner` ("Linux version RELEASE
/// (builder) (compiler) VERSION\n").
fn identity(elf: &Vmlinux<'_>, banner_va: u64) -> Result<KernelIdentity, BuildError> {
    let bytes = elf.read_cstr(banner_va, MAX_BANNER).ok_or_else(|| {
        BuildError::Inconsistent("linux_banner: no NUL-terminated banner at its address".into())
    })?;
    identity_of(bytes)
}

fn identity_of(bytes: &[u8]) -> Result<KernelIdentity, BuildError> {
    let bad = |why: &str| BuildError::Inconsistent(format!("linux_banner: {why}"));
    let banner = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let rest = banner
        .strip_prefix("Linux version ")
        .ok_or_else(|| bad("does not start with \"Linux version \""))?;
    let release = rest.split(' ').next().unwrap_or_default();
    if release.is_empty() || release.len() > MAX_RELEASE_LEN {
        return Err(bad("no release"));
    }
    // UTS_VERSION follows the compiler's closing parenthesis: "#1 SMP ...".
    let version = banner
        .find(") #")
        .map(|at| banner[at + 2..].trim_end_matches('\n'))
        .ok_or_else(|| bad("no \"#\" version"))?;
    Ok(KernelIdentity {
        release: release.to_string(),
        version: version.to_string(),
        banner: banner.to_string(),
    })
}

/// Whether `name` is a native system-call handler (`__x64_sys_*`, the
/// `ni_syscall` stub under either name).
fn is_handler(name: &str) -> bool {
    name.starts_with("__x64_sys_") || name == "sys_ni_syscall"
}

/// `sys_call_table`'s slots as the image holds them, each resolved to the
/// handler symbol at its address. The table ends at the first slot that is
/// no text symbol's address (alignment padding before the next object) or
/// at the next symbol; only padding may remain before that symbol.
fn syscall_table(
    elf: &Vmlinux<'_>,
    symbols: &SymbolTable,
    profile: &KernelSymbols,
) -> Result<SyscallTable, BuildError> {
    let table = profile.sys_call_table;
    let bad = |why: String| BuildError::Inconsistent(format!("sys_call_table: {why}"));
    let next = symbols
        .next_address_after(table)
        .ok_or_else(|| bad("no symbol after it".into()))?;
    let room = ((next - table) / 8).min(MAX_SYSCALLS as u64 + 1);
    let mut slots = Vec::new();
    for i in 0..room {
        let at = table + 8 * i;
        let value = elf
            .read_u64(at)
            .ok_or_else(|| bad(format!("slot {i} is not in the file")))?;
        let mut names: Vec<&str> = symbols.symbols_at(value).map(|s| s.name).collect();
        if !(profile.text..profile.etext).contains(&value) || names.is_empty() {
            break;
        }
        names.sort_by_key(|n| (!n.starts_with("__x64_sys_"), *n));
        let name = names.iter().find(|n| is_handler(n)).ok_or_else(|| {
            bad(format!(
                "slot {i} points at {}, no handler",
                names.join("/")
            ))
        })?;
        slots.push(NamedAddress {
            name: (*name).to_string(),
            address: value,
        });
    }
    let used = slots.len() as u64 * 8;
    if slots.is_empty() || slots.len() > MAX_SYSCALLS {
        return Err(bad(format!("{} slots", slots.len())));
    }
    // What is left before the next symbol is alignment padding (the table
    // is 32-byte aligned), not slots that failed to resolve.
    if next - table - used >= 64 {
        return Err(bad(format!(
            "{} slots resolve, but the next symbol is {} bytes after the table",
            slots.len(),
            next - table
        )));
    }
    Ok(SyscallTable {
        address: table,
        slots,
    })
}

/// A `.BTF` section as btfparse reads it.
struct BtfBytes<'a>(&'a [u8]);

impl Readable for BtfBytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buffer.len())?));
        match src {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                "read beyond the .BTF section",
            )),
        }
    }
}

/// The kernel's BTF with its structs by name.
struct Btf {
    types: TypeInformation,
    /// Complete (sized) structs and unions by name; BTF may hold several
    /// definitions of one name, which must then agree in size.
    structs: BTreeMap<String, Vec<u32>>,
}

impl Btf {
    fn parse(section: &[u8]) -> Result<Self, BuildError> {
        let types = TypeInformation::new(&BtfBytes(section))
            .map_err(|e| BuildError::Btf(format!("{e:?}")))?;
        let mut structs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (&id, ty) in types.get() {
            let name = match ty {
                TypeVariant::Struct(s) => s.name().clone(),
                TypeVariant::Union(u) => u.name().clone(),
                _ => None,
            };
            if let Some(name) = name {
                structs.entry(name).or_default().push(id);
            }
        }
        Ok(Btf { types, structs })
    }

    fn struct_id(&self, ty: &str) -> Result<u32, BuildError> {
        let ids = self
            .structs
            .get(ty)
            .ok_or_else(|| BuildError::Layout(format!("struct {ty} is not in BTF")))?;
        let first = *ids
            .first()
            .ok_or_else(|| BuildError::Layout(format!("struct {ty} is not in BTF")))?;
        let size = self.types.size_of(first).ok();
        if ids.iter().any(|&id| self.types.size_of(id).ok() != size) {
            return Err(BuildError::Layout(format!(
                "struct {ty} has several definitions of different sizes"
            )));
        }
        Ok(first)
    }

    fn size(&self, ty: &str) -> Result<u64, BuildError> {
        let id = self.struct_id(ty)?;
        self.types
            .size_of(id)
            .map(|s| s as u64)
            .map_err(|e| BuildError::Layout(format!("size of struct {ty}: {e:?}")))
    }

    /// Offset and size of member `path` (`a.b`, `a[2].b`) of struct `ty`.
    fn member(&self, ty: &str, path: &str) -> Result<(u64, u64), BuildError> {
        let id = self.struct_id(ty)?;
        let (member, offset) = self
            .types
            .offset_of(id, path)
            .map_err(|e| BuildError::Layout(format!("{ty}.{path}: {e:?}")))?;
        let Offset::ByteOffset(offset) = offset else {
            return Err(BuildError::Layout(format!("{ty}.{path} is a bitfield")));
        };
        let size = self
            .types
            .size_of(member)
            .map_err(|e| BuildError::Layout(format!("size of {ty}.{path}: {e:?}")))?;
        Ok((u64::from(offset), size as u64))
    }

    /// Offset of `ty.path`, whose size must be `size` (what the Linux
    /// layer reads there).
    fn field(&self, ty: &str, path: &str, size: u64) -> Result<u64, BuildError> {
        let (offset, actual) = self.member(ty, path)?;
        if actual != size {
            return Err(BuildError::Layout(format!(
                "{ty}.{path} is {actual} bytes, the A-VM reads {size}"
            )));
        }
        Ok(offset)
    }

    /// The words of `struct ty` that hold function pointers, ascending:
    /// its members (and those of the structs nested in it) whose type is a
    /// pointer to a function, through typedefs and qualifiers, at a whole
    /// word. A union's words are left out: another of its members may put
    /// data there.
    fn function_words(&self, ty: &str) -> Result<Vec<u32>, BuildError> {
        let mut words = Vec::new();
        self.collect_function_words(self.struct_id(ty)?, 0, 0, &mut words)
            .map_err(|e| BuildError::Layout(format!("struct {ty}: {e}")))?;
        words.sort_unstable();
        words.dedup();
        Ok(words)
    }

    fn collect_function_words(
        &self,
        id: u32,
        base: u32,
        depth: u32,
        out: &mut Vec<u32>,
    ) -> Result<(), String> {
        // Linux nests structs a few levels deep; BTF cannot loop here (a
        // struct contains itself only through a pointer), but be sure.
        if depth > 16 {
            return Err("structs nested too deep".into());
        }
        let Some(TypeVariant::Struct(s)) = self.types.get().get(&id) else {
            return Ok(());
        };
        for member in s.member_list() {
            let Offset::ByteOffset(offset) = member.offset() else {
                continue;
            };
            let at = base.checked_add(offset).ok_or("offset overflows")?;
            let ty = self.unqualified(member.tid());
            match self.types.get().get(&ty) {
                Some(TypeVariant::Ptr(p)) => {
                    let target = self.unqualified(*p.tid());
                    if at % 8 == 0
                        && matches!(
                            self.types.get().get(&target),
                            Some(TypeVariant::FuncProto(_))
                        )
                    {
                        out.push(at / 8);
                    }
                }
                Some(TypeVariant::Struct(_)) => {
                    self.collect_function_words(ty, at, depth + 1, out)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `id` without its typedefs, `const`, `volatile`, `restrict` and type
    /// tags (a bounded number of them).
    fn unqualified(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            id = match self.types.get().get(&id) {
                Some(TypeVariant::Typedef(t)) => *t.tid(),
                Some(TypeVariant::Const(t)) => *t.tid(),
                Some(TypeVariant::Volatile(t)) => *t.tid(),
                Some(TypeVariant::Restrict(t)) => *t.tid(),
                Some(TypeVariant::TypeTag(t)) => *t.tid(),
                _ => return id,
            };
        }
        id
    }

    /// The value of enumerator `name` of `enum ty`.
    fn enumerator(&self, ty: &str, name: &str) -> Result<u64, BuildError> {
        for t in self.types.get().values() {
            if let TypeVariant::Enum(e) = t {
                if e.name().as_deref() != Some(ty) {
                    continue;
                }
                for v in e.named_value_list() {
                    if v.name == name {
                        return match v.value {
                            btfparse::Integer32Value::Unsigned(u) => Ok(u64::from(u)),
                            btfparse::Integer32Value::Signed(s) => u64::try_from(s)
                                .map_err(|_| BuildError::Layout(format!("{name} is negative"))),
                        };
                    }
                }
            }
        }
        Err(BuildError::Layout(format!("enum {ty} has no {name}")))
    }
}

const PTR: u64 = 8;
const LIST_HEAD: u64 = 16;

/// The first vector of external interrupts (`FIRST_EXTERNAL_VECTOR`).
const FIRST_EXTERNAL_VECTOR: u64 = 0x20;

/// The entry each IDT vector gets at boot, and its attribute word (IST,
/// type, DPL, present), from the image's own tables: the `struct idt_data`
/// arrays `early_idts` (#DB, replaced, and #BP, kept), `early_pf_idts`
/// (the page fault, kept), `def_idts` (exceptions, the int 0x80
/// gate), `ia32_idt` (6.12) and `apic_idts` (system vectors), applied in
/// that order as `idt_setup_traps` and `idt_setup_apic_and_irq_gates` do;
/// every other external vector gets its stub in `irq_entries_start`, and
/// every other system vector its stub in `spurious_entries_start` (the
/// stub size, 8 or 16 bytes, and the first system vector follow from the
/// distance between the two).
fn idt_reference(
    elf: &Vmlinux<'_>,
    btf: &Btf,
    symbols: &SymbolTable,
    s: &KernelSymbols,
) -> Result<super::IdtReference, BuildError> {
    let bad = |why: String| BuildError::Inconsistent(format!("IDT tables: {why}"));
    let size = btf.size("idt_data")?;
    let vector_at = btf.field("idt_data", "vector", 4)?;
    let addr_at = btf.field("idt_data", "addr", PTR)?;
    let bits_at = btf.field("idt_data", "bits", 2)?;
    // The attribute word is copied into the gate whole (`idt_init_desc`),
    // where the CPU reads it as bytes 4 and 5.
    if btf.field("gate_struct", "bits", 2)? != 4 {
        return Err(bad("gate_struct.bits is not at byte 4".into()));
    }
    if size == 0 || size > 64 {
        return Err(bad(format!("struct idt_data of {size} bytes")));
    }
    let mut gates: BTreeMap<u8, (u64, u16)> = BTreeMap::new();
    for table in [
        "early_idts",
        "early_pf_idts",
        "def_idts",
        "ia32_idt",
        "apic_idts",
    ] {
        let Some(start) = optional(symbols, table)? else {
            continue;
        };
        let end = symbols
            .next_address_after(start)
            .ok_or_else(|| bad(format!("nothing after {table}")))?;
        let mut at = start;
        while at + size <= end {
            let vector = elf
                .read(at + vector_at, 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad(format!("{table} is not in the file")))?;
            let addr = elf
                .read_u64(at + addr_at)
                .ok_or_else(|| bad(format!("{table} is not in the file")))?;
            let bits = elf
                .read(at + bits_at, 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or_else(|| bad(format!("{table} is not in the file")))?;
            // The array ends where its entries stop making sense
            // (alignment padding before the next symbol).
            if vector > 0xff
                || !(s.text..s.etext).contains(&addr)
                || bits & super::IDT_GATE_PRESENT == 0
            {
                break;
            }
            gates.insert(vector as u8, (addr, bits));
            at += size;
        }
    }
    let irq = required(symbols, "irq_entries_start")?;
    let spurious = required(symbols, "spurious_entries_start")?;
    let span = spurious
        .checked_sub(irq)
        .ok_or_else(|| bad("spurious_entries_start before irq_entries_start".into()))?;
    let (stride, first_system) = [8u64, 16]
        .into_iter()
        .filter(|stride| span.is_multiple_of(*stride))
        .map(|stride| (stride, FIRST_EXTERNAL_VECTOR + span / stride))
        .find(|(_, first)| (0xe0..=0xef).contains(first))
        .ok_or_else(|| bad(format!("irq stubs span {span:#x} bytes")))?;
    let mut stubs: BTreeMap<u8, String> = BTreeMap::new();
    for vector in FIRST_EXTERNAL_VECTOR..=0xff {
        let v = vector as u8;
        if gates.contains_key(&v) {
            continue;
        }
        let (base, name, index) = if vector < first_system {
            (irq, "irq_entries_start", vector - FIRST_EXTERNAL_VECTOR)
        } else {
            (spurious, "spurious_entries_start", vector - first_system)
        };
        gates.insert(v, (base + stride * index, super::IDT_INTERRUPT_GATE_BITS));
        stubs.insert(v, format!("{name}+{:#x}", stride * index));
    }
    let attributes = gates.values().map(|&(_, bits)| bits).collect();
    let named = gates
        .into_iter()
        .map(|(vector, (address, _))| {
            if let Some(name) = stubs.remove(&vector) {
                return (vector, NamedAddress { name, address });
            }
            let name = symbols
                .symbol_at(address)
                .map(|(sym, off)| {
                    if off == 0 {
                        sym.name.to_string()
                    } else {
                        format!("{}+{off:#x}", sym.name)
                    }
                })
                .unwrap_or_else(|| format!("{address:#x}"));
            (vector, NamedAddress { name, address })
        })
        .collect();
    Ok(super::IdtReference {
        gates: named,
        attributes,
        early_handlers: early_idt_handlers(elf, symbols)?,
    })
}

/// `ENDBR64`, which starts every entry of a kernel built with IBT.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// The 32 entries of `early_idt_handler_array` (empty without it): each
/// `EARLY_IDT_HANDLER_SIZE` bytes, 9, or 13 with IBT (`ENDBR64` first),
/// pushing a dummy error code where the CPU pushes none and then the
/// vector (`6a 00 6a VV` or `6a VV`). Every entry is checked for its
/// vector's push, so a wrong size is an error, not a wrong reference.
fn early_idt_handlers(elf: &Vmlinux<'_>, symbols: &SymbolTable) -> Result<Vec<u64>, BuildError> {
    let bad = |why: String| BuildError::Inconsistent(format!("early_idt_handler_array: {why}"));
    let Some(array) = optional(symbols, "early_idt_handler_array")? else {
        return Ok(Vec::new());
    };
    let first = elf
        .read(array, 4)
        .ok_or_else(|| bad("not in the file".into()))?;
    let (size, skip) = if first == ENDBR64 { (13, 4) } else { (9, 0) };
    let mut handlers = Vec::with_capacity(32);
    for vector in 0..32u8 {
        let at = array + size * u64::from(vector);
        let code = elf
            .read(at + skip, 4)
            .ok_or_else(|| bad("not in the file".into()))?;
        let pushes = code[0] == 0x6a
            && (code[1] == vector || (code[1] == 0 && code[2] == 0x6a && code[3] == vector));
        if !pushes {
            return Err(bad(format!(
                "entry {vector} does not push its vector ({code:02x?})"
            )));
        }
        handlers.push(at);
    }
    Ok(handlers)
}

/// Function-pointer tables in writable data that rootkits hook, with
/// their lengths in these kernels and the structure each entry points at
/// (docs/monitoring.md says why these).
const POINTER_TABLES: &[(&str, u32, &str)] = &[
    // `struct net_proto_family *net_families[NPROTO]`: socket(2) by family.
    ("net_families", 46, "net_proto_family"),
    // `struct net_protocol *inet_protos[MAX_INET_PROTOS]`: IPv4 receive.
    ("inet_protos", 256, "net_protocol"),
    // `struct tty_ldisc_ops *tty_ldiscs[NR_LDISCS]`: tty line disciplines.
    ("tty_ldiscs", 31, "tty_ldisc_ops"),
];
/// Structures of function pointers in writable data (their length from
/// BTF): `struct proto tcp_prot` / `udp_prot`, the TCP and UDP socket
/// operations rootkits hook to hide or intercept connections.
const POINTER_STRUCTS: &[(&str, &str)] = &[("tcp_prot", "proto"), ("udp_prot", "proto")];

/// Words of `struct ty` (its size from BTF, whole words).
fn struct_words(btf: &Btf, ty: &str) -> Result<u32, BuildError> {
    u32::try_from(btf.size(ty)? / 8)
        .map_err(|_| BuildError::Layout(format!("struct {ty} too large")))
}

/// Netfilter's hook points in `init_net` (BTF `struct net.nf`), for IPv4,
/// IPv6 and ARP as the kernel has them (none for a kernel without
/// netfilter: no `struct netns_nf`), and the layout of their entries
/// (`nf_hook_entries.hooks`, `sizeof(struct nf_hook_entry)`).
fn netfilter(
    btf: &Btf,
    symbols: &SymbolTable,
) -> Result<(Vec<PointerTable>, u64, u64), BuildError> {
    if btf.struct_id("netns_nf").is_err() {
        return Ok((Vec::new(), 0, 16));
    }
    let init_net = required(symbols, "init_net")?;
    let mut tables = Vec::new();
    for (member, name) in [
        ("hooks_ipv4", "nf_hooks_ipv4"),
        ("hooks_ipv6", "nf_hooks_ipv6"),
        ("hooks_arp", "nf_hooks_arp"),
    ] {
        let Ok((offset, size)) = btf.member("net", &format!("nf.{member}")) else {
            // IPv4's are always there; the others only as configured.
            if member == "hooks_ipv4" {
                return Err(BuildError::Layout("struct net has no nf.hooks_ipv4".into()));
            }
            continue;
        };
        tables.push(PointerTable {
            name: name.to_string(),
            address: init_net + offset,
            entries: u32::try_from(size / 8)
                .map_err(|_| BuildError::Layout(format!("net.nf.{member} too large")))?,
            structure: false,
            pointee_entries: 0,
            functions: Vec::new(),
            hook_points: true,
        });
    }
    if btf.field("nf_hook_entry", "hook", PTR)? != 0 {
        return Err(BuildError::Layout(
            "nf_hook_entry.hook is not its first word".into(),
        ));
    }
    Ok((
        tables,
        btf.member("nf_hook_entries", "hooks")?.0,
        btf.size("nf_hook_entry")?,
    ))
}

/// The cross-views' symbols (kallsyms) and offsets (BTF).
fn cross_view(btf: &Btf, symbols: &SymbolTable) -> Result<CrossViewReference, BuildError> {
    let mut pointer_tables = Vec::new();
    for &(name, entries, pointee) in POINTER_TABLES {
        let address = required(symbols, name)?;
        // The array must fit before the next symbol.
        let next = symbols.next_address_after(address).unwrap_or(u64::MAX);
        if next - address < u64::from(entries) * 8 {
            return Err(BuildError::Layout(format!(
                "{name} has room for fewer than {entries} entries"
            )));
        }
        pointer_tables.push(PointerTable {
            name: name.to_string(),
            address,
            entries,
            structure: false,
            pointee_entries: struct_words(btf, pointee)?,
            functions: btf.function_words(pointee)?,
            hook_points: false,
        });
    }
    for &(name, ty) in POINTER_STRUCTS {
        pointer_tables.push(PointerTable {
            name: name.to_string(),
            address: required(symbols, name)?,
            entries: struct_words(btf, ty)?,
            structure: true,
            pointee_entries: 0,
            functions: btf.function_words(ty)?,
            hook_points: false,
        });
    }
    let (hook_points, nf_entries_hooks, nf_entry_size) = netfilter(btf, symbols)?;
    // Every namespace's hook points, found from the list of them, and
    // each device's (ingress, egress: 0 where not built in); none of it
    // without hook points.
    let none = hook_points.is_empty();
    let net = |read: &dyn Fn() -> Result<u64, BuildError>| if none { Ok(0) } else { read() };
    let optional = |path: &str| {
        btf.field("net_device", path, PTR)
            .or_else(|_| match btf.member("net_device", path) {
                Err(_) => Ok(0),
                Ok(_) => Err(BuildError::Layout(format!(
                    "net_device.{path} is no pointer"
                ))),
            })
    };
    pointer_tables.extend(hook_points);
    let vmap = vmap_lists(btf, symbols)?;
    let class = if none {
        NetClass::default()
    } else {
        net_class(btf, symbols)?
    };
    Ok(CrossViewReference {
        nf_entries_hooks,
        nf_entry_size,
        net_namespace_list: net(&|| required(symbols, "net_namespace_list"))?,
        init_net: net(&|| required(symbols, "init_net"))?,
        net_list: net(&|| btf.field("net", "list", LIST_HEAD))?,
        net_inum: net(&|| btf.field("net", "ns.inum", 4))?,
        net_dev_base_head: net(&|| btf.field("net", "dev_base_head", LIST_HEAD))?,
        netdev_dev_list: net(&|| btf.field("net_device", "dev_list", LIST_HEAD))?,
        netdev_name: net(&|| btf.field("net_device", "name", 16))?,
        netdev_nf_hooks_ingress: net(&|| optional("nf_hooks_ingress"))?,
        netdev_nf_hooks_egress: net(&|| optional("nf_hooks_egress"))?,
        task_nsproxy: btf.field("task_struct", "nsproxy", PTR)?,
        nsproxy_net_ns: btf.field("nsproxy", "net_ns", PTR)?,
        task_signal: btf.field("task_struct", "signal", PTR)?,
        signal_thread_head: btf.field("signal_struct", "thread_head", LIST_HEAD)?,
        task_thread_node: btf.field("task_struct", "thread_node", LIST_HEAD)?,
        signal_nr_threads: btf.field("signal_struct", "nr_threads", 4)?,
        init_pid_ns: required(symbols, "init_pid_ns")?,
        pid_ns_xa_head: btf.field("pid_namespace", "idr.idr_rt.xa_head", PTR)?,
        xa_node_shift: btf.field("xa_node", "shift", 1)?,
        xa_node_slots: btf.field("xa_node", "slots", PTR * XA_SLOTS as u64)?,
        pid_tasks: list_heads(btf, "pid", "tasks", PTR)?,
        task_pid_links: list_heads(btf, "task_struct", "pid_links", 2 * PTR)?,
        runqueues: per_cpu(symbols, "runqueues")?,
        per_cpu_offset: required(symbols, "__per_cpu_offset")?,
        nr_cpu_ids: required(symbols, "nr_cpu_ids")?,
        rq_curr: btf.field("rq", "curr", PTR)?,
        rq_idle: btf.field("rq", "idle", PTR)?,
        css_set_table: css_set_table(symbols)?,
        css_set_hlist: btf.field("css_set", "hlist", 2 * PTR)?,
        css_set_tasks: btf.field("css_set", "tasks", LIST_HEAD)?,
        css_set_mg_tasks: btf.field("css_set", "mg_tasks", LIST_HEAD)?,
        css_set_dying_tasks: btf.field("css_set", "dying_tasks", LIST_HEAD)?,
        task_cg_list: btf.field("task_struct", "cg_list", LIST_HEAD)?,
        vmap_area_list: vmap.list,
        vmap_nodes: vmap.nodes,
        nr_vmap_nodes: vmap.count,
        vmap_node_size: vmap.node_size,
        vmap_node_busy_head: vmap.busy_head,
        vmap_area_list_node: btf.field("vmap_area", "list", LIST_HEAD)?,
        vmap_area_va_start: btf.field("vmap_area", "va_start", 8)?,
        vmap_area_va_end: btf.field("vmap_area", "va_end", 8)?,
        task_stack: btf.field("task_struct", "stack", PTR)?,
        cached_stacks: cached_stacks(symbols)?,
        vm_struct_addr: btf.field("vm_struct", "addr", PTR)?,
        module_kset: required(symbols, "module_kset")?,
        kset_list: btf.field("kset", "list", LIST_HEAD)?,
        kobject_entry: btf.field("kobject", "entry", LIST_HEAD)?,
        module_kobject_kobj: btf.member("module_kobject", "kobj")?.0,
        module_kobject_mod: btf.field("module_kobject", "mod", PTR)?,
        task_children: btf.field("task_struct", "children", LIST_HEAD)?,
        task_sibling: btf.field("task_struct", "sibling", LIST_HEAD)?,
        init_cred: required(symbols, "init_cred")?,
        pointer_tables,
        mm_pgd: btf.field("mm_struct", "pgd", PTR)?,
        // `unsigned long` on both kernels (6.1, 6.12).
        mm_flags: btf.field("mm_struct", "flags", 8)?,
        file_f_inode: btf.field("file", "f_inode", PTR)?,
        inode_i_mode: btf.field("inode", "i_mode", 2)?,
        // `kuid_t`: a struct of one u32.
        inode_i_uid: btf.field("inode", "i_uid", 4)?,
        cred_user: btf.field("cred", "user", PTR)?,
        user_struct_uid: btf.field("user_struct", "uid", 4)?,
        file_f_cred: btf.field("file", "f_cred", PTR)?,
        cred_ucounts: btf.field("cred", "ucounts", PTR)?,
        ucounts_ns: btf.field("ucounts", "ns", PTR)?,
        // `kuid_t`: a struct of one u32.
        ucounts_uid: btf.field("ucounts", "uid", 4)?,
        // `atomic_long_t rlimit[UCOUNT_RLIMIT_COUNTS]`, 4 on both kernels
        // (6.1, 6.12), `UCOUNT_RLIMIT_NPROC` the first.
        ucounts_rlimit: btf.field("ucounts", "rlimit", 32)?,
        user_ns_ucounts: btf.field("user_namespace", "ucounts", PTR)?,
        net_class: class.class,
        class_subsys: class.subsys,
        class_kset: class.kset,
        subsys_private_kobj: net(&|| btf.member("subsys_private", "subsys.kobj").map(|m| m.0))?,
        subsys_private_class: class.subsys_class,
        subsys_private_devices: net(&|| {
            btf.field("subsys_private", "klist_devices.k_list", LIST_HEAD)
        })?,
        device_private_knode_class: net(&|| {
            btf.field("device_private", "knode_class.n_node", LIST_HEAD)
        })?,
        device_private_device: net(&|| btf.field("device_private", "device", PTR))?,
        netdev_dev: net(&|| btf.member("net_device", "dev").map(|m| m.0))?,
        netdev_nd_net: net(&|| btf.field("net_device", "nd_net.net", PTR))?,
        pgd_user_copy: pgd_user_copy(symbols)?,
    })
}

/// `css_set_table`, a static array of [`CSS_SET_BUCKETS`] hlist heads:
/// the next symbol must leave room for them all, and no more than a page
/// past them (another size of the table would be read wrong).
fn css_set_table(symbols: &SymbolTable) -> Result<u64, BuildError> {
    let at = required(symbols, "css_set_table")?;
    let size = CSS_SET_BUCKETS * PTR;
    let next = symbols.next_address_after(at).unwrap_or(u64::MAX);
    if next - at < size || next - at >= 2 * size.max(4096) {
        return Err(BuildError::Layout(format!(
            "css_set_table has {} bytes before the next symbol, not {size}",
            next - at
        )));
    }
    Ok(at)
}

/// Where the busy vmalloc areas are listed ([`CrossViewReference`]'s
/// `vmap_*` fields; the unused ones 0).
struct VmapLists {
    list: u64,
    nodes: u64,
    count: u64,
    node_size: u64,
    busy_head: u64,
}

/// Where the device model's `net` class keeps its devices
/// (`crate::linux::crossview::class_net_namespaces`).
#[derive(Default)]
struct NetClass {
    class: u64,
    subsys: u64,
    kset: u64,
    subsys_class: u64,
}

/// 6.1's `struct class` points at its `subsys_private` (`p`); 6.4 and
/// later find it on `class_kset`'s list by its `class` member
/// (`class_to_subsys`).
fn net_class(btf: &Btf, symbols: &SymbolTable) -> Result<NetClass, BuildError> {
    let class = required(symbols, "net_class")?;
    if let Ok(subsys) = btf.field("class", "p", PTR) {
        return Ok(NetClass {
            class,
            subsys,
            ..NetClass::default()
        });
    }
    Ok(NetClass {
        class,
        subsys: 0,
        kset: required(symbols, "class_kset")?,
        subsys_class: btf.field("subsys_private", "class", PTR)?,
    })
}

/// 6.1 lists every busy area on `vmap_area_list`; 6.9 and later on the
/// busy list of each `struct vmap_node` (`vmap_nodes`, `nr_vmap_nodes`).
fn vmap_lists(btf: &Btf, symbols: &SymbolTable) -> Result<VmapLists, BuildError> {
    if let Some(list) = optional(symbols, "vmap_area_list")? {
        return Ok(VmapLists {
            list,
            nodes: 0,
            count: 0,
            node_size: 0,
            busy_head: 0,
        });
    }
    Ok(VmapLists {
        list: 0,
        nodes: required(symbols, "vmap_nodes")?,
        count: required(symbols, "nr_vmap_nodes")?,
        node_size: btf.size("vmap_node")?,
        busy_head: btf.field("vmap_node", "busy.head", LIST_HEAD)?,
    })
}

/// `cached_stacks`, a per-CPU array of [`CACHED_STACKS`] pointers: the
/// next per-CPU symbol must leave room for them.
fn cached_stacks(symbols: &SymbolTable) -> Result<u64, BuildError> {
    let at = per_cpu(symbols, "cached_stacks")?;
    let size = CACHED_STACKS * PTR;
    let next = symbols.next_address_after(at).unwrap_or(u64::MAX);
    if next - at < size {
        return Err(BuildError::Layout(format!(
            "cached_stacks has {} bytes before the next symbol, not {size}",
            next - at
        )));
    }
    Ok(at)
}

/// A per-CPU variable's offset in each CPU's area: x86-64 links the
/// per-CPU section at 0 (`__per_cpu_start`), so the symbol is that offset.
fn per_cpu(symbols: &SymbolTable, name: &'static str) -> Result<u64, BuildError> {
    let at = required(symbols, name)?;
    let end = required(symbols, "__per_cpu_end")?;
    if symbols.address_of("__per_cpu_start") != Some(0) || at >= end {
        return Err(BuildError::Layout(format!(
            "{name} ({at:#x}) is not in a per-CPU section linked at 0"
        )));
    }
    Ok(at)
}

/// Offset of `ty.path`, an array of hlist heads or nodes (`each` bytes;
/// the first, `PIDTYPE_PID`'s, is what the A-VM reads), whose first
/// word must be the link it follows (`hlist_head.first`, `hlist_node.next`).
fn list_heads(btf: &Btf, ty: &str, path: &str, each: u64) -> Result<u64, BuildError> {
    let (offset, size) = btf.member(ty, path)?;
    let first = match each {
        PTR => btf.field("hlist_head", "first", PTR)?,
        _ => btf.field("hlist_node", "next", PTR)?,
    };
    if size < each || !size.is_multiple_of(each) || first != 0 {
        return Err(BuildError::Layout(format!(
            "{ty}.{path} is no array of hlist links ({size} bytes)"
        )));
    }
    Ok(offset)
}

/// Whether the kernel's top-level tables carry a PTI user copy: with
/// page-table isolation built in, `init_top_pgt` is 8 KiB (its user copy
/// follows it), else 4 KiB.
fn pgd_user_copy(symbols: &SymbolTable) -> Result<bool, BuildError> {
    let at = required(symbols, "init_top_pgt")?;
    let size = symbols
        .next_address_after(at)
        .map_or(u64::MAX, |next| next - at);
    match size {
        0x1000..0x2000 => Ok(false),
        0x2000.. => Ok(true),
        _ => Err(BuildError::Layout(format!(
            "init_top_pgt is {size:#x} bytes, not a page table"
        ))),
    }
}

fn struct_offsets(btf: &Btf) -> Result<StructOffsets, BuildError> {
    // The list walker reads next at 0 and prev at 8.
    if btf.field("list_head", "next", PTR)? != 0
        || btf.field("list_head", "prev", PTR)? != crate::list::LIST_PREV_OFFSET
    {
        return Err(BuildError::Layout("list_head is not { next, prev }".into()));
    }
    let task = TaskOffsets {
        tasks: btf.field("task_struct", "tasks", LIST_HEAD)?,
        pid: btf.field("task_struct", "pid", 4)?,
        tgid: btf.field("task_struct", "tgid", 4)?,
        comm: btf.field("task_struct", "comm", 16)?,
        real_parent: btf.field("task_struct", "real_parent", PTR)?,
        cred: btf.field("task_struct", "cred", PTR)?,
        real_cred: btf.field("task_struct", "real_cred", PTR)?,
        mm: btf.field("task_struct", "mm", PTR)?,
        flags: btf.field("task_struct", "flags", 4)?,
    };
    let cred = CredOffsets {
        uid: btf.field("cred", "uid", 4)?,
        gid: btf.field("cred", "gid", 4)?,
        euid: btf.field("cred", "euid", 4)?,
        egid: btf.field("cred", "egid", 4)?,
    };
    // The core text: mem[MOD_TEXT] from 6.4 on, core_layout before.
    let (text_base, text_size) = if btf.member("module", "mem").is_ok() {
        let text = btf.enumerator("mod_mem_type", "MOD_TEXT")?;
        (
            btf.field("module", &format!("mem[{text}].base"), PTR)?,
            btf.field("module", &format!("mem[{text}].size"), 4)?,
        )
    } else {
        (
            btf.field("module", "core_layout.base", PTR)?,
            btf.field("module", "core_layout.text_size", 4)?,
        )
    };
    let module = ModuleOffsets {
        state: btf.field("module", "state", 4)?,
        list: btf.field("module", "list", LIST_HEAD)?,
        name: btf.field(
            "module",
            "name",
            crate::linux::modules::MODULE_NAME_LEN as u64,
        )?,
        text_base,
        text_size,
        taints: btf.field("module", "taints", 8)?,
    };
    let field_data_size = btf.size("ima_field_data")?;
    let ima = ImaOffsets {
        queue_later: btf.field("ima_queue_entry", "later", LIST_HEAD)?,
        queue_entry: btf.field("ima_queue_entry", "entry", PTR)?,
        entry_pcr: btf.field("ima_template_entry", "pcr", 4)?,
        entry_digests: btf.field("ima_template_entry", "digests", PTR)?,
        entry_template_desc: btf.field("ima_template_entry", "template_desc", PTR)?,
        entry_template_data_len: btf.field("ima_template_entry", "template_data_len", 4)?,
        // A flexible array member: no size of its own.
        entry_template_data: btf.field("ima_template_entry", "template_data", 0)?,
        field_data_size,
        field_data: btf.field("ima_field_data", "data", PTR)?,
        field_len: btf.field("ima_field_data", "len", 4)?,
        tpm_digest_digest: btf.member("tpm_digest", "digest").and_then(|(o, size)| {
            // The A-VM reads the SHA-1 bank's 20 bytes of the digest union.
            if size >= 20 {
                Ok(o)
            } else {
                Err(BuildError::Layout(
                    "tpm_digest.digest shorter than SHA-1".into(),
                ))
            }
        })?,
        desc_name: btf.field("ima_template_desc", "name", PTR)?,
        desc_num_fields: btf.field("ima_template_desc", "num_fields", 4)?,
    };
    let path = PathOffsets {
        mm_exe_file: btf.field("mm_struct", "exe_file", PTR)?,
        file_f_path: btf.field("file", "f_path", 16)?,
        path_mnt: btf.field("path", "mnt", PTR)?,
        path_dentry: btf.field("path", "dentry", PTR)?,
        dentry_d_name: btf.field("dentry", "d_name", 16)?,
        dentry_d_parent: btf.field("dentry", "d_parent", PTR)?,
        qstr_name: btf.field("qstr", "name", PTR)?,
        qstr_len: btf.field("qstr", "len", 4)?,
        mount_mnt: btf.member("mount", "mnt")?.0,
        mount_mnt_parent: btf.field("mount", "mnt_parent", PTR)?,
        mount_mnt_mountpoint: btf.field("mount", "mnt_mountpoint", PTR)?,
        vfsmount_mnt_root: btf.field("vfsmount", "mnt_root", PTR)?,
    };
    let sizes = StructSizes {
        task_struct: btf.size("task_struct")?,
        cred: btf.size("cred")?,
        module: btf.size("module")?,
        mm_struct: btf.size("mm_struct")?,
        file: btf.size("file")?,
        dentry: btf.size("dentry")?,
        mount: btf.size("mount")?,
    };
    Ok(StructOffsets {
        task,
        cred,
        module,
        ima,
        path,
        sizes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::KallsymsBuilder;

    const BANNER: &[u8] = b"Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) \
        (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) \
        #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)\n";

    #[test]
    fn identity_from_the_banner() {
        let id = identity_of(BANNER).expect("banner");
        assert_eq!(id.release, "6.1.0-57-cloud-amd64");
        assert_eq!(
            id.version,
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)"
        );
        assert_eq!(id.banner.as_bytes(), BANNER);
        for bad in [
            &b"Linux versio 6.1"[..],
            b"Linux version  (x) #1\n",
            b"Linux version 6.1.0 (no version)\n",
            b"Linux version 6.1.0 \xff) #1\n",
        ] {
            let e = identity_of(bad).expect_err("refused");
            assert!(
                e.to_string()
                    .starts_with("inconsistent kernel image: linux_banner")
            );
        }
    }

    #[test]
    fn missing_and_ambiguous_symbols_are_named() {
        let mut b = KallsymsBuilder::new(Layout::OffsetsLast);
        b.symbol(b'T', "_text", 0xffff_ffff_8100_0000);
        for i in 0..300u64 {
            b.symbol(b't', &format!("f_{i}"), 0xffff_ffff_8100_1000 + 0x40 * i);
        }
        b.symbol(b'd', "modules", 0xffff_ffff_8200_0000);
        b.symbol(b'd', "modules", 0xffff_ffff_8200_1000);
        b.symbol(b'D', "init_task", 0xffff_ffff_8200_2000);
        let k = Kallsyms::parse(&b.build().0, &Limits::default()).expect("kallsyms");
        assert_eq!(
            required(&k.symbols, "init_task").ok(),
            Some(0xffff_ffff_8200_2000)
        );
        let e = required(&k.symbols, "idt_table").expect_err("missing");
        assert!(matches!(e, BuildError::MissingSymbol("idt_table")));
        assert_eq!(
            e.to_string(),
            "required symbol idt_table is missing from kallsyms"
        );
        assert!(matches!(
            required(&k.symbols, "modules"),
            Err(BuildError::AmbiguousSymbol("modules"))
        ));
        assert!(matches!(optional(&k.symbols, "pgdir_shift"), Ok(None)));
        assert!(matches!(
            optional(&k.symbols, "modules"),
            Err(BuildError::AmbiguousSymbol(_))
        ));
        // Exact-address and next-address lookups.
        assert_eq!(k.symbols.symbols_at(0xffff_ffff_8200_0000).count(), 1);
        assert_eq!(
            k.symbols.next_address_after(0xffff_ffff_8200_0000),
            Some(0xffff_ffff_8200_1000)
        );
    }

    #[test]
    fn handler_names() {
        assert!(is_handler("__x64_sys_read"));
        assert!(is_handler("sys_ni_syscall"));
        assert!(!is_handler("__ia32_sys_read"));
        assert!(!is_handler("x64_sys_call"));
    }

    #[test]
    fn garbage_is_no_image() {
        assert!(matches!(
            from_vmlinuz(b"not a kernel"),
            Err(BuildError::Image(ImageError::NotBzImage(_)))
        ));
        assert!(matches!(
            from_vmlinux(b"\x7fELF garbage"),
            Err(BuildError::Image(ImageError::NotElf(_)))
        ));
    }
}
