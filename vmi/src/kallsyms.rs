//! The kernel's symbol table recovered from its kallsyms tables, without
//! System.map (Debian ships a stub) and without debug packages: from the
//! decompressed kernel image or from a RAM image of the running kernel.
//!
//! The tables sit contiguously in `.rodata`, each 8-byte aligned, in one of
//! two orders (`scripts/kallsyms.c`):
//! - up to 6.3 ([`Layout::OffsetsFirst`], 6.1 here): `offsets`,
//!   `relative_base`, `num_syms`, `names`, `markers`, `seqs_of_names` (6.2+,
//!   also in 6.1 stable), `token_table`, `token_index`;
//! - from 6.4 ([`Layout::OffsetsLast`], 6.12 here): `num_syms`, `names`,
//!   `markers`, `token_table`, `token_index`, `offsets`, `relative_base`,
//!   `seqs_of_names`.
//!
//! They are found by the run of one-character tokens `"0"` .. `"9"` in the
//! token table (the single-character token of byte `c` stays at index `c`):
//! its start follows from `token_index`, which must match every token's
//! offset exactly; then a count `N` is searched backwards whose `names`
//! parse as `N` entries ending where the markers begin, every 256th entry
//! at its marker; then the offsets and base. Every guest value is checked:
//! tokens are printable, names expand to bounded printable strings,
//! addresses never decrease, the base has the kernel-text prefix,
//! `seqs_of_names` is a permutation. Work is bounded by [`Limits`].

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::GuestPhysAddr;
use crate::memory::{GuestMemory, MemoryError};

/// The one-character tokens `"0"` .. `"9"`, NUL-terminated, as they sit in
/// every token table.
const DIGIT_RUN: &[u8; 20] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
/// Index of token `"0"` (its byte value).
const DIGIT_ZERO_INDEX: usize = b'0' as usize;
const TOKENS: usize = 256;
/// Longest token accepted (the kernel's are a few bytes; tokens never exceed
/// a symbol name).
const MAX_TOKEN_LEN: usize = 256;
/// Symbols per marker.
const MARKER_STRIDE: usize = 256;
/// Lowest address of the x86-64 kernel image mapping (`__START_KERNEL_map`).
pub const KERNEL_TEXT_PREFIX: u64 = 0xffff_ffff_8000_0000;

/// Bounds on the work of one recovery; garbage costs at most this much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Digit runs examined before giving up.
    pub max_candidates: usize,
    /// Largest symbol count accepted.
    pub max_symbols: u32,
    /// How far before the token table the count is searched (bounds the
    /// size of `names` + `markers` + `seqs_of_names`).
    pub max_scan_back: usize,
    /// Longest expanded symbol name (type letter included); the kernel's
    /// `KSYM_NAME_LEN` is 512.
    pub max_name_len: usize,
    /// Full parses of `names` attempted per token table (a real kernel needs
    /// one; crafted garbage could otherwise make every position look like a
    /// count).
    pub max_name_parses: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_candidates: 64,
            max_symbols: 1 << 20,
            max_scan_back: 16 << 20,
            max_name_len: 1024,
            max_name_parses: 16,
        }
    }
}

/// Which of the two table orders a kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `offsets, relative_base, num_syms, names, markers, [seqs_of_names],
    /// token_table, token_index` (Linux up to 6.3; 6.1 has seqs_of_names).
    OffsetsFirst { seqs_of_names: bool },
    /// `num_syms, names, markers, token_table, token_index, offsets,
    /// relative_base, seqs_of_names` (Linux 6.4 and later).
    OffsetsLast,
}

/// Where each table was found: positions in the searched image (a byte
/// offset into the slice, or a guest-physical address for memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLocations {
    pub offsets: u64,
    pub relative_base: u64,
    pub num_syms: u64,
    pub names: u64,
    pub markers: u64,
    /// Bytes per marker (4; 8 on old kernels).
    pub marker_width: u8,
    pub seqs_of_names: Option<u64>,
    pub token_table: u64,
    pub token_index: u64,
}

/// Why a candidate was rejected, in the order of the checks: the one that
/// got furthest is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// The digit run is not inside a token table that matches its index.
    TokenTable,
    /// No symbol count before the token table whose names and markers fit.
    Names,
    /// A name expands to something not printable, empty or too long.
    Name,
    /// No kallsyms_offsets / relative_base that fit.
    Offsets,
    /// The base lacks the kernel-text prefix.
    Base,
    /// Addresses decrease somewhere.
    Decreasing,
    /// seqs_of_names is not a permutation of the symbols.
    SeqsOfNames,
}

/// Why no symbol table was recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KallsymsError {
    /// No candidate validated. `runs` digit runs were seen, `token_tables`
    /// of them were real token tables; `last` is the furthest check any
    /// candidate failed.
    NotFound {
        runs: usize,
        token_tables: usize,
        last: Option<Reject>,
    },
    /// Guest memory failed while scanning.
    Memory(MemoryError),
}

impl fmt::Display for KallsymsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KallsymsError::NotFound {
                runs,
                token_tables,
                last,
            } => write!(
                f,
                "no kallsyms tables found ({runs} digit runs, {token_tables} token tables, last rejected: {last:?})"
            ),
            KallsymsError::Memory(e) => write!(f, "{e}"),
        }
    }
}

/// One symbol of a [`SymbolTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub name: &'a str,
    pub address: u64,
    /// The `nm`-style type letter (`T`, `t`, `D`, `r`, ...).
    pub kind: u8,
}

/// A compact symbol table: every name in one string, lookups by name (binary
/// search over a name-sorted index) and by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolTable {
    /// In kallsyms order, which is address order.
    addresses: Vec<u64>,
    kinds: Vec<u8>,
    /// `names[starts[i]..starts[i + 1]]` is symbol i's name.
    starts: Vec<u32>,
    names: String,
    /// Symbol indices sorted by (name, index).
    by_name: Vec<u32>,
}

impl SymbolTable {
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Symbol `i` in address order.
    pub fn get(&self, i: usize) -> Option<Symbol<'_>> {
        let start = *self.starts.get(i)? as usize;
        let end = *self.starts.get(i + 1)? as usize;
        Some(Symbol {
            name: self.names.get(start..end)?,
            address: *self.addresses.get(i)?,
            kind: *self.kinds.get(i)?,
        })
    }

    fn name_of(&self, i: u32) -> &str {
        self.get(i as usize).map_or("", |s| s.name)
    }

    /// The symbol called `name` with the lowest address (static symbols may
    /// share a name).
    pub fn lookup(&self, name: &str) -> Option<Symbol<'_>> {
        self.lookup_all(name).next()
    }

    /// The address of `name` (the lowest, if several share it).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.lookup(name).map(|s| s.address)
    }

    /// Every symbol called `name`, in address order.
    pub fn lookup_all<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = Symbol<'a>> + use<'a, 'n> {
        let first = self.by_name.partition_point(|&i| self.name_of(i) < name);
        self.by_name
            .get(first..)
            .unwrap_or(&[])
            .iter()
            .map_while(move |&i| {
                let s = self.get(i as usize)?;
                (s.name == name).then_some(s)
            })
    }

    /// The symbol containing `address` (the last one at or below it) and
    /// the offset into it.
    pub fn symbol_at(&self, address: u64) -> Option<(Symbol<'_>, u64)> {
        let after = self.addresses.partition_point(|&a| a <= address);
        let s = self.get(after.checked_sub(1)?)?;
        Some((s, address - s.address))
    }

    /// Every symbol at exactly `address` (aliases share addresses), in
    /// kallsyms order.
    pub fn symbols_at(&self, address: u64) -> impl Iterator<Item = Symbol<'_>> + '_ {
        let first = self.addresses.partition_point(|&a| a < address);
        (first..self.len()).map_while(move |i| self.get(i).filter(|s| s.address == address))
    }

    /// The lowest symbol address above `address`.
    pub fn next_address_after(&self, address: u64) -> Option<u64> {
        let after = self.addresses.partition_point(|&a| a <= address);
        self.addresses.get(after).copied()
    }

    /// All symbols in address order.
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'_>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// A recovered kallsyms: the symbols and where their tables were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kallsyms {
    pub symbols: SymbolTable,
    pub layout: Layout,
    pub locations: TableLocations,
    /// `kallsyms_relative_base` as stored: the kernel's `_text` as linked (in
    /// a file) or as relocated at boot (in RAM, with KASLR).
    pub relative_base: u64,
}

impl Kallsyms {
    /// Recovers the symbol table from a kernel image (the decompressed
    /// vmlinux) or a RAM image held in memory. `image[0]` must be 8-byte
    /// aligned in the kernel's address space (true for a file and for a
    /// page-aligned RAM window).
    pub fn parse(image: &[u8], limits: &Limits) -> Result<Self, KallsymsError> {
        let mut stats = Stats::default();
        let mut from = 0usize;
        while let Some(found) = find_digit_run(image, from) {
            from = found + 1;
            stats.runs += 1;
            if stats.runs > limits.max_candidates {
                break;
            }
            if let Some(k) = try_candidate(image, 0, found, limits, &mut stats) {
                return Ok(k);
            }
        }
        Err(stats.into_error())
    }

    /// Recovers the symbol table from `len` bytes of guest memory from
    /// `start` on (e.g. all RAM: the kernel image is physically
    /// contiguous). Scans in chunks; each digit run is checked on a small
    /// window first and only a real token table makes it read the large
    /// window around it (`max_scan_back` before, room for up to
    /// `max_symbols` offsets after). Positions are guest-physical.
    pub fn from_memory<M: GuestMemory + ?Sized>(
        memory: &M,
        start: GuestPhysAddr,
        len: u64,
        limits: &Limits,
    ) -> Result<Self, KallsymsError> {
        const CHUNK: u64 = 1 << 20;
        let overlap = DIGIT_RUN.len() as u64 - 1;
        let mut stats = Stats::default();
        let mut chunk = vec![0u8; (CHUNK + overlap) as usize];
        let mut pos = 0u64;
        let end = len;
        while pos < end {
            let n = (CHUNK + overlap).min(end - pos);
            let at =
                start
                    .checked_add(pos)
                    .ok_or(KallsymsError::Memory(MemoryError::OutOfRange {
                        at: start,
                        len,
                    }))?;
            let buf = chunk.get_mut(..n as usize).unwrap_or(&mut []);
            match memory.read(at, buf) {
                Ok(()) => {}
                // Holes in the scanned range are skipped, not fatal.
                Err(MemoryError::OutOfRange { .. }) => {
                    pos += CHUNK;
                    continue;
                }
                Err(e) => return Err(KallsymsError::Memory(e)),
            }
            let mut from = 0usize;
            while let Some(found) = find_digit_run(buf, from) {
                from = found + 1;
                // Runs starting in the overlap belong to the next chunk.
                if found as u64 >= CHUNK {
                    break;
                }
                stats.runs += 1;
                if stats.runs > limits.max_candidates {
                    return Err(stats.into_error());
                }
                let run_phys = at.0 + found as u64;
                if let Some(k) = try_in_memory(memory, run_phys, limits, &mut stats)? {
                    return Ok(k);
                }
            }
            pos += CHUNK;
        }
        Err(stats.into_error())
    }
}

#[derive(Default)]
struct Stats {
    runs: usize,
    token_tables: usize,
    last: Option<Reject>,
}

impl Stats {
    fn reject(&mut self, r: Reject) {
        self.last = self.last.max(Some(r));
    }

    fn into_error(self) -> KallsymsError {
        KallsymsError::NotFound {
            runs: self.runs,
            token_tables: self.token_tables,
            last: self.last,
        }
    }
}

/// Checks the token table around a digit run in memory with a small read,
/// then parses a large window around it.
fn try_in_memory<M: GuestMemory + ?Sized>(
    memory: &M,
    run_phys: u64,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<Option<Kallsyms>, KallsymsError> {
    // A token table with its index fits in 64 KiB (u16 offsets) + 512.
    const TOKEN_WINDOW: u64 = (64 << 10) + 1024;
    let small = read_window(memory, run_phys, TOKEN_WINDOW, TOKEN_WINDOW);
    let (small, small_base) = match small {
        Some(w) => w,
        None => return Ok(None),
    };
    let Some(rel) = run_phys.checked_sub(small_base) else {
        return Ok(None);
    };
    if find_token_table(&small, rel as usize).is_none() {
        stats.reject(Reject::TokenTable);
        return Ok(None);
    }
    // After the token index, OffsetsLast kernels keep 4N offsets, the base
    // and 3N bytes of seqs_of_names.
    let after = TOKEN_WINDOW + 8 * u64::from(limits.max_symbols) + 64;
    // Before the token table: names, markers, seqs_of_names (within
    // max_scan_back) and, in the old order, the offsets and base.
    let before =
        limits.max_scan_back as u64 + TOKEN_WINDOW + 4 * u64::from(limits.max_symbols) + 64;
    let Some((window, base)) = read_window(memory, run_phys, before, after) else {
        return Ok(None);
    };
    let Some(rel) = run_phys.checked_sub(base) else {
        return Ok(None);
    };
    Ok(try_candidate(&window, base, rel as usize, limits, stats))
}

/// Reads `[at - before, at + after)` clipped to the RAM around `at` (the
/// start page aligned). The edges are found by binary search on
/// [`GuestMemory::contains`]: at most 64 probes a side.
fn read_window<M: GuestMemory + ?Sized>(
    memory: &M,
    at: u64,
    before: u64,
    after: u64,
) -> Option<(Vec<u8>, u64)> {
    if !memory.contains(GuestPhysAddr(at), 1) {
        return None;
    }
    // Smallest page-aligned start with [start, at] readable.
    let (mut lo, mut hi) = (at.saturating_sub(before) >> 12, at >> 12);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if memory.contains(GuestPhysAddr(mid << 12), at - (mid << 12) + 1) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let start = lo << 12;
    // Largest end with [at, end) readable.
    let (mut lo, mut hi) = (at + 1, at.saturating_add(after).max(at + 1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if memory.contains(GuestPhysAddr(at), mid - at) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let end = lo;
    let mut buf = vec![0u8; usize::try_from(end - start).ok()?];
    memory.read(GuestPhysAddr(start), &mut buf).ok()?;
    Some((buf, start))
}

/// The next position at or after `from` where the digit run starts.
fn find_digit_run(image: &[u8], from: usize) -> Option<usize> {
    let hay = image.get(from..)?;
    let last = hay.len().checked_sub(DIGIT_RUN.len())?;
    let mut i = 0;
    while i <= last {
        // Look for the '9' first: rarer in binary data than '0'.
        match hay.get(i + 18..=last + 18)?.iter().position(|&b| b == b'9') {
            None => return None,
            Some(p) => {
                i += p;
                if hay.get(i..i + DIGIT_RUN.len()) == Some(&DIGIT_RUN[..]) {
                    return Some(from + i);
                }
                i += 1;
            }
        }
    }
    None
}

fn u16_at(image: &[u8], pos: usize) -> Option<u16> {
    let b = image.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(image: &[u8], pos: usize) -> Option<u32> {
    let b = image.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(image: &[u8], pos: usize) -> Option<u64> {
    let b = image.get(pos..pos.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

fn align8(pos: usize) -> Option<usize> {
    Some(pos.checked_add(7)? & !7)
}

/// A validated token table: where it is and each token's bytes.
struct TokenTable {
    start: usize,
    index: usize,
    /// (offset in image, length) of each token.
    tokens: [(u32, u16); TOKENS],
}

impl TokenTable {
    fn token<'a>(&self, image: &'a [u8], i: u8) -> &'a [u8] {
        let (at, len) = self.tokens[usize::from(i)];
        let at = at as usize;
        image.get(at..at + usize::from(len)).unwrap_or(&[])
    }
}

/// Parses one NUL-terminated printable token at `pos`; returns its length.
fn token_len(image: &[u8], pos: usize) -> Option<usize> {
    let bytes = image.get(pos..)?;
    let len = bytes.iter().take(MAX_TOKEN_LEN + 1).position(|&b| b == 0)?;
    if len == 0 || !bytes[..len].iter().all(u8::is_ascii_graphic) {
        return None;
    }
    Some(len)
}

/// Validates the token table around a digit run at `run` ("0" is token
/// 0x30): walks to token 255, finds the index after it, derives the table
/// start from the index, and requires every token to sit exactly at its
/// indexed offset.
fn find_token_table(image: &[u8], run: usize) -> Option<TokenTable> {
    let mut pos = run;
    for _ in DIGIT_ZERO_INDEX..TOKENS {
        pos += token_len(image, pos)? + 1;
    }
    let end = pos;
    let index = align8(end)?;
    let zero_offset = usize::from(u16_at(image, index + 2 * DIGIT_ZERO_INDEX)?);
    let start = run.checked_sub(zero_offset)?;
    if start % 8 != 0 || u16_at(image, index)? != 0 {
        return None;
    }
    let mut tokens = [(0u32, 0u16); TOKENS];
    let mut pos = start;
    for (i, slot) in tokens.iter_mut().enumerate() {
        if usize::from(u16_at(image, index + 2 * i)?) != pos - start {
            return None;
        }
        let len = token_len(image, pos)?;
        *slot = (u32::try_from(pos).ok()?, u16::try_from(len).ok()?);
        pos += len + 1;
    }
    if pos != end {
        return None;
    }
    Some(TokenTable {
        start,
        index,
        tokens,
    })
}

/// Full recovery around one digit run of `image` (whose first byte is at
/// position `base` of the searched space).
fn try_candidate(
    image: &[u8],
    base: u64,
    run: usize,
    limits: &Limits,
    stats: &mut Stats,
) -> Option<Kallsyms> {
    let Some(tokens) = find_token_table(image, run) else {
        stats.reject(Reject::TokenTable);
        return None;
    };
    stats.token_tables += 1;
    let t = tokens.start;
    let floor = t.saturating_sub(limits.max_scan_back);
    let mut p = t.checked_sub(8)? & !7;
    let mut reject = Reject::Names;
    let mut parses = 0usize;
    loop {
        if parses >= limits.max_name_parses {
            break;
        }
        if let Some(k) = try_count(image, base, &tokens, p, limits, &mut reject, &mut parses) {
            return Some(k);
        }
        if p < floor + 8 {
            break;
        }
        p -= 8;
    }
    stats.reject(reject);
    None
}

/// Tries `num_syms` at `p`: every placement of markers (with or without
/// seqs_of_names between them and the token table, 4- or 8-byte markers).
fn try_count(
    image: &[u8],
    base: u64,
    tokens: &TokenTable,
    p: usize,
    limits: &Limits,
    reject: &mut Reject,
    parses: &mut usize,
) -> Option<Kallsyms> {
    let n = u32_at(image, p)?;
    if n == 0 || n > limits.max_symbols || u32_at(image, p + 4)? != 0 {
        return None;
    }
    let n = n as usize;
    let names = p + 8;
    let t = tokens.start;
    let marker_count = n.div_ceil(MARKER_STRIDE);
    // Each name entry is at least 2 bytes (length + one token).
    if names.checked_add(2 * n)? > t {
        return None;
    }
    let seqs_len = align8(3 * n)?;
    for width in [4usize, 8] {
        let markers_len = align8(width * marker_count)?;
        for with_seqs in [true, false] {
            let markers_end = if with_seqs {
                t.checked_sub(seqs_len)?
            } else {
                t
            };
            let Some(markers) = markers_end.checked_sub(markers_len) else {
                continue;
            };
            if markers < names
                || !markers_plausible(image, markers, width, marker_count, markers - names)
            {
                continue;
            }
            if *parses >= limits.max_name_parses {
                return None;
            }
            *parses += 1;
            let names = match parse_names(image, tokens, names, n, markers, width, limits) {
                None => {
                    *reject = (*reject).max(Reject::Names);
                    continue;
                }
                Some(Err(r)) => {
                    *reject = (*reject).max(r);
                    continue;
                }
                Some(Ok(names)) => names,
            };
            let layouts: &[Layout] = if with_seqs {
                &[Layout::OffsetsFirst {
                    seqs_of_names: true,
                }]
            } else {
                &[
                    Layout::OffsetsLast,
                    Layout::OffsetsFirst {
                        seqs_of_names: false,
                    },
                ]
            };
            for &layout in layouts {
                match locate_addresses(image, base, tokens, p, n, markers, width, layout) {
                    Ok(found) => return Some(build(names, found, layout)),
                    Err(r) => *reject = (*reject).max(r),
                }
            }
        }
    }
    None
}

/// Cheap filter before parsing names: the first marker is 0, markers
/// increase, each 256-entry stride takes at least 512 bytes and they stay
/// inside `names_len`.
fn markers_plausible(
    image: &[u8],
    at: usize,
    width: usize,
    count: usize,
    names_len: usize,
) -> bool {
    let mut prev: Option<u64> = None;
    for i in 0..count {
        let v = if width == 4 {
            u32_at(image, at + 4 * i).map(u64::from)
        } else {
            u64_at(image, at + 8 * i)
        };
        let Some(v) = v else { return false };
        let ok = match prev {
            None => v == 0,
            Some(p) => v >= p + 2 * MARKER_STRIDE as u64,
        };
        if !ok || v >= names_len as u64 {
            return false;
        }
        prev = Some(v);
    }
    true
}

/// The symbol names, expanded, before addresses are known.
struct Names {
    kinds: Vec<u8>,
    starts: Vec<u32>,
    names: String,
}

/// Parses `n` name entries from `at`; they must end where the markers
/// start (after alignment) and every 256th must begin at its marker.
/// `None`: the structure does not fit; `Some(Err)`: a name is bad.
fn parse_names(
    image: &[u8],
    tokens: &TokenTable,
    at: usize,
    n: usize,
    markers: usize,
    width: usize,
    limits: &Limits,
) -> Option<Result<Names, Reject>> {
    let mut pos = at;
    let mut out = Names {
        kinds: Vec::with_capacity(n),
        starts: Vec::with_capacity(n + 1),
        names: String::new(),
    };
    let mut expanded = Vec::with_capacity(64);
    for i in 0..n {
        if pos >= markers {
            return None;
        }
        if i % MARKER_STRIDE == 0 {
            let m = i / MARKER_STRIDE;
            let marker = if width == 4 {
                u64::from(u32_at(image, markers + 4 * m)?)
            } else {
                u64_at(image, markers + 8 * m)?
            };
            if marker != (pos - at) as u64 {
                return None;
            }
        }
        let b0 = *image.get(pos)?;
        let (len, header) = if b0 & 0x80 != 0 {
            let b1 = *image.get(pos + 1)?;
            (usize::from(b0 & 0x7f) | (usize::from(b1) << 7), 2)
        } else {
            (usize::from(b0), 1)
        };
        if len == 0 {
            return None;
        }
        let body = image.get(pos + header..pos + header + len)?;
        pos += header + len;
        expanded.clear();
        for &t in body {
            expanded.extend_from_slice(tokens.token(image, t));
            if expanded.len() > limits.max_name_len {
                return Some(Err(Reject::Name));
            }
        }
        // Type letter, then at least one character of name.
        let Some((&kind, name)) = expanded.split_first() else {
            return Some(Err(Reject::Name));
        };
        if name.is_empty() || !kind.is_ascii_alphabetic() {
            return Some(Err(Reject::Name));
        }
        out.kinds.push(kind);
        out.starts.push(u32::try_from(out.names.len()).ok()?);
        // Tokens are ASCII graphic: every byte is a char.
        out.names.extend(name.iter().map(|&b| char::from(b)));
    }
    if align8(pos)? != markers {
        return None;
    }
    out.starts.push(u32::try_from(out.names.len()).ok()?);
    Some(Ok(out))
}

/// What [`locate_addresses`] found.
struct Located {
    addresses: Vec<u64>,
    locations: TableLocations,
    relative_base: u64,
}

/// Locates offsets and base for `layout`, computes and validates the
/// addresses and seqs_of_names.
#[allow(clippy::too_many_arguments)]
fn locate_addresses(
    image: &[u8],
    base: u64,
    tokens: &TokenTable,
    p: usize,
    n: usize,
    markers: usize,
    width: usize,
    layout: Layout,
) -> Result<Located, Reject> {
    let offsets_len = align8(4 * n).ok_or(Reject::Offsets)?;
    let (offsets, relative_base_at, seqs) = match layout {
        Layout::OffsetsFirst { seqs_of_names } => {
            let rb = p.checked_sub(8).ok_or(Reject::Offsets)?;
            let offsets = rb.checked_sub(offsets_len).ok_or(Reject::Offsets)?;
            let markers_len = align8(width * n.div_ceil(MARKER_STRIDE)).ok_or(Reject::Offsets)?;
            (offsets, rb, seqs_of_names.then_some(markers + markers_len))
        }
        Layout::OffsetsLast => {
            let offsets = tokens.index + 2 * TOKENS;
            let rb = offsets + offsets_len;
            (offsets, rb, Some(rb + 8))
        }
    };
    let relative_base = u64_at(image, relative_base_at).ok_or(Reject::Offsets)?;
    if relative_base < KERNEL_TEXT_PREFIX {
        return Err(Reject::Base);
    }
    let raw = image.get(offsets..offsets + 4 * n).ok_or(Reject::Offsets)?;
    let values = || {
        raw.chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    // Absolute per-CPU mode: a negative offset is relative to the base
    // (base - 1 - offset), a non-negative one is absolute. Without any
    // negative offset, every offset is relative to the base.
    let absolute_percpu = values().any(|v| v < 0);
    let mut addresses = Vec::with_capacity(n);
    let mut prev = 0u64;
    for v in values() {
        let a = if !absolute_percpu {
            relative_base
                .checked_add(v as u64)
                .ok_or(Reject::Decreasing)?
        } else if v >= 0 {
            v as u64
        } else {
            (relative_base - 1).wrapping_sub(i64::from(v) as u64)
        };
        if a < prev {
            return Err(Reject::Decreasing);
        }
        prev = a;
        addresses.push(a);
    }
    if let Some(seqs) = seqs {
        check_seqs(image, seqs, n)?;
    }
    let at = |pos: usize| base + pos as u64;
    Ok(Located {
        addresses,
        locations: TableLocations {
            offsets: at(offsets),
            relative_base: at(relative_base_at),
            num_syms: at(p),
            names: at(p + 8),
            markers: at(markers),
            marker_width: width as u8,
            seqs_of_names: seqs.map(at),
            token_table: at(tokens.start),
            token_index: at(tokens.index),
        },
        relative_base,
    })
}

fn build(names: Names, found: Located, layout: Layout) -> Kallsyms {
    let mut symbols = SymbolTable {
        addresses: found.addresses,
        kinds: names.kinds,
        starts: names.starts,
        names: names.names,
        by_name: Vec::new(),
    };
    let mut by_name: Vec<u32> = (0..symbols.len() as u32).collect();
    by_name.sort_unstable_by(|&a, &b| symbols.name_of(a).cmp(symbols.name_of(b)).then(a.cmp(&b)));
    symbols.by_name = by_name;
    Kallsyms {
        symbols,
        layout,
        locations: found.locations,
        relative_base: found.relative_base,
    }
}

/// seqs_of_names: n 3-byte big-endian symbol indices, each once.
fn check_seqs(image: &[u8], at: usize, n: usize) -> Result<(), Reject> {
    let raw = image.get(at..at + 3 * n).ok_or(Reject::SeqsOfNames)?;
    let mut seen = vec![0u64; n.div_ceil(64)];
    for c in raw.chunks_exact(3) {
        let i = (usize::from(c[0]) << 16) | (usize::from(c[1]) << 8) | usize::from(c[2]);
        let word = seen.get_mut(i / 64).ok_or(Reject::SeqsOfNames)?;
        let bit = 1u64 << (i % 64);
        if i >= n || *word & bit != 0 {
            return Err(Reject::SeqsOfNames);
        }
        *word |= bit;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{BuiltTables, KallsymsBuilder};
    use crate::memory::{LayoutMemory, RamLayout, RamRegion};
    use alloc::format;

    const BASE: u64 = 0xffff_ffff_8100_0000;

    fn layouts() -> [Layout; 3] {
        [
            Layout::OffsetsFirst {
                seqs_of_names: true,
            },
            Layout::OffsetsLast,
            Layout::OffsetsFirst {
                seqs_of_names: false,
            },
        ]
    }

    /// 700 symbols (3 markers): per-CPU ones, duplicates, a 300-character
    /// name (2-byte length), names sharing prefixes.
    fn builder(layout: Layout) -> KallsymsBuilder {
        let mut b = KallsymsBuilder::new(layout);
        b.symbol(b'A', "fixed_percpu_data", 0)
            .symbol(b'A', "cpu_number", 0x2_0000);
        for i in 0..690u64 {
            b.symbol(b't', &format!("func_{i}_helper"), BASE + 0x10 * i);
        }
        b.symbol(b'T', "_text", BASE)
            .symbol(b't', "dup", BASE + 0x8000)
            .symbol(b't', "dup", BASE + 0x9000)
            .symbol(b'D', "sys_call_table", BASE + 0x100_0360)
            .symbol(b'D', "init_task", BASE + 0x1a1_aa40)
            .symbol(b'B', &"long".repeat(75), BASE + 0x200_0000)
            .symbol(b'R', "linux_banner", BASE + 0x116_1900);
        b
    }

    fn check(k: &Kallsyms, built: &BuiltTables, layout: Layout) {
        assert_eq!(k.layout, layout);
        assert_eq!(k.relative_base, BASE);
        assert_eq!(k.symbols.len(), 699);
        let s = &k.symbols;
        assert_eq!(s.address_of("_text"), Some(BASE));
        assert_eq!(s.address_of("cpu_number"), Some(0x2_0000));
        assert_eq!(s.address_of("fixed_percpu_data"), Some(0));
        assert_eq!(s.address_of("sys_call_table"), Some(BASE + 0x100_0360));
        assert_eq!(s.lookup("init_task").map(|s| s.kind), Some(b'D'));
        assert_eq!(s.address_of(&"long".repeat(75)), Some(BASE + 0x200_0000));
        assert_eq!(s.address_of("func_689_helper"), Some(BASE + 0x10 * 689));
        let dups: Vec<u64> = s.lookup_all("dup").map(|s| s.address).collect();
        assert_eq!(dups, vec![BASE + 0x8000, BASE + 0x9000]);
        assert_eq!(s.address_of("du"), None);
        assert_eq!(s.address_of("dupe"), None);
        let (sym, off) = s.symbol_at(BASE + 0x9010).expect("containing symbol");
        assert_eq!((sym.name, off), ("dup", 0x10));
        assert_eq!(
            s.symbol_at(BASE + 0x100_0368).map(|(s, o)| (s.name, o)),
            Some(("sys_call_table", 8))
        );
        let l = &k.locations;
        assert_eq!(l.token_table, built.token_table as u64);
        assert_eq!(l.token_index, built.token_index as u64);
        assert_eq!(l.names, built.names as u64);
        assert_eq!(l.markers, built.markers as u64);
        assert_eq!(l.num_syms, built.num_syms as u64);
        assert_eq!(l.offsets, built.offsets as u64);
        assert_eq!(l.relative_base, built.relative_base as u64);
        assert_eq!(l.seqs_of_names, built.seqs_of_names.map(|p| p as u64));
    }

    #[test]
    fn both_layouts_round_trip() {
        for layout in layouts() {
            let b = builder(layout);
            let (image, built) = b.build();
            let k = Kallsyms::parse(&image, &Limits::default()).expect("parse");
            check(&k, &built, layout);
        }
    }

    #[test]
    fn eight_byte_markers_and_relative_mode() {
        let mut b = builder(Layout::OffsetsFirst {
            seqs_of_names: false,
        });
        b.marker_width = 8;
        let (image, _) = b.build();
        let k = Kallsyms::parse(&image, &Limits::default()).expect("8-byte markers");
        assert_eq!(k.locations.marker_width, 8);
        // No per-CPU symbols: every offset relative to the base.
        let mut b = KallsymsBuilder::new(Layout::OffsetsLast);
        b.absolute_percpu = false;
        for i in 0..300u64 {
            b.symbol(b'T', &format!("f{i}"), BASE + 0x20 * i);
        }
        let (image, _) = b.build();
        let k = Kallsyms::parse(&image, &Limits::default()).expect("relative");
        assert_eq!(k.symbols.address_of("f299"), Some(BASE + 0x20 * 299));
    }

    #[test]
    fn found_in_guest_memory_across_a_split_layout() {
        for layout in layouts() {
            let (tables, built) = builder(layout).build();
            // Tables at phys 0x1_0000_3000 in the second region.
            let layout_ram = RamLayout::new(&[
                RamRegion::new(0, 0x10_0000, 0),
                RamRegion::new(0x1_0000_0000, 0x10_0000, 0x10_0000),
            ])
            .expect("layout");
            let mut backing = vec![0u8; 0x20_0000];
            backing[0x10_3000..0x10_3000 + tables.len()].copy_from_slice(&tables);
            let mem = LayoutMemory::new(backing.as_slice(), layout_ram).expect("memory");
            let k = Kallsyms::from_memory(
                &mem,
                GuestPhysAddr(0x1_0000_0000),
                0x10_0000,
                &Limits::default(),
            )
            .expect("from memory");
            assert_eq!(
                k.locations.token_table,
                0x1_0000_3000 + built.token_table as u64
            );
            assert_eq!(k.symbols.address_of("init_task"), Some(BASE + 0x1a1_aa40));
            // Scanning a range with a hole in it is fine too.
            let k =
                Kallsyms::from_memory(&mem, GuestPhysAddr(0), 0x1_0010_0000, &Limits::default())
                    .expect("across the hole");
            assert_eq!(k.symbols.len(), 699);
        }
    }

    fn expect_reject(image: &[u8]) -> Option<Reject> {
        match Kallsyms::parse(image, &Limits::default()) {
            Err(KallsymsError::NotFound { last, .. }) => last,
            Ok(k) => panic!("accepted {} symbols", k.symbols.len()),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn garbage_is_not_a_symbol_table() {
        assert_eq!(
            Kallsyms::parse(&[], &Limits::default()),
            Err(KallsymsError::NotFound {
                runs: 0,
                token_tables: 0,
                last: None
            })
        );
        assert_eq!(expect_reject(&[0u8; 4096]), None);
        // A bare digit run is not a token table.
        let mut img = vec![0u8; 4096];
        img[1000..1020].copy_from_slice(DIGIT_RUN);
        assert_eq!(expect_reject(&img), Some(Reject::TokenTable));
        // Many digit runs: bounded by max_candidates.
        let img: Vec<u8> = DIGIT_RUN.iter().copied().cycle().take(20 * 1000).collect();
        match Kallsyms::parse(&img, &Limits::default()) {
            Err(KallsymsError::NotFound { runs, .. }) => assert_eq!(runs, 65),
            other => panic!("{other:?}"),
        }
    }

    fn patch_u32(img: &mut [u8], at: usize, v: u32) {
        img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn absurd_counts_and_lengths_are_rejected() {
        for layout in layouts() {
            let (good, at) = builder(layout).build();
            for count in [0u32, 1, 698, 700, 0x00ff_ffff, u32::MAX] {
                let mut img = good.clone();
                patch_u32(&mut img, at.num_syms, count);
                assert!(
                    Kallsyms::parse(&img, &Limits::default()).is_err(),
                    "{layout:?} count {count}"
                );
            }
            // Name length bytes at their maximum (2-byte form: 16383).
            let mut img = good.clone();
            img[at.names] = 0xff;
            img[at.names + 1] = 0xff;
            assert!(Kallsyms::parse(&img, &Limits::default()).is_err());
            // A marker off by one.
            let mut img = good.clone();
            patch_u32(&mut img, at.markers + 4, 0x1234);
            assert!(Kallsyms::parse(&img, &Limits::default()).is_err());
            // Token index not matching the tokens.
            let mut img = good.clone();
            img[at.token_index + 2 * 0x41] ^= 1;
            assert_eq!(expect_reject(&img), Some(Reject::TokenTable));
            // A token that is not printable.
            let mut img = good.clone();
            img[at.token_table] = 0x07;
            assert_eq!(expect_reject(&img), Some(Reject::TokenTable));
        }
    }

    #[test]
    fn bad_bases_addresses_and_seqs_are_rejected() {
        for layout in layouts() {
            let (good, at) = builder(layout).build();
            let mut img = good.clone();
            img[at.relative_base..at.relative_base + 8].copy_from_slice(&0x1000u64.to_le_bytes());
            assert_eq!(expect_reject(&img), Some(Reject::Base), "{layout:?}");
            // Swap two offsets: addresses decrease.
            let mut img = good.clone();
            let o = at.offsets + 4 * 10;
            let (a, b) = (img[o..o + 4].to_vec(), img[o + 4..o + 8].to_vec());
            img[o..o + 4].copy_from_slice(&b);
            img[o + 4..o + 8].copy_from_slice(&a);
            assert_eq!(expect_reject(&img), Some(Reject::Decreasing), "{layout:?}");
            if let Some(seqs) = at.seqs_of_names {
                let mut img = good.clone();
                img.copy_within(seqs + 3..seqs + 6, seqs);
                assert_eq!(expect_reject(&img), Some(Reject::SeqsOfNames), "{layout:?}");
                let mut img = good.clone();
                img[seqs..seqs + 3].copy_from_slice(&[0xff, 0xff, 0xff]);
                assert_eq!(expect_reject(&img), Some(Reject::SeqsOfNames), "{layout:?}");
            }
        }
    }

    #[test]
    fn truncated_images_fail_cleanly() {
        for layout in layouts() {
            let (good, at) = builder(layout).build();
            let mut cuts = vec![
                at.token_index + 511,
                at.token_index + 100,
                at.token_table + 10,
            ];
            if layout == Layout::OffsetsLast {
                cuts.push(at.relative_base + 7);
                cuts.push(at.seqs_of_names.expect("seqs") + 3 * 699 - 1);
            }
            for cut in cuts {
                assert!(Kallsyms::parse(&good[..cut], &Limits::default()).is_err());
            }
            // Cutting the front away loses the count (and the offsets).
            assert!(Kallsyms::parse(&good[at.names..], &Limits::default()).is_err());
        }
    }

    #[test]
    fn limits_bound_the_search() {
        let (img, _) = builder(Layout::OffsetsLast).build();
        let tight = Limits {
            max_symbols: 100,
            ..Limits::default()
        };
        assert!(Kallsyms::parse(&img, &tight).is_err());
        let short_names = Limits {
            max_name_len: 100,
            ..Limits::default()
        };
        assert_eq!(
            Kallsyms::parse(&img, &short_names).err(),
            Some(KallsymsError::NotFound {
                runs: 1,
                token_tables: 1,
                last: Some(Reject::Name)
            })
        );
        let no_scan = Limits {
            max_scan_back: 8,
            ..Limits::default()
        };
        assert!(Kallsyms::parse(&img, &no_scan).is_err());
    }
}
