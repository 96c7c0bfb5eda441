//! The loaded-module list from `modules`: name, core text range, taints.

use serde::Serialize;

use crate::addr::GuestVirtAddr;
use crate::list::{ListOptions, ListWalk, walk_list};
use crate::paging::VirtualMemory;

use super::structs::{
    StructError, container_of, heapless_str::FixedStr, read_char_array, read_u32, read_u64,
};

/// `MODULE_NAME_LEN` on 64-bit kernels.
pub const MODULE_NAME_LEN: usize = 56;

/// Member offsets of `struct module` (from BTF). The text range moved
/// between kernels: `core_layout.base` / `core_layout.text_size` on 6.1,
/// `mem[MOD_TEXT].base` / `mem[MOD_TEXT].size` on 6.4+; the profile names
/// the right pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleOffsets {
    pub state: u64,
    /// `list` (struct list_head).
    pub list: u64,
    /// `name` (`char[56]`).
    pub name: u64,
    /// Pointer to the core text.
    pub text_base: u64,
    /// Size of the core text (unsigned int).
    pub text_size: u64,
    /// `taints` (unsigned long).
    pub taints: u64,
}

crate::words::deserialize_members!(ModuleOffsets {
    words [
        state, list, name, text_base, text_size, taints
    ],
});

/// One module as read from guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub address: GuestVirtAddr,
    pub state: u32,
    pub name: FixedStr<MODULE_NAME_LEN>,
    pub text_base: u64,
    pub text_size: u32,
    pub taints: u64,
}

pub fn read_module<V: VirtualMemory + ?Sized>(
    mem: &V,
    module: GuestVirtAddr,
    offsets: &ModuleOffsets,
) -> Result<Module, StructError> {
    Ok(Module {
        address: module,
        state: read_u32(mem, module, offsets.state)?,
        name: read_char_array::<V, MODULE_NAME_LEN>(mem, module, offsets.name)?,
        text_base: read_u64(mem, module, offsets.text_base)?,
        text_size: read_u32(mem, module, offsets.text_size)?,
        taints: read_u64(mem, module, offsets.taints)?,
    })
}

/// Iterator over the modules on the list headed at `modules`.
#[derive(Debug)]
pub struct Modules<'a, V: ?Sized> {
    mem: &'a V,
    offsets: ModuleOffsets,
    list: ListWalk<'a, V>,
    done: bool,
}

/// Walks at most `max` modules from the `modules` list head (checking
/// `prev` links). Ends after the first error, which it yields.
pub fn modules<'a, V: VirtualMemory + ?Sized>(
    mem: &'a V,
    modules_head: GuestVirtAddr,
    offsets: &ModuleOffsets,
    max: usize,
) -> Modules<'a, V> {
    Modules {
        mem,
        offsets: *offsets,
        list: walk_list(mem, modules_head, ListOptions::new(max).with_prev_check()),
        done: false,
    }
}

impl<V: VirtualMemory + ?Sized> Iterator for Modules<'_, V> {
    type Item = Result<Module, StructError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = match self.list.next()? {
            Ok(node) => container_of(node, self.offsets.list)
                .and_then(|m| read_module(self.mem, m, &self.offsets)),
            Err(e) => Err(e.into()),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}
