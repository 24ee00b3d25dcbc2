//! One agent per spool directory: an flock(2)ed `lock` file holding its pid.

use super::*;

pub(super) enum LockError {
    Io(io::Error),
    Held(Option<u32>),
}

pub(super) fn lock_directory(dir: &Path) -> Result<File, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(LockError::Io)?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if locked != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(LockError::Held(pid));
        }
        return Err(LockError::Io(error));
    }
    file.set_len(0).map_err(LockError::Io)?;
    write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(file)
}
