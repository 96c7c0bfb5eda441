//! How many findings an area reports in one round.
//!
//! A rootkit can forge thousands of tasks (say), each a finding: the
//! comparison of a round with the last one, the events recorded and the
//! heap must not grow with them. An area keeps [`MAX_AREA_FINDINGS`] texts;
//! past that the last one counts the rest.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Findings of one area kept per round (the rest are counted in one).
pub const MAX_AREA_FINDINGS: usize = 64;

/// Caps `texts` plus `uncounted` findings not written out (a producer that
/// stopped building texts at [`MAX_AREA_FINDINGS`]): at most that many
/// texts, the last `and N more` when there were more.
pub fn cap_findings(texts: &mut Vec<String>, uncounted: usize) {
    let total = texts.len().saturating_add(uncounted);
    if total > MAX_AREA_FINDINGS {
        texts.truncate(MAX_AREA_FINDINGS - 1);
        // Not `alloc::format!`: the freestanding image cannot link it (it
        // needs unwinding symbols).
        let mut more = String::new();
        let _ = write!(more, "and {} more", total - (MAX_AREA_FINDINGS - 1));
        texts.push(more);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn findings(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("process:{i}")).collect()
    }

    #[test]
    fn up_to_the_cap_every_finding_is_kept() {
        let mut texts = findings(MAX_AREA_FINDINGS);
        cap_findings(&mut texts, 0);
        assert_eq!(texts, findings(MAX_AREA_FINDINGS));
    }

    #[test]
    fn past_the_cap_the_last_text_counts_the_rest() {
        let mut texts = findings(1000);
        cap_findings(&mut texts, 0);
        assert_eq!(texts.len(), MAX_AREA_FINDINGS);
        assert_eq!(texts[MAX_AREA_FINDINGS - 2], "process:62");
        assert_eq!(texts[MAX_AREA_FINDINGS - 1], "and 937 more");
    }

    #[test]
    fn findings_not_written_out_are_counted_alike() {
        // A producer that wrote 64 texts and counted 936 more gives what
        // one that wrote all 1000 gives.
        let mut counted = findings(MAX_AREA_FINDINGS);
        cap_findings(&mut counted, 1000 - MAX_AREA_FINDINGS);
        let mut written = findings(1000);
        cap_findings(&mut written, 0);
        assert_eq!(counted, written);
        // Capping again changes nothing.
        cap_findings(&mut counted, 0);
        assert_eq!(counted, written);
    }
}
