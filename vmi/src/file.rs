//! Guest memory in a file (the Mon-VM's RAM file, a saved RAM image): host
//! tests and offline analysis. Reads go through `pread`, so the file may be
//! larger than what fits in memory and may change under us (a running guest).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::memory::{Backing, BackingError, BackingTooSmall, LayoutMemory, RamLayout};

/// A RAM file as a [`Backing`] store. Its length is taken once, at open.
#[derive(Debug)]
pub struct FileBacking {
    file: File,
    len: u64,
}

impl FileBacking {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileBacking { file, len })
    }
}

impl Backing for FileBacking {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|_| BackingError)
    }
}

/// Guest memory backed by a RAM file.
pub type FileMemory = LayoutMemory<FileBacking>;

/// Why a RAM file could not be opened as guest memory.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    TooSmall(BackingTooSmall),
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "{e}"),
            OpenError::TooSmall(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

impl FileMemory {
    /// Opens `path` read-only as guest RAM laid out by `layout`.
    pub fn open(path: &Path, layout: RamLayout) -> Result<Self, OpenError> {
        let backing = FileBacking::open(path).map_err(OpenError::Io)?;
        LayoutMemory::new(backing, layout).map_err(OpenError::TooSmall)
    }

    /// Opens `path` as flat RAM: guest-physical address = file offset.
    pub fn open_flat(path: &Path) -> Result<Self, OpenError> {
        let backing = FileBacking::open(path).map_err(OpenError::Io)?;
        let layout = RamLayout::flat(backing.len()).map_err(|_| {
            OpenError::TooSmall(BackingTooSmall {
                needed: 1,
                available: 0,
            })
        })?;
        LayoutMemory::new(backing, layout).map_err(OpenError::TooSmall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuestMemory, GuestPhysAddr, RamRegion};
    use std::io::Write;

    #[test]
    fn file_memory_reads_through_the_layout() {
        let dir = std::env::temp_dir().join(format!("vmi-file-test-{}", std::process::id()));
        let mut f = File::create(&dir).expect("create");
        let bytes: Vec<u8> = (0..0x3000u32).map(|i| (i / 0x1000) as u8 + 1).collect();
        f.write_all(&bytes).expect("write");
        drop(f);
        let layout = RamLayout::new(&[
            RamRegion::new(0, 0x1000, 0),
            RamRegion::new(0x1_0000_0000, 0x2000, 0x1000),
        ])
        .expect("layout");
        let mem = FileMemory::open(&dir, layout).expect("open");
        assert_eq!(mem.read_u8(GuestPhysAddr(0xfff)), Ok(1));
        assert_eq!(mem.read_u8(GuestPhysAddr(0x1_0000_0000)), Ok(2));
        assert_eq!(mem.read_u8(GuestPhysAddr(0x1_0000_1000)), Ok(3));
        assert!(mem.read_u8(GuestPhysAddr(0x1000)).is_err());
        let flat = FileMemory::open_flat(&dir).expect("flat");
        assert_eq!(flat.read_u8(GuestPhysAddr(0x2fff)), Ok(3));
        assert!(flat.read_u8(GuestPhysAddr(0x3000)).is_err());
        let too_big = RamLayout::flat(0x4000).expect("layout");
        assert!(matches!(
            FileMemory::open(&dir, too_big),
            Err(OpenError::TooSmall(_))
        ));
        std::fs::remove_file(&dir).expect("remove");
    }
}
