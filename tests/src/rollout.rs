//! The rollout fleet of the end-to-end suites (issue 7): an `app` role that installs
//! `tend-hello` from its stage's apt snapshot, writes a templated config with a device var, and
//! runs a service restarted by a handler; `main`, `canary` and `production` each pin their own
//! snapshot. The booted VM (tests/tests/e2e.rs) and the arm64 chroot (tests/tests/rollout_arm64.rs)
//! follow the same fleet, so the two prove the same story.

use anyhow::{Context, Result};

use crate::deb::DebSpec;
use crate::publisher::{git, Publisher};

/// The app role; `extra` resources go after the service, before the handlers.
pub fn role(greeting: &str, extra: &str) -> String {
    format!("defaults:\n  greeting: {greeting}\n{ROLE_BODY}").replacen(
        "handlers:",
        &format!("{extra}handlers:"),
        1,
    )
}

pub const ROLE_BODY: &str = r#"resources:
  - apt_source: e2e
    uris: "http://127.0.0.1:{{ apt_port }}"
    suites: [tend]
    components: [main]
    key: "{{ apt_stage }}.asc"
  - package: tend-hello
    state: latest
  - file: /etc/e2e-app.conf
    template: app.conf.j2
    notify: restart e2e-app
  - file: /etc/systemd/system/e2e-app.service
    source: e2e-app.service
    notify: restart e2e-app
  - service: e2e-app
    enabled: true
    state: started
handlers:
  restart e2e-app:
    service: e2e-app
    state: restarted
"#;

pub const TEMPLATE: &str = "# managed by tend\nsite={{ site }}\ngreeting={{ greeting }}\n";

pub const UNIT: &str =
    "[Unit]\nDescription=e2e app\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
[Install]\nWantedBy=multi-user.target\n";

/// Each stage's branch pins its own apt snapshot here; promotion merges never touch it.
pub fn fleet_yaml(stage: &str, port: u16) -> String {
    format!("format: 1\nvars:\n  apt_stage: {stage}\n  apt_port: {port}\nroles: [app]\n")
}

pub fn hello(version: &str) -> DebSpec {
    DebSpec::new("tend-hello", version).file(
        "/usr/share/tend-hello/version",
        &format!("{version}\n"),
        0o644,
    )
}

pub fn tool() -> DebSpec {
    DebSpec::new("tend-tool", "1.0-1").file("/usr/bin/tend-tool", "#!/bin/sh\necho tool\n", 0o755)
}

/// The fleet repository: main with the app role on the development snapshot, canary and
/// production branched from it, each pinning its own stage's apt snapshot (served on
/// `apt_ports`: development, canary, production). Returns the canary and production heads.
pub fn publish_fleet(p: &Publisher, device: &str, apt_ports: [u16; 3]) -> Result<(String, String)> {
    p.write("roles/app/role.yaml", &role("hello", ""))?;
    p.write("roles/app/templates/app.conf.j2", TEMPLATE)?;
    p.write("roles/app/files/e2e-app.service", UNIT)?;
    p.write(&format!("devices/{device}.yaml"), "vars:\n  site: lab-7\n")?;
    p.write("fleet.yaml", &fleet_yaml("development", apt_ports[0]))?;
    p.signed("main", "the app, on the development snapshot")?;
    p.write("fleet.yaml", &fleet_yaml("production", apt_ports[2]))?;
    let production = p.signed("production", "production pins its snapshot")?;
    p.checkout("main")?;
    p.write("fleet.yaml", &fleet_yaml("canary", apt_ports[1]))?;
    let canary = p.signed("canary", "canary pins its snapshot")?;
    Ok((canary, production))
}

/// Commits `message` on main signed, then merges main into canary with a signed merge.
pub fn merge_main_into_canary(publisher: &Publisher, message: &str) -> Result<String> {
    publisher.signed("main", message)?;
    publisher.checkout("canary")?;
    let key = format!("user.signingkey={}", publisher.key().display());
    git(
        publisher.work(),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &key,
            "merge",
            "-q",
            "-S",
            "--no-ff",
            "-m",
            "promote main to canary",
            "main",
        ],
    )?;
    let bare = publisher.bare().display().to_string();
    git(publisher.work(), &["push", "-q", &bare, "canary:canary"])?;
    git(publisher.work(), &["rev-parse", "HEAD"])
}

/// `http://127.0.0.1:1234` → 1234.
pub fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))
}
