//! Standard input as a selectable source.
//!
//! The programs read a duplicate of fd 0, one `read(2)` per readiness
//! event, straight from the descriptor: std's buffered `Stdin` could hold
//! bytes the selector knows nothing about. fd 0 stays blocking, because
//! its flags are shared with the shell that started us; a read after a
//! readiness report does not block.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// A duplicate of fd 0.
#[derive(Debug)]
pub struct Stdin {
    file: File,
}

impl Stdin {
    /// Duplicates fd 0; `None` if it is not open.
    pub fn open() -> Option<Stdin> {
        let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
        Some(Stdin {
            file: File::from(fd),
        })
    }

    /// One `read(2)`; 0 at end of input.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl AsRawFd for Stdin {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// True when a refused registration means "this file cannot be polled
/// but never blocks either": epoll gives `EPERM` for regular files and
/// `/dev/null`, which `read(2)` answers at once. Such input is read
/// straight through instead.
pub fn is_unpollable(error: &rselectors::Error) -> bool {
    error.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error())
}
