//! PCI configuration-space enumeration, independent of how the configuration
//! space is reached (port 0xCF8/0xCFC in the kernel, ECAM later).
//!
//! The walk follows PCI-to-PCI bridges to their secondary buses; every bus is
//! scanned at most once, so a bridge loop cannot make it run forever.

use core::fmt;

/// Bus, device and function of one PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// 32-bit access to configuration space. Offsets are dword-aligned.
pub trait PciConfigAccess {
    /// Reads the dword at `offset` (all ones if no function answers).
    fn read_u32(&self, addr: PciAddress, offset: u8) -> u32;
    /// Writes the dword at `offset`.
    fn write_u32(&self, addr: PciAddress, offset: u8, value: u32);
}

/// Identity of a PCI function as read from its configuration header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it is.
    pub addr: PciAddress,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// Header type without the multi-function bit (0 device, 1 bridge).
    pub header_type: u8,
}

impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x}",
            self.addr, self.vendor_id, self.device_id, self.class.0, self.class.1, self.class.2
        )
    }
}

/// A decoded base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// Memory BAR (32- or 64-bit) at this address.
    Memory {
        /// Base address.
        addr: u64,
        /// Whether it is prefetchable.
        prefetchable: bool,
        /// Whether it takes two BAR slots.
        is_64bit: bool,
    },
    /// I/O port BAR.
    Io {
        /// Base port.
        port: u32,
    },
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory {
                addr,
                prefetchable,
                is_64bit,
            } => write!(
                f,
                "memory {addr:#x}{}{}",
                if *is_64bit { " 64-bit" } else { "" },
                if *prefetchable { " prefetchable" } else { "" }
            ),
            Self::Io { port } => write!(f, "I/O {port:#x}"),
        }
    }
}

/// Reads the function's identity, or `None` if nothing answers there.
pub fn read_function(cfg: &impl PciConfigAccess, addr: PciAddress) -> Option<PciFunction> {
    let id = cfg.read_u32(addr, 0x00);
    let vendor_id = id as u16;
    if vendor_id == 0xffff || vendor_id == 0 {
        return None;
    }
    let class = cfg.read_u32(addr, 0x08);
    let header = cfg.read_u32(addr, 0x0c);
    Some(PciFunction {
        addr,
        vendor_id,
        device_id: (id >> 16) as u16,
        class: ((class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8),
        header_type: ((header >> 16) as u8) & 0x7f,
    })
}

/// Decodes BAR `index` (0..6) of a type-0 header; `None` if out of range,
/// unimplemented (zero) or the upper half of a 64-bit BAR is missing.
pub fn read_bar(cfg: &impl PciConfigAccess, addr: PciAddress, index: u8) -> Option<Bar> {
    if index >= 6 {
        return None;
    }
    let offset = 0x10 + 4 * index;
    let low = cfg.read_u32(addr, offset);
    if low & 1 == 1 {
        let port = low & !0x3;
        return (port != 0).then_some(Bar::Io { port });
    }
    let is_64bit = (low >> 1) & 0x3 == 0x2;
    let mut base = u64::from(low & !0xf);
    if is_64bit {
        if index == 5 {
            return None;
        }
        base |= u64::from(cfg.read_u32(addr, offset + 4)) << 32;
    }
    (base != 0).then_some(Bar::Memory {
        addr: base,
        prefetchable: low & 0x8 != 0,
        is_64bit,
    })
}

/// Command register bits: memory-space decoding.
const COMMAND_MEMORY: u32 = 1 << 1;

/// The size of memory BAR `index` (0..6), by the standard probe: with
/// memory decoding off, write all ones, read back the size mask, restore
/// the BAR and the command register. `None` for an I/O or absent BAR.
/// The caller owns the function (nothing else uses it during the probe).
pub fn size_memory_bar(cfg: &impl PciConfigAccess, addr: PciAddress, index: u8) -> Option<u64> {
    let Some(Bar::Memory { is_64bit, .. }) = read_bar(cfg, addr, index) else {
        return None;
    };
    let offset = 0x10 + 4 * index;
    let command = cfg.read_u32(addr, 0x04);
    cfg.write_u32(addr, 0x04, command & !COMMAND_MEMORY);
    let low = cfg.read_u32(addr, offset);
    cfg.write_u32(addr, offset, u32::MAX);
    let mut mask = u64::from(cfg.read_u32(addr, offset) & !0xf);
    cfg.write_u32(addr, offset, low);
    if is_64bit {
        let high = cfg.read_u32(addr, offset + 4);
        cfg.write_u32(addr, offset + 4, u32::MAX);
        mask |= u64::from(cfg.read_u32(addr, offset + 4)) << 32;
        cfg.write_u32(addr, offset + 4, high);
    } else {
        mask |= 0xffff_ffff_0000_0000;
    }
    cfg.write_u32(addr, 0x04, command);
    // The size is the lowest writable address bit.
    (mask != 0).then(|| (!mask).wrapping_add(1))
}

/// Calls `visit` for every function reachable from bus 0, in bus order of
/// discovery. Bounded: each of the 256 buses is scanned at most once.
pub fn enumerate(cfg: &impl PciConfigAccess, mut visit: impl FnMut(&PciFunction)) {
    let mut seen = [0u64; 4];
    let mut pending: heapless::Vec<u8, 256> = heapless::Vec::new();
    let _ = pending.push(0);
    seen[0] |= 1;
    while let Some(bus) = pending.pop() {
        for device in 0..32 {
            let f0 = PciAddress {
                bus,
                device,
                function: 0,
            };
            let Some(first) = read_function(cfg, f0) else {
                continue;
            };
            let multi = (cfg.read_u32(f0, 0x0c) >> 16) & 0x80 != 0;
            let functions = if multi { 8 } else { 1 };
            for function in 0..functions {
                let addr = PciAddress {
                    bus,
                    device,
                    function,
                };
                let func = if function == 0 {
                    Some(first)
                } else {
                    read_function(cfg, addr)
                };
                let Some(func) = func else { continue };
                visit(&func);
                if func.header_type == 1 {
                    let secondary = (cfg.read_u32(addr, 0x18) >> 8) as u8;
                    let (word, bit) = (usize::from(secondary / 64), secondary % 64);
                    if seen[word] & (1 << bit) == 0 {
                        seen[word] |= 1 << bit;
                        let _ = pending.push(secondary);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_read_as_text() {
        let bar = Bar::Memory {
            addr: 0xfe00_0000,
            prefetchable: true,
            is_64bit: true,
        };
        assert_eq!(bar.to_string(), "memory 0xfe000000 64-bit prefetchable");
        assert_eq!(Bar::Io { port: 0xc000 }.to_string(), "I/O 0xc000");
    }

    use super::*;
    use std::collections::BTreeMap;

    /// A configuration space made of explicit headers (unlisted = absent).
    #[derive(Default)]
    struct ConfigSpace(BTreeMap<(PciAddress, u8), u32>);

    /// A device whose BARs decode like hardware: writes keep only the
    /// address bits above the BAR's size; the command register is stored.
    struct SizedBars {
        regs: std::cell::RefCell<BTreeMap<u8, u32>>,
        /// Writable-bit masks by BAR offset.
        masks: BTreeMap<u8, u32>,
    }

    impl PciConfigAccess for SizedBars {
        fn read_u32(&self, _: PciAddress, offset: u8) -> u32 {
            self.regs.borrow().get(&offset).copied().unwrap_or(0)
        }
        fn write_u32(&self, _: PciAddress, offset: u8, value: u32) {
            let mut regs = self.regs.borrow_mut();
            let old = regs.get(&offset).copied().unwrap_or(0);
            let new = match self.masks.get(&offset) {
                Some(mask) => (value & mask) | (old & !mask),
                None => value,
            };
            regs.insert(offset, new);
        }
    }

    impl ConfigSpace {
        fn add(&mut self, a: PciAddress, vendor: u16, dev: u16, class: u32, header: u8) {
            self.0
                .insert((a, 0), u32::from(vendor) | (u32::from(dev) << 16));
            self.0.insert((a, 8), class << 8);
            self.0.insert((a, 0x0c), u32::from(header) << 16);
        }
    }

    impl PciConfigAccess for ConfigSpace {
        fn read_u32(&self, addr: PciAddress, offset: u8) -> u32 {
            self.0.get(&(addr, offset)).copied().unwrap_or(u32::MAX)
        }
        fn write_u32(&self, _: PciAddress, _: u8, _: u32) {}
    }

    fn at(bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            bus,
            device,
            function,
        }
    }

    #[test]
    fn follows_bridges_once_and_multifunction() {
        let mut cs = ConfigSpace::default();
        cs.add(at(0, 0, 0), 0x8086, 0x29c0, 0x060000, 0);
        cs.add(at(0, 0x1f, 0), 0x8086, 0x2918, 0x060100, 0x80);
        cs.add(at(0, 0x1f, 3), 0x8086, 0x2930, 0x0c0500, 0);
        cs.add(at(0, 2, 0), 0x1b36, 0x000c, 0x060400, 1);
        cs.0.insert((at(0, 2, 0), 0x18), 1 << 8);
        cs.add(at(1, 0, 0), 0x1af4, 0x1041, 0x020000, 0);
        // A bridge on bus 1 pointing back at bus 0 must not loop.
        cs.add(at(1, 1, 0), 0x1b36, 0x000c, 0x060400, 1);
        cs.0.insert((at(1, 1, 0), 0x18), 0);
        let mut found = vec![];
        enumerate(&cs, |f| found.push(f.addr));
        found.sort();
        assert_eq!(
            found,
            vec![
                at(0, 0, 0),
                at(0, 2, 0),
                at(0, 0x1f, 0),
                at(0, 0x1f, 3),
                at(1, 0, 0),
                at(1, 1, 0)
            ]
        );
        let nic = read_function(&cs, at(1, 0, 0)).unwrap();
        assert_eq!(nic.to_string(), "01:00.0 1af4:1041 class 02.00.00");
    }

    #[test]
    fn sizes_bars_and_restores_them() {
        // BAR0: 32-bit 4 KiB at 0xfebf1000; BAR2-3: 64-bit prefetchable
        // 4 GiB at 0x1_0000_0000 (an ivshmem BAR of a 4 GiB Mon-VM).
        let regs = BTreeMap::from([
            (0x04, 0x0000_0107),
            (0x10, 0xfebf_1000),
            (0x18, 0x0000_000c),
            (0x1c, 0x0000_0001),
        ]);
        let dev = SizedBars {
            regs: std::cell::RefCell::new(regs.clone()),
            masks: BTreeMap::from([(0x10, 0xffff_f000), (0x18, 0), (0x1c, 0xffff_ffff)]),
        };
        let a = at(0, 4, 0);
        assert_eq!(size_memory_bar(&dev, a, 0), Some(0x1000));
        assert_eq!(size_memory_bar(&dev, a, 2), Some(1 << 32));
        assert_eq!(*dev.regs.borrow(), regs, "BARs and command restored");
        assert_eq!(size_memory_bar(&dev, a, 1), None);
        assert_eq!(size_memory_bar(&dev, a, 6), None);
    }

    #[test]
    fn decodes_bars() {
        let mut cs = ConfigSpace::default();
        let a = at(0, 3, 0);
        cs.0.insert((a, 0x10), 0xc001);
        cs.0.insert((a, 0x14), 0xfebf_0000);
        cs.0.insert((a, 0x18), 0x0000_000c);
        cs.0.insert((a, 0x1c), 0x0000_0001);
        cs.0.insert((a, 0x20), 0);
        assert_eq!(read_bar(&cs, a, 0), Some(Bar::Io { port: 0xc000 }));
        assert_eq!(
            read_bar(&cs, a, 1),
            Some(Bar::Memory {
                addr: 0xfebf_0000,
                prefetchable: false,
                is_64bit: false
            })
        );
        assert_eq!(
            read_bar(&cs, a, 2),
            Some(Bar::Memory {
                addr: 0x1_0000_0000,
                prefetchable: true,
                is_64bit: true
            })
        );
        assert_eq!(read_bar(&cs, a, 4), None);
        assert_eq!(read_bar(&cs, a, 6), None);
    }
}
