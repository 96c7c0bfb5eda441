//! Finding and starting the virtio-net PCI device.
//!
//! The kernel supplies two things: PCI configuration access through the
//! legacy 0xCF8/0xCFC ports ([`PciConfigPorts`], wrapped by [`PortConfigAccess`])
//! and DMA memory ([`IdentityMapHal`], from the kernel heap, valid because
//! the kernel identity-maps RAM). virtio-drivers' PCI transport is modern
//! (virtio 1.0) only, which QEMU's `virtio-net-pci` provides
//! (`disable-legacy=on` makes it device 0x1041; the transitional 0x1000 has
//! the modern capabilities too). SeaBIOS has already assigned the BARs.

use alloc::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use core::ptr::NonNull;
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError, virtio_device_type};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

use crate::device::VirtioNetDevice;

/// PCI configuration mechanism #1: one dword of configuration space at a
/// time through the ports 0xCF8 ([`PCI_CONFIG_ADDRESS`]) and 0xCFC
/// ([`PCI_CONFIG_DATA`]), implemented by the kernel (`out`/`in`
/// instructions). No other port can be reached through it.
///
/// # Safety
/// Implementors promise that:
/// - [`Self::read`] writes `address` to 0xCF8 and then reads 0xCFC, and
///   [`Self::write`] writes `address` to 0xCF8 and then `value` to 0xCFC,
///   on a machine whose PCI configuration ports these are (QEMU's q35 and
///   pc), touching no other port and no memory;
/// - each address/data pair is atomic with respect to every other user of
///   these ports (other CPUs, interrupt handlers, the kernel's own PCI
///   code), so the data access reaches the dword `address` selected;
/// - port I/O is permitted where the code runs (ring 0, or an I/O
///   permission bitmap that allows these ports).
///
/// This crate only passes addresses built by [`config_address`] (enable
/// bit set). Through it, virtio-drivers reads the configuration of the
/// functions on bus 0 and, for the virtio-net function only, sizes its
/// BARs (all ones written, the original value restored, decoding off
/// meanwhile) and sets its command register (memory decoding, bus
/// mastering); what the device then does (DMA into buffers from
/// [`IdentityMapHal`], registers in BARs the kernel mapped) is covered by
/// the `Hal` contract.
pub unsafe trait PciConfigPorts: Clone {
    /// The configuration dword that `address` (a [`config_address`]) selects.
    fn read(&self, address: u32) -> u32;
    /// Writes the configuration dword that `address` selects.
    fn write(&self, address: u32, value: u32);
}

/// PCI configuration address port (mechanism #1).
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
/// PCI configuration data port.
pub const PCI_CONFIG_DATA: u16 = 0xcfc;

/// The value written to [`PCI_CONFIG_ADDRESS`] to reach one dword of a
/// function's configuration space.
pub fn config_address(function: DeviceFunction, register_offset: u8) -> u32 {
    0x8000_0000
        | u32::from(function.bus) << 16
        | (u32::from(function.device) & 0x1f) << 11
        | (u32::from(function.function) & 0x7) << 8
        | u32::from(register_offset & 0xfc)
}

/// PCI configuration space through ports 0xCF8/0xCFC (q35 and pc).
#[derive(Debug, Clone)]
pub struct PortConfigAccess<P: PciConfigPorts> {
    ports: P,
}

impl<P: PciConfigPorts> PortConfigAccess<P> {
    pub fn new(ports: P) -> Self {
        Self { ports }
    }
}

impl<P: PciConfigPorts> ConfigurationAccess for PortConfigAccess<P> {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        self.ports
            .read(config_address(device_function, register_offset))
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        self.ports
            .write(config_address(device_function, register_offset), data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        self.clone()
    }
}

/// The device [`open_virtio_net`] returns, for callers that store it.
pub type PciVirtioNet<H> = VirtioNetDevice<H, PciTransport>;

/// Why the network device could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioInitError {
    /// No virtio-net function on PCI bus 0.
    NotFound,
    /// The kernel could not map this memory BAR.
    MapBar { address: u64, size: u64 },
    /// The PCI transport could not be set up (missing capability, BAR not assigned...).
    Transport(VirtioPciError),
    /// The device refused initialisation or its queues.
    Device(virtio_drivers::Error),
}

impl core::fmt::Display for VirtioInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VirtioInitError::NotFound => f.write_str("no virtio-net device on PCI bus 0"),
            VirtioInitError::MapBar { address, size } => {
                write!(f, "cannot map BAR at {address:#x} ({size:#x} bytes)")
            }
            VirtioInitError::Transport(e) => write!(f, "virtio PCI transport: {e}"),
            VirtioInitError::Device(e) => write!(f, "virtio-net device: {e}"),
        }
    }
}

/// The first virtio-net function on PCI bus 0 (QEMU and SeaBIOS put
/// `-device virtio-net-pci` there on both pc and q35).
pub fn find_virtio_net<C: ConfigurationAccess>(root: &PciRoot<C>) -> Option<DeviceFunction> {
    root.enumerate_bus(0)
        .find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network))
        .map(|(function, _)| function)
}

/// Finds the virtio-net device, has the kernel map its memory BARs
/// (`map_mmio(physical address, length)` must identity-map the range
/// uncached and return false if it cannot; BARs below 4 GiB may already be
/// mapped), enables memory decoding and bus mastering, and starts the driver.
pub fn open_virtio_net<H: Hal, C: ConfigurationAccess>(
    configuration_access: C,
    mut map_mmio: impl FnMut(u64, u64) -> bool,
) -> Result<PciVirtioNet<H>, VirtioInitError> {
    let mut root = PciRoot::new(configuration_access);
    let function = find_virtio_net(&root).ok_or(VirtioInitError::NotFound)?;
    let bars = root
        .bars(function)
        .map_err(|e| VirtioInitError::Transport(VirtioPciError::from(e)))?;
    for bar in bars.iter().flatten() {
        if let Some((address, size)) = bar.memory_address_size()
            && address != 0
            && size != 0
            && !map_mmio(address, size)
        {
            return Err(VirtioInitError::MapBar { address, size });
        }
    }
    let (_status, command) = root.get_status_command(function);
    root.set_command(
        function,
        command | Command::MEMORY_SPACE | Command::BUS_MASTER,
    );
    let transport =
        PciTransport::new::<H, C>(&mut root, function).map_err(VirtioInitError::Transport)?;
    VirtioNetDevice::new(transport).map_err(VirtioInitError::Device)
}

/// DMA for a kernel that identity-maps all RAM and the PCI BARs: buffers
/// come from the global allocator and their virtual address *is* their
/// physical address. Not valid anywhere else (in particular not in a host
/// process).
#[derive(Debug)]
pub struct IdentityMapHal;

fn dma_layout(pages: usize) -> Layout {
    match Layout::from_size_align(pages.max(1).saturating_mul(PAGE_SIZE), PAGE_SIZE) {
        Ok(layout) => layout,
        // Only for absurd page counts, which virtio-drivers never asks for.
        Err(_) => handle_alloc_error(Layout::new::<[u8; PAGE_SIZE]>()),
    }
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory owned by the caller
// until `dma_dealloc`, and with the kernel's identity mapping the returned
// physical address is where the device finds that memory; `share` returns
// the identity-mapped address of a live buffer; `mmio_phys_to_virt` returns
// the identity-mapped address of a BAR the kernel mapped.
unsafe impl Hal for IdentityMapHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = dma_layout(pages);
        // SAFETY: the layout has a non-zero size (at least one page).
        let pointer = unsafe { alloc_zeroed(layout) };
        let Some(pointer) = NonNull::new(pointer) else {
            handle_alloc_error(layout)
        };
        (pointer.as_ptr() as usize as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes a pointer from `dma_alloc` with the same
        // page count, so it was allocated with this very layout.
        unsafe { dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // The transport refuses unassigned (zero) BARs before calling this,
        // so the dangling fallback is never used.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity mapping: the buffer's address is its physical address, and
        // x86 DMA is cache-coherent, so nothing needs copying.
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// A PCI configuration space in memory, by configuration address.
    #[derive(Clone, Default)]
    struct FakePorts {
        space: Rc<RefCell<BTreeMap<u32, u32>>>,
    }

    impl FakePorts {
        fn set(&self, function: DeviceFunction, offset: u8, value: u32) {
            self.space
                .borrow_mut()
                .insert(config_address(function, offset), value);
        }
    }

    // SAFETY: no port is touched: the configuration space is a map in
    // memory, so there is nothing to get wrong.
    unsafe impl PciConfigPorts for FakePorts {
        fn read(&self, address: u32) -> u32 {
            assert_eq!(address & 0x8000_0000, 0x8000_0000, "enable bit");
            // Absent functions read as all ones, like real hardware.
            self.space
                .borrow()
                .get(&address)
                .copied()
                .unwrap_or(0xffff_ffff)
        }

        fn write(&self, address: u32, value: u32) {
            assert_eq!(address & 0x8000_0000, 0x8000_0000, "enable bit");
            self.space.borrow_mut().insert(address, value);
        }
    }

    fn function(device: u8) -> DeviceFunction {
        DeviceFunction {
            bus: 0,
            device,
            function: 0,
        }
    }

    #[test]
    fn config_address_layout() {
        let f = DeviceFunction {
            bus: 1,
            device: 3,
            function: 2,
        };
        assert_eq!(config_address(f, 0x10), 0x8001_1a10);
        // The low two bits of the register offset are not part of the address.
        assert_eq!(config_address(f, 0x13), 0x8001_1a10);
    }

    #[test]
    fn finds_the_modern_virtio_net_function() {
        let ports = FakePorts::default();
        // 00:00.0 host bridge, 00:02.0 virtio-blk (modern), 00:03.0 virtio-net (modern).
        ports.set(function(0), 0, 0x1237_8086);
        ports.set(function(0), 8, 0x0600_0002);
        ports.set(function(2), 0, 0x1042_1af4);
        ports.set(function(2), 8, 0x0100_0001);
        ports.set(function(3), 0, 0x1041_1af4);
        ports.set(function(3), 8, 0x0200_0001);
        let root = PciRoot::new(PortConfigAccess::new(ports));
        assert_eq!(find_virtio_net(&root), Some(function(3)));
    }

    #[test]
    fn finds_a_transitional_virtio_net_function() {
        let ports = FakePorts::default();
        ports.set(function(4), 0, 0x1000_1af4);
        ports.set(function(4), 8, 0x0200_0000);
        let root = PciRoot::new(PortConfigAccess::new(ports));
        assert_eq!(find_virtio_net(&root), Some(function(4)));
    }

    #[test]
    fn reports_a_bus_without_virtio_net() {
        let ports = FakePorts::default();
        ports.set(function(0), 0, 0x1237_8086);
        ports.set(function(5), 0, 0x1110_1af4); // ivshmem: Red Hat vendor, not virtio
        let root = PciRoot::new(PortConfigAccess::new(ports.clone()));
        assert_eq!(find_virtio_net(&root), None);
        assert_eq!(
            open_virtio_net::<IdentityMapHal, _>(PortConfigAccess::new(ports), |_, _| true).err(),
            Some(VirtioInitError::NotFound)
        );
    }
}
