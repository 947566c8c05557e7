//! One writer per data directory. `serve` and `demo` (the long-running roles that open
//! the ingest journal, mark devices offline at start and apply to the store) hold an
//! exclusive lock on `<data.dir>/fleetpulse.lock` for as long as they run; a second one on
//! the same directory stops at once and names the holder.
//!
//! The lock is `flock(2)` (std's [`File::try_lock`]): the kernel drops it when the
//! holder's process ends, however it ends, so a lock file left by a killed process never
//! blocks a start. The file itself stays; its contents (pid and command line of the
//! holder) only serve the error message of a second start.
//!
//! The short commands (`token`, `device credential`, `import`, `report`, `predict`,
//! `train`) take no lock: they only go through SQLite transactions, which are safe beside a
//! running server, and they never touch the journal.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside `data.dir`.
pub const LOCK_FILE: &str = "fleetpulse.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data.dir = {dir} is in use by another fleetpulse process ({holder}); stop it first, \
         or give this one its own --data"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("data.dir = {dir}: cannot lock {path}: {source}")]
    Io {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock without waiting. `command` is recorded
    /// in the lock file for the message a second start prints.
    pub fn acquire(dir: &Path, command: &str) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            dir: dir.to_owned(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: until the lock is ours, the contents name the holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder: describe_holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        record_holder(&mut file, command).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// Writes this process's pid and command line over the previous holder's.
fn record_holder(file: &mut File, command: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "pid {}", std::process::id())?;
    writeln!(file, "command {command}")?;
    file.flush()
}

/// "pid 1234, `fleetpulse serve --data d`" from the lock file, as far as it says.
fn describe_holder(file: &mut File) -> String {
    let mut text = String::new();
    if file.seek(SeekFrom::Start(0)).is_err() || file.read_to_string(&mut text).is_err() {
        return "its pid could not be read".to_owned();
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (field("pid"), field("command")) {
        (Some(pid), Some(cmd)) => format!("pid {pid}, `{cmd}`"),
        (Some(pid), None) => format!("pid {pid}"),
        // the holder is between taking the lock and writing its pid
        _ => "its pid is not recorded yet".to_owned(),
    }
}

/// This process's command line, for the lock file.
pub fn this_command() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails_and_names_the_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let held = DataDirLock::acquire(&data, "fleetpulse serve --data x").expect("first lock");
        let err = DataDirLock::acquire(&data, "fleetpulse demo").expect_err("already held");
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("`fleetpulse serve --data x`")
                && msg.contains(&data.display().to_string()),
            "{msg}"
        );
        drop(held);
        DataDirLock::acquire(&data, "fleetpulse demo").expect("free again once released");
    }

    #[test]
    fn a_lock_file_left_behind_does_not_block() {
        let dir = tempfile::tempdir().expect("temp dir");
        // what a SIGKILLed holder leaves: the file with its pid, but no lock
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "pid 999999999\ncommand fleetpulse serve\n",
        )
        .expect("write");
        let _lock = DataDirLock::acquire(dir.path(), "fleetpulse serve").expect("stale file");
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).expect("read");
        assert_eq!(
            text,
            format!("pid {}\ncommand fleetpulse serve\n", std::process::id())
        );
    }
}
