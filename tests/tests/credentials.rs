//! Issue #14, finding 3: the git server's credential stays with the transport.
//!
//! A real https git server (lighttpd + git-http-backend, test CA) on 127.0.0.1 requires HTTP
//! Basic authentication; the device is a Debian chroot. With the token in `source.url`, one run
//! that succeeds and one that fails (a wrong path, so the error names the URL) must leave the
//! token in none of what tend writes: stdout, stderr, the journal fields (tend's native journal
//! protocol, caught on a datagram socket at the device's journal path), report.json, the
//! history, state.json, `tend status`, the metrics file and `tend inventory`. The recommended
//! form, `source.username` + `source.password_file`, works, and a password file others can read
//! is refused with the `chmod 600` fix.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use tend_tests::pullbed::PullBed;
use tend_tests::{skip_chroot_tests, Outcome};

const USER: &str = "deploy";
const TOKEN: &str = "tok-7f3a9c2e51d04b8e";
const METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";

/// The journal socket inside the device: every datagram tend sends, as text.
struct Journal {
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Journal {
    fn bind(bed: &PullBed) -> Result<Journal> {
        bed.dev.write("/run/systemd/journal/.keep", "")?;
        let path = bed.dev.path("/run/systemd/journal")?.join("socket");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 128 * 1024];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().unwrap().push(text);
                }
            }
        });
        Ok(Journal {
            got,
            stop,
            reader: Some(reader),
        })
    }

    /// `tend <args>` as systemd starts it: stderr is the journal's, so events go to the socket.
    fn tend(&self, bed: &PullBed, args: &[&str]) -> Result<Outcome> {
        let mut argv = vec!["/usr/bin/tend"];
        argv.extend_from_slice(args);
        let mut cmd = bed.dev.command(&argv);
        cmd.env("JOURNAL_STREAM", "8:12345");
        bed.dev.run_command(cmd, &argv.join(" "))
    }

    fn all(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        self.got.lock().unwrap().join("\n---\n")
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Every place tend writes, by name, with what it holds now.
fn written(bed: &PullBed) -> Result<Vec<(String, String)>> {
    let mut out = vec![
        (
            "report.json".to_string(),
            bed.dev.read_string("/var/lib/tend/report.json")?,
        ),
        (
            "state.json".to_string(),
            bed.dev.read_string("/var/lib/tend/state.json")?,
        ),
        (
            "metrics".to_string(),
            bed.dev.read_string(&format!("{METRICS_DIR}/tend.prom"))?,
        ),
    ];
    let history = bed.dev.path("/var/lib/tend/history")?;
    let mut n = 0;
    for entry in std::fs::read_dir(history)? {
        let p = entry?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        out.push((format!("history/{name}"), std::fs::read_to_string(&p)?));
        n += 1;
    }
    ensure!(n > 0, "no history was written");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["status", "--history"],
        &["status", "--history", "--json"],
        &["inventory"],
    ] {
        let o = bed.dev.tend(args)?;
        out.push((
            format!("tend {}", args.join(" ")),
            format!("{}{}", o.stdout, o.stderr),
        ));
    }
    Ok(out)
}

fn assert_no_token(place: &str, text: &str) -> Result<()> {
    ensure!(!text.contains(TOKEN), "the token reached {place}:\n{text}");
    Ok(())
}

/// The places in `texts` that hold the token.
fn leaks(texts: &[(String, String)]) -> Vec<String> {
    texts
        .iter()
        .filter(|(_, text)| text.contains(TOKEN))
        .map(|(place, _)| place.clone())
        .collect()
}

#[test]
fn token_in_source_url_never_leaves_the_transport() -> Result<()> {
    if skip_chroot_tests("token_in_source_url_never_leaves_the_transport") {
        return Ok(());
    }
    let bed = PullBed::with_auth("run-fleet", Some((USER, TOKEN)))?;
    bed.dev.write(&format!("{METRICS_DIR}/.keep"), "")?;
    let good = bed
        .url()
        .replace("https://", &format!("https://{USER}:{TOKEN}@"));
    bed.configure(&good, "", "")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: authed}\n")?;
    bed.publisher.signed("main", "site authed")?;
    let journal = Journal::bind(&bed)?;

    // The server takes the token: the run applies.
    let ok = journal.tend(&bed, &["run", "--device", "dev1"])?;
    ok.expect_code(2)?;
    ensure!(bed.site() == "authed\n", "not applied: {ok}");
    let seen = journal.all();
    ensure!(
        seen.contains("run finished"),
        "the journal socket got nothing: {seen}"
    );

    // A wrong path: the error that names the URL must not name the token.
    let bad = good.replace("fleet.git", "missing.git");
    bed.configure(&bad, "", "")?;
    let failed = journal.tend(&bed, &["run", "--device", "dev1"])?;
    ensure!(
        !failed.success(),
        "a missing repo must fail the run: {failed}"
    );
    let report = bed.dev.read_string("/var/lib/tend/report.json")?;
    ensure!(
        report.contains("127.0.0.1"),
        "the failure should name the server: {report}"
    );
    // The same failure on a terminal (stderr, -v), not under the journal.
    let verbose = bed.dev.tend(&["run", "--device", "dev1", "-v"])?;
    ensure!(!verbose.success(), "{verbose}");
    ensure!(
        verbose.stderr.contains("127.0.0.1"),
        "stderr should name the server: {verbose}"
    );

    let mut texts = vec![("the journal".to_string(), journal.all())];
    for (what, o) in [
        ("ok run", &ok),
        ("failed run", &failed),
        ("-v run", &verbose),
    ] {
        texts.push((format!("stdout of the {what}"), o.stdout.clone()));
        texts.push((format!("stderr of the {what}"), o.stderr.clone()));
    }
    texts.extend(written(&bed)?);
    let leaked = leaks(&texts);
    ensure!(
        leaked.is_empty(),
        "the token reached {} of {} places: {}",
        leaked.len(),
        texts.len(),
        leaked.join(", ")
    );
    Ok(())
}

#[test]
fn password_file_authenticates_and_one_others_can_read_is_refused_with_the_chmod_fix() -> Result<()>
{
    if skip_chroot_tests(
        "password_file_authenticates_and_one_others_can_read_is_refused_with_the_chmod_fix",
    ) {
        return Ok(());
    }
    let bed = PullBed::with_auth("run-fleet", Some((USER, TOKEN)))?;
    bed.dev
        .write_mode("/etc/tend/git-token", format!("{TOKEN}\n"), 0o600)?;
    bed.configure(
        &bed.url(),
        &format!("  username: {USER}\n  password_file: /etc/tend/git-token\n"),
        "",
    )?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: from-file}\n")?;
    bed.publisher.signed("main", "site from-file")?;
    let ok = bed.run()?;
    ok.expect_code(2)?;
    ensure!(bed.site() == "from-file\n", "not applied: {ok}");
    assert_no_token("stdout", &ok.stdout)?;
    assert_no_token(
        "report.json",
        &bed.dev.read_string("/var/lib/tend/report.json")?,
    )?;

    bed.dev
        .write_mode("/etc/tend/git-token", format!("{TOKEN}\n"), 0o644)?;
    let refused = bed.run()?;
    ensure!(!refused.success(), "{refused}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    ensure!(
        said.contains("/etc/tend/git-token") && said.contains("chmod 600 /etc/tend/git-token"),
        "the refusal must name the file and the fix: {refused}"
    );
    assert_no_token("the refusal", &said)?;
    Ok(())
}
