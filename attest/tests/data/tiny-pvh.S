    .section .note.Xen, "a"
    .p2align 2
    .long 4          /* namesz */
    .long 8          /* descsz */
    .long 18         /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32
    .text
    .code32
    .globl pvh_start32
pvh_start32:
    cli
1:  hlt
    jmp 1b
