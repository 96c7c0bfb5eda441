//! Driving the Mon-VM's serial console through its Unix socket.
//!
//! The Mon-VM's first serial port is a QEMU socket chardev in server mode
//! (`server=on,wait=off`); its init starts a root shell (busybox ash) there.
//! [`MonVmConsole::connect`] connects and waits until the shell answers;
//! [`MonVmConsole::run`] types one command line and returns what it printed
//! and its exit status. Each command is framed by markers that carry a
//! per-connection token and a counter, written so that the terminal's echo
//! of the typed line never matches them (`AVM-B""EGIN-…` is typed,
//! `AVM-BEGIN-…` printed):
//!
//! ```text
//! echo AVM-B""EGIN-<token>-<n>; eval '<command>' </dev/null; echo "AVM-E""ND-<token>-<n> $?"
//! ```
//!
//! The command runs with stdin from /dev/null (it cannot swallow the next
//! command) and its stdout and stderr both arrive on the console, CRLF
//! turned into LF. Every wait is bounded; on a timeout the console sends
//! Ctrl-C so the shell is usable again. QEMU serves one client at a time:
//! a second connection waits until the first closes.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default bound on one command (TCG is slow, the host may be busy).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on [`MonVmConsole::connect`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest command accepted: busybox's line editor holds about 1 KiB per
/// line, and the framing takes some of it.
pub const MAX_COMMAND_LEN: usize = 800;
/// Output kept at most while waiting for one command's end marker.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// How long one sync probe waits before typing another.
const SYNC_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// What a new busybox shell prints first: the command ended the shell
/// (`exit`, `exec`), and the Mon-VM's init started another.
const SHELL_BANNER: &str = "built-in shell (ash)";

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// stdout and stderr as they arrived, LF line ends.
    pub output: String,
    /// The shell's `$?` after the command.
    pub status: i32,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Failures talking to the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("connecting to the Mon-VM console {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Mon-VM console: {0}")]
    Io(#[from] std::io::Error),
    #[error("the Mon-VM console closed{}", tail_note(partial))]
    Closed { partial: String },
    #[error(
        "the Mon-VM shell did not answer within {timeout:?} (is another client connected?){}",
        tail_note(partial)
    )]
    NotResponding { timeout: Duration, partial: String },
    #[error("`{command}` did not finish within {timeout:?}{}", tail_note(partial))]
    Timeout {
        command: String,
        timeout: Duration,
        partial: String,
    },
    #[error(
        "`{command}` ended the shell (init started a new one){}",
        tail_note(partial)
    )]
    ShellRestarted { command: String, partial: String },
    #[error("command of {0} bytes is longer than the console takes ({MAX_COMMAND_LEN})")]
    CommandTooLong(usize),
    #[error("command contains a control character")]
    ControlCharacter,
    #[error("more than {MAX_OUTPUT_BYTES} bytes of console output")]
    OutputTooLarge,
    #[error("`{command}` failed with status {status}: {output}")]
    Failed {
        command: String,
        status: i32,
        output: String,
    },
}

fn tail_note(partial: &str) -> String {
    if partial.trim().is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = partial.lines().collect();
    format!(
        "\n--- console (tail) ---\n{}",
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

static TOKENS: AtomicU64 = AtomicU64::new(0);

/// A connection to the Mon-VM's shell.
pub struct MonVmConsole {
    stream: UnixStream,
    /// Bytes received and not yet consumed.
    pending: Vec<u8>,
    token: String,
    next: u64,
    timeout: Duration,
}

impl std::fmt::Debug for MonVmConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonVmConsole")
            .field("token", &self.token)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// `text` as one single-quoted shell word.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Console bytes as text: CR dropped (the tty turns LF into CRLF).
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

impl MonVmConsole {
    /// Connects to the console socket at `path` (retrying while QEMU has
    /// not created it yet) and waits until the shell answers, all within
    /// `timeout`. Ctrl-C first cancels whatever a previous client left.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ConsoleError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(ConsoleError::Connect {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        };
        let token = format!(
            "{:x}{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default(),
            TOKENS.fetch_add(1, Ordering::Relaxed)
        );
        let mut console = Self {
            stream,
            pending: Vec::new(),
            token,
            next: 0,
            timeout: DEFAULT_COMMAND_TIMEOUT,
        };
        console.stream.write_all(b"\x03")?;
        console.sync(deadline, timeout)?;
        Ok(console)
    }

    /// Types a probe until the shell echoes it back evaluated.
    fn sync(&mut self, deadline: Instant, timeout: Duration) -> Result<(), ConsoleError> {
        loop {
            let n = self.next;
            self.next += 1;
            let line = format!("echo AVM-S\"\"YNC-{}-{n}\n", self.token);
            let marker = format!("AVM-SYNC-{}-{n}\n", self.token);
            self.stream.write_all(line.as_bytes())?;
            let probe_end = (Instant::now() + SYNC_PROBE_INTERVAL).min(deadline);
            let marker = marker.as_bytes();
            loop {
                if find(clean(&self.pending).as_bytes(), marker).is_some() {
                    self.consume_through(marker);
                    return Ok(());
                }
                if Instant::now() >= probe_end {
                    break;
                }
                self.read_some(probe_end)?;
            }
            if Instant::now() >= deadline {
                return Err(ConsoleError::NotResponding {
                    timeout,
                    partial: clean(&self.pending),
                });
            }
        }
    }

    /// Drops pending bytes up to and including the first occurrence of
    /// `marker` (matched with CRs ignored).
    fn consume_through(&mut self, marker: &[u8]) {
        let mut matched = 0;
        for (i, &byte) in self.pending.iter().enumerate() {
            if byte == b'\r' {
                continue;
            }
            if byte == marker[matched] {
                matched += 1;
                if matched == marker.len() {
                    self.pending.drain(..=i);
                    return;
                }
            } else {
                matched = usize::from(byte == marker[0]);
            }
        }
    }

    /// Reads what is available, waiting until `until` at most.
    fn read_some(&mut self, until: Instant) -> Result<(), ConsoleError> {
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait))?;
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => Err(ConsoleError::Closed {
                partial: clean(&self.pending),
            }),
            Ok(n) => {
                if self.pending.len() + n > MAX_OUTPUT_BYTES {
                    return Err(ConsoleError::OutputTooLarge);
                }
                self.pending.extend_from_slice(&buf[..n]);
                Ok(())
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The bound [`run`](Self::run) uses.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs one command line within the console's timeout.
    pub fn run(&mut self, command: &str) -> Result<CommandOutput, ConsoleError> {
        self.run_timeout(command, self.timeout)
    }

    /// Runs `command` and insists on status 0; returns its output.
    pub fn run_ok(&mut self, command: &str) -> Result<String, ConsoleError> {
        let result = self.run(command)?;
        if result.success() {
            Ok(result.output)
        } else {
            Err(ConsoleError::Failed {
                command: command.to_owned(),
                status: result.status,
                output: result.output,
            })
        }
    }

    /// Runs one command line (several lines allowed) within `timeout`.
    pub fn run_timeout(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, ConsoleError> {
        if command
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ConsoleError::ControlCharacter);
        }
        let quoted = shell_quote(command);
        if quoted.len() > MAX_COMMAND_LEN || command.lines().any(|l| l.len() > MAX_COMMAND_LEN) {
            return Err(ConsoleError::CommandTooLong(command.len()));
        }
        let n = self.next;
        self.next += 1;
        let token = &self.token;
        let line = format!(
            "echo AVM-B\"\"EGIN-{token}-{n}; eval {quoted} </dev/null; echo \"AVM-E\"\"ND-{token}-{n} $?\"\n"
        );
        let begin = format!("AVM-BEGIN-{token}-{n}\n");
        let end = format!("AVM-END-{token}-{n} ");
        self.stream.write_all(line.as_bytes())?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(result) = self.parse_result(begin.as_bytes(), end.as_bytes()) {
                return Ok(result);
            }
            if self.shell_restarted_after(begin.as_bytes()) {
                let partial = clean(&self.pending);
                self.pending.clear();
                return Err(ConsoleError::ShellRestarted {
                    command: command.to_owned(),
                    partial,
                });
            }
            if Instant::now() >= deadline {
                // Interrupt it so the shell takes the next command.
                let _ = self.stream.write_all(b"\x03");
                return Err(ConsoleError::Timeout {
                    command: command.to_owned(),
                    timeout,
                    partial: clean(&self.pending),
                });
            }
            self.read_some(deadline)?;
        }
    }

    /// Whether a new shell's banner followed the command's begin marker.
    fn shell_restarted_after(&self, begin: &[u8]) -> bool {
        let text = clean(&self.pending);
        let bytes = text.as_bytes();
        find(bytes, begin)
            .and_then(|at| bytes.get(at..))
            .is_some_and(|rest| find(rest, SHELL_BANNER.as_bytes()).is_some())
    }

    /// The command's output and status once its end line is complete;
    /// consumes it from `pending`.
    fn parse_result(&mut self, begin: &[u8], end: &[u8]) -> Option<CommandOutput> {
        let text = clean(&self.pending);
        let bytes = text.as_bytes();
        let start = find(bytes, begin)? + begin.len();
        let end_at = start + find(&bytes[start..], end)?;
        let status_from = end_at + end.len();
        let line_len = find(&bytes[status_from..], b"\n")?;
        let status = std::str::from_utf8(&bytes[status_from..status_from + line_len])
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(-1);
        let output = String::from_utf8_lossy(&bytes[start..end_at]).into_owned();
        let mut marker = end.to_vec();
        marker.extend_from_slice(&bytes[status_from..status_from + line_len + 1]);
        self.consume_through(&marker);
        Some(CommandOutput { output, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    /// A fake shell: answers the framed lines the way ash on a tty would
    /// (echo with CRLF, then the evaluated markers).
    fn fake_shell(listener: UnixListener, answers: Vec<(&'static str, i32)>) {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut answers = answers.into_iter();
        loop {
            let mut line = String::new();
            use std::io::BufRead as _;
            if reader.read_line(&mut line).unwrap() == 0 {
                return;
            }
            let line = line.trim_start_matches('\x03').trim_end().to_owned();
            let mut out = format!("{line}\r\n");
            if let Some(probe) = line.strip_prefix("echo ") {
                if !probe.contains("EGIN") {
                    out.push_str(&format!("{}\r\n", probe.replace("\"\"", "")));
                } else {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let begin = words[1].trim_end_matches(';').replace("\"\"", "");
                    let end = line
                        .rsplit("echo \"")
                        .next()
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .replace("\"\"", "")
                        .replace('"', "");
                    let (output, status) = answers.next().unwrap_or(("", 0));
                    if status < 0 {
                        out.push_str(&format!(
                            "{begin}\r\n\r\nBusyBox v1.35.0 built-in shell (ash)\r\nmonvm# "
                        ));
                    } else {
                        out.push_str(&format!(
                            "{begin}\r\n{}{end} {status}\r\nmonvm# ",
                            output.replace('\n', "\r\n")
                        ));
                    }
                }
            }
            stream.write_all(out.as_bytes()).unwrap();
        }
    }

    #[test]
    fn runs_commands_through_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let shell = std::thread::spawn(move || {
            fake_shell(
                listener,
                vec![
                    ("6.1.0-57-cloud-amd64\n", 0),
                    ("no such file\n", 2),
                    ("x", 0),
                    ("", -1),
                    ("after\n", 0),
                ],
            )
        });
        let mut console = MonVmConsole::connect(&path, Duration::from_secs(5)).unwrap();
        let out = console.run("uname -r").unwrap();
        assert_eq!(
            out,
            CommandOutput {
                output: "6.1.0-57-cloud-amd64\n".into(),
                status: 0
            }
        );
        let err = console.run_ok("cat /nope").unwrap_err();
        assert!(
            matches!(err, ConsoleError::Failed { status: 2, .. }),
            "{err}"
        );
        // Output without a final newline ends right before the end marker.
        assert_eq!(console.run("printf x").unwrap().output, "x");
        let err = console.run("exit 3").unwrap_err();
        assert!(matches!(err, ConsoleError::ShellRestarted { .. }), "{err}");
        assert_eq!(console.run_ok("echo after").unwrap(), "after\n");
        assert!(matches!(
            console.run("a\u{3}b"),
            Err(ConsoleError::ControlCharacter)
        ));
        assert!(matches!(
            console.run(&"x".repeat(MAX_COMMAND_LEN + 1)),
            Err(ConsoleError::CommandTooLong(_))
        ));
        drop(console);
        shell.join().unwrap();
    }

    #[test]
    fn a_silent_console_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        // Connected (the backlog accepts) but nobody answers.
        let err = MonVmConsole::connect(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ConsoleError::NotResponding { .. }), "{err}");
        let missing = dir.path().join("missing.sock");
        let err = MonVmConsole::connect(&missing, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ConsoleError::Connect { .. }), "{err}");
    }
}
