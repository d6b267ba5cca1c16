//! A service binary running as a process of its own: a clean environment,
//! signals, and its exit awaited with everything it wrote.

use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long a process may take to do what a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running process; killed if dropped while it runs.
#[derive(Debug)]
#[must_use = "a dropped Process is killed"]
pub struct Process {
    name: String,
    child: Child,
    /// Its stdout and stderr, read as they come: a full pipe would stall it.
    output: [JoinHandle<String>; 2],
    started: Instant,
}

/// A process that ended: how, after how long, and what it wrote.
#[derive(Debug)]
pub struct Exited {
    name: String,
    pub status: ExitStatus,
    pub ran_for: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Process {
    /// Starts `program` with nothing of the caller's environment but `PATH`
    /// (no `OTEL_*`, no `RUST_LOG`), plus `env`.
    pub fn spawn(program: impl AsRef<Path>, args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn_in(Path::new("."), program, args, env)
    }

    /// [`Process::spawn`] in the working directory `dir`, for a tool that
    /// leaves files where it runs.
    pub fn spawn_in(
        dir: &Path,
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let program = program.as_ref();
        let name = format!("{} {}", program.display(), args.join(" "));
        let mut child = Command::new(program)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(name, value)| (name, value)))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let output = [read(child.stdout.take()), read(child.stderr.take())];
        Self {
            name,
            child,
            output,
            started: Instant::now(),
        }
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().unwrap_or_default().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(
            status.is_ok_and(|status| status.success()),
            "kill -TERM {}",
            self.name
        );
    }

    pub fn sigkill(&mut self) {
        self.child
            .start_kill()
            .unwrap_or_else(|error| panic!("kill {}: {error}", self.name));
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `url` answers 2xx, as a server that is up does; fails with
    /// the output if the process exits first or [`WAIT`] passes.
    pub async fn serving(mut self, url: &str) -> Self {
        let deadline = Instant::now() + WAIT;
        while !reqwest::get(url)
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            if !self.running() || Instant::now() >= deadline {
                let _ = self.child.start_kill();
                panic!("{url} did not answer\n{}", self.wait(WAIT).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self
    }

    /// Waits for the exit and all the output; kills the process and fails,
    /// with its output, after `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Exited {
        let exit = tokio::time::timeout(timeout, self.child.wait()).await;
        let late = exit.is_err();
        if late {
            let _ = self.child.kill().await;
        }
        let status = self
            .child
            .wait()
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", self.name));
        let [stdout, stderr] = self.output;
        let (stdout, stderr) = (
            stdout.await.unwrap_or_default(),
            stderr.await.unwrap_or_default(),
        );
        let exited = Exited {
            name: self.name,
            status,
            ran_for: self.started.elapsed(),
            stdout,
            stderr,
        };
        assert!(!late, "did not exit within {timeout:?}: {exited}");
        exited
    }
}

fn read(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text).await;
        }
        text
    })
}

impl Exited {
    /// Asserts the exit code, showing the output if it is another.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.status.code(), Some(code), "{self}");
    }

    /// Asserts a failed start-up told in one line, `message` from `target`'s
    /// log, at once (not after the database's acquire timeout), nothing on stderr.
    pub fn assert_start_up_error(&self, target: &str, message: &str) {
        self.assert_code(1);
        let lines: Vec<_> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line\n{self}");
        assert!(
            lines[0].ends_with(&format!(" ERROR {target}: {message}")),
            "{self}"
        );
        assert!(
            self.stderr.is_empty() && self.ran_for < Duration::from_secs(10),
            "{self}"
        );
    }

    /// Asserts it said that exporting traces to `endpoint` failed, and
    /// later that it got through again.
    pub fn assert_traces_failed_then_got_through(&self, endpoint: &str) {
        let failed = format!("cannot export traces to {endpoint}");
        let back = format!("exporting traces to {endpoint} again");
        assert!(
            self.stdout.contains(&failed) && self.stdout.contains(&back),
            "{self}"
        );
    }
}

/// How it ended and the last 30 lines of its output, for failure messages.
impl fmt::Display for Exited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        writeln!(f, "{}: {} after {:?}", self.name, self.status, self.ran_for)?;
        write!(
            f,
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}
