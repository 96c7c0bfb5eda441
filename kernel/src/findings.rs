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

/// An area's findings as they are found: texts built for the first
/// [`MAX_AREA_FINDINGS`] only (one can hold a 4 KiB path, and a rootkit
/// can forge tens of thousands), the rest counted; [`Self::finish`] gives
/// what [`cap_findings`] makes of them all.
#[derive(Debug, Default)]
pub struct CappedFindings {
    texts: Vec<String>,
    more: usize,
}

impl CappedFindings {
    /// One finding; its text is built only if it is kept.
    pub fn push_with(&mut self, finding: impl FnOnce() -> String) {
        if self.texts.len() < MAX_AREA_FINDINGS {
            self.texts.push(finding());
        } else {
            self.more = self.more.saturating_add(1);
        }
    }

    /// `n` findings past the kept ones, counted without their texts.
    pub fn count(&mut self, n: usize) {
        self.more = self.more.saturating_add(n);
    }

    pub fn finish(mut self) -> Vec<String> {
        cap_findings(&mut self.texts, self.more);
        self.texts
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

    #[test]
    fn findings_collected_as_found_are_capped_alike() {
        for n in [
            0,
            1,
            MAX_AREA_FINDINGS - 1,
            MAX_AREA_FINDINGS,
            MAX_AREA_FINDINGS + 1,
            1000,
        ] {
            let mut built = 0;
            let mut collected = CappedFindings::default();
            for text in findings(n) {
                collected.push_with(|| {
                    built += 1;
                    text
                });
            }
            let mut written = findings(n);
            cap_findings(&mut written, 0);
            assert_eq!(collected.finish(), written, "{n} findings");
            assert_eq!(built, n.min(MAX_AREA_FINDINGS), "texts built of {n}");
        }
        // Counted ones stand for findings past the kept texts.
        let mut collected = CappedFindings::default();
        for text in findings(MAX_AREA_FINDINGS) {
            collected.push_with(|| text);
        }
        collected.count(936);
        let mut written = findings(1000);
        cap_findings(&mut written, 0);
        assert_eq!(collected.finish(), written);
    }
}
