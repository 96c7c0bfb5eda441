//! The C memory functions that compiled Rust code calls. In a freestanding
//! link nothing provides them (FACTS.md).
//!
//! They move eight bytes at a time. Under TCG every guest load or store
//! costs about the same whatever its width, and the string instructions
//! (`rep movsb`, `rep stosb`) run one byte per iteration: copying and
//! clearing word by word is several times faster (the text check clears
//! and fills a 4 KiB buffer per chunk, some 6,000 chunks at start-up).
//! Every access goes through `asm!`, so LLVM cannot recognise the loops
//! and turn them back into calls to these very functions.

use core::arch::asm;

/// One unaligned 8-byte load.
///
/// # Safety
/// `p` must be valid for reading 8 bytes.
#[inline(always)]
unsafe fn load_u64(p: *const u8) -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees 8 readable bytes at `p`; x86 allows
    // unaligned loads.
    unsafe {
        asm!("mov {v}, qword ptr [{p}]", p = in(reg) p, v = out(reg) value,
             options(nostack, readonly, preserves_flags, pure));
    }
    value
}

/// One unaligned 8-byte store.
///
/// # Safety
/// `p` must be valid for writing 8 bytes.
#[inline(always)]
unsafe fn store_u64(p: *mut u8, value: u64) {
    // SAFETY: the caller guarantees 8 writable bytes at `p`; x86 allows
    // unaligned stores.
    unsafe {
        asm!("mov qword ptr [{p}], {v}", p = in(reg) p, v = in(reg) value,
             options(nostack, preserves_flags));
    }
}

/// One byte load and store.
///
/// # Safety
/// `src` must be readable and `dest` writable for one byte.
#[inline(always)]
unsafe fn copy_byte(dest: *mut u8, src: *const u8) {
    // SAFETY: the caller guarantees both bytes.
    unsafe {
        asm!("mov {b}, byte ptr [{s}]", "mov byte ptr [{d}], {b}",
             s = in(reg) src, d = in(reg) dest, b = out(reg_byte) _,
             options(nostack, preserves_flags));
    }
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; a forward copy is what
    // memcpy promises.
    unsafe { copy_forward(dest, src, n) };
    dest
}

/// Copies front to back, a word at a time, then the tail.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes, and `dest` must not
/// start inside the source after its first byte (it may start before it:
/// every store then lands on source bytes already read).
#[inline(always)]
unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = 0;
    // Four words per iteration: under TCG each iteration also costs a
    // translation-block entry and a branch.
    while i + 32 <= n {
        // SAFETY: i + 32 <= n and both ranges hold n bytes; all four words
        // are loaded before any is stored, so a destination starting
        // before the source still only overwrites bytes already read.
        // Written out: a loop over the four would stay a loop (the kernel
        // is built for size), one translation block per word again.
        unsafe {
            let (w0, w1) = (load_u64(src.add(i)), load_u64(src.add(i + 8)));
            let (w2, w3) = (load_u64(src.add(i + 16)), load_u64(src.add(i + 24)));
            store_u64(dest.add(i), w0);
            store_u64(dest.add(i + 8), w1);
            store_u64(dest.add(i + 16), w2);
            store_u64(dest.add(i + 24), w3);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n and both ranges hold n bytes.
        unsafe { store_u64(dest.add(i), load_u64(src.add(i))) };
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, as above.
        unsafe { copy_byte(dest.add(i), src.add(i)) };
        i += 1;
    }
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // The destination does not start inside the source.
        // SAFETY: as for memcpy; a forward copy is correct for this overlap.
        unsafe { copy_forward(dest, src, n) };
        return dest;
    }
    // `dest` starts inside the source: copy back to front so that every
    // source byte is read before it is overwritten.
    let mut i = n;
    while i >= 8 {
        i -= 8;
        // SAFETY: i + 8 <= n; the load of the word completes before its
        // store, and all later (lower) words are not yet written.
        unsafe { store_u64(dest.add(i), load_u64(src.add(i))) };
    }
    while i > 0 {
        i -= 1;
        // SAFETY: i < n.
        unsafe { copy_byte(dest.add(i), src.add(i)) };
    }
    dest
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = c as u8;
    let word = u64::from_ne_bytes([byte; 8]);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n and the caller guarantees n writable bytes.
        unsafe { store_u64(dest.add(i), word) };
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, as above.
        unsafe {
            asm!("mov byte ptr [{d}], {b}", d = in(reg) dest.add(i), b = in(reg_byte) byte,
                 options(nostack, preserves_flags));
        }
        i += 1;
    }
    dest
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // Eight bytes at a time until they differ (the text sweep compares
    // megabytes a second with its copy; under TCG each load costs the
    // same whatever its width), then byte by byte for the order.
    let mut i = 0;
    // Four words per test while they are equal (one branch per 32 bytes);
    // the first difference is then found word by word, byte by byte.
    while i + 32 <= n {
        // SAFETY: i + 32 <= n and the caller guarantees n readable bytes.
        let diff = unsafe {
            (load_u64(a.add(i)) ^ load_u64(b.add(i)))
                | (load_u64(a.add(i + 8)) ^ load_u64(b.add(i + 8)))
                | (load_u64(a.add(i + 16)) ^ load_u64(b.add(i + 16)))
                | (load_u64(a.add(i + 24)) ^ load_u64(b.add(i + 24)))
        };
        // Opaque, or LLVM splits the OR-ed test into four branches, and
        // under TCG each branch ends a translation block.
        if core::hint::black_box(diff) != 0 {
            break;
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n and the caller guarantees n readable bytes.
        let (x, y) = unsafe { (load_u64(a.add(i)), load_u64(b.add(i))) };
        if x != y {
            break;
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, as above.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
