//! The CRB driver against QEMU's real `tpm-crb` device model backed by
//! swtpm, without a guest: QEMU's qtest protocol lets this test perform the
//! guest-physical MMIO accesses at 0xFED40000 itself. This checks the
//! register protocol (locality, cmdReady, start, goIdle, buffer layout)
//! exactly as the A-VM kernel will drive it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tpm_crb::{
    AkAlgorithm, Clock, Crb, CrbError, LOCALITY_REGION_LEN, Mmio, PcrSelection, StartupOutcome, Tpm,
};

const CRB_BASE: u64 = 0xFED4_0000;

/// Kills a child process on drop, also when the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Guest-physical MMIO over QEMU's qtest socket.
struct QtestMmio {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QtestMmio {
    fn command(&mut self, line: &str) -> String {
        self.writer.write_all(line.as_bytes()).expect("qtest write");
        self.writer.write_all(b"\n").expect("qtest write");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("qtest read");
        assert!(reply.starts_with("OK"), "qtest `{line}` answered `{reply}`");
        reply.trim_end().to_string()
    }

    fn value(reply: &str) -> u64 {
        let hex = reply.trim_start_matches("OK ").trim_start_matches("0x");
        u64::from_str_radix(hex, 16).expect("qtest hex value")
    }
}

/// `Mmio` takes `&self` for reads; qtest needs the socket mutably.
struct Qtest(std::cell::RefCell<QtestMmio>);

impl Mmio for Qtest {
    fn read32(&self, offset: usize) -> u32 {
        let reply = self
            .0
            .borrow_mut()
            .command(&format!("readl {:#x}", CRB_BASE + offset as u64));
        QtestMmio::value(&reply) as u32
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.0.borrow_mut().command(&format!(
            "writel {:#x} {value:#x}",
            CRB_BASE + offset as u64
        ));
    }

    fn read8(&self, offset: usize) -> u8 {
        let reply = self
            .0
            .borrow_mut()
            .command(&format!("readb {:#x}", CRB_BASE + offset as u64));
        QtestMmio::value(&reply) as u8
    }

    fn write8(&mut self, offset: usize, value: u8) {
        self.0.borrow_mut().command(&format!(
            "writeb {:#x} {value:#x}",
            CRB_BASE + offset as u64
        ));
    }

    fn region_len(&self) -> usize {
        LOCALITY_REGION_LEN
    }

    // Bulk transfers in one qtest round trip each instead of one per byte.
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        let reply = self.0.borrow_mut().command(&format!(
            "read {:#x} {:#x}",
            CRB_BASE + offset as u64,
            out.len()
        ));
        let hex = reply.trim_start_matches("OK 0x");
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("qtest hex byte");
        }
    }

    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.0.borrow_mut().command(&format!(
            "write {:#x} {:#x} 0x{hex}",
            CRB_BASE + offset as u64,
            data.len()
        ));
    }
}

struct HostClock(Instant);

impl Clock for HostClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// QEMU (qtest accelerator, no guest code) with a tpm-crb device, its
/// swtpm, and the qtest connection.
struct QemuCrb {
    mmio: Option<Qtest>,
    _qemu: KillOnDrop,
    _swtpm: Option<KillOnDrop>,
    _dir: tempfile::TempDir,
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        sleep(Duration::from_millis(10));
    }
}

impl QemuCrb {
    fn start(with_tpm: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let qtest_path = dir.path().join("qtest.sock");
        let listener = UnixListener::bind(&qtest_path).expect("qtest listener");
        let mut qemu = Command::new("qemu-system-x86_64");
        // `-S`: the CPUs never start, so firmware (SeaBIOS would send its own
        // TPM commands) does not race with this test's MMIO accesses.
        qemu.args(["-machine", "q35", "-S", "-display", "none", "-nodefaults"])
            .arg("-qtest")
            .arg(format!("unix:{}", qtest_path.display()))
            .stdin(Stdio::null())
            .args(["-qtest-log", "/dev/null"])
            .stdout(Stdio::null());
        let swtpm = with_tpm.then(|| {
            let ctrl = dir.path().join("swtpm.sock");
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.path().display()))
                .arg("--ctrl")
                .arg(format!("type=unixio,path={}", ctrl.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn swtpm");
            let child = KillOnDrop(child);
            wait_for(&ctrl);
            qemu.arg("-chardev")
                .arg(format!("socket,id=chrtpm,path={}", ctrl.display()))
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                .args(["-device", "tpm-crb,tpmdev=tpm0"]);
            child
        });
        let qemu = KillOnDrop(qemu.spawn().expect("spawn qemu"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
                Err(e) => panic!("QEMU did not connect to qtest: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mmio = Qtest(std::cell::RefCell::new(QtestMmio {
            reader: BufReader::new(stream),
            writer,
        }));
        Self {
            mmio: Some(mmio),
            _qemu: qemu,
            _swtpm: swtpm,
            _dir: dir,
        }
    }

    fn take_mmio(&mut self) -> Qtest {
        self.mmio.take().expect("mmio taken once")
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[test]
fn no_tpm_device_probes_as_not_present() {
    let mut qemu = QemuCrb::start(false);
    let clock = HostClock(Instant::now());
    assert_eq!(
        Crb::probe(qemu.take_mmio(), clock).err(),
        Some(CrbError::NotPresent)
    );
}

#[test]
fn command_layer_runs_over_qemu_tpm_crb() {
    let mut qemu = QemuCrb::start(true);
    let crb = Crb::probe(qemu.take_mmio(), HostClock(Instant::now())).expect("CRB present");
    assert_eq!(crb.command_buffer_len(), 0xF80, "QEMU's CRB buffer");
    let mut tpm = Tpm::new(crb);
    // No firmware ran, so this Startup is the first.
    assert_eq!(tpm.startup_clear().unwrap(), StartupOutcome::Started);
    assert_eq!(tpm.startup_clear().unwrap(), StartupOutcome::AlreadyStarted);
    assert_eq!(&tpm.properties().unwrap().manufacturer, b"IBM\0");

    let selection = PcrSelection::new(&[16]).unwrap();
    let before = tpm.pcr_read(selection).unwrap();
    let digest = sha256(&[b"over CRB"]);
    tpm.pcr_extend(16, &digest).unwrap();
    let after = tpm.pcr_read(selection).unwrap();
    assert_eq!(
        after.get(16).unwrap(),
        &sha256(&[before.get(16).unwrap(), &digest])
    );

    // A large response (RSA key creation) and a signed quote through the CRB.
    let ak = tpm.create_ak(AkAlgorithm::Rsa2048).unwrap();
    let quote = tpm.quote(ak.handle, b"crb nonce", selection).unwrap();
    assert!(quote.attest.windows(9).any(|w| w == b"crb nonce"));
    assert_eq!(quote.signature.len(), 2 + 2 + 2 + 256);
}
