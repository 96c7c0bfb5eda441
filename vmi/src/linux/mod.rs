//! The Linux layer: where the kernel is (KASLR) and its own address space,
//! from guest memory alone, and the kernel's lists (tasks, modules, the IMA
//! measurement list) read with member offsets from the profile (BTF of the
//! package's vmlinux). Link-time facts (symbol addresses from kallsyms, the
//! banner) come from the profile too.

pub mod checks;
pub mod crossview;
pub mod ima;
pub mod kaslr;
pub mod liveness;
pub mod mapping;
pub mod modules;
pub mod path;
pub mod structs;
pub mod survey;
pub mod tasks;
pub mod text;
pub mod top_tables;

pub use checks::{
    CheckError, Gate, IdtFinding, IdtFindingKind, IdtReport, SyscallFinding, SyscallReport, Target,
    idt, syscall_table,
};
pub use ima::{ImaEntry, ImaLimits, ImaOffsets, measurements};
pub use kaslr::{KaslrError, KernelImage, KernelLocation, locate_kernel};
pub use mapping::{MappingError, check_image_mapping};
pub use modules::{Module, ModuleOffsets, modules};
pub use path::{
    KernelPath, MAX_COMPONENTS, MAX_MOUNTS, MAX_NAME_LEN, MAX_PATH_LEN, PathError, PathOffsets,
    d_path, exe_path, file_path, task_exe,
};
pub use structs::StructError;
pub use survey::{KernelView, Survey, SurveyLimits, Walked, survey, view};
pub use tasks::{CredOffsets, Task, TaskOffsets, tasks};

/// Lowest address of the kernel's half of the address space: where every
/// pointer to kernel data lies.
pub(crate) const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

#[cfg(test)]
mod tests;
