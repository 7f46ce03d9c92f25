//! `command`: a shell command run inside the root, guarded so that it runs only when needed.
//!
//! ```yaml
//! - command: /usr/local/bin/register --token "{{ runner_token }}"   # run with /bin/sh -c
//!   creates: /var/lib/runner/.registered   # skip when this path exists in the root
//!   unless: "test -f /etc/foo"             # skip when this exits 0 (run with /bin/sh -c)
//!   cwd: /                                 # optional working directory in the root (default /)
//!   timeout: 600                           # seconds, default 600, for the command and `unless`
//! ```
//!
//! An unguarded command is not idempotent: it would run on every pull. So a command must carry
//! `creates` or `unless`, unless it is a handler, whose notification is its guard.
//! Guards are evaluated while reading, which happens in check mode too: `unless` must be a
//! read-only probe (`test`, `grep -q`, `systemctl is-enabled`…), never something with effects.
//! When `creates` is set, a successful run that still leaves the path missing is an error: the
//! command would otherwise run again on every pull without anybody noticing.
//! Output is captured (only its tail is kept) and shown on failure; on timeout the whole process
//! group is terminated, then killed.

use std::process::Output;
use std::time::Duration;

use serde::Deserialize;

use crate::child::{self, Finished};
use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::resource::{Applied, Change, DynResource, Resource};
use crate::spec::{parse_spec, ResourceType, Sources};

pub const TYPE: ResourceType = ResourceType {
    name: "command",
    primary: "cmd",
    names: &["creates", "cwd"],
    build,
};

const DEFAULT_TIMEOUT: u64 = 600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    cmd: String,
    creates: Option<String>,
    unless: Option<String>,
    cwd: Option<String>,
    timeout: Option<u64>,
}

#[derive(Debug)]
pub struct ShellCommand {
    cmd: String,
    creates: Option<String>,
    unless: Option<String>,
    cwd: Option<String>,
    timeout: Duration,
}

fn build(
    spec: serde_json::Value,
    sources: &dyn Sources,
) -> Result<Box<dyn DynResource>, SpecError> {
    Ok(Box::new(ShellCommand::from_spec(
        parse_spec(spec)?,
        sources.in_handler(),
    )?))
}

impl ShellCommand {
    fn from_spec(spec: Spec, in_handler: bool) -> Result<Self, SpecError> {
        if spec.cmd.trim().is_empty() {
            return Err(SpecError::at_key("command", "the command is empty"));
        }
        if spec.creates.is_none() && spec.unless.is_none() && !in_handler {
            return Err(SpecError::at_key(
                "command",
                "an unguarded command is not idempotent: it would run on every pull. Add `creates: <path it \
                 makes>` or `unless: <read-only test that succeeds once done>`, or make it a handler that \
                 another resource notifies",
            ));
        }
        for (key, value) in [("creates", &spec.creates), ("cwd", &spec.cwd)] {
            if value.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(SpecError::at_key(
                    key,
                    format!("{key} must be an absolute path in the device's root"),
                ));
            }
        }
        if spec.unless.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(SpecError::at_key(
                "unless",
                "`unless` is empty; give a test command or remove the key",
            ));
        }
        let timeout = spec.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout == 0 {
            return Err(SpecError::at_key(
                "timeout",
                "timeout is in seconds and must be at least 1",
            ));
        }
        Ok(ShellCommand {
            cmd: spec.cmd,
            creates: spec.creates,
            unless: spec.unless,
            cwd: spec.cwd,
            timeout: Duration::from_secs(timeout),
        })
    }

    /// The argv running `script` with /bin/sh in `cwd`. chroot(8) always starts in the new root's
    /// `/`, so the directory change happens in the shell, where it also fails with a clear message.
    fn shell_argv<'a>(&'a self, script: &'a str) -> Vec<&'a str> {
        match &self.cwd {
            None => vec!["/bin/sh", "-c", script],
            Some(cwd) => vec![
                "/bin/sh",
                "-c",
                "cd -- \"$1\" && exec /bin/sh -c \"$2\"",
                "sh",
                cwd,
                script,
            ],
        }
    }

    fn creates_exists(&self, host: &Host) -> Result<bool, ResourceError> {
        let Some(path) = &self.creates else {
            return Ok(false);
        };
        let p = host.path(path)?;
        match std::fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ResourceError::io(std::path::Path::new(path), e)),
        }
    }
}

/// Why the command is skipped, or None when it must run.
pub type Guarded = Option<String>;

impl Resource for ShellCommand {
    type Actual = Guarded;

    fn kind(&self) -> &'static str {
        "command"
    }

    fn id(&self) -> String {
        self.cmd.clone()
    }

    fn read(&self, host: &Host) -> Result<Guarded, ResourceError> {
        if self.creates_exists(host)? {
            return Ok(Some(format!(
                "{} exists",
                self.creates.as_deref().unwrap_or_default()
            )));
        }
        let Some(unless) = &self.unless else {
            return Ok(None);
        };
        let shown = format!("unless: {unless}");
        let out = run_captured(host, &self.shell_argv(unless), &shown, self.timeout)?;
        match out {
            Finished::TimedOut(out) => Err(timed_out(host, &shown, self.timeout, &out)),
            Finished::Exited(out) if out.status.success() => Ok(Some("`unless` succeeded".into())),
            Finished::Exited(_) => Ok(None),
        }
    }

    fn diff(&self, actual: &Guarded, _: &Host) -> Option<Change> {
        actual
            .is_none()
            .then(|| Change::new(format!("run: {}", self.cmd)))
    }

    fn apply(&self, _: Guarded, host: &Host) -> Result<Applied, ResourceError> {
        match run_captured(host, &self.shell_argv(&self.cmd), &self.cmd, self.timeout)? {
            Finished::TimedOut(out) => Err(timed_out(host, &self.cmd, self.timeout, &out)),
            Finished::Exited(out) if !out.status.success() => Err(host.command_error(&self.cmd, &out)),
            Finished::Exited(_) if self.creates.is_some() && !self.creates_exists(host)? => {
                Err(ResourceError::other(format!(
                    "`{}` succeeded but did not create {}, so it would run again on every pull; make it create \
                     that path, or fix `creates`",
                    host.redact(&self.cmd),
                    self.creates.as_deref().unwrap_or_default()
                )))
            }
            Finished::Exited(_) => Ok(Applied::Done),
        }
    }
}

fn timed_out(host: &Host, shown: &str, timeout: Duration, out: &Output) -> ResourceError {
    match host.command_error(shown, out) {
        ResourceError::Command { command, output, .. } => ResourceError::Command {
            command,
            status: format!(
                "timed out after {} s and its process group was killed; raise `timeout:` if it needs longer",
                timeout.as_secs()
            ),
            output: if output.is_empty() { "(no output)".into() } else { output },
        },
        other => other,
    }
}

/// Runs argv inside the root with a deadline, as a command resource does: a non-zero exit or the
/// deadline passing is an error carrying the (redacted) tail of its output. Health checks use it.
pub fn run_with_timeout(
    host: &Host,
    argv: &[&str],
    shown: &str,
    timeout: Duration,
) -> Result<Output, ResourceError> {
    match run_captured(host, argv, shown, timeout)? {
        Finished::TimedOut(out) => Err(timed_out(host, shown, timeout, &out)),
        Finished::Exited(out) if out.status.success() => Ok(out),
        Finished::Exited(out) => Err(host.command_error(shown, &out)),
    }
}

/// Runs argv inside the root under `timeout` (see [`crate::child`]).
fn run_captured(
    host: &Host,
    argv: &[&str],
    shown: &str,
    timeout: Duration,
) -> Result<Finished, ResourceError> {
    let mut cmd = host.command(argv);
    if host.is_real_root() {
        cmd.current_dir("/");
    }
    child::run(cmd, timeout).map_err(|e| match e {
        child::Error::Spawn(e) => {
            ResourceError::other(format!("cannot run `{}`: {e}", host.redact(shown)))
        }
        child::Error::Wait(e) => {
            ResourceError::other(format!("waiting for `{}`: {e}", host.redact(shown)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    struct Role {
        handler: bool,
    }
    impl Sources for Role {
        fn file(&self, name: &str) -> Result<crate::spec::Content, String> {
            Err(format!("no file {name}"))
        }
        fn template(&self, name: &str) -> Result<crate::spec::Content, String> {
            Err(format!("no template {name}"))
        }
        fn in_handler(&self) -> bool {
            self.handler
        }
    }

    fn command(spec: serde_json::Value) -> ShellCommand {
        ShellCommand::from_spec(parse_spec(spec).unwrap(), false).unwrap()
    }

    /// Plans like the engine does, applying when there is a change; returns the change summary.
    fn converge(c: &ShellCommand, host: &Host) -> Result<Option<String>, ResourceError> {
        let actual = c.read(host)?;
        let Some(change) = c.diff(&actual, host) else {
            return Ok(None);
        };
        c.apply(actual, host)?;
        Ok(Some(change.summary))
    }

    fn lines(path: &std::path::Path) -> usize {
        std::fs::read_to_string(path)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn unguarded_command_is_refused_unless_it_is_a_handler() {
        let err = (TYPE.build)(
            json!({"cmd": "systemctl restart x"}),
            &Role { handler: false },
        )
        .err()
        .unwrap();
        assert_eq!(err.key.as_deref(), Some("command"));
        assert!(
            err.message.contains("not idempotent") && err.message.contains("creates"),
            "{}",
            err.message
        );
        assert!((TYPE.build)(
            json!({"cmd": "systemctl restart x"}),
            &Role { handler: true }
        )
        .is_ok());
        assert!((TYPE.build)(
            json!({"cmd": "x", "unless": "true"}),
            &Role { handler: false }
        )
        .is_ok());
    }

    #[test]
    fn bad_paths_and_timeouts_are_refused_at_build() {
        let key = |v| {
            (TYPE.build)(v, &Role { handler: false })
                .err()
                .and_then(|e| e.key)
        };
        assert_eq!(
            key(json!({"cmd": "x", "creates": "relative"})).as_deref(),
            Some("creates")
        );
        assert_eq!(
            key(json!({"cmd": "x", "creates": "/a", "cwd": "tmp"})).as_deref(),
            Some("cwd")
        );
        assert_eq!(
            key(json!({"cmd": "x", "creates": "/a", "timeout": 0})).as_deref(),
            Some("timeout")
        );
        assert_eq!(
            key(json!({"cmd": "x", "creates": "/a", "chdir": "/"})).as_deref(),
            Some("chdir")
        );
    }

    #[test]
    fn creates_guard_runs_once() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let marker = d.path().join("marker");
        let host = Host::new("/");
        let c = command(json!({
            "cmd": format!("echo ran >> {} && touch {}", log.display(), marker.display()),
            "creates": marker.display().to_string(),
        }));
        assert!(converge(&c, &host)
            .unwrap()
            .unwrap()
            .starts_with("run: echo ran"));
        assert_eq!(
            converge(&c, &host).unwrap(),
            None,
            "the created path guards the second run"
        );
        assert_eq!(lines(&log), 1);
    }

    #[test]
    fn creates_is_checked_in_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/lib")).unwrap();
        std::fs::write(d.path().join("var/lib/done"), "").unwrap();
        let c = command(json!({"cmd": "false", "creates": "/var/lib/done"}));
        assert_eq!(
            c.read(&Host::new(d.path())).unwrap().as_deref(),
            Some("/var/lib/done exists")
        );
        let c = command(json!({"cmd": "false", "creates": "/var/lib/other"}));
        assert_eq!(c.read(&Host::new(d.path())).unwrap(), None);
    }

    #[test]
    fn unless_guard_skips_when_it_succeeds() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let host = Host::new("/");
        let c = command(json!({
            "cmd": format!("echo ran >> {}", log.display()),
            "unless": format!("test -s {}", log.display()),
        }));
        assert!(converge(&c, &host).unwrap().is_some());
        assert_eq!(converge(&c, &host).unwrap(), None);
        assert_eq!(lines(&log), 1);
    }

    #[test]
    fn cwd_is_where_the_command_runs() {
        let d = tempfile::tempdir().unwrap();
        let c = command(
            json!({"cmd": "echo x > here", "cwd": d.path().display().to_string(), "unless": "false"}),
        );
        converge(&c, &Host::new("/")).unwrap();
        assert!(d.path().join("here").exists());
    }

    #[test]
    fn failure_shows_the_last_lines_of_output() {
        let d = tempfile::tempdir().unwrap();
        let c = command(json!({
            "cmd": "for i in $(seq 1 20); do echo line$i; done; echo broken >&2; exit 7",
            "creates": d.path().join("never").display().to_string(),
        }));
        let err = converge(&c, &Host::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("exit status: 7") && err.contains("broken"),
            "{err}"
        );
        assert!(!err.contains("line1\n"), "stderr wins over stdout: {err}");
    }

    #[test]
    fn success_that_does_not_create_the_guard_path_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let c = command(
            json!({"cmd": "true", "creates": d.path().join("never").display().to_string()}),
        );
        let err = converge(&c, &Host::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("did not create") && err.contains("every pull"),
            "{err}"
        );
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let d = tempfile::tempdir().unwrap();
        let late = d.path().join("late");
        let c = command(json!({
            // The background sleeper shares the group and holds the output pipe open.
            "cmd": format!("(sleep 3; touch {}) & echo started; sleep 30", late.display()),
            "creates": d.path().join("never").display().to_string(),
            "timeout": 1,
        }));
        let started = Instant::now();
        let err = converge(&c, &Host::new("/")).unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("timed out after 1 s") && err.contains("started"),
            "{err}"
        );
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            !late.exists(),
            "the background member of the group was killed too"
        );
    }

    #[test]
    fn a_background_process_holding_the_pipe_does_not_block_completion() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("m");
        let c = command(json!({
            "cmd": format!("sleep 5 & touch {}", marker.display()),
            "creates": marker.display().to_string(),
        }));
        let started = Instant::now();
        converge(&c, &Host::new("/")).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn secrets_in_the_command_are_redacted_from_failures() {
        let host = Host::new("/").with_redactor(crate::Redactor::new(["tok-123456".to_string()]));
        let d = tempfile::tempdir().unwrap();
        let c = command(json!({
            "cmd": "echo using tok-123456 >&2; exit 1",
            "creates": d.path().join("never").display().to_string(),
        }));
        let err = converge(&c, &host).unwrap_err().to_string();
        assert!(
            !err.contains("tok-123456") && err.contains("<redacted>"),
            "{err}"
        );
    }
}
