//! Which stock Debian kernel the Mon-VM boots, and what is known about it.
//!
//! `make deps` (scripts/fetch-monvm-kernels.sh) unpacks each kernel series
//! into `.cache/monvm/<series>/`: the package's `boot/` and `lib/modules/`
//! trees plus `package`, `version`, `release` and a `vmlinuz` symlink. A
//! series name picks such a folder; a path picks a vmlinuz (or a folder of
//! that shape) directly. Either way the image must be a bzImage: it is
//! booted as one (QEMU `-kernel`, through the real-mode setup), which keeps
//! the kernel's own KASLR on.

use std::path::{Path, PathBuf};

use super::MonVmError;

/// The kernel series `make deps` fetches (folder names in the cache).
pub const SERIES: [&str; 2] = ["6.1", "6.12"];
/// The series booted unless another is asked for.
pub const DEFAULT_SERIES: &str = "6.1";
/// Environment variable naming the kernel cache (the fetch script's too).
pub const CACHE_ENV: &str = "MONVM_CACHE_DIR";

/// Largest vmlinuz read to check it (Debian's are about 14 MB).
const MAX_VMLINUZ_BYTES: u64 = 256 << 20;

/// The kernel the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// A series folder in the kernel cache (`6.1`, `6.12`).
    Series(String),
    /// A vmlinuz file, or a folder laid out like a series folder.
    Path(PathBuf),
}

impl Default for KernelChoice {
    fn default() -> Self {
        Self::Series(DEFAULT_SERIES.to_owned())
    }
}

impl KernelChoice {
    /// A known series name is a series; anything else is a path.
    pub fn parse(text: &str) -> Self {
        if SERIES.contains(&text) {
            Self::Series(text.to_owned())
        } else {
            Self::Path(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Series(series) => write!(f, "series {series}"),
            Self::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The kernel cache: `$MONVM_CACHE_DIR`, else `.cache/monvm` in this
/// workspace (where `make deps` puts it).
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/monvm"),
        PathBuf::from,
    )
}

/// A resolved Mon-VM kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonVmKernel {
    /// The bzImage, absolute with symlinks resolved.
    pub vmlinuz: PathBuf,
    /// The series folder it came from, if any.
    pub series: Option<String>,
    /// The image package (`linux-image-6.1.0-57-cloud-amd64`), if known.
    pub package: Option<String>,
    /// The package's Debian version (`6.1.192-3`), if known.
    pub version: Option<String>,
    /// The kernel release (`uname -r`), from the bzImage header.
    pub release: String,
    /// The bzImage header's whole version string (release, builder, build).
    pub banner: String,
    /// `lib/modules/<release>` of the package, if present.
    pub modules_dir: Option<PathBuf>,
}

impl MonVmKernel {
    /// What `status` calls the kernel: the package version when known,
    /// else the release.
    pub fn display_version(&self) -> String {
        self.version.clone().unwrap_or_else(|| self.release.clone())
    }
}

/// Resolves `choice` against the kernel cache `cache_dir`.
pub fn resolve(choice: &KernelChoice, cache_dir: &Path) -> Result<MonVmKernel, MonVmError> {
    match choice {
        KernelChoice::Series(series) => {
            let dir = cache_dir.join(series);
            if !dir.join("vmlinuz").is_file() {
                return Err(MonVmError::KernelMissing {
                    series: series.clone(),
                    dir,
                });
            }
            let mut kernel = from_tree(&dir)?;
            kernel.series = Some(series.clone());
            Ok(kernel)
        }
        KernelChoice::Path(path) if path.is_dir() => {
            if !path.join("vmlinuz").is_file() {
                return Err(MonVmError::KernelNotFound(path.join("vmlinuz")));
            }
            from_tree(path)
        }
        KernelChoice::Path(path) => {
            if !path.is_file() {
                return Err(MonVmError::KernelNotFound(path.clone()));
            }
            let mut kernel = from_image(path)?;
            // A vmlinuz inside an unpacked package (`<tree>/vmlinuz` or
            // `<tree>/boot/vmlinuz-<release>`): take its metadata too.
            let tree = path
                .parent()
                .into_iter()
                .chain(path.parent().and_then(Path::parent))
                .find(|dir| read_meta(dir, "release").as_deref() == Some(&kernel.release));
            if let Some(tree) = tree {
                add_tree_meta(&mut kernel, tree);
            }
            Ok(kernel)
        }
    }
}

fn from_tree(dir: &Path) -> Result<MonVmKernel, MonVmError> {
    let mut kernel = from_image(&dir.join("vmlinuz"))?;
    if let Some(release) = read_meta(dir, "release")
        && release != kernel.release
    {
        return Err(MonVmError::KernelMismatch {
            dir: dir.to_path_buf(),
            release,
            image_release: kernel.release,
        });
    }
    add_tree_meta(&mut kernel, dir);
    Ok(kernel)
}

fn add_tree_meta(kernel: &mut MonVmKernel, dir: &Path) {
    kernel.package = read_meta(dir, "package");
    kernel.version = read_meta(dir, "version");
    let modules = dir.join("lib/modules").join(&kernel.release);
    kernel.modules_dir = modules.is_dir().then_some(modules);
}

/// One line of metadata the fetch script wrote (`package`, `version`,
/// `release`), trimmed; `None` if absent or empty.
fn read_meta(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty() && line.len() <= 256).then(|| line.to_owned())
}

fn from_image(path: &Path) -> Result<MonVmKernel, MonVmError> {
    let vmlinuz = std::fs::canonicalize(path).map_err(|source| MonVmError::Io {
        context: format!("resolving {}", path.display()),
        source,
    })?;
    let header = read_setup_header(&vmlinuz)?;
    let banner = bzimage_version(&header).ok_or_else(|| MonVmError::NotBzImage {
        path: vmlinuz.clone(),
        reason: "no kernel version string in the setup header",
    })?;
    let release = banner
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(MonVmKernel {
        vmlinuz,
        series: None,
        package: None,
        version: None,
        release,
        banner,
        modules_dir: None,
    })
}

/// The real-mode setup part of a bzImage (enough to hold the version
/// string the header points at).
fn read_setup_header(path: &Path) -> Result<Vec<u8>, MonVmError> {
    use std::io::Read as _;
    let io = |source| MonVmError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_VMLINUZ_BYTES {
        return Err(MonVmError::NotBzImage {
            path: path.to_path_buf(),
            reason: "larger than any kernel image",
        });
    }
    let mut header = Vec::new();
    file.take(SETUP_READ_BYTES)
        .read_to_end(&mut header)
        .map_err(io)?;
    check_bzimage(&header).map_err(|reason| MonVmError::NotBzImage {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(header)
}

/// Bytes of the image read for the header and its version string.
const SETUP_READ_BYTES: u64 = 64 * 1024;

/// Checks the x86 boot protocol header (Documentation/arch/x86/boot.rst):
/// boot flag 0xAA55, "HdrS", protocol 2.12+ (64-bit entry), a relocatable
/// protected-mode kernel (KASLR needs one).
pub fn check_bzimage(header: &[u8]) -> Result<(), &'static str> {
    let u16_at = |at: usize| {
        header
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if u16_at(0x1fe) != Some(0xaa55) || header.get(0x202..0x206) != Some(b"HdrS") {
        return Err("no x86 boot sector / setup header (not a bzImage)");
    }
    if u16_at(0x206).is_none_or(|version| version < 0x020c) {
        return Err("boot protocol older than 2.12");
    }
    let loadflags = header.get(0x211).copied().unwrap_or(0);
    if loadflags & 1 == 0 {
        return Err("not loaded high (a zImage, not a bzImage)");
    }
    if header.get(0x234).copied().unwrap_or(0) == 0 {
        return Err("not a relocatable kernel (no KASLR)");
    }
    Ok(())
}

/// The NUL-terminated version string the header's `kernel_version` field
/// points at (offset + 0x200), e.g. `6.1.0-57-cloud-amd64 (debian-kernel@…)
/// #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (…)`.
pub fn bzimage_version(header: &[u8]) -> Option<String> {
    let pointer = header.get(0x20e..0x210)?;
    let pointer = u16::from_le_bytes([pointer[0], pointer[1]]);
    if pointer == 0 {
        return None;
    }
    let start = usize::from(pointer) + 0x200;
    let rest = header.get(start..)?;
    let end = rest.iter().take(512).position(|&b| b == 0)?;
    let text = std::str::from_utf8(rest.get(..end)?).ok()?;
    let text = text.trim();
    (!text.is_empty() && text.chars().all(|c| !c.is_control())).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_header(version: &str) -> Vec<u8> {
        let mut header = vec![0u8; 0x1000];
        header[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        header[0x202..0x206].copy_from_slice(b"HdrS");
        header[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        header[0x211] = 1;
        header[0x234] = 1;
        header[0x20e..0x210].copy_from_slice(&0x0600u16.to_le_bytes());
        header[0x800..0x800 + version.len()].copy_from_slice(version.as_bytes());
        header
    }

    #[test]
    fn series_names_and_paths() {
        assert_eq!(
            KernelChoice::parse("6.12"),
            KernelChoice::Series("6.12".into())
        );
        assert_eq!(
            KernelChoice::parse("./6.1"),
            KernelChoice::Path("./6.1".into())
        );
        assert_eq!(
            KernelChoice::default(),
            KernelChoice::Series(DEFAULT_SERIES.into())
        );
    }

    #[test]
    fn header_checks_and_version() {
        let header = fake_header("6.1.0-57-cloud-amd64 (x) #1 SMP Debian 6.1.192-3");
        assert_eq!(check_bzimage(&header), Ok(()));
        assert_eq!(
            bzimage_version(&header).as_deref(),
            Some("6.1.0-57-cloud-amd64 (x) #1 SMP Debian 6.1.192-3")
        );
        let mut elf = header.clone();
        elf[0x202] = b'X';
        assert!(check_bzimage(&elf).is_err());
        let mut fixed = header.clone();
        fixed[0x234] = 0;
        assert!(check_bzimage(&fixed).is_err());
        assert!(check_bzimage(&header[..0x100]).is_err());
        let mut no_version = header.clone();
        no_version[0x20e..0x210].copy_from_slice(&[0, 0]);
        assert_eq!(bzimage_version(&no_version), None);
        let mut unterminated = header;
        unterminated[0x800..].fill(b'a');
        assert_eq!(bzimage_version(&unterminated), None);
    }

    #[test]
    fn missing_series_says_make_deps() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(&KernelChoice::Series("6.1".into()), dir.path()).unwrap_err();
        assert!(err.to_string().contains("make deps"), "{err}");
        let err = resolve(&KernelChoice::Path(dir.path().join("nope")), dir.path()).unwrap_err();
        assert!(matches!(err, MonVmError::KernelNotFound(_)), "{err}");
        let not_a_kernel = dir.path().join("vmlinuz");
        std::fs::write(&not_a_kernel, b"\x7fELF").unwrap();
        let err = resolve(&KernelChoice::Path(not_a_kernel), dir.path()).unwrap_err();
        assert!(matches!(err, MonVmError::NotBzImage { .. }), "{err}");
    }

    #[test]
    fn a_tree_gives_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let release = "6.1.0-57-cloud-amd64";
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/modules").join(release)).unwrap();
        let image = dir.path().join("boot").join(format!("vmlinuz-{release}"));
        std::fs::write(&image, fake_header(&format!("{release} (x) #1"))).unwrap();
        std::os::unix::fs::symlink(
            format!("boot/vmlinuz-{release}"),
            dir.path().join("vmlinuz"),
        )
        .unwrap();
        std::fs::write(dir.path().join("release"), format!("{release}\n")).unwrap();
        std::fs::write(dir.path().join("version"), "6.1.192-3\n").unwrap();
        std::fs::write(dir.path().join("package"), "linux-image-x\n").unwrap();
        let cache = dir.path().parent().unwrap();
        let series = dir.path().file_name().unwrap().to_str().unwrap();
        for choice in [
            KernelChoice::Series(series.into()),
            KernelChoice::Path(dir.path().into()),
            KernelChoice::Path(image.clone()),
            KernelChoice::Path(dir.path().join("vmlinuz")),
        ] {
            let kernel = resolve(&choice, cache).unwrap();
            assert_eq!(kernel.release, release);
            assert_eq!(kernel.version.as_deref(), Some("6.1.192-3"), "{choice}");
            assert_eq!(kernel.package.as_deref(), Some("linux-image-x"));
            assert_eq!(kernel.vmlinuz, std::fs::canonicalize(&image).unwrap());
            assert!(kernel.modules_dir.is_some());
            assert_eq!(kernel.display_version(), "6.1.192-3");
        }
        std::fs::write(dir.path().join("release"), "6.1.0-1-other\n").unwrap();
        assert!(matches!(
            resolve(&KernelChoice::Path(dir.path().into()), cache),
            Err(MonVmError::KernelMismatch { .. })
        ));
    }
}
