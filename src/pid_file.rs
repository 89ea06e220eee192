//! `state_dir/headland.pid`: how `headland reload` finds the running instance when the admin
//! API has no token, and what a binary upgrade's new process rewrites.

use std::io;
use std::path::{Path, PathBuf};

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("headland.pid")
}

/// Records this process's id, creating `state_dir` if needed.
pub fn write(state_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let temp = state_dir.join("headland.pid.tmp");
    std::fs::write(&temp, format!("{}\n", std::process::id()))?;
    std::fs::rename(temp, path(state_dir))
}

pub fn read(state_dir: &Path) -> io::Result<i32> {
    let text = std::fs::read_to_string(path(state_dir))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "pid file does not hold a process id",
        )
    })
}
