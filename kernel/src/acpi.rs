//! Just enough ACPI to find the TPM: the RSDP, the RSDT/XSDT and the `TPM2`
//! table (TCG ACPI Specification, table revision 4 carries the event-log
//! area). Every table's length is bounded and its checksum verified before
//! any field in it is trusted.

use core::fmt;

use crate::phys::{PhysRead, PhysReadError, le_u16, le_u32, le_u64};

/// Size of the common table header (`DESCRIPTION_HEADER`).
pub const SDT_HEADER_LEN: usize = 36;
/// Largest table this module will checksum.
pub const MAX_TABLE_LEN: u32 = 64 * 1024;
/// Most RSDT/XSDT entries looked at.
pub const MAX_ROOT_ENTRIES: usize = 256;
/// Largest `TPM2` table accepted (revision 4 is 76 bytes).
pub const MAX_TPM2_LEN: usize = 256;
/// The legacy BIOS area scanned for the RSDP when the loader gives none.
pub const BIOS_RSDP_AREA: (u64, u64) = (0xE_0000, 0x10_0000);

const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;

/// Why ACPI data was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// A read outside readable memory.
    Unreadable(PhysReadError),
    /// No RSDP at the given address or in the BIOS area.
    NoRsdp,
    /// A checksum did not sum to zero.
    BadChecksum {
        /// The table's signature (`RSD ` for the RSDP).
        signature: [u8; 4],
        /// Where it is.
        paddr: u64,
    },
    /// A table length below its header or above [`MAX_TABLE_LEN`].
    BadLength {
        /// The table's signature.
        signature: [u8; 4],
        /// The length field.
        length: u32,
    },
    /// A table had another signature than the one expected.
    WrongSignature([u8; 4]),
}

/// A signature as text (`?` for a byte that is not printable ASCII).
struct Signature(pub [u8; 4]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

// Display, not Debug, in the image's logs: derived Debug brings in the
// formatter's struct builders and Unicode escaping (some 12 KB).
impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "{e}"),
            Self::NoRsdp => f.write_str("no RSDP"),
            Self::BadChecksum { signature, paddr } => {
                write!(f, "{} at {paddr:#x}: bad checksum", Signature(*signature))
            }
            Self::BadLength { signature, length } => {
                write!(f, "{}: bad length {length}", Signature(*signature))
            }
            Self::WrongSignature(s) => write!(f, "unexpected signature {}", Signature(*s)),
        }
    }
}

impl From<PhysReadError> for AcpiError {
    fn from(e: PhysReadError) -> Self {
        Self::Unreadable(e)
    }
}

/// The Root System Description Pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsdp {
    /// Where it was found.
    pub paddr: u64,
    /// 0 for ACPI 1.0 (RSDT only), 2 or more when it has an XSDT.
    pub revision: u8,
    /// Physical address of the RSDT.
    pub rsdt: u32,
    /// Physical address of the XSDT (revision 2+, non-zero).
    pub xsdt: Option<u64>,
}

impl Rsdp {
    /// Parses an RSDP from its bytes (at least 20; 36 for revision 2+).
    pub fn parse(paddr: u64, bytes: &[u8]) -> Result<Self, AcpiError> {
        let v1 = bytes.get(..RSDP_V1_LEN).ok_or(AcpiError::NoRsdp)?;
        if &v1[..8] != RSDP_SIGNATURE {
            return Err(AcpiError::NoRsdp);
        }
        if sum(v1) != 0 {
            return Err(AcpiError::BadChecksum {
                signature: *b"RSD ",
                paddr,
            });
        }
        let revision = v1[15];
        let rsdt = le_u32(v1, 16).unwrap_or(0);
        let mut xsdt = None;
        if revision >= 2 {
            let v2 = bytes.get(..RSDP_V2_LEN).ok_or(AcpiError::NoRsdp)?;
            if sum(v2) != 0 {
                return Err(AcpiError::BadChecksum {
                    signature: *b"RSD ",
                    paddr,
                });
            }
            xsdt = le_u64(v2, 24).filter(|&a| a != 0);
        }
        Ok(Self {
            paddr,
            revision,
            rsdt,
            xsdt,
        })
    }

    /// Reads the RSDP at `hint` if non-zero (the PVH start info's
    /// `rsdp_paddr`), else scans the BIOS area on 16-byte boundaries.
    pub fn find(mem: &impl PhysRead, hint: u64) -> Result<Self, AcpiError> {
        if hint != 0 {
            let bytes: [u8; RSDP_V2_LEN] = read_up_to(mem, hint)?;
            return Self::parse(hint, &bytes);
        }
        let (start, end) = BIOS_RSDP_AREA;
        let mut addr = start;
        while addr < end {
            let sig: [u8; 8] = mem.read_array(addr)?;
            if &sig == RSDP_SIGNATURE {
                let bytes: [u8; RSDP_V2_LEN] = read_up_to(mem, addr)?;
                if let Ok(rsdp) = Self::parse(addr, &bytes) {
                    return Ok(rsdp);
                }
            }
            addr += 16;
        }
        Err(AcpiError::NoRsdp)
    }
}

/// Reads N bytes, or fewer if the end of readable memory is near (the RSDP
/// of revision 0 is only 20 bytes long and may sit at the end of a region).
fn read_up_to<const N: usize>(mem: &impl PhysRead, addr: u64) -> Result<[u8; N], AcpiError> {
    let mut buf = [0u8; N];
    match mem.read(addr, &mut buf) {
        Ok(()) => Ok(buf),
        Err(_) => {
            mem.read(addr, &mut buf[..RSDP_V1_LEN.min(N)])?;
            Ok(buf)
        }
    }
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, &b| acc.wrapping_add(b))
}

/// A checked table header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdtHeader {
    /// Where the table is.
    pub paddr: u64,
    /// Its four-character signature.
    pub signature: [u8; 4],
    /// Its total length, header included (bounded by [`MAX_TABLE_LEN`]).
    pub length: u32,
    /// Its revision.
    pub revision: u8,
}

impl SdtHeader {
    /// Reads the header at `paddr` and verifies the length bounds and the
    /// checksum of the whole table.
    pub fn read_checked(mem: &impl PhysRead, paddr: u64) -> Result<Self, AcpiError> {
        let h: [u8; SDT_HEADER_LEN] = mem.read_array(paddr)?;
        let signature = [h[0], h[1], h[2], h[3]];
        let length = le_u32(&h, 4).unwrap_or(0);
        if (length as usize) < SDT_HEADER_LEN || length > MAX_TABLE_LEN {
            return Err(AcpiError::BadLength { signature, length });
        }
        let mut acc = 0u8;
        let mut chunk = [0u8; 64];
        let mut off = 0u64;
        while off < u64::from(length) {
            let n = (u64::from(length) - off).min(chunk.len() as u64) as usize;
            let addr = paddr.checked_add(off).ok_or(PhysReadError {
                addr: paddr,
                len: n,
            })?;
            mem.read(addr, &mut chunk[..n])?;
            acc = acc.wrapping_add(sum(&chunk[..n]));
            off += n as u64;
        }
        if acc != 0 {
            return Err(AcpiError::BadChecksum { signature, paddr });
        }
        Ok(Self {
            paddr,
            signature,
            length,
            revision: h[8],
        })
    }
}

/// Finds the table with `signature` through the XSDT (or the RSDT when there
/// is no XSDT). Tables with a bad checksum are skipped; `Ok(None)` if absent.
pub fn find_table(
    mem: &impl PhysRead,
    rsdp: &Rsdp,
    signature: &[u8; 4],
) -> Result<Option<SdtHeader>, AcpiError> {
    let (root_paddr, expected, entry_len) = match rsdp.xsdt {
        Some(x) => (x, b"XSDT", 8usize),
        None => (u64::from(rsdp.rsdt), b"RSDT", 4usize),
    };
    let root = SdtHeader::read_checked(mem, root_paddr)?;
    if &root.signature != expected {
        return Err(AcpiError::WrongSignature(root.signature));
    }
    let entries = ((root.length as usize - SDT_HEADER_LEN) / entry_len).min(MAX_ROOT_ENTRIES);
    for i in 0..entries {
        let at = root_paddr + (SDT_HEADER_LEN + i * entry_len) as u64;
        let table = if entry_len == 8 {
            mem.read_u64(at)?
        } else {
            u64::from(mem.read_u32(at)?)
        };
        let Ok(sig) = mem.read_array::<4>(table) else {
            continue;
        };
        if &sig != signature {
            continue;
        }
        if let Ok(h) = SdtHeader::read_checked(mem, table) {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

/// The TCG event-log area of a `TPM2` table (revision 4 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogArea {
    /// LAML: the size of the area in bytes.
    pub min_len: u32,
    /// LASA: its physical address.
    pub start: u64,
}

/// The fields of the `TPM2` ACPI table that the A-VM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tpm2Table {
    /// Table revision (QEMU writes 4).
    pub revision: u8,
    /// 0 client, 1 server.
    pub platform_class: u16,
    /// Physical address of the CRB control area (base + 0x40 for CRB).
    pub control_area: u64,
    /// Start method (7 = command response buffer).
    pub start_method: u32,
    /// The event-log area, if the table is long enough to carry one and it is
    /// non-empty.
    pub log_area: Option<LogArea>,
}

/// `TPM2` start method: Command Response Buffer interface.
pub const TPM2_START_METHOD_CRB: u32 = 7;

impl Tpm2Table {
    const FIXED_LEN: usize = 52;
    const LOG_AREA_END: usize = 76;

    /// Parses a whole `TPM2` table (header included; checksum already checked
    /// by [`SdtHeader::read_checked`], or checked here when `verify_checksum`).
    pub fn parse(bytes: &[u8], verify_checksum: bool) -> Result<Self, AcpiError> {
        let signature = match bytes.get(..4) {
            Some([a, b, c, d]) => [*a, *b, *c, *d],
            _ => {
                return Err(AcpiError::BadLength {
                    signature: [0; 4],
                    length: bytes.len() as u32,
                });
            }
        };
        if &signature != b"TPM2" {
            return Err(AcpiError::WrongSignature(signature));
        }
        let length = le_u32(bytes, 4).unwrap_or(0);
        if (length as usize) < Self::FIXED_LEN || length as usize > bytes.len() {
            return Err(AcpiError::BadLength { signature, length });
        }
        let table = &bytes[..length as usize];
        if verify_checksum && sum(table) != 0 {
            return Err(AcpiError::BadChecksum {
                signature,
                paddr: 0,
            });
        }
        let field = |r: Option<u64>| r.ok_or(AcpiError::BadLength { signature, length });
        let log_area = if table.len() >= Self::LOG_AREA_END {
            let min_len = field(le_u32(table, 64).map(u64::from))? as u32;
            let start = field(le_u64(table, 68))?;
            (min_len != 0 && start != 0).then_some(LogArea { min_len, start })
        } else {
            None
        };
        Ok(Self {
            revision: table[8],
            platform_class: field(le_u16(table, 36).map(u64::from))? as u16,
            control_area: field(le_u64(table, 40))?,
            start_method: field(le_u32(table, 48).map(u64::from))? as u32,
            log_area,
        })
    }

    /// Finds and parses the `TPM2` table; `Ok(None)` if there is none.
    pub fn find(mem: &impl PhysRead, rsdp: &Rsdp) -> Result<Option<Self>, AcpiError> {
        let Some(h) = find_table(mem, rsdp, b"TPM2")? else {
            return Ok(None);
        };
        let mut buf = [0u8; MAX_TPM2_LEN];
        let len = h.length as usize;
        let bytes = buf.get_mut(..len).ok_or(AcpiError::BadLength {
            signature: h.signature,
            length: h.length,
        })?;
        mem.read(h.paddr, bytes)?;
        Self::parse(bytes, false).map(Some)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_read_as_text_with_unprintable_signature_bytes_masked() {
        let e = AcpiError::BadChecksum {
            signature: *b"TP\x00\xff",
            paddr: 0xe0000,
        };
        assert_eq!(e.to_string(), "TP?? at 0xe0000: bad checksum");
        let e = AcpiError::Unreadable(PhysReadError { addr: 0x10, len: 4 });
        assert_eq!(e.to_string(), "0x10+0x4 unreadable");
        assert_eq!(
            AcpiError::WrongSignature(*b"RSDT").to_string(),
            "unexpected signature RSDT"
        );
    }

    use super::*;
    use crate::phys::BufferMemory;
    use proptest::prelude::*;

    const BASE: u64 = 0xE_0000;

    fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        t[at] = 0u8.wrapping_sub(sum(t));
    }

    fn sdt(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; SDT_HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t[4..8].copy_from_slice(&((SDT_HEADER_LEN + body.len()) as u32).to_le_bytes());
        t[8] = revision;
        t.extend_from_slice(body);
        fix_checksum(&mut t, 9);
        t
    }

    fn tpm2_body(log: Option<(u32, u64)>) -> Vec<u8> {
        let mut b = vec![];
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0xfed4_0040u64.to_le_bytes());
        b.extend_from_slice(&TPM2_START_METHOD_CRB.to_le_bytes());
        b.extend_from_slice(&[0u8; 12]);
        if let Some((laml, lasa)) = log {
            b.extend_from_slice(&laml.to_le_bytes());
            b.extend_from_slice(&lasa.to_le_bytes());
        }
        b
    }

    /// A 128 KiB BIOS area with RSDP (rev 2) at 0xF5A40, XSDT at 0xE1000
    /// pointing at a FACP-like table and the TPM2 table.
    fn bios_area(tpm2: Option<Vec<u8>>) -> Vec<u8> {
        let mut mem = vec![0u8; 0x2_0000];
        let facp = sdt(b"FACP", 1, &[0u8; 16]);
        mem[0x2000..0x2000 + facp.len()].copy_from_slice(&facp);
        let mut entries = vec![];
        entries.extend_from_slice(&(BASE + 0x2000).to_le_bytes());
        if let Some(t) = tpm2 {
            mem[0x3000..0x3000 + t.len()].copy_from_slice(&t);
            entries.extend_from_slice(&(BASE + 0x3000).to_le_bytes());
        }
        let xsdt = sdt(b"XSDT", 1, &entries);
        mem[0x1000..0x1000 + xsdt.len()].copy_from_slice(&xsdt);
        let mut rsdp = vec![0u8; 36];
        rsdp[..8].copy_from_slice(RSDP_SIGNATURE);
        rsdp[15] = 2;
        rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
        rsdp[24..32].copy_from_slice(&(BASE + 0x1000).to_le_bytes());
        fix_checksum(&mut rsdp[..20], 8);
        fix_checksum(&mut rsdp, 32);
        mem[0x1_5a40..0x1_5a40 + 36].copy_from_slice(&rsdp);
        mem
    }

    #[test]
    fn finds_tpm2_with_log_area_by_scanning() {
        let bytes = bios_area(Some(sdt(
            b"TPM2",
            4,
            &tpm2_body(Some((0x1_0000, 0x7fff_0000))),
        )));
        let mem = BufferMemory::new(BASE, &bytes);
        let rsdp = Rsdp::find(&mem, 0).unwrap();
        assert_eq!(rsdp.paddr, 0xF_5A40);
        assert_eq!(rsdp.xsdt, Some(BASE + 0x1000));
        let t = Tpm2Table::find(&mem, &rsdp).unwrap().unwrap();
        assert_eq!(t.revision, 4);
        assert_eq!(t.control_area, 0xfed4_0040);
        assert_eq!(t.start_method, TPM2_START_METHOD_CRB);
        assert_eq!(
            t.log_area,
            Some(LogArea {
                min_len: 0x1_0000,
                start: 0x7fff_0000
            })
        );
        // The hint path gives the same result.
        assert_eq!(Rsdp::find(&mem, 0xF_5A40).unwrap(), rsdp);
    }

    #[test]
    fn tpm2_without_log_area_and_absent_tpm2() {
        let bytes = bios_area(Some(sdt(b"TPM2", 3, &tpm2_body(None))));
        let mem = BufferMemory::new(BASE, &bytes);
        let rsdp = Rsdp::find(&mem, 0).unwrap();
        assert_eq!(
            Tpm2Table::find(&mem, &rsdp).unwrap().unwrap().log_area,
            None
        );

        let bytes = bios_area(None);
        let mem = BufferMemory::new(BASE, &bytes);
        let rsdp = Rsdp::find(&mem, 0).unwrap();
        assert_eq!(Tpm2Table::find(&mem, &rsdp).unwrap(), None);
    }

    #[test]
    fn corrupt_tables_are_rejected() {
        let mut bytes = bios_area(Some(sdt(b"TPM2", 4, &tpm2_body(Some((1, 2))))));
        bytes[0x3000 + 50] ^= 0xff; // TPM2 checksum now wrong: skipped
        let mem = BufferMemory::new(BASE, &bytes);
        let rsdp = Rsdp::find(&mem, 0).unwrap();
        assert_eq!(Tpm2Table::find(&mem, &rsdp).unwrap(), None);

        bytes[0x1000 + 40] ^= 0xff; // XSDT checksum now wrong
        let mem = BufferMemory::new(BASE, &bytes);
        assert!(matches!(
            find_table(&mem, &rsdp, b"TPM2"),
            Err(AcpiError::BadChecksum {
                signature: [b'X', b'S', b'D', b'T'],
                ..
            })
        ));

        bytes[0x1_5a40 + 1] ^= 0xff; // RSDP signature gone
        let mem = BufferMemory::new(BASE, &bytes);
        assert_eq!(Rsdp::find(&mem, 0), Err(AcpiError::NoRsdp));
    }

    #[test]
    fn huge_length_is_rejected_without_reading() {
        let mut t = sdt(b"XSDT", 1, &[]);
        t[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mem = BufferMemory::new(0, &t);
        assert!(matches!(
            SdtHeader::read_checked(&mem, 0),
            Err(AcpiError::BadLength {
                length: u32::MAX,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn tpm2_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), sig in any::<bool>()) {
            let mut bytes = bytes;
            if sig && bytes.len() >= 8 {
                bytes[..4].copy_from_slice(b"TPM2");
                let l = bytes.len() as u32;
                bytes[4..8].copy_from_slice(&l.to_le_bytes());
            }
            let _ = Tpm2Table::parse(&bytes, true);
        }

        #[test]
        fn tpm2_fields_round_trip(laml in 1u32.., lasa in 1u64.., ctrl in any::<u64>()) {
            let mut body = tpm2_body(Some((laml, lasa)));
            body[4..12].copy_from_slice(&ctrl.to_le_bytes());
            let t = Tpm2Table::parse(&sdt(b"TPM2", 4, &body), true).unwrap();
            prop_assert_eq!(t.control_area, ctrl);
            prop_assert_eq!(t.log_area, Some(LogArea { min_len: laml, start: lasa }));
        }

        #[test]
        fn table_walk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), hint in 0u64..600) {
            let mem = BufferMemory::new(0, &bytes);
            if let Ok(rsdp) = Rsdp::find(&mem, hint) {
                let _ = Tpm2Table::find(&mem, &rsdp);
            }
        }
    }
}
