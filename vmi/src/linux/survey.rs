//! A first look at a running kernel from its RAM alone: where it is (KASLR),
//! its paging, and its task, module and IMA lists, with a profile of its
//! build. The A-VM runs this at start-up (and logs it); the checks of later
//! steps start from the same [`KernelView`].
//!
//! Everything read is an allegation of the Mon-VM: each list is walked with
//! a bound, and a list that fails to walk is reported with its error, not
//! trusted up to where it broke.

use alloc::vec::Vec;

use crate::addr::GuestVirtAddr;
use crate::memory::{GuestMemory, RamRegion};
use crate::paging::{AddressSpace, PagingMode};
use crate::profile::KernelProfile;

use super::ima::{ImaEntry, ImaLimits, measurements};
use super::kaslr::{KaslrError, KernelLocation, locate_kernel};
use super::modules::{Module, modules};
use super::structs::StructError;
use super::tasks::{Task, tasks};

/// Bounds on the lists a survey walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SurveyLimits {
    pub max_tasks: usize,
    pub max_modules: usize,
    pub max_ima_entries: usize,
    /// Heap the kept IMA entries may take (their bytes and an estimate of
    /// their bookkeeping): the entries are kept, so their count times the
    /// size one entry may have would be no bound.
    pub max_ima_bytes: usize,
}

impl Default for SurveyLimits {
    fn default() -> Self {
        // Far above a real Mon-VM (hundreds of tasks, tens of modules,
        // thousands of IMA entries), far below what could stall the A-VM.
        SurveyLimits {
            max_tasks: 32_768,
            max_modules: 4_096,
            max_ima_entries: 1 << 20,
            // What the A-VM's measurement log holds at most.
            max_ima_bytes: 16 << 20,
        }
    }
}

/// The running kernel as located in RAM, with its own address space.
#[derive(Debug)]
pub struct KernelView<'m, M: ?Sized> {
    pub location: KernelLocation,
    pub paging: PagingMode,
    pub space: AddressSpace<'m, M>,
}

/// Locates the kernel of `profile` in `memory` and builds its address
/// space (rooted at `init_top_pgt`, no CPU state needed).
pub fn view<'m, M: GuestMemory + ?Sized>(
    memory: &'m M,
    regions: &[RamRegion],
    profile: &KernelProfile,
) -> Result<KernelView<'m, M>, KaslrError> {
    let location = locate_kernel(memory, regions, &profile.kernel_image())?;
    let paging = location.paging_mode(memory, profile.symbols.pgdir_shift)?;
    let space = location.address_space(memory, profile.symbols.init_top_pgt, paging)?;
    Ok(KernelView {
        location,
        paging,
        space,
    })
}

/// What one walk of a kernel list gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walked<T> {
    pub items: Vec<T>,
    /// The walk stopped at this error (the items before it are listed, but
    /// the list as a whole is not trustworthy).
    pub error: Option<StructError>,
}

impl<T> Walked<T> {
    fn collect(iter: impl Iterator<Item = Result<T, StructError>>) -> Self {
        let mut items = Vec::new();
        for item in iter {
            match item {
                Ok(item) => items.push(item),
                Err(e) => {
                    return Walked {
                        items,
                        error: Some(e),
                    };
                }
            }
        }
        Walked { items, error: None }
    }

    /// The items, if the whole list walked.
    pub fn complete(&self) -> Option<&[T]> {
        self.error.is_none().then_some(self.items.as_slice())
    }
}

/// The kernel's lists, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Survey {
    pub location: KernelLocation,
    pub paging: PagingMode,
    pub tasks: Walked<Task>,
    pub modules: Walked<Module>,
    pub ima: Walked<ImaEntry>,
}

/// The runtime address of a link-time kernel-image symbol.
fn runtime(view_location: &KernelLocation, link_va: u64) -> Result<GuestVirtAddr, KaslrError> {
    view_location
        .runtime_of(link_va)
        .ok_or(KaslrError::BadProfile)
}

/// Locates the kernel and walks its task, module and IMA lists.
pub fn survey<M: GuestMemory + ?Sized>(
    memory: &M,
    regions: &[RamRegion],
    profile: &KernelProfile,
    limits: &SurveyLimits,
) -> Result<Survey, KaslrError> {
    let view = view(memory, regions, profile)?;
    let symbols = &profile.symbols;
    let offsets = &profile.offsets;
    let init_task = runtime(&view.location, symbols.init_task)?;
    let tasks = match tasks(
        &view.space,
        init_task,
        &offsets.task,
        &offsets.cred,
        limits.max_tasks,
    ) {
        Ok(walk) => Walked::collect(walk),
        Err(e) => Walked {
            items: Vec::new(),
            error: Some(e),
        },
    };
    let modules_head = runtime(&view.location, symbols.modules)?;
    let modules = Walked::collect(modules(
        &view.space,
        modules_head,
        &offsets.module,
        limits.max_modules,
    ));
    let ima_head = runtime(&view.location, symbols.ima_measurements)?;
    let mut ima_bytes = 0usize;
    let ima = Walked::collect(
        measurements(
            &view.space,
            ima_head,
            &offsets.ima,
            &ImaLimits::default(),
            limits.max_ima_entries,
        )
        .map(|entry| {
            let entry = entry?;
            let vec = core::mem::size_of::<Vec<u8>>();
            ima_bytes = entry.fields.iter().fold(
                ima_bytes
                    .saturating_add(core::mem::size_of::<ImaEntry>())
                    .saturating_add(entry.template_name.len()),
                |n, f| n.saturating_add(vec + f.len()),
            );
            if ima_bytes > limits.max_ima_bytes {
                return Err(StructError::TooLarge {
                    what: "ima entries kept (bytes)",
                    value: ima_bytes as u64,
                    max: limits.max_ima_bytes as u64,
                });
            }
            Ok(entry)
        }),
    );
    Ok(Survey {
        location: view.location,
        paging: view.paging,
        tasks,
        modules,
        ima,
    })
}
