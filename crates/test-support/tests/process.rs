//! `Process` and `wait_until` on small shell commands.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orders_test_support::{Process, WAIT, wait_until};

fn sh(script: &str, env: &[(&str, String)]) -> Process {
    Process::spawn("sh", &["-c", script], env)
}

#[tokio::test]
async fn keeps_the_exit_code_and_all_output() {
    let exited = sh(
        "i=0; while [ $i -lt 5000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done; exit 3",
        &[],
    )
    .wait(WAIT)
    .await;
    assert_eq!(exited.code(), 3, "{exited}");
    assert_eq!(exited.status.code(), Some(3));
    assert_eq!(exited.stdout.lines().count(), 5000);
    assert_eq!(exited.stderr.lines().last(), Some("err 4999"));
    let shown = exited.to_string();
    assert!(shown.starts_with("sh -c "), "{shown}");
    assert!(
        shown.contains("line 4999") && !shown.contains("line 4969\n"),
        "{shown}"
    );
    assert!(shown.contains("err 4999"), "{shown}");
}

#[tokio::test]
#[should_panic(expected = "exit status: 1")]
async fn assert_success_fails_on_a_non_zero_exit() {
    sh("exit 1", &[]).wait(WAIT).await.assert_success();
}

#[tokio::test]
async fn starts_with_only_path_and_the_given_environment() {
    let exited = sh(
        "echo \"given=$GIVEN home=${HOME-unset} path=${PATH:+set}\"",
        &[("GIVEN", "yes".to_owned())],
    )
    .wait(WAIT)
    .await;
    exited.assert_success();
    assert_eq!(exited.stdout, "given=yes home=unset path=set\n", "{exited}");
}

#[tokio::test]
async fn sigterm_and_sigkill_stop_it() {
    let mut process = sh(
        "trap 'echo terminated; exit 0' TERM; while :; do sleep 0.05; done",
        &[],
    );
    // Give the shell a moment to install its trap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process.running());
    process.sigterm();
    let exited = process.wait(WAIT).await;
    exited.assert_success();
    assert!(exited.stdout.contains("terminated"), "{exited}");

    let mut process = sh("exec sleep 30", &[]);
    process.sigkill();
    let exited = process.wait(WAIT).await;
    assert_eq!(exited.status.code(), None, "{exited}");
    assert_eq!(exited.status.signal(), Some(9), "{exited}");
}

#[tokio::test]
#[should_panic(expected = "did not exit within")]
async fn wait_fails_when_it_runs_too_long() {
    sh("exec sleep 30", &[])
        .wait(Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn wait_until_polls_until_it_holds() {
    let calls = Arc::new(AtomicUsize::new(0));
    wait_until(WAIT, "the third call", || {
        let calls = Arc::clone(&calls);
        async move { calls.fetch_add(1, Ordering::SeqCst) >= 2 }
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
#[should_panic(expected = "timed out waiting: never")]
async fn wait_until_fails_after_the_timeout() {
    wait_until(Duration::from_millis(100), "never", || async { false }).await;
}
