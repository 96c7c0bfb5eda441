//! The A-VM's own measurement log: every measurement is extended into a
//! PCR and appended as an `ima-ng` record (the IMA binary format, so
//! `evmctl ima_measurement` replays it against the quoted PCRs). What is
//! extended is SHA-256 of the record's template data, as IMA does.

use alloc::vec::Vec;
use avm_attest::ima;
use sha2::{Digest, Sha256};

use crate::tpm_boot::KernelTpm;

/// PCR of the A-VM's configuration (profile, policy), measured before use.
pub const CONFIG_PCR: u8 = 8;

/// The log, in binary IMA form.
#[derive(Debug, Default)]
pub struct MeasurementLog {
    bytes: Vec<u8>,
    records: usize,
}

impl MeasurementLog {
    /// Extends `pcr` with the record of `digest` named `name` and appends
    /// the record. The log only grows once the TPM took the extend, so it
    /// never claims what the PCR does not hold.
    pub fn measure(
        &mut self,
        tpm: &mut KernelTpm,
        pcr: u8,
        digest: &[u8; 32],
        name: &[u8],
    ) -> Result<(), tpm_crb::TpmError> {
        let record = ima::ng_record(u32::from(pcr), digest, name);
        let data = ima::ng_template_data("sha256", digest, name, None);
        let extend: [u8; 32] = Sha256::digest(&data).into();
        tpm.pcr_extend(pcr, &extend)?;
        self.bytes.extend_from_slice(&record);
        self.records += 1;
        Ok(())
    }

    /// Anchors a record made elsewhere (a Mon-VM IMA entry) as it is:
    /// extends its PCR with what IMA extends for it and appends it.
    pub fn anchor(
        &mut self,
        tpm: &mut KernelTpm,
        record: &ima::ImaRecord<'_>,
    ) -> Result<(), tpm_crb::TpmError> {
        let pcr = u8::try_from(record.pcr).unwrap_or(u8::MAX);
        tpm.pcr_extend(pcr, &record.sha256_extend_value())?;
        record.emit(&mut self.bytes);
        self.records += 1;
        Ok(())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn records(&self) -> usize {
        self.records
    }
}
