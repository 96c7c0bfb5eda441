//! The Mon-VM's IMA measurement list, read from `ima_measurements`: each
//! entry's PCR, its SHA-1 template hash, template name and field data. The
//! caller checks the template hash against [`ImaEntry::template_data`] and
//! anchors entries in the A-VM's TPM.
//!
//! Layout (6.1 and 6.12 alike, from FACTS-linux and BTF): the list links
//! `ima_queue_entry.later` (offset 16, after an `hlist_node`); the entry
//! pointer follows it (+32 in the queue entry). `ima_template_entry` holds
//! `pcr` (int, 0), `digests` (pointer to `tpm_digest { u16 alg_id; u8
//! digest[64]; }`, 8), `template_desc` (16), `template_data_len` (u32, 24)
//! and `template_data[]` (`{ u8 *data; u32 len; }`, 16 bytes each, 32).
//! `ima_template_desc` has `name` at 16 and `num_fields` at 32.

use alloc::vec::Vec;

use serde::Serialize;

use crate::addr::GuestVirtAddr;
use crate::list::{LIST_PREV_OFFSET, ListOptions, ListWalk, walk_list_from};
use crate::paging::VirtualMemory;

use super::structs::{
    StructError, container_of, field, read_bytes, read_cstr, read_pointer, read_u32,
};

/// Member offsets of the IMA structures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ImaOffsets {
    /// `later` in `ima_queue_entry`.
    pub queue_later: u64,
    /// `entry` (pointer) in `ima_queue_entry`.
    pub queue_entry: u64,
    pub entry_pcr: u64,
    pub entry_digests: u64,
    pub entry_template_desc: u64,
    pub entry_template_data_len: u64,
    pub entry_template_data: u64,
    /// Size of one `ima_field_data`.
    pub field_data_size: u64,
    /// `data` (pointer) and `len` (u32) in `ima_field_data`.
    pub field_data: u64,
    pub field_len: u64,
    /// Offset of `digest` in `tpm_digest`.
    pub tpm_digest_digest: u64,
    pub desc_name: u64,
    pub desc_num_fields: u64,
}

crate::words::deserialize_members!(ImaOffsets {
    words [
        queue_later, queue_entry, entry_pcr, entry_digests, entry_template_desc,
        entry_template_data_len, entry_template_data, field_data_size, field_data, field_len,
        tpm_digest_digest, desc_name, desc_num_fields
    ],
});

impl ImaOffsets {
    /// The layout of Linux 6.1 and 6.12 on x86-64.
    pub const LINUX_6: ImaOffsets = ImaOffsets {
        queue_later: 16,
        queue_entry: 32,
        entry_pcr: 0,
        entry_digests: 8,
        entry_template_desc: 16,
        entry_template_data_len: 24,
        entry_template_data: 32,
        field_data_size: 16,
        field_data: 0,
        field_len: 8,
        tpm_digest_digest: 2,
        desc_name: 16,
        desc_num_fields: 32,
    };
}

/// Bounds on what one entry may claim, and one walk of the list read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImaLimits {
    /// Fields per template (`IMA_TEMPLATE_NUM_FIELDS_MAX` is 15).
    pub max_fields: u32,
    /// Bytes per field (a path is at most 4096, a signature a few KiB).
    pub max_field_len: u32,
    /// Template name length (e.g. `ima-sig`).
    pub max_name_len: usize,
    /// Template data of one entry (`template_data_len`: every field with
    /// its length word). A verifier parses at most 32 KiB; without this
    /// bound the fields could claim `max_fields * max_field_len`, all read
    /// from the same guest bytes.
    pub max_data_len: u32,
    /// Template data one walk of the list reads in all: the entries could
    /// all be one entry, read again and again. Twice what the A-VM's
    /// measurement log holds.
    pub max_list_data: u64,
}

impl Default for ImaLimits {
    fn default() -> Self {
        ImaLimits {
            max_fields: 15,
            max_field_len: 64 << 10,
            max_name_len: 32,
            max_data_len: 64 << 10,
            max_list_data: 32 << 20,
        }
    }
}

/// One measurement as it is in the Mon-VM's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImaEntry {
    /// Where it is linked: the `later` list node of its `ima_queue_entry`.
    pub node: GuestVirtAddr,
    /// The `ima_template_entry`.
    pub address: GuestVirtAddr,
    pub pcr: u32,
    /// The SHA-1 template hash (first digest bank).
    pub template_hash: [u8; 20],
    pub template_name: Vec<u8>,
    /// Field data in template order (for `ima-ng`: d-ng, n-ng; `ima-sig`
    /// adds sig).
    pub fields: Vec<Vec<u8>>,
}

impl ImaEntry {
    /// The template data as IMA hashes it (and as the binary log carries
    /// it): each field as a little-endian u32 length and its bytes.
    pub fn template_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

/// Reads the entry linked at `node` (the `later` list node of an
/// `ima_queue_entry`).
pub fn read_queued<V: VirtualMemory + ?Sized>(
    mem: &V,
    node: GuestVirtAddr,
    o: &ImaOffsets,
    limits: &ImaLimits,
) -> Result<ImaEntry, StructError> {
    let queue = container_of(node, o.queue_later)?;
    let entry =
        read_pointer(mem, queue, o.queue_entry)?.ok_or(StructError::Null { what: "ima entry" })?;
    read_entry(mem, node, entry, o, limits)
}

/// Why a known entry did not read again as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RereadError {
    /// It is no longer linked right after the entry known before it (or the
    /// head, for the first): an entry was removed or inserted there, or the
    /// entry itself was taken out of the list.
    Relinked,
    /// Its links or its structures do not read.
    Struct(StructError),
}

impl core::fmt::Display for RereadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RereadError::Relinked => f.write_str("relinked"),
            RereadError::Struct(e) => write!(f, "unreadable: {e}"),
        }
    }
}

impl From<StructError> for RereadError {
    fn from(e: StructError) -> Self {
        RereadError::Struct(e)
    }
}

/// Reads the known entry at `node` again, checking first that the list
/// still joins it to `prev` (the node of the entry known before it, or the
/// list head for the first) both ways. A watcher that re-reads every known
/// entry this way, each against its predecessor, has checked every link
/// from the head to the last one: an entry removed between two known ones
/// breaks the pair after it, wherever its own stale links point.
pub fn reread_linked<V: VirtualMemory + ?Sized>(
    mem: &V,
    prev: GuestVirtAddr,
    node: GuestVirtAddr,
    o: &ImaOffsets,
    limits: &ImaLimits,
) -> Result<ImaEntry, RereadError> {
    let forward = read_u64_at(mem, prev, 0)?;
    let back = read_u64_at(mem, node, LIST_PREV_OFFSET)?;
    if forward != node.value() || back != prev.value() {
        return Err(RereadError::Relinked);
    }
    Ok(read_queued(mem, node, o, limits)?)
}

fn read_u64_at<V: VirtualMemory + ?Sized>(
    mem: &V,
    base: GuestVirtAddr,
    offset: u64,
) -> Result<u64, StructError> {
    Ok(mem.read_virt_u64(field(base, offset)?)?)
}

/// Reads the `ima_template_entry` at `entry`, linked at `node`.
fn read_entry<V: VirtualMemory + ?Sized>(
    mem: &V,
    node: GuestVirtAddr,
    entry: GuestVirtAddr,
    o: &ImaOffsets,
    limits: &ImaLimits,
) -> Result<ImaEntry, StructError> {
    let pcr = read_u32(mem, entry, o.entry_pcr)?;
    let digests = read_pointer(mem, entry, o.entry_digests)?.ok_or(StructError::Null {
        what: "ima digests",
    })?;
    let mut template_hash = [0u8; 20];
    read_bytes(mem, digests, o.tpm_digest_digest, &mut template_hash)?;
    let desc = read_pointer(mem, entry, o.entry_template_desc)?.ok_or(StructError::Null {
        what: "ima template descriptor",
    })?;
    let name = read_pointer(mem, desc, o.desc_name)?.ok_or(StructError::Null {
        what: "ima template name",
    })?;
    let template_name = read_cstr(mem, name, limits.max_name_len)?;
    let num_fields = read_u32(mem, desc, o.desc_num_fields)?;
    if num_fields > limits.max_fields {
        return Err(StructError::TooLarge {
            what: "ima template fields",
            value: u64::from(num_fields),
            max: u64::from(limits.max_fields),
        });
    }
    let data_len = read_u32(mem, entry, o.entry_template_data_len)?;
    if data_len > limits.max_data_len {
        return Err(StructError::TooLarge {
            what: "ima template data length",
            value: u64::from(data_len),
            max: u64::from(limits.max_data_len),
        });
    }
    let mut fields = Vec::with_capacity(num_fields as usize);
    let mut total = 0u64;
    for i in 0..u64::from(num_fields) {
        let f = field(field(entry, o.entry_template_data)?, i * o.field_data_size)?;
        let len = read_u32(mem, f, o.field_len)?;
        // Nothing is read beyond what template_data_len claims.
        if len > limits.max_field_len || total + 4 + u64::from(len) > u64::from(data_len) {
            return Err(StructError::TooLarge {
                what: "ima field length",
                value: u64::from(len),
                max: u64::from(limits.max_field_len.min(data_len)),
            });
        }
        let mut bytes = alloc::vec![0u8; len as usize];
        if len > 0 {
            let data = read_pointer(mem, f, o.field_data)?.ok_or(StructError::Null {
                what: "ima field data",
            })?;
            mem.read_virt(data, &mut bytes)?;
        }
        total += 4 + u64::from(len);
        fields.push(bytes);
    }
    // template_data_len counts each field's length word and bytes.
    if total != u64::from(data_len) {
        return Err(StructError::TooLarge {
            what: "ima template data length mismatch",
            value: u64::from(data_len),
            max: total,
        });
    }
    Ok(ImaEntry {
        node,
        address: entry,
        pcr,
        template_hash,
        template_name,
        fields,
    })
}

/// Iterator over the measurement list.
#[derive(Debug)]
pub struct ImaEntries<'a, V: ?Sized> {
    mem: &'a V,
    offsets: ImaOffsets,
    limits: ImaLimits,
    list: ListWalk<'a, V>,
    /// Template data read so far.
    data: u64,
    done: bool,
}

/// Walks at most `max` entries of the list headed at `ima_measurements`
/// (checking `prev` links), reading at most `limits.max_list_data` of
/// template data. Ends after the first error, which it yields.
pub fn measurements<'a, V: VirtualMemory + ?Sized>(
    mem: &'a V,
    ima_measurements: GuestVirtAddr,
    offsets: &ImaOffsets,
    limits: &ImaLimits,
    max: usize,
) -> ImaEntries<'a, V> {
    entries_after(
        mem,
        ima_measurements,
        ima_measurements,
        offsets,
        limits,
        max,
    )
}

/// As [`measurements`], the entries after the one linked at `after` (the
/// list head: all of them): what was appended since a watcher took the
/// list up to there. The walk checks `after`'s link to the next node both
/// ways, so an `after` taken out of the list ends it with an error (its
/// stale `next` is not followed unnoticed).
pub fn entries_after<'a, V: VirtualMemory + ?Sized>(
    mem: &'a V,
    ima_measurements: GuestVirtAddr,
    after: GuestVirtAddr,
    offsets: &ImaOffsets,
    limits: &ImaLimits,
    max: usize,
) -> ImaEntries<'a, V> {
    ImaEntries {
        mem,
        offsets: *offsets,
        limits: *limits,
        list: walk_list_from(
            mem,
            ima_measurements,
            after,
            ListOptions::new(max).with_prev_check(),
        ),
        data: 0,
        done: false,
    }
}

impl<V: VirtualMemory + ?Sized> Iterator for ImaEntries<'_, V> {
    type Item = Result<ImaEntry, StructError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let o = &self.offsets;
        let result = match self.list.next()? {
            Ok(node) => read_queued(self.mem, node, o, &self.limits).and_then(|entry| {
                let len = entry.fields.iter().map(|f| 4 + f.len() as u64).sum::<u64>();
                self.data = self.data.saturating_add(len);
                if self.data > self.limits.max_list_data {
                    return Err(StructError::TooLarge {
                        what: "ima list template data",
                        value: self.data,
                        max: self.limits.max_list_data,
                    });
                }
                Ok(entry)
            }),
            Err(e) => Err(e.into()),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}
