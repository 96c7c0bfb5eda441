//! The A-VM's monitor policy: how often each check of the Mon-VM runs, and
//! which set-uid programs may run as root under a user.
//!
//! The launcher hands it to the A-VM as the fw_cfg file
//! `opt/avm/monitor-policy`; the A-VM measures the policy in effect into
//! PCR 8 before it watches the Mon-VM (record
//! `avm-config:monitor-policy:<canonical text>`, digest SHA-256 of the
//! canonical text), so a verifier knows the detection latency it is
//! promised. The text form is one line, four keys in a fixed order, each a
//! period in milliseconds, then, only if there are any, the set-uid
//! programs (absolute paths, sorted, `:` between them):
//!
//! ```text
//! syscall_idt=5,text=1000,ima=500,cross=500
//! syscall_idt=5,text=1000,ima=500,cross=500,setuid=/usr/bin/passwd:/usr/bin/sudo
//! ```
//!
//! [`MonitorPolicy::parse`] is strict (every period key exactly once,
//! `setuid` at most once, in any order, no other key, each period in
//! [`MIN_PERIOD_MS`]..=[`MAX_PERIOD_MS`], decimal digits only, each path
//! absolute, printable, without `,` `:` `=` or spaces, none twice, at most
//! [`MAX_SETUID_PROGRAMS`], an optional final newline) and never panics;
//! `Display` writes the canonical form, which `parse` reads back to the
//! same policy.
//!
//! The set-uid programs loosen the credentials check (docs/monitoring.md):
//! a process running one of them with euid 0 under a parent that is not
//! root is not reported if the kernel marked its address space as a
//! set-uid exec's. Each verifier bounds them by its own policy
//! (`monvm_monitor_max`), as it bounds the periods.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Name of the fw_cfg file the launcher hands the policy in.
pub const FW_CFG_NAME: &str = "opt/avm/monitor-policy";
/// Prefix of the policy's record in the A-VM's measurement log (PCR 8),
/// followed by the canonical text.
pub const RECORD_PREFIX: &str = "avm-config:monitor-policy:";
/// Name of the record of a policy file that did not parse (its digest is
/// SHA-256 of the file's bytes); the A-VM then does not introspect.
pub const INVALID_RECORD: &str = "avm-config:monitor-policy-invalid";
/// Shortest period a policy may ask for.
pub const MIN_PERIOD_MS: u32 = 1;
/// Longest period a policy may ask for (one minute).
pub const MAX_PERIOD_MS: u32 = 60_000;
/// Longest policy text accepted (above the longest valid one).
pub const MAX_TEXT_LEN: usize = 4096;
/// Most set-uid programs a policy may name.
pub const MAX_SETUID_PROGRAMS: usize = 8;
/// Longest set-uid program path (Linux's `NAME_MAX`-sized components are
/// far shorter in practice; this bounds the text).
pub const MAX_SETUID_PATH_LEN: usize = 255;

/// The period keys, in canonical order.
pub const KEYS: [&str; 4] = ["syscall_idt", "text", "ima", "cross"];
/// The key of the set-uid programs (after the periods; only if any).
pub const SETUID_KEY: &str = "setuid";

/// Check periods, in milliseconds, and the set-uid programs allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MonitorPolicy {
    /// The system-call table and the IDT (compared with their last copy).
    pub syscall_idt_ms: u32,
    /// One whole sweep of kernel text and read-only data.
    pub text_ms: u32,
    /// The IMA list (and the processes and modules it must cover).
    pub ima_ms: u32,
    /// The cross-views (hidden modules and processes, credentials,
    /// function-pointer tables).
    pub cross_ms: u32,
    /// Executables (absolute paths, sorted, none twice) whose processes
    /// may run as root under a parent that is not: set-uid programs such
    /// as `sudo` or `passwd`. Empty by default: every such process is
    /// reported.
    pub setuid: Vec<String>,
}

impl Default for MonitorPolicy {
    /// System-call table and IDT every 5 ms (tampering seen within 10 ms),
    /// a text sweep per second, IMA and cross-views every 500 ms.
    fn default() -> Self {
        MonitorPolicy {
            syscall_idt_ms: 5,
            text_ms: 1000,
            ima_ms: 500,
            cross_ms: 500,
            setuid: Vec::new(),
        }
    }
}

/// Why a policy text was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// Longer than [`MAX_TEXT_LEN`] bytes.
    TooLong(usize),
    /// Not UTF-8, or a control character other than one final newline.
    NotText,
    /// An item without `=`.
    NoValue {
        item: usize,
    },
    UnknownKey {
        item: usize,
    },
    DuplicateKey(&'static str),
    MissingKey(&'static str),
    /// Not a decimal number (digits only, no sign, no spaces).
    BadNumber(&'static str),
    /// Outside [`MIN_PERIOD_MS`]..=[`MAX_PERIOD_MS`].
    OutOfRange {
        key: &'static str,
        value: u64,
    },
    /// Set-uid program number `index` (from 0) is not an absolute path of
    /// at most [`MAX_SETUID_PATH_LEN`] printable bytes without `,` `:`
    /// `=` or spaces.
    BadPath {
        index: usize,
    },
    /// A set-uid program named twice.
    DuplicatePath {
        index: usize,
    },
    /// More than [`MAX_SETUID_PROGRAMS`] set-uid programs.
    TooManyPrograms(usize),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::TooLong(n) => write!(f, "{n} bytes (at most {MAX_TEXT_LEN})"),
            PolicyError::NotText => write!(f, "not one line of text"),
            PolicyError::NoValue { item } => write!(f, "item {} has no `=`", item + 1),
            PolicyError::UnknownKey { item } => write!(
                f,
                "item {} has an unknown key (known: syscall_idt, text, ima, cross, setuid)",
                item + 1
            ),
            PolicyError::DuplicateKey(k) => write!(f, "`{k}` given twice"),
            PolicyError::MissingKey(k) => write!(f, "`{k}` missing"),
            PolicyError::BadNumber(k) => write!(f, "`{k}` is not a number of milliseconds"),
            PolicyError::OutOfRange { key, value } => write!(
                f,
                "`{key}`={value} is outside {MIN_PERIOD_MS}..={MAX_PERIOD_MS} ms"
            ),
            PolicyError::BadPath { index } => write!(
                f,
                "set-uid program {} is not an absolute path of at most {MAX_SETUID_PATH_LEN} \
                 printable bytes without `,` `:` `=` or spaces",
                index + 1
            ),
            PolicyError::DuplicatePath { index } => {
                write!(f, "set-uid program {} is named twice", index + 1)
            }
            PolicyError::TooManyPrograms(n) => {
                write!(f, "{n} set-uid programs (at most {MAX_SETUID_PROGRAMS})")
            }
        }
    }
}

impl MonitorPolicy {
    /// Parses the text form (see the module documentation).
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_TEXT_LEN {
            return Err(PolicyError::TooLong(bytes.len()));
        }
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if bytes.iter().any(|b| b.is_ascii_control() || !b.is_ascii()) {
            return Err(PolicyError::NotText);
        }
        let text = core::str::from_utf8(bytes).map_err(|_| PolicyError::NotText)?;
        let mut values: [Option<u32>; 4] = [None; 4];
        let mut setuid = None;
        for (item, part) in text.split(',').enumerate() {
            let (key, value) = part.split_once('=').ok_or(PolicyError::NoValue { item })?;
            if key == SETUID_KEY {
                if setuid.is_some() {
                    return Err(PolicyError::DuplicateKey(SETUID_KEY));
                }
                setuid = Some(parse_programs(value)?);
                continue;
            }
            let slot = KEYS
                .iter()
                .position(|k| *k == key)
                .ok_or(PolicyError::UnknownKey { item })?;
            let name = KEYS[slot];
            if values[slot].is_some() {
                return Err(PolicyError::DuplicateKey(name));
            }
            values[slot] = Some(parse_period(name, value)?);
        }
        let get = |slot: usize| values[slot].ok_or(PolicyError::MissingKey(KEYS[slot]));
        Ok(MonitorPolicy {
            syscall_idt_ms: get(0)?,
            text_ms: get(1)?,
            ima_ms: get(2)?,
            cross_ms: get(3)?,
            setuid: setuid.unwrap_or_default(),
        })
    }

    /// Whether `path` is one of the set-uid programs allowed.
    pub fn allows_setuid(&self, path: &[u8]) -> bool {
        self.setuid.iter().any(|p| p.as_bytes() == path)
    }

    /// The periods in the order of [`KEYS`].
    pub fn periods_ms(&self) -> [u32; 4] {
        [
            self.syscall_idt_ms,
            self.text_ms,
            self.ima_ms,
            self.cross_ms,
        ]
    }

    /// The shortest period.
    pub fn shortest_ms(&self) -> u32 {
        self.periods_ms().into_iter().min().unwrap_or(MIN_PERIOD_MS)
    }

    /// How long one pass of the text sweep takes, in microseconds.
    /// `text_ms` is the deadline for seeing a change, not the pass: a
    /// chunk checked just before a change is checked again one pass
    /// later, up to `lateness_us` late (the sweep's slice interval and a
    /// timer tick), and its event then still has to reach the verifier.
    /// So the pass is shorter than the period by a margin: 4% of it, and
    /// at least twice the lateness (the second for the way out), but never
    /// below half the period.
    pub fn text_pass_us(&self, lateness_us: u64) -> u64 {
        let period = u64::from(self.text_ms) * 1000;
        let margin = (period / 25).max(lateness_us.saturating_mul(2));
        period.saturating_sub(margin).max(period / 2)
    }
}

/// The `setuid` value: paths separated by `:`, in any order; returned
/// sorted. An empty value is refused (no programs: no key).
fn parse_programs(value: &str) -> Result<Vec<String>, PolicyError> {
    let mut paths = Vec::new();
    for (index, path) in value.split(':').enumerate() {
        if index >= MAX_SETUID_PROGRAMS {
            return Err(PolicyError::TooManyPrograms(value.split(':').count()));
        }
        let valid = path.len() > 1
            && path.len() <= MAX_SETUID_PATH_LEN
            && path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b':' | b'='));
        if !valid {
            return Err(PolicyError::BadPath { index });
        }
        // Kept sorted as they come (a handful: no sort's code in the
        // A-VM image for them).
        match paths.binary_search_by(|p: &String| p.as_str().cmp(path)) {
            Ok(_) => return Err(PolicyError::DuplicatePath { index }),
            Err(at) => paths.insert(at, String::from(path)),
        }
    }
    Ok(paths)
}

fn parse_period(key: &'static str, value: &str) -> Result<u32, PolicyError> {
    // Digits only: `u64::from_str` would take a `+`. Leading zeros would
    // give a second spelling of the same policy: refused too.
    if value.is_empty()
        || value.len() > 10
        || !value.bytes().all(|b| b.is_ascii_digit())
        || (value.len() > 1 && value.starts_with('0'))
    {
        return Err(PolicyError::BadNumber(key));
    }
    let number: u64 = value.parse().map_err(|_| PolicyError::BadNumber(key))?;
    if !(u64::from(MIN_PERIOD_MS)..=u64::from(MAX_PERIOD_MS)).contains(&number) {
        return Err(PolicyError::OutOfRange { key, value: number });
    }
    u32::try_from(number).map_err(|_| PolicyError::BadNumber(key))
}

impl fmt::Display for MonitorPolicy {
    /// The canonical text: `syscall_idt=N,text=N,ima=N,cross=N`, then
    /// `,setuid=PATH:PATH...` (sorted) if there are set-uid programs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.periods_ms();
        write!(
            f,
            "{}={a},{}={b},{}={c},{}={d}",
            KEYS[0], KEYS[1], KEYS[2], KEYS[3]
        )?;
        // Sorted and without repeats, by selection (a handful of paths:
        // no sort's code in the A-VM image for them).
        let mut last: Option<&String> = None;
        while let Some(path) = self
            .setuid
            .iter()
            .filter(|p| last.is_none_or(|l| *p > l))
            .min()
        {
            let lead = if last.is_none() { ",setuid=" } else { ":" };
            write!(f, "{lead}{path}")?;
            last = Some(path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use proptest::prelude::*;

    /// The default sweep: a pass every 960 ms, so a change is seen, and
    /// on its way, within the promised second.
    #[test]
    fn the_default_text_pass_is_960_ms() {
        assert_eq!(MonitorPolicy::default().text_pass_us(15_000), 960_000);
        assert_eq!(MonitorPolicy::default().text_pass_us(30_000), 940_000);
    }

    #[test]
    fn default_is_the_documented_text() {
        assert_eq!(
            MonitorPolicy::default().to_string(),
            "syscall_idt=5,text=1000,ima=500,cross=500"
        );
        assert_eq!(
            MonitorPolicy::parse(b"syscall_idt=5,text=1000,ima=500,cross=500\n"),
            Ok(MonitorPolicy::default())
        );
    }

    #[test]
    fn set_uid_programs_are_written_last_and_sorted() {
        let p = MonitorPolicy::parse(
            b"setuid=/usr/bin/sudo:/usr/bin/passwd,syscall_idt=5,text=1000,ima=500,cross=500",
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            "syscall_idt=5,text=1000,ima=500,cross=500,setuid=/usr/bin/passwd:/usr/bin/sudo"
        );
        assert!(p.allows_setuid(b"/usr/bin/sudo"));
        assert!(!p.allows_setuid(b"/usr/bin/su"));
        assert!(!p.allows_setuid(b"/usr/bin/sudo/"));
        assert!(!MonitorPolicy::default().allows_setuid(b"/usr/bin/sudo"));
        let longest = alloc::format!(
            "syscall_idt=60000,text=60000,ima=60000,cross=60000,setuid={}",
            (0..MAX_SETUID_PROGRAMS)
                .map(|n| alloc::format!("/{n}{}", "x".repeat(MAX_SETUID_PATH_LEN - 2)))
                .collect::<Vec<_>>()
                .join(":")
        );
        assert!(longest.len() <= MAX_TEXT_LEN);
        assert!(MonitorPolicy::parse(longest.as_bytes()).is_ok());
    }

    #[test]
    fn any_order_is_read_but_written_canonically() {
        let p = MonitorPolicy::parse(b"cross=7,ima=60000,text=1,syscall_idt=20").unwrap();
        assert_eq!(p.to_string(), "syscall_idt=20,text=1,ima=60000,cross=7");
        assert_eq!(p.shortest_ms(), 1);
    }

    #[test]
    fn refuses_what_is_not_exactly_a_policy() {
        let cases: [(&[u8], PolicyError); 20] = [
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=",
                PolicyError::BadPath { index: 0 },
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/",
                PolicyError::BadPath { index: 0 },
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/bin/su:bin/x",
                PolicyError::BadPath { index: 1 },
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/bin/su::/bin/x",
                PolicyError::BadPath { index: 1 },
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/bin/a b",
                PolicyError::BadPath { index: 0 },
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/bin/su:/bin/su",
                PolicyError::DuplicatePath { index: 1 },
            ),
            (
                b"setuid=/bin/su,syscall_idt=5,text=1000,ima=500,cross=500,setuid=/bin/x",
                PolicyError::DuplicateKey("setuid"),
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/a:/b:/c:/d:/e:/f:/g:/h:/i",
                PolicyError::TooManyPrograms(9),
            ),
            (b"", PolicyError::NoValue { item: 0 }),
            (
                b"syscall_idt=5,text=1000,ima=500",
                PolicyError::MissingKey("cross"),
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500,ima=5",
                PolicyError::DuplicateKey("ima"),
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,crosS=500",
                PolicyError::UnknownKey { item: 3 },
            ),
            (
                b"syscall_idt=0,text=1000,ima=500,cross=500",
                PolicyError::OutOfRange {
                    key: "syscall_idt",
                    value: 0,
                },
            ),
            (
                b"syscall_idt=5,text=60001,ima=500,cross=500",
                PolicyError::OutOfRange {
                    key: "text",
                    value: 60001,
                },
            ),
            (
                b"syscall_idt=+5,text=1000,ima=500,cross=500",
                PolicyError::BadNumber("syscall_idt"),
            ),
            (
                b"syscall_idt=05,text=1000,ima=500,cross=500",
                PolicyError::BadNumber("syscall_idt"),
            ),
            (
                b"syscall_idt=5, text=1000,ima=500,cross=500",
                PolicyError::UnknownKey { item: 1 },
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=99999999999",
                PolicyError::BadNumber("cross"),
            ),
            (
                b"syscall_idt=5,text=1000,ima=500,cross=500\n\n",
                PolicyError::NotText,
            ),
            (b"syscall_idt", PolicyError::NoValue { item: 0 }),
        ];
        for (text, error) in cases {
            assert_eq!(
                MonitorPolicy::parse(text),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(
            MonitorPolicy::parse(&[b'a'; MAX_TEXT_LEN + 1]),
            Err(PolicyError::TooLong(MAX_TEXT_LEN + 1))
        );
        assert_eq!(
            MonitorPolicy::parse("syscall_idt=5,text=1000,ima=500,cross=50\u{e9}".as_bytes()),
            Err(PolicyError::NotText)
        );
    }

    fn period() -> impl Strategy<Value = u32> {
        MIN_PERIOD_MS..=MAX_PERIOD_MS
    }

    proptest! {
        #[test]
        fn canonical_text_round_trips(a in period(), b in period(), c in period(), d in period()) {
            let p = MonitorPolicy { syscall_idt_ms: a, text_ms: b, ima_ms: c, cross_ms: d, setuid: Vec::new() };
            let text = p.to_string();
            prop_assert_eq!(MonitorPolicy::parse(text.as_bytes()), Ok(p));
            prop_assert!(text.len() <= MAX_TEXT_LEN);
        }

        #[test]
        fn set_uid_programs_round_trip_sorted(
            paths in proptest::collection::btree_set("/[a-zA-Z0-9_./-]{1,254}", 1..=MAX_SETUID_PROGRAMS),
            reversed in any::<bool>(),
        ) {
            let sorted: Vec<String> = paths.into_iter().collect();
            let mut given = sorted.clone();
            if reversed {
                given.reverse();
            }
            let text = alloc::format!("setuid={},cross=1,ima=2,text=3,syscall_idt=4", given.join(":"));
            let p = MonitorPolicy::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(&p.setuid, &sorted);
            for path in &sorted {
                prop_assert!(p.allows_setuid(path.as_bytes()));
            }
            let canonical = p.to_string();
            let tail = alloc::format!(",setuid={}", sorted.join(":"));
            prop_assert!(canonical.ends_with(&tail));
            prop_assert!(canonical.len() <= MAX_TEXT_LEN);
            prop_assert_eq!(MonitorPolicy::parse(canonical.as_bytes()), Ok(p));
        }

        #[test]
        fn a_text_pass_leaves_room_for_its_lateness(text in period(), lateness in 0u64..100_000) {
            let p = MonitorPolicy { text_ms: text, ..MonitorPolicy::default() };
            let period = u64::from(text) * 1000;
            let pass = p.text_pass_us(lateness);
            prop_assert!(pass >= period / 2 && pass < period);
            // Whenever the period has room for it, a check one pass and
            // one lateness after the last, and its way out, fit in it.
            if 4 * lateness <= period {
                prop_assert!(pass + 2 * lateness <= period);
                prop_assert!(pass + period / 25 <= period);
            }
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical_values(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = MonitorPolicy::parse(&bytes) {
                for v in p.periods_ms() {
                    prop_assert!((MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(&v));
                }
                prop_assert!(p.setuid.len() <= MAX_SETUID_PROGRAMS);
                prop_assert!(p.setuid.windows(2).all(|w| w[0] < w[1]));
                // What parsed re-parses to itself from its canonical form.
                prop_assert_eq!(MonitorPolicy::parse(p.to_string().as_bytes()), Ok(p));
            }
        }

        #[test]
        fn shuffled_keys_parse_alike(a in period(), b in period(), c in period(), d in period(), order in Just([0usize, 1, 2, 3]).prop_shuffle()) {
            let p = MonitorPolicy { syscall_idt_ms: a, text_ms: b, ima_ms: c, cross_ms: d, setuid: Vec::new() };
            let periods = p.periods_ms();
            let items: alloc::vec::Vec<String> = order
                .iter()
                .map(|&i| alloc::format!("{}={}", KEYS[i], periods[i]))
                .collect();
            prop_assert_eq!(MonitorPolicy::parse(items.join(",").as_bytes()), Ok(p));
        }
    }
}
