//! avm-qemu library
