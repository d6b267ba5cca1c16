//! A binary running as a process of its own: started with a clean
//! environment, signalled, waited for, its output kept.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::binaries::{orders_api_binary, orders_batch_binary};

/// A running process whose stdout and stderr are read as they come (a full
/// pipe would stall it). Killed if dropped while still running.
#[derive(Debug)]
#[must_use = "a dropped Process is killed"]
pub struct Process {
    name: String,
    child: Child,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// A process that ended: how, and what it wrote.
#[derive(Debug)]
pub struct Exited {
    name: String,
    /// From start to exit, as seen by polling every 20 ms.
    ran_for: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Process {
    /// Starts `program` with `args` and a clean environment: nothing
    /// inherited but `PATH` (so no `OTEL_*` or `RUST_LOG` of the caller's),
    /// plus `env`. Stdin is empty.
    pub fn spawn(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, String)]) -> Self {
        let program = program.as_ref();
        let mut name = Path::new(program)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for arg in args {
            name.push(' ');
            name.push_str(arg);
        }
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(key, value)| (key, value)))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        Self {
            name,
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// [`orders_api_binary`] with `args` and `env`.
    pub fn orders_api(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn(orders_api_binary(), args, env)
    }

    /// [`orders_batch_binary`] with `args` and `env`.
    pub fn orders_batch(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn(orders_batch_binary(), args, env)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|error| panic!("cannot run kill -TERM {pid}: {error}"));
        assert!(status.success(), "kill -TERM {pid} ({}) failed", self.name);
    }

    /// Sends SIGKILL.
    pub fn sigkill(&mut self) {
        self.child
            .kill()
            .unwrap_or_else(|error| panic!("cannot kill {}: {error}", self.name));
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits until `url` answers with a 2xx status, as a server that is up
    /// does; fails, showing the output, if the process exits first or
    /// [`WAIT`](crate::WAIT) passes.
    pub async fn serving(mut self, url: &str) -> Self {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + crate::WAIT;
        loop {
            if let Ok(response) = client.get(url).send().await
                && response.status().is_success()
            {
                return self;
            }
            if !self.running() || Instant::now() >= deadline {
                let exited = self.wait(Duration::ZERO).await;
                panic!("{url} did not answer\n{exited}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (without blocking the runtime) for the process to exit; kills it
    /// and fails, showing its output, if it takes longer than `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Exited {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self
                    .child
                    .wait()
                    .unwrap_or_else(|error| panic!("cannot wait for {}: {error}", self.name));
                let exited = self.collect(status);
                panic!("{} did not exit within {timeout:?}\n{exited}", exited.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.collect(status)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|error| panic!("cannot wait for {}: {error}", self.name))
    }

    fn collect(&mut self, status: ExitStatus) -> Exited {
        let ran_for = self.started.elapsed();
        let join = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|handle| handle.join().unwrap_or_default())
                .unwrap_or_default()
        };
        Exited {
            name: self.name.clone(),
            ran_for,
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Exited {
    /// The exit code; fails (with the output) when the process died of a signal.
    #[must_use]
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by signal {:?}\n{self}", self.status.signal()))
    }

    /// Asserts the process exited 0.
    pub fn assert_success(&self) {
        assert_eq!(self.status.code(), Some(0), "{self}");
    }
}

/// The last few lines of some output, for failure messages.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What it was, how it ended, and the last 30 lines of its stdout and stderr.
impl fmt::Display for Exited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} after {:?}", self.name, self.status, self.ran_for)?;
        writeln!(f, "--- stdout (tail) ---\n{}", tail(&self.stdout, 30))?;
        write!(f, "--- stderr (tail) ---\n{}", tail(&self.stderr, 30))
    }
}
