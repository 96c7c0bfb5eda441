//! Reference values a verifier appraises evidence against.
//!
//! The verifier keeps them as TOML (see `docs/policy.md`); digests are hex
//! strings so a person can read and edit the file:
//!
//! ```toml
//! version = 1
//! avm_image_sha256 = ["8b6a76f6...667e"]
//!
//! [[firmware_events]]
//! pcr = 0
//! event_type = 8
//! sha256 = "f8d2668f...1f71"
//! description = "SeaBIOS"
//!
//! [[firmware_sequences]]
//! events = [{ pcr = 0, event_type = 8, sha256 = "f8d2668f...1f71" }, ...]
//! ```
//!
//! What the firmware part promises: every extended event in PCRs 0-7 is a
//! known one (`firmware_events`, which also names an unknown event), and
//! PCR by PCR the events come in exactly the order and number of one
//! learned boot (`firmware_sequences`): a repeated event, a missing
//! separator or an event extended after firmware is refused even if each
//! event on its own is known.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::eventlog::EventLog;
use crate::monitor_policy::MonitorPolicy;

/// Version of the policy format below.
pub const POLICY_VERSION: u32 = 1;

/// PCRs that firmware measures into (PC Client: 0-7).
pub const FIRMWARE_PCRS: core::ops::RangeInclusive<u32> = 0..=7;

/// Longest description [`ReferenceValues::learn_from`] copies from event data.
const MAX_DESCRIPTION_LEN: usize = 64;

/// One allowed firmware measurement: this digest may be extended into this
/// PCR with this event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareEventRef {
    pub pcr: u32,
    pub event_type: u32,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
    /// For people only (the event data if it was text); never compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl FirmwareEventRef {
    /// Whether an event with these fields is the one this reference allows.
    pub fn matches(&self, pcr: u32, event_type: u32, sha256: &[u8; 32]) -> bool {
        self.pcr == pcr && self.event_type == event_type && &self.sha256 == sha256
    }
}

/// The reference values of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValues {
    /// Format version ([`POLICY_VERSION`]).
    #[serde(default = "default_version")]
    pub version: u32,
    /// SHA-256 digests of the A-VM images allowed to run (H-CRTM in PCR 0).
    #[serde(default, with = "hex32_list")]
    pub avm_image_sha256: Vec<[u8; 32]>,
    /// Every measurement firmware may make into PCRs 0-7, as learned from a
    /// known-good boot. An empty list means "not known yet".
    #[serde(default)]
    pub firmware_events: Vec<FirmwareEventRef>,
    /// The firmware events of each learned boot, in log order: a node's
    /// PCRs 0-7 must hold the events of one of them, PCR by PCR, in order
    /// and number. An empty list means "not known yet".
    #[serde(default)]
    pub firmware_sequences: Vec<FirmwareSequence>,
    /// Kernel profiles the A-VM may introspect a Mon-VM with (PCR 8), by
    /// the SHA-256 of the profile file (`avm-verifier profile`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monvm_profiles: Vec<ProfileRef>,
    /// The files the Mon-VM may measure (its IMA entries, PCR 10): a
    /// Keylime-style allowlist of paths with their allowed SHA-256 file
    /// digests, and excludes. Empty (no digests, no excludes) means "not
    /// known": a node with a Mon-VM is then `reference-values-missing`.
    #[serde(default, skip_serializing_if = "FileAllowlist::is_empty")]
    pub monvm_files: FileAllowlist,
    /// The kernel modules the Mon-VM may have loaded, by name and
    /// (optionally) file digest. Appraised only when `monvm_files` is
    /// known; an empty list then allows no module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monvm_modules: Vec<ModuleRef>,
    /// The digests of the Mon-VM kernel's boot-time self-patching
    /// (`monvm:boot_patches`), learned per kernel profile: they depend on
    /// the CPU model the Mon-VM runs on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monvm_boot_patches: Vec<BootPatchesRef>,
    /// How long a violation the A-VM recorded counts: `sticky` (the
    /// default: until the A-VM is re-attested from scratch, i.e. its TPM
    /// restarts) or `current` (until the A-VM records the area clean
    /// again, or the Mon-VM reboots).
    #[serde(default, skip_serializing_if = "ViolationMemory::is_default")]
    pub monvm_violations: ViolationMemory,
    /// The slowest check periods a node's A-VM may watch its Mon-VM with
    /// (its measured `avm-config:monitor-policy`), and the set-uid
    /// programs it may let run as root, in the monitor-policy text form
    /// (`syscall_idt=5,text=1000,ima=500,cross=500`, optionally
    /// `,setuid=/usr/bin/sudo:...`). Absent: the A-VM's defaults (no
    /// set-uid program). `policy learn` widens it to what a known-good
    /// node uses.
    #[serde(
        default,
        with = "monitor_policy_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub monvm_monitor_max: Option<MonitorPolicy>,
}

/// How long a Mon-VM violation in the A-VM's log keeps a node untrusted
/// (`monvm_violations`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViolationMemory {
    /// Every violation ever recorded in this A-VM's log counts: a Mon-VM
    /// that was compromised once stays untrusted (what it did meanwhile
    /// cannot be undone by an area turning clean), until the node is
    /// re-attested from scratch. Fail closed.
    #[default]
    Sticky,
    /// Only what holds now counts: a violation event whose area the A-VM
    /// later recorded clean, and everything recorded before the Mon-VM's
    /// last reboot (`monvm:event:N:reboot`), except malformed records,
    /// no longer makes the node untrusted. The events stay in the log and
    /// in the verifier's history.
    Current,
}

impl ViolationMemory {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Allowed Mon-VM files, as Keylime's runtime policy has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAllowlist {
    /// Path (exactly as IMA records it) to its allowed SHA-256 digests.
    #[serde(default)]
    pub digests: BTreeMap<String, DigestList>,
    /// Regular expressions (Rust `regex` syntax, matched from the start of
    /// the path as Keylime's `re.match` does) of paths that are not
    /// appraised. The verifier compiles them; `attest` itself only takes a
    /// matcher.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
}

impl FileAllowlist {
    /// Whether nothing is known (no path, no exclude).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty() && self.excludes.is_empty()
    }

    /// Allows `digest` for `path` (no duplicates); true if it was new.
    pub fn allow(&mut self, path: &str, digest: [u8; 32]) -> bool {
        let list = &mut self.digests.entry(String::from(path)).or_default().0;
        if list.contains(&digest) {
            return false;
        }
        list.push(digest);
        true
    }

    /// The digests allowed for `path`, if it is listed.
    pub fn digests_of(&self, path: &[u8]) -> Option<&[[u8; 32]]> {
        let path = core::str::from_utf8(path).ok()?;
        self.digests.get(path).map(|d| d.0.as_slice())
    }

    /// Number of allowed (path, digest) pairs.
    pub fn len(&self) -> usize {
        self.digests.values().map(|d| d.0.len()).sum()
    }
}

/// A list of SHA-256 digests, hex in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DigestList(#[serde(with = "hex32_list")] pub Vec<[u8; 32]>);

/// An allowed Mon-VM kernel module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    /// The module's name as the kernel lists it (`dummy`, `tcp_bic`).
    pub name: String,
    /// Allowed SHA-256 digests of its file (its IMA entry). Empty: any
    /// file of that name that IMA measured.
    #[serde(default, with = "hex32_list", skip_serializing_if = "Vec::is_empty")]
    pub sha256: Vec<[u8; 32]>,
}

/// The learned boot-patch digests of one Mon-VM kernel profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPatchesRef {
    /// The profile (SHA-256 of the profile file, as in `monvm_profiles`).
    #[serde(with = "hex32")]
    pub profile_sha256: [u8; 32],
    /// Every `monvm:boot_patches` digest learned for it (one per CPU model
    /// the Mon-VM was learned on).
    #[serde(with = "hex32_list")]
    pub sha256: Vec<[u8; 32]>,
}

/// An allowed Mon-VM kernel profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRef {
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
    /// The kernel release it describes (for people and reports).
    pub release: String,
}

/// The extended firmware events (PCRs 0-7) of one known-good boot, in log
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareSequence {
    pub events: Vec<FirmwareEventRef>,
}

impl FirmwareSequence {
    /// The extended firmware events of `log`, in order (descriptions
    /// left out: the events themselves are in `firmware_events`).
    pub fn of_log(log: &EventLog) -> Self {
        Self {
            events: firmware_events_of(log)
                .map(|(_, event, sha256)| FirmwareEventRef {
                    pcr: event.pcr_index,
                    event_type: event.event_type,
                    sha256,
                    description: None,
                })
                .collect(),
        }
    }

    /// The events of one PCR, in order.
    pub fn for_pcr(&self, pcr: u32) -> impl Iterator<Item = &FirmwareEventRef> {
        self.events.iter().filter(move |e| e.pcr == pcr)
    }
}

/// The extended SHA-256 firmware events (PCRs 0-7) of a log, with their
/// record index and digest, in log order.
pub fn firmware_events_of(
    log: &EventLog,
) -> impl Iterator<Item = (usize, &crate::eventlog::Event, [u8; 32])> {
    log.events.iter().enumerate().filter_map(|(index, event)| {
        if !event.is_extended() || !FIRMWARE_PCRS.contains(&event.pcr_index) {
            return None;
        }
        event.sha256().map(|digest| (index, event, digest))
    })
}

/// What [`ReferenceValues::learn`] added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// New entries in `firmware_events`.
    pub events: usize,
    /// Whether the log's sequence was new.
    pub sequence: bool,
}

fn default_version() -> u32 {
    POLICY_VERSION
}

impl Default for ReferenceValues {
    fn default() -> Self {
        Self {
            version: POLICY_VERSION,
            avm_image_sha256: Vec::new(),
            firmware_events: Vec::new(),
            firmware_sequences: Vec::new(),
            monvm_profiles: Vec::new(),
            monvm_files: FileAllowlist::default(),
            monvm_modules: Vec::new(),
            monvm_boot_patches: Vec::new(),
            monvm_violations: ViolationMemory::Sticky,
            monvm_monitor_max: None,
        }
    }
}

impl ReferenceValues {
    /// Reference values that allow one A-VM image and nothing learned yet.
    pub fn for_image(image_sha256: [u8; 32]) -> Self {
        Self {
            avm_image_sha256: alloc::vec![image_sha256],
            ..Self::default()
        }
    }

    /// Adds an allowed image digest (no duplicates).
    pub fn allow_image(&mut self, image_sha256: [u8; 32]) {
        if !self.avm_image_sha256.contains(&image_sha256) {
            self.avm_image_sha256.push(image_sha256);
        }
    }

    /// Adds every extended firmware event (PCRs 0-7, SHA-256 bank) of a
    /// known-good log to the allowed set, without duplicates, and the
    /// log's sequence of them to the allowed sequences; returns how many
    /// events were new. The H-CRTM measurement of the A-VM image has no
    /// log record, so it is never learned here: images are allowed by
    /// digest ([`Self::allow_image`]).
    pub fn learn_from(&mut self, log: &EventLog) -> usize {
        self.learn(log).events
    }

    /// Allows a module (by name, and by digest if given); true if the
    /// policy changed. A module already allowed by name alone stays so.
    pub fn allow_module(&mut self, name: &str, digest: Option<[u8; 32]>) -> bool {
        match self.monvm_modules.iter_mut().find(|m| m.name == name) {
            Some(known) => match digest {
                Some(d) if !known.sha256.is_empty() && !known.sha256.contains(&d) => {
                    known.sha256.push(d);
                    true
                }
                _ => false,
            },
            None => {
                self.monvm_modules.push(ModuleRef {
                    name: String::from(name),
                    sha256: digest.into_iter().collect(),
                });
                true
            }
        }
    }

    /// The slowest monitor periods allowed (the A-VM's defaults unless
    /// the policy says otherwise).
    pub fn monitor_max(&self) -> MonitorPolicy {
        self.monvm_monitor_max.clone().unwrap_or_default()
    }

    /// Widens the allowed monitor periods and set-uid programs to cover
    /// `used`; true if any period grew or any program was added. Programs
    /// beyond [`crate::monitor_policy::MAX_SETUID_PROGRAMS`] in all are
    /// not added (the text form holds no more): attestations keep naming
    /// them.
    pub fn allow_monitor_policy(&mut self, used: &MonitorPolicy) -> bool {
        let max = self.monitor_max();
        let mut setuid = max.setuid.clone();
        for path in &used.setuid {
            if !setuid.contains(path) && setuid.len() < crate::monitor_policy::MAX_SETUID_PROGRAMS {
                setuid.push(path.clone());
            }
        }
        setuid.sort_unstable();
        let widened = MonitorPolicy {
            syscall_idt_ms: max.syscall_idt_ms.max(used.syscall_idt_ms),
            text_ms: max.text_ms.max(used.text_ms),
            ima_ms: max.ima_ms.max(used.ima_ms),
            cross_ms: max.cross_ms.max(used.cross_ms),
            setuid,
        };
        if widened == max {
            return false;
        }
        self.monvm_monitor_max = Some(widened);
        true
    }

    /// Allows a boot-patch digest for a profile; true if it was new.
    pub fn allow_boot_patches(&mut self, profile_sha256: [u8; 32], digest: [u8; 32]) -> bool {
        match self
            .monvm_boot_patches
            .iter_mut()
            .find(|b| b.profile_sha256 == profile_sha256)
        {
            Some(known) if known.sha256.contains(&digest) => false,
            Some(known) => {
                known.sha256.push(digest);
                true
            }
            None => {
                self.monvm_boot_patches.push(BootPatchesRef {
                    profile_sha256,
                    sha256: alloc::vec![digest],
                });
                true
            }
        }
    }

    /// The learned boot-patch digests of a profile (`None`: none learned).
    pub fn boot_patches_of(&self, profile_sha256: &[u8; 32]) -> Option<&[[u8; 32]]> {
        self.monvm_boot_patches
            .iter()
            .find(|b| &b.profile_sha256 == profile_sha256)
            .map(|b| b.sha256.as_slice())
    }

    /// [`Self::learn_from`], telling what was added.
    pub fn learn(&mut self, log: &EventLog) -> Learned {
        let mut learned = Learned::default();
        for (_, event, sha256) in firmware_events_of(log) {
            if self
                .firmware_events
                .iter()
                .any(|r| r.matches(event.pcr_index, event.event_type, &sha256))
            {
                continue;
            }
            self.firmware_events.push(FirmwareEventRef {
                pcr: event.pcr_index,
                event_type: event.event_type,
                sha256,
                description: describe(&event.data),
            });
            learned.events += 1;
        }
        let sequence = FirmwareSequence::of_log(log);
        if !sequence.events.is_empty() && !self.firmware_sequences.contains(&sequence) {
            self.firmware_sequences.push(sequence);
            learned.sequence = true;
        }
        learned
    }
}

/// The event data as a description if it is short printable ASCII
/// (SeaBIOS logs strings such as "Start Option ROM Scan").
fn describe(data: &[u8]) -> Option<String> {
    let text = data.strip_suffix(&[0]).unwrap_or(data);
    if text.is_empty()
        || text.len() > MAX_DESCRIPTION_LEN
        || !text.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
    {
        return None;
    }
    core::str::from_utf8(text).ok().map(String::from)
}

/// serde: a 32-byte digest as a 64-digit hex string.
mod hex32 {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hex::encode(value))
    }

    struct HexVisitor;

    impl Visitor<'_> for HexVisitor {
        type Value = [u8; 32];
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("a SHA-256 digest as 64 hex digits")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            crate::hex::decode_array::<32>(v).map_err(|_| E::custom("expected 64 hex digits"))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_str(HexVisitor)
    }

    /// One digest as a list element (owned or borrowed string alike).
    pub struct Hex32(pub [u8; 32]);

    impl<'de> serde::Deserialize<'de> for Hex32 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Hex32)
        }
    }
}

/// serde: a list of 32-byte digests as hex strings.
mod hex32_list {
    use alloc::vec::Vec;
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(value.len()))?;
        for digest in value {
            seq.serialize_element(&crate::hex::encode(digest))?;
        }
        seq.end()
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<[u8; 32]>;
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("a list of SHA-256 digests as hex strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(super::hex32::Hex32(digest)) = seq.next_element()? {
                out.push(digest);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        d.deserialize_seq(ListVisitor)
    }
}

/// `monvm_monitor_max` as its text form.
mod monitor_policy_text {
    use alloc::string::{String, ToString};
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::monitor_policy::MonitorPolicy;

    pub fn serialize<S: Serializer>(
        value: &Option<MonitorPolicy>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(policy) => serializer.serialize_str(&policy.to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<MonitorPolicy>, D::Error> {
        let text = String::deserialize(deserializer)?;
        MonitorPolicy::parse(text.as_bytes())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(alloc::format!("monvm_monitor_max: {e}")))
    }
}
