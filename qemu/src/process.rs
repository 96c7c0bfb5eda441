//! Child processes (swtpm, QEMU) and processes known only by pid.
//!
//! `ChildGuard` kills its child when dropped, so a failing test or an error
//! path never leaves swtpm or QEMU behind; `detach` hands the process over to
//! outlive us (the CLI's `up`). The pid helpers serve `down`/`status` from
//! another process, which must not signal an unrelated process that reused a
//! pid: they check the process's command line first.

use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How often waiting loops look at a process again.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Which process group a child runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessGroup {
    /// The launcher's: signals from its terminal (Ctrl-C) reach the child.
    #[default]
    Inherit,
    /// Its own: for processes meant to outlive the launcher (`up`), so a
    /// Ctrl-C in the shell or script that ran `up` does not stop the node.
    Own,
}

/// A spawned child that is killed and reaped on drop unless detached.
pub struct ChildGuard {
    child: Option<Child>,
    name: &'static str,
}

impl ChildGuard {
    /// Spawns `command` in the launcher's process group: a Ctrl-C that
    /// stops the launcher (or a test run) stops the child too.
    pub fn spawn(command: Command, name: &'static str) -> io::Result<Self> {
        Self::spawn_in(command, name, ProcessGroup::Inherit)
    }

    /// Spawns `command`, optionally in a process group of its own.
    pub fn spawn_in(
        mut command: Command,
        name: &'static str,
        group: ProcessGroup,
    ) -> io::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        if group == ProcessGroup::Own {
            command.process_group(0);
        }
        let child = command.spawn()?;
        Ok(Self {
            child: Some(child),
            name,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the child has exited (reaping it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kills (SIGKILL) and reaps the child; harmless if it already exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Lets the child outlive this guard; returns its pid.
    pub fn detach(mut self) -> u32 {
        let pid = self.pid();
        self.child = None;
        pid
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `pid` names a live process (zombies count as gone: once `up`'s
/// CLI process has exited, nobody may be left to reap them).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the last ')' (the command name may contain
    // spaces and parentheses).
    let state = stat
        .rfind(')')
        .and_then(|end| stat.get(end + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Whether process `pid` is running and its command line mentions `needle`
/// (the node's state directory), i.e. it is one that this node started.
pub fn is_ours(pid: u32, needle: &Path) -> bool {
    if pid == 0 || !is_running(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = needle.as_os_str().as_encoded_bytes();
    !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle)
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns once the
/// process is gone (or after a second SIGKILL grace period).
pub fn terminate(pid: u32, grace: Duration) -> io::Result<()> {
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"));
    };
    for signal in [Signal::TERM, Signal::KILL] {
        match kill_process(target, signal) {
            Ok(()) => {}
            Err(rustix::io::Errno::SRCH) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !is_running(pid) {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    if is_running(pid) {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("process {pid} survived SIGKILL"),
        ));
    }
    Ok(())
}

/// User and system CPU time a process has used so far (from /proc/PID/stat).
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat format");
    let after_name = stat
        .rfind(')')
        .and_then(|end| stat.get(end + 1..))
        .ok_or_else(invalid)?;
    // Fields after the name start at field 3 (state); utime and stime are
    // fields 14 and 15, i.e. indices 11 and 12 here.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> io::Result<u64> {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(invalid)
    };
    let total_ticks = ticks(11)?.saturating_add(ticks(12)?);
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(
        total_ticks as f64 / per_second as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_kills_child_on_drop() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let guard = ChildGuard::spawn(command, "sleep").unwrap();
        let pid = guard.pid();
        assert!(is_running(pid));
        drop(guard);
        assert!(!is_running(pid));
    }

    #[test]
    fn terminate_stops_a_process_and_ours_checks_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let mut command = Command::new("sh");
        command.arg("-c").arg("sleep 30; : \"$0\"").arg(&marker);
        let guard = ChildGuard::spawn(command, "sh").unwrap();
        let pid = guard.pid();
        // Right after spawn the kernel may still be inside exec, with an
        // empty command line: wait for it to settle.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_ours(pid, &marker) && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
        assert!(is_ours(pid, &marker));
        assert!(!is_ours(pid, Path::new("/nonexistent/other-node")));
        terminate(pid, Duration::from_secs(2)).unwrap();
        // The guard still owns the zombie; is_running treats it as gone.
        assert!(!is_running(pid));
        drop(guard);
    }

    #[test]
    fn cpu_time_of_self_is_readable() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_ok());
        assert!(!is_running(0));
    }
}
