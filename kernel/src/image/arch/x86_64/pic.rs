//! The legacy 8259 PIC pair: remapped above the exception vectors with every
//! line masked except IRQ 0 (the PIT), the A-VM's only interrupt.

use super::port::outb;

/// Master PIC command port (EOI goes here).
pub const PIC_MASTER_COMMAND: u16 = 0x20;
const PIC_MASTER_DATA: u16 = 0x21;
const PIC_SLAVE_COMMAND: u16 = 0xa0;
const PIC_SLAVE_DATA: u16 = 0xa1;
/// First vector of the master PIC (IRQ 0).
pub const PIC_VECTOR_BASE: u8 = 32;

/// Remaps both PICs to vectors 32..48 and masks everything but IRQ 0.
pub fn init_timer_only() {
    // SAFETY: the standard 8259 initialisation sequence on the PIC's own ports.
    unsafe {
        outb(PIC_MASTER_COMMAND, 0x11); // ICW1: init, ICW4 follows
        outb(PIC_SLAVE_COMMAND, 0x11);
        outb(PIC_MASTER_DATA, PIC_VECTOR_BASE); // ICW2: vector base
        outb(PIC_SLAVE_DATA, PIC_VECTOR_BASE + 8);
        outb(PIC_MASTER_DATA, 0x04); // ICW3: slave on IRQ 2
        outb(PIC_SLAVE_DATA, 0x02);
        outb(PIC_MASTER_DATA, 0x01); // ICW4: 8086 mode
        outb(PIC_SLAVE_DATA, 0x01);
        outb(PIC_MASTER_DATA, 0xfe); // only IRQ 0
        outb(PIC_SLAVE_DATA, 0xff);
    }
}
