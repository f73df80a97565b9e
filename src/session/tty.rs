//! The local terminal: raw mode while a remote TTY is attached, and its size.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

/// Puts stdin's terminal in raw mode until dropped (keys go to the container as typed, Ctrl-C
/// included).
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    /// None when stdin is not a terminal.
    pub fn enable() -> std::io::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let fd = stdin.as_raw_fd();
        // SAFETY: tcgetattr/tcsetattr on a valid fd with a properly sized termios.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Some(RawMode { fd, saved }))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable` on the same fd.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Rows and columns of the terminal on stdout (or stdin), if there is one.
pub fn size() -> Option<(u16, u16)> {
    let (w, h) = terminal_size::terminal_size()
        .or_else(|| terminal_size::terminal_size_of(std::io::stdin()))?;
    Some((h.0, w.0))
}

/// Whether an attached command gets a TTY: stdin and stdout are terminals and `-T` was not given.
pub fn want_tty(no_tty: bool) -> bool {
    !no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}
