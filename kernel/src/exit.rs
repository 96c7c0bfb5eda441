//! How the A-VM ends under QEMU: the value written to the `isa-debug-exit`
//! port. QEMU exits with status `(value << 1) | 1`; the launcher and the
//! integration tests rely on these numbers.

/// Value written to `isa-debug-exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Finished as asked (`exit-after-report`): status 33.
    Success = 0x10,
    /// Panic or CPU exception: status 35.
    Panic = 0x11,
    /// No TPM (no CRB interface): status 37.
    NoTpm = 0x12,
    /// The TPM failed a command: status 39.
    TpmFailure = 0x13,
}

impl ExitCode {
    /// The QEMU process exit status this code produces.
    pub fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_launcher_contract() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        assert_eq!(ExitCode::Panic.qemu_status(), 35);
        assert_eq!(ExitCode::NoTpm.qemu_status(), 37);
        assert_eq!(ExitCode::TpmFailure.qemu_status(), 39);
    }
}
