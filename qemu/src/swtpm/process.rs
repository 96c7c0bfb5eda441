//! Spawning swtpm in a state directory and reaching its control channel.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::ctrl::CtrlChannel;
use crate::process::{ChildGuard, ProcessGroup};

/// How long swtpm may take to open its sockets.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a single control-channel exchange, so a wedged swtpm cannot hang us.
const CTRL_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where swtpm listens for control commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlEndpoint {
    Unix(PathBuf),
    /// Loopback TCP port (tpm2-tools' swtpm TCTI expects ctrl = server port + 1).
    Tcp(u16),
}

/// Where swtpm serves TPM commands for host tools (tpm2-tools' swtpm TCTI:
/// `swtpm:host=127.0.0.1,port=P` with ctrl on P+1, or `swtpm:path=S` with
/// ctrl at `S.ctrl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEndpoint {
    Tcp(u16),
    Unix(PathBuf),
}

/// How to run one swtpm instance.
#[derive(Debug, Clone)]
pub struct SwtpmConfig {
    /// The TPM's state directory (`--tpmstate dir=`).
    pub tpm_state_dir: PathBuf,
    pub ctrl: CtrlEndpoint,
    /// Also serve TPM commands here (`--server`), for host tools. QEMU
    /// does not need it: it passes its own data channel over the ctrl socket.
    pub server: Option<ServerEndpoint>,
    /// Accept TPM commands without a control-channel INIT and send
    /// TPM2_Startup(CLEAR) at start (for host-side tools, never for QEMU,
    /// whose firmware starts the TPM itself).
    pub startup_clear: bool,
    /// `-t`: exit once the client (QEMU) closes its connection.
    pub terminate_with_client: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub process_group: ProcessGroup,
}

impl SwtpmConfig {
    /// A unix-socket control channel at `ctrl_socket`, nothing else.
    pub fn unix(tpm_state_dir: impl Into<PathBuf>, ctrl_socket: impl Into<PathBuf>) -> Self {
        Self {
            tpm_state_dir: tpm_state_dir.into(),
            ctrl: CtrlEndpoint::Unix(ctrl_socket.into()),
            server: None,
            startup_clear: false,
            terminate_with_client: false,
            log_file: None,
            pid_file: None,
            process_group: ProcessGroup::Inherit,
        }
    }

    /// Serves TPM commands to host tools on the unix socket `server`, with
    /// the control channel at `<server>.ctrl`, where tpm2-tools' swtpm TCTI
    /// (`swtpm:path=<server>`) looks for it. swtpm starts the TPM itself,
    /// as firmware would; clear `startup_clear` to leave TPM2_Startup to
    /// the client (after a control-channel INIT, as QEMU sends).
    pub fn for_host_tools(tpm_state_dir: impl Into<PathBuf>, server: impl Into<PathBuf>) -> Self {
        let server = server.into();
        let mut ctrl = server.clone().into_os_string();
        ctrl.push(".ctrl");
        let mut config = Self::unix(tpm_state_dir, ctrl);
        config.server = Some(ServerEndpoint::Unix(server));
        config.startup_clear = true;
        config
    }

    /// The tpm2-tools TCTI string that reaches the data channel, if any.
    pub fn tcti(&self) -> Option<String> {
        match &self.server {
            Some(ServerEndpoint::Unix(path)) => Some(format!("swtpm:path={}", path.display())),
            Some(ServerEndpoint::Tcp(port)) => Some(format!("swtpm:host=127.0.0.1,port={port}")),
            None => None,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("swtpm");
        command.arg("socket").arg("--tpm2");
        command
            .arg("--tpmstate")
            .arg(option_path("dir=", &self.tpm_state_dir));
        command.arg("--ctrl").arg(match &self.ctrl {
            CtrlEndpoint::Unix(path) => option_path("type=unixio,path=", path),
            CtrlEndpoint::Tcp(port) => format!("type=tcp,port={port},bindaddr=127.0.0.1").into(),
        });
        match &self.server {
            Some(ServerEndpoint::Tcp(port)) => {
                command
                    .arg("--server")
                    .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"));
            }
            Some(ServerEndpoint::Unix(path)) => {
                command
                    .arg("--server")
                    .arg(option_path("type=unixio,path=", path));
            }
            None => {}
        }
        if self.startup_clear {
            command.arg("--flags").arg("not-need-init,startup-clear");
        }
        if self.terminate_with_client {
            command.arg("-t");
        }
        if let Some(log) = &self.log_file {
            command.arg("--log").arg(option_path("level=1,file=", log));
        }
        if let Some(pid_file) = &self.pid_file {
            command.arg("--pid").arg(option_path("file=", pid_file));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }
}

/// `prefix` + `path`, with commas doubled as swtpm's and QEMU's option
/// parsers expect.
pub(crate) fn option_path(prefix: &str, path: &Path) -> std::ffi::OsString {
    let mut value = std::ffi::OsString::from(prefix);
    value.push(path.to_string_lossy().replace(',', ",,"));
    value
}

/// Failures starting or driving swtpm.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("swtpm is not installed (run `make deps`)")]
    NotInstalled,
    #[error("starting swtpm: {0}")]
    Spawn(io::Error),
    #[error("swtpm exited during startup ({status}); see its log {log}")]
    ExitedEarly { status: ExitStatus, log: String },
    #[error("swtpm did not open its control channel within {0:?}")]
    StartupTimeout(Duration),
    #[error("connecting to swtpm's control channel: {0}")]
    Connect(io::Error),
    #[error(transparent)]
    Ctrl(#[from] super::ctrl::CtrlError),
    #[error("swtpm did not exit after shutdown")]
    NoExit,
    #[error("waiting for swtpm: {0}")]
    Wait(io::Error),
}

/// A stream to the control channel, unix or TCP.
pub enum CtrlStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for CtrlStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for CtrlStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

/// A running swtpm, killed on drop unless detached.
pub struct Swtpm {
    guard: ChildGuard,
    config: SwtpmConfig,
}

impl Swtpm {
    /// Starts swtpm and returns once its control channel can be connected to.
    pub fn spawn(config: &SwtpmConfig) -> Result<Self, SwtpmError> {
        let guard = ChildGuard::spawn_in(config.command(), "swtpm", config.process_group).map_err(
            |err| {
                if err.kind() == io::ErrorKind::NotFound {
                    SwtpmError::NotInstalled
                } else {
                    SwtpmError::Spawn(err)
                }
            },
        )?;
        let mut swtpm = Self {
            guard,
            config: config.clone(),
        };
        swtpm.wait_ready()?;
        Ok(swtpm)
    }

    /// Ready means: the pid file exists if one was asked for and the
    /// control (and data) endpoints accept connections. A unix socket file
    /// exists from `bind` on but refuses connections until `listen`, so it
    /// is checked in the kernel's socket table, not by its path.
    fn wait_ready(&mut self) -> Result<(), SwtpmError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.guard.try_wait().map_err(SwtpmError::Wait)? {
                return Err(SwtpmError::ExitedEarly {
                    status,
                    log: self.log_description(),
                });
            }
            let pid_file_ready = self.config.pid_file.as_ref().is_none_or(|p| p.exists());
            let ctrl_ready = match &self.config.ctrl {
                // Not a test connection: with `-t` swtpm would take its end
                // for QEMU leaving and exit.
                CtrlEndpoint::Unix(path) => unix_socket_listening(path),
                // Connecting to a TCP control port is harmless: swtpm treats
                // the close as the end of one control session.
                CtrlEndpoint::Tcp(port) => TcpStream::connect(("127.0.0.1", *port)).is_ok(),
            };
            let server_ready = match &self.config.server {
                None => true,
                Some(ServerEndpoint::Tcp(port)) => TcpStream::connect(("127.0.0.1", *port)).is_ok(),
                Some(ServerEndpoint::Unix(path)) => unix_socket_listening(path),
            };
            if pid_file_ready && ctrl_ready && server_ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SwtpmError::StartupTimeout(STARTUP_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_description(&self) -> String {
        match &self.config.log_file {
            Some(path) => path.display().to_string(),
            None => "(no log file configured)".to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn config(&self) -> &SwtpmConfig {
        &self.config
    }

    /// Opens a control-channel session (swtpm serves one at a time: close
    /// it before QEMU needs the channel).
    pub fn ctrl_channel(&self) -> Result<CtrlChannel<CtrlStream>, SwtpmError> {
        let stream = match &self.config.ctrl {
            CtrlEndpoint::Unix(path) => {
                let s = UnixStream::connect(path).map_err(SwtpmError::Connect)?;
                s.set_read_timeout(Some(CTRL_IO_TIMEOUT))
                    .map_err(SwtpmError::Connect)?;
                CtrlStream::Unix(s)
            }
            CtrlEndpoint::Tcp(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port)).map_err(SwtpmError::Connect)?;
                s.set_read_timeout(Some(CTRL_IO_TIMEOUT))
                    .map_err(SwtpmError::Connect)?;
                CtrlStream::Tcp(s)
            }
        };
        Ok(CtrlChannel::new(stream))
    }

    /// Measures `image` as H-CRTM, stores the volatile state and shuts
    /// swtpm down, waiting until it has exited.
    pub fn measure_hcrtm_and_exit(mut self, image: &[u8]) -> Result<(), SwtpmError> {
        self.ctrl_channel()?.measure_hcrtm_and_shut_down(image)?;
        match self
            .guard
            .wait_timeout(STARTUP_TIMEOUT)
            .map_err(SwtpmError::Wait)?
        {
            Some(_) => Ok(()),
            None => Err(SwtpmError::NoExit),
        }
    }

    /// Graceful shutdown through the control channel (swtpm saves its
    /// permanent state and exits); waits until it has exited.
    pub fn shut_down(mut self) -> Result<(), SwtpmError> {
        self.ctrl_channel()?.shutdown()?;
        match self
            .guard
            .wait_timeout(STARTUP_TIMEOUT)
            .map_err(SwtpmError::Wait)?
        {
            Some(_) => Ok(()),
            None => Err(SwtpmError::NoExit),
        }
    }

    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.guard.try_wait()
    }

    /// Lets swtpm outlive this handle; returns its pid.
    pub fn detach(self) -> u32 {
        self.guard.detach()
    }
}

/// Whether a unix stream socket bound to `path` is listening, from the
/// kernel's table in /proc/net/unix (Flags `00010000` is `__SO_ACCEPTCON`).
fn unix_socket_listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        // No procfs: fall back to the socket file.
        return path.exists();
    };
    listening_in_unix_table(&table, path)
}

fn listening_in_unix_table(table: &str, path: &Path) -> bool {
    const ACCEPTCON: &str = "00010000";
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[3] == ACCEPTCON
            && Path::new(fields[7..].join(" ").as_str()) == path
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 1001 /tmp/n/ctrl.sock\n\
        0000000000000000: 00000002 00000000 00000000 0001 01 1002 /tmp/n/bound.sock\n\
        0000000000000000: 00000003 00000000 00000000 0001 03 1003\n";

    #[test]
    fn only_listening_sockets_count() {
        assert!(listening_in_unix_table(
            TABLE,
            Path::new("/tmp/n/ctrl.sock")
        ));
        assert!(!listening_in_unix_table(
            TABLE,
            Path::new("/tmp/n/bound.sock")
        ));
        assert!(!listening_in_unix_table(
            TABLE,
            Path::new("/tmp/n/other.sock")
        ));
    }

    #[test]
    fn a_real_listener_is_seen_and_a_bound_socket_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let listening = dir.path().join("l.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&listening).unwrap();
        assert!(unix_socket_listening(&listening));
        assert!(!unix_socket_listening(&dir.path().join("absent.sock")));
    }

    #[test]
    fn host_tools_config_puts_ctrl_where_the_swtpm_tcti_looks() {
        let config = SwtpmConfig::for_host_tools("/s/tpm", "/s/tpm.sock");
        assert_eq!(config.ctrl, CtrlEndpoint::Unix("/s/tpm.sock.ctrl".into()));
        assert_eq!(config.tcti().as_deref(), Some("swtpm:path=/s/tpm.sock"));
        let args: Vec<String> = config
            .command()
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--server type=unixio,path=/s/tpm.sock "));
        assert!(joined.contains("--ctrl type=unixio,path=/s/tpm.sock.ctrl "));
        assert!(joined.contains("--flags not-need-init,startup-clear"));
        let mut tcp = config;
        tcp.server = Some(ServerEndpoint::Tcp(2321));
        assert_eq!(
            tcp.tcti().as_deref(),
            Some("swtpm:host=127.0.0.1,port=2321")
        );
    }
}
