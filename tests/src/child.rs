//! A child process (the real `switchyard` binary, run by its package's
//! integration tests) that is killed when dropped, so a failing test leaves
//! no process behind.

use std::process::Child;

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
