//! Small CPU primitives: TSC, interrupt flag, halting, control registers.

use core::arch::asm;

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the counter (CR4.TSD is clear at boot).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Waits for the next interrupt with interrupts enabled only while halted,
/// so handlers never run in the middle of kernel code (`sti` takes effect
/// after the following instruction, closing the race with `hlt`).
#[inline]
pub fn idle_until_interrupt() {
    // SAFETY: the only unmasked interrupt is the timer, whose handler runs on
    // its own IST stack and touches nothing but its tick counter and the PIC.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stopping the CPU with interrupts off is always sound.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Reads CR3 (physical address of the PML4).
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Reloads CR3, flushing all non-global TLB entries.
pub fn flush_tlb() {
    let cr3 = read_cr3();
    // SAFETY: writing back the current CR3 keeps the same address space.
    unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) }
}
