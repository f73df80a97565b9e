//! A file lock in the state dir that serialises lifecycle commands on one stack.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StateError;

/// Held for the lifetime of the value (released on drop, or by the OS when the process dies).
#[derive(Debug)]
pub struct StackLock {
    _file: File,
    pub path: PathBuf,
}

impl StackLock {
    /// Takes the lock, waiting up to `timeout`. `on_wait` is called once when the lock is busy
    /// (to print "waiting for another nodus command...").
    pub fn acquire(
        path: &Path,
        timeout: Duration,
        on_wait: impl FnOnce(),
    ) -> Result<StackLock, StateError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StateError::io(path, e))?;
        let start = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(StackLock {
                        _file: file,
                        path: path.to_path_buf(),
                    })
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                    if start.elapsed() >= timeout {
                        return Err(StateError::LockTimeout {
                            path: path.to_path_buf(),
                            waited_secs: timeout.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(StateError::io(path, e)),
            }
        }
    }
}

impl StackLock {
    /// Like [`StackLock::acquire`], but waits on the async runtime, so that Ctrl-C (handled on
    /// the runtime's thread) is acted on while waiting.
    pub async fn acquire_async(
        path: &Path,
        timeout: Duration,
        on_wait: impl FnOnce(),
    ) -> Result<StackLock, StateError> {
        let start = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            match StackLock::acquire(path, Duration::ZERO, || {}) {
                Err(StateError::LockTimeout { .. }) => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                    if start.elapsed() >= timeout {
                        return Err(StateError::LockTimeout {
                            path: path.to_path_buf(),
                            waited_secs: timeout.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn async_wait_times_out_and_then_takes_the_free_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = StackLock::acquire(&p, Duration::from_secs(1), || {}).unwrap();
        let mut waited = false;
        let err = StackLock::acquire_async(&p, Duration::from_millis(250), || waited = true)
            .await
            .unwrap_err();
        assert!(waited);
        assert!(matches!(err, StateError::LockTimeout { .. }));
        drop(held);
        StackLock::acquire_async(&p, Duration::from_millis(250), || {})
            .await
            .unwrap();
    }

    #[test]
    fn second_holder_waits_then_times_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let _held = StackLock::acquire(&p, Duration::from_secs(1), || {}).unwrap();
        let mut waited = false;
        let err = StackLock::acquire(&p, Duration::from_millis(300), || waited = true).unwrap_err();
        assert!(waited);
        assert!(matches!(err, StateError::LockTimeout { .. }));
    }

    #[test]
    fn released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        drop(StackLock::acquire(&p, Duration::from_secs(1), || {}).unwrap());
        StackLock::acquire(&p, Duration::from_millis(100), || panic!("should not wait")).unwrap();
    }
}
