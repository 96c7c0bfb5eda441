//! Where a node's processes run on the host's CPUs.
//!
//! `shared` (the default) leaves them to the host's scheduler. `split`
//! gives the A-VM a CPU of its own: its QEMU and swtpm run on the last CPU
//! this process may use, the Mon-VM's QEMU on all the others. Under TCG
//! every timer tick of the A-VM wakes two QEMU threads; sharing CPUs, those
//! wake-ups preempt the Mon-VM's vCPU thread and cost it more than the
//! A-VM's own share of a core (docs/monitoring.md, "Cost"). A monitor with
//! a core of its own is also how a deployment would run it.

use std::fmt;
use std::io;
use std::str::FromStr;

use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// How a node's processes are placed on the host's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuPlacement {
    /// No pinning.
    #[default]
    Shared,
    /// The A-VM's QEMU and swtpm on the last allowed CPU, the Mon-VM's
    /// QEMU on the others.
    Split,
}

impl fmt::Display for CpuPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuPlacement::Shared => "shared",
            CpuPlacement::Split => "split",
        })
    }
}

impl FromStr for CpuPlacement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(CpuPlacement::Shared),
            "split" => Ok(CpuPlacement::Split),
            other => Err(format!("unknown CPU placement {other:?}: shared or split")),
        }
    }
}

/// The CPUs of a split placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSplit {
    /// The A-VM's QEMU and swtpm.
    pub avm: Vec<usize>,
    /// The Mon-VM's QEMU.
    pub monvm: Vec<usize>,
}

impl CpuSplit {
    /// The split of `allowed` (ascending CPU numbers): the last for the
    /// A-VM, the rest for the Mon-VM; `None` with fewer than two.
    pub fn of(allowed: &[usize]) -> Option<Self> {
        let (&last, rest) = allowed.split_last()?;
        if rest.is_empty() {
            return None;
        }
        Some(Self {
            avm: vec![last],
            monvm: rest.to_vec(),
        })
    }

    /// The split of the CPUs this process may run on.
    pub fn of_this_host() -> io::Result<Option<Self>> {
        Ok(Self::of(&allowed_cpus(None)?))
    }

    /// `avm=1 monvm=0` (for the node record and logs).
    pub fn describe(&self) -> String {
        format!("avm={} monvm={}", list(&self.avm), list(&self.monvm))
    }
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs a thread may run on (`None`: this one), ascending.
pub fn allowed_cpus(tid: Option<u32>) -> io::Result<Vec<usize>> {
    let pid = tid.map(pid_of).transpose()?;
    let set = sched_getaffinity(pid)?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

fn pid_of(id: u32) -> io::Result<Pid> {
    i32::try_from(id)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {id}")))
}

/// The threads of process `pid` (its `/proc/PID/task`).
pub fn threads_of(pid: u32) -> io::Result<Vec<u32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// Restricts every thread of process `pid` to `cpus`. Threads it creates
/// later inherit the placement of the thread that creates them; a thread
/// that exits meanwhile is skipped.
pub fn pin_process(pid: u32, cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        if cpu >= CpuSet::MAX_CPU {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no CPU {cpu}"),
            ));
        }
        set.set(cpu);
    }
    for tid in threads_of(pid)? {
        match sched_setaffinity(Some(pid_of(tid)?), &set) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_cpu_goes_to_the_a_vm() {
        assert_eq!(
            CpuSplit::of(&[0, 1]),
            Some(CpuSplit {
                avm: vec![1],
                monvm: vec![0]
            })
        );
        let split = CpuSplit::of(&[0, 2, 5]).unwrap();
        assert_eq!(
            (split.avm.as_slice(), split.monvm.as_slice()),
            (&[5][..], &[0, 2][..])
        );
        assert_eq!(split.describe(), "avm=5 monvm=0,2");
        assert_eq!(CpuSplit::of(&[3]), None);
        assert_eq!(CpuSplit::of(&[]), None);
    }

    #[test]
    fn placements_parse_and_print() {
        for p in [CpuPlacement::Shared, CpuPlacement::Split] {
            assert_eq!(p.to_string().parse::<CpuPlacement>(), Ok(p));
        }
        assert!("both".parse::<CpuPlacement>().is_err());
        assert_eq!(CpuPlacement::default(), CpuPlacement::Shared);
    }

    #[test]
    fn a_process_is_pinned_with_all_its_threads() {
        let allowed = allowed_cpus(None).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let last = *allowed.last().unwrap();
        let result = pin_process(child.id(), &[last]);
        let seen: Vec<Vec<usize>> = threads_of(child.id())
            .unwrap()
            .into_iter()
            .map(|tid| allowed_cpus(Some(tid)).unwrap())
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        result.unwrap();
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|cpus| cpus == &[last]), "{seen:?}");
        assert!(pin_process(1 << 30, &[last]).is_err(), "no such process");
        assert!(pin_process(std::process::id(), &[CpuSet::MAX_CPU]).is_err());
    }
}
