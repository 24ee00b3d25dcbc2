//! `Pty`: a child on a real pseudo-terminal.

use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process on a pseudo-terminal (stdin, stdout and stderr), as under
/// a real terminal: what it writes is collected as it comes.
pub struct Pty {
    pub child: Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// The terminal's keyboard side: what is written here, the child reads.
    keyboard: std::fs::File,
}

impl Pty {
    pub fn spawn(mut command: Command) -> Pty {
        use std::os::fd::{FromRawFd, OwnedFd};
        let (mut controller, mut terminal) = (0, 0);
        // SAFETY: openpty(3) writes two new descriptors, owned below.
        let opened = unsafe {
            libc::openpty(
                &mut controller,
                &mut terminal,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here only.
        let (controller, terminal) = unsafe {
            (
                OwnedFd::from_raw_fd(controller),
                OwnedFd::from_raw_fd(terminal),
            )
        };
        command
            .stdin(terminal.try_clone().unwrap())
            .stdout(terminal.try_clone().unwrap())
            .stderr(terminal);
        let child = command.spawn().unwrap();
        // Our copies of the terminal side close with `command`, so reading
        // ends (EIO) once the child and its children let go of it.
        drop(command);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = output.clone();
        let mut reader = std::fs::File::from(controller);
        let keyboard = reader.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                collected.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Pty {
            child,
            output,
            keyboard,
        }
    }

    /// Types `text` on the terminal.
    pub fn type_text(&mut self, text: &str) {
        self.keyboard.write_all(text.as_bytes()).unwrap();
    }

    /// Everything written so far, lossily as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output holds `text`; the output so far.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.contains(text) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {text:?} in:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits for the child to exit, or fails the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit within {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
