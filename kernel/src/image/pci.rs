//! PCI configuration space through the legacy ports 0xCF8/0xCFC (works on
//! both `pc` and `q35`; ECAM can come later behind the same trait).

use crate::arch::x86_64::port::{inl, outl};
use avm_kernel::pci::{PciAddress, PciConfigAccess};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// Bit 31 of a configuration address: the access goes to configuration space.
const ENABLE: u32 = 0x8000_0000;

/// Configuration mechanism #1. Each access writes the address port and then
/// reads or writes the data port; the kernel is single-threaded and the
/// timer handler never touches PCI, so the pair is not interrupted.
#[derive(Debug, Clone, Copy)]
pub struct PortConfigAccess;

fn address(addr: PciAddress, offset: u8) -> u32 {
    ENABLE
        | (u32::from(addr.bus) << 16)
        | (u32::from(addr.device & 0x1f) << 11)
        | (u32::from(addr.function & 0x7) << 8)
        | u32::from(offset & 0xfc)
}

impl PciConfigAccess for PortConfigAccess {
    fn read_u32(&self, addr: PciAddress, offset: u8) -> u32 {
        read_dword(address(addr, offset))
    }

    fn write_u32(&self, addr: PciAddress, offset: u8, value: u32) {
        write_dword(address(addr, offset), value);
    }
}

/// The configuration dword `config_address` selects (the enable bit is
/// set here in any case, so only configuration space is reached).
pub fn read_dword(config_address: u32) -> u32 {
    // SAFETY: the PCI configuration ports; reads of configuration space
    // have no side effects on the devices the kernel enumerates. One CPU,
    // and no interrupt handler touches PCI, so nothing comes between the
    // address and the data access.
    unsafe {
        outl(CONFIG_ADDRESS, config_address | ENABLE);
        inl(CONFIG_DATA)
    }
}

/// Writes the configuration dword `config_address` selects.
pub fn write_dword(config_address: u32, value: u32) {
    // SAFETY: the PCI configuration ports, as in `read_dword`; the caller
    // (a device driver) owns the function it writes to.
    unsafe {
        outl(CONFIG_ADDRESS, config_address | ENABLE);
        outl(CONFIG_DATA, value);
    }
}
