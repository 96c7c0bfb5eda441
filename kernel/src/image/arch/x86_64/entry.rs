//! The PVH entry point (32-bit protected mode, paging off, `%ebx` = physical
//! address of `hvm_start_info`) and the switch to long mode.
//!
//! It zeroes `.bss`, identity-maps the first 4 GiB with 2 MiB pages (refined
//! later by `paging::init`), enables PAE, SSE (OSFXSR/OSXMMEXCPT, CR0.MP,
//! no EM/TS: the shipped libcore uses SSE), long mode and paging, and calls
//! `kernel_entry(start_info_paddr)` on the boot stack.

use core::arch::global_asm;

/// Size of the boot (and main) kernel stack. TPM responses decoded on the
/// stack are large (FACTS.md), so be generous: it is `.bss`, not image size.
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

/// 32-bit code, paging off, CR3 loaded: enables PAE, SSE (OSFXSR,
/// OSXMMEXCPT, CR0.MP, no EM/TS: the shipped libcore uses SSE), long mode
/// and paging, as both CPUs do on their way to 64-bit code (the next
/// instruction must be a far jump into it). Clobbers `%eax`, `%ecx`, `%edx`.
macro_rules! enable_long_mode {
    () => {
        r#"
    movl %cr4, %eax
    orl $0x620, %eax        /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $0xC0000080, %ecx  /* EFER */
    rdmsr
    orl $0x100, %eax        /* LME */
    wrmsr
    movl %cr0, %eax
    andl $0xFFFFFFF3, %eax  /* clear EM, TS */
    orl $0x80010003, %eax   /* PG | WP | MP | PE */
    movl %eax, %cr0
"#
    };
}
pub(super) use enable_long_mode;

/// 64-bit code, right after the far jump into it: the data segment
/// registers get the GDT's data selector (0x10), FS and GS the null one,
/// as on both CPUs. Clobbers `%ax`.
macro_rules! load_data_segments {
    () => {
        r#"
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
"#
    };
}
pub(super) use load_data_segments;

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    /* %ebx holds the start info: keep it untouched until the call. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories. */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    xorl %ecx, %ecx
1:  movl %eax, boot_pdpt(,%ecx,8)
    addl $4096, %eax
    incl %ecx
    cmpl $4, %ecx
    jb 1b
    /* 2048 entries of 2 MiB: present, writable, page size. */
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 2b

    movl $boot_pml4, %eax
    movl %eax, %cr3
"#,
    enable_long_mode!(),
    r#"
    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
"#,
    load_data_segments!(),
    r#"
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl %ebx, %edi         /* zero-extends into %rdi */
    call {kernel_entry}
3:  cli
    hlt
    jmp 3b

    .section .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
    .global boot_pd
boot_pd:
    .skip 4 * 4096
    .balign 16
boot_stack_bottom:
    .skip {stack_size}
boot_stack_top:
    "#,
    kernel_entry = sym crate::kernel_entry,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);
