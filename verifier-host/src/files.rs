//! Files the verifier reads from outside (evidence directories, `--ak`,
//! `--policy`, `--ek-ca`) and writes for others (`attest --export`).
//!
//! What is read must be a regular file of bounded size, opened without
//! following a symbolic link and without blocking (a FIFO or a device in
//! an evidence directory is refused, it never stalls the verifier). What is
//! written goes into a new or empty real directory, each file created anew
//! (`O_EXCL`, which never follows a link), so a prepared directory cannot
//! turn an export into an overwrite of another file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is a symbolic link (refused: links are never followed)")]
    Symlink { path: PathBuf },
    #[error("{path}: not a regular file ({kind})")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: export directory is not empty (exports go to a new or empty directory)")]
    NotEmpty { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Reads a regular file of at most `limit` bytes; `Ok(None)` if it does
/// not exist. The last path component is never followed if it is a link.
pub fn read_regular(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, FileError> {
    let file = match OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO for reading never waits for a writer.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: the last component is a symbolic link.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(FileError::Symlink {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(path)(e)),
    };
    let metadata = file.metadata().map_err(io(path))?;
    if !metadata.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(metadata.file_type()),
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if metadata.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // The file may grow after fstat: the read itself is bounded too.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// Reads a file the operator named on the command line (`--policy`,
/// `--ek-ca`): a link the operator chose is followed, but the target must
/// be a regular file of at most `limit` bytes (never a FIFO or device).
pub fn read_operator_file(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let target = std::fs::canonicalize(path).map_err(io(path))?;
    read_required(&target, limit)
}

/// Like [`read_regular`], but a missing file is an error.
pub fn read_required(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    read_regular(path, limit)?.ok_or_else(|| FileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
    })
}

/// A directory the verifier writes an export into: new, or existing and
/// empty, and never a symbolic link.
#[derive(Debug)]
pub struct ExportDir {
    path: PathBuf,
}

impl ExportDir {
    /// Creates `path` (its parents too), or accepts it if it is an empty
    /// real directory.
    pub fn create(path: &Path) -> Result<Self, FileError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let metadata = std::fs::symlink_metadata(path).map_err(io(path))?;
                let file_type = metadata.file_type();
                if file_type.is_symlink() {
                    return Err(FileError::Symlink {
                        path: path.to_path_buf(),
                    });
                }
                if !file_type.is_dir() {
                    return Err(FileError::NotRegular {
                        path: path.to_path_buf(),
                        kind: kind_of(file_type),
                    });
                }
                if std::fs::read_dir(path).map_err(io(path))?.next().is_some() {
                    return Err(FileError::NotEmpty {
                        path: path.to_path_buf(),
                    });
                }
            }
            Err(e) => return Err(io(path)(e)),
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a new file `name`; fails if anything (a file, a link) is
    /// already there.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), FileError> {
        let path = self.path.join(name);
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(bytes).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_only_bounded_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), Some(b"12345".to_vec()));
        assert!(matches!(
            read_regular(&file, 4),
            Err(FileError::TooLarge { .. })
        ));
        assert_eq!(read_regular(&dir.path().join("missing"), 5).unwrap(), None);
        assert!(read_required(&dir.path().join("missing"), 5).is_err());

        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        assert!(matches!(
            read_regular(&link, 5),
            Err(FileError::Symlink { .. })
        ));
        assert!(matches!(
            read_regular(dir.path(), 5),
            Err(FileError::NotRegular { .. })
        ));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = read_regular(&fifo, 100).unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind: "a FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn exports_go_to_new_or_empty_real_directories_and_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let export = ExportDir::create(&dir.path().join("a/b")).unwrap();
        export.write("x", b"1").unwrap();
        // Never over an existing file.
        assert!(export.write("x", b"2").is_err());
        assert_eq!(std::fs::read(dir.path().join("a/b/x")).unwrap(), b"1");
        // Not into a non-empty directory, nor through a link.
        assert!(matches!(
            ExportDir::create(&dir.path().join("a/b")),
            Err(FileError::NotEmpty { .. })
        ));
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        symlink(&victim, dir.path().join("linked")).unwrap();
        assert!(matches!(
            ExportDir::create(&dir.path().join("linked")),
            Err(FileError::Symlink { .. })
        ));
        // An empty directory is fine; a link planted in it is not written through.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let export = ExportDir::create(&empty).unwrap();
        symlink(victim.join("target"), empty.join("eventlog.bin")).unwrap();
        assert!(export.write("eventlog.bin", b"node data").is_err());
        assert!(!victim.join("target").exists());
    }
}
