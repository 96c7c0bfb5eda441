//! A running `avm-verifier monitor --json` for the tests that watch nodes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `avm-verifier monitor`, its JSON lines on a channel; killed
/// on drop (also when the test fails).
pub struct Monitor {
    child: Child,
    lines: Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Monitor {
    pub fn start(state: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_avm-verifier"))
            .arg("--state")
            .arg(state)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run avm-verifier monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Every line that came so far (without waiting).
    pub fn drain(&mut self) -> Vec<Value> {
        let mut got = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            eprintln!("monitor: {line}");
            self.seen.push(line.clone());
            got.push(line);
        }
        got
    }

    /// The next line for which `want` holds (within `limit`).
    pub fn wait(&mut self, what: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("monitor: {line}");
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what} within {limit:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Every line until the monitor exits; its exit code.
    pub fn finish(&mut self) -> (Vec<Value>, Option<i32>) {
        let status = self.child.wait().expect("wait for monitor");
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            eprintln!("monitor: {line}");
            rest.push(line);
        }
        self.seen.extend(rest.iter().cloned());
        (rest, status.code())
    }

    /// Ctrl-C, as at a terminal. A test run started in the background of
    /// a non-interactive shell inherits SIGINT ignored, and so does the
    /// monitor: it is killed if it has not stopped within 10 s.
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
