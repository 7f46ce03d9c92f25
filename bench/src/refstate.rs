//! The reference device: one desired state, written three times (a tend fleet repo, an
//! ansible-pull playbook, a rash script). The three must converge a fresh chroot to the same
//! state, which [`crate::bed::state_digest`] checks, or the figures would compare different work.
//!
//! The state: one apt source with its keyring, 10 packages from a local signed apt repo (3 of
//! them ship a unit), `files` managed files (10 of them from templates, the rest verbatim), 2
//! directories, 3 enabled services, 1 user, 1 guarded command, and a handler that restarts a
//! service when a template changed.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{ensure, Result};
use tend_tests::deb::DebSpec;

/// Rendered from templates; the other managed files are copied verbatim.
pub const TEMPLATES: usize = 10;
pub const PACKAGES: usize = 10;
pub const SERVICES: [&str; 3] = ["bench-svc-1", "bench-svc-2", "bench-svc-3"];
pub const SITE: &str = "bench-site";
pub const NTP: [&str; 2] = ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"];
/// The device id the tend fleet repo names.
pub const DEVICE: &str = "bench";

pub fn package_names() -> Vec<String> {
    (1..=PACKAGES)
        .map(|i| format!("bench-pkg-{i:02}"))
        .collect()
}

/// The apt repo's packages: `bench-pkg-01..10`, of which the first three ship `bench-svc-N`.
pub fn packages() -> Vec<DebSpec> {
    package_names()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let spec = DebSpec::new(name, "1.0-1").file(
                &format!("/usr/share/{name}/README"),
                &format!("{name}\n"),
                0o644,
            );
            match SERVICES.get(i) {
                Some(svc) => spec.file(
                    &format!("/usr/lib/systemd/system/{svc}.service"),
                    &format!(
                        "[Unit]\nDescription={svc}\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
                         [Install]\nWantedBy=multi-user.target\n"
                    ),
                    0o644,
                ),
                None => spec,
            }
        })
        .collect()
}

/// The desired state for `files` managed files (at least [`TEMPLATES`]).
#[derive(Clone, Copy, Debug)]
pub struct RefState {
    pub files: usize,
}

/// Where the apt repo is and how it is signed, as the device sees it.
pub struct AptRef {
    pub url: String,
    pub key_armored: String,
}

impl RefState {
    pub fn new(files: usize) -> Result<RefState> {
        ensure!(files >= TEMPLATES, "at least {TEMPLATES} files");
        Ok(RefState { files })
    }

    fn statics(&self) -> usize {
        self.files - TEMPLATES
    }

    fn static_content(i: usize) -> String {
        let mut s = format!("# bench static file {i}\n");
        for line in 0..8 {
            let _ = writeln!(
                s,
                "key_{line} = value {i}.{line} of a verbatim configuration file"
            );
        }
        s
    }

    /// Template `i` (1-based); `rev` makes a new revision of template 1 (the changed-template
    /// figure). Only `{{ }}` expressions: Jinja2, MiniJinja and rash render them alike.
    pub fn template(i: usize, rev: usize) -> String {
        let mut s = format!(
            "# bench template {i}\nsite = {{{{ site }}}}\nntp = {{{{ ntp_servers | join(' ') }}}}\n\
             index = {i}\n"
        );
        if i == 1 && rev > 0 {
            let _ = writeln!(s, "revision = {rev}");
        }
        s
    }

    fn sources(apt: &AptRef) -> String {
        format!(
            "Types: deb\nURIs: {}\nSuites: tend\nComponents: main\nSigned-By: /etc/apt/keyrings/bench.asc\n",
            apt.url
        )
    }

    /// Writes the files shared by every writer: `files_dir/static-N.conf` and
    /// `templates_dir/tmpl-N.conf.j2`.
    fn write_payload(&self, files_dir: &Path, templates_dir: &Path, rev: usize) -> Result<()> {
        fs::create_dir_all(files_dir)?;
        fs::create_dir_all(templates_dir)?;
        for i in 1..=self.statics() {
            fs::write(
                files_dir.join(format!("static-{i}.conf")),
                Self::static_content(i),
            )?;
        }
        for i in 1..=TEMPLATES {
            fs::write(
                templates_dir.join(format!("tmpl-{i}.conf.j2")),
                Self::template(i, rev),
            )?;
        }
        Ok(())
    }

    /// A tend fleet repo in `dir`: fleet.yaml, devices/bench.yaml, roles/bench/.
    pub fn write_tend(&self, dir: &Path, apt: &AptRef, rev: usize) -> Result<()> {
        let role = dir.join("roles/bench");
        self.write_payload(&role.join("files"), &role.join("templates"), rev)?;
        fs::write(role.join("files/bench.asc"), &apt.key_armored)?;
        fs::create_dir_all(dir.join("devices"))?;
        fs::write(
            dir.join("fleet.yaml"),
            format!(
                "format: 1\nvars:\n  site: {SITE}\n  ntp_servers: [{}]\nroles: [bench]\n",
                NTP.join(", ")
            ),
        )?;
        fs::write(dir.join(format!("devices/{DEVICE}.yaml")), "vars: {}\n")?;
        let statics = self.statics();
        let mut y = String::from("resources:\n");
        let _ = write!(
            y,
            "  - apt_source: bench\n    uris: {}\n    suites: [tend]\n    components: [main]\n    key: bench.asc\n",
            apt.url
        );
        let _ = writeln!(y, "  - package: [{}]", package_names().join(", "));
        y.push_str("  - file: /etc/bench\n    state: directory\n");
        y.push_str("  - file: /srv/bench\n    state: directory\n");
        if statics > 0 {
            let _ = write!(
                y,
                "  - file: \"/etc/bench/static-{{{{ item }}}}.conf\"\n    source: \"static-{{{{ item }}}}.conf\"\n    loop: \"{{{{ range(1, {}) }}}}\"\n",
                statics + 1
            );
        }
        let _ = write!(
            y,
            "  - file: \"/etc/bench/tmpl-{{{{ item }}}}.conf\"\n    template: \"tmpl-{{{{ item }}}}.conf.j2\"\n    loop: \"{{{{ range(1, {}) }}}}\"\n    notify: restart bench-svc-1\n",
            TEMPLATES + 1
        );
        let _ = write!(
            y,
            "  - service: \"{{{{ item }}}}\"\n    enabled: true\n    loop: [{}]\n",
            SERVICES.join(", ")
        );
        y.push_str(
            "  - user: bench\n    system: true\n    home: /srv/bench\n    shell: /usr/sbin/nologin\n",
        );
        y.push_str(
            "  - command: \"echo initialized > /srv/bench/initialized\"\n    creates: /srv/bench/initialized\n",
        );
        y.push_str("handlers:\n  restart bench-svc-1: {service: bench-svc-1, state: restarted}\n");
        fs::write(role.join("role.yaml"), y)?;
        Ok(())
    }

    /// An ansible-pull checkout in `dir`: `local.yml` (facts gathered, ansible's default) and
    /// `local-nofacts.yml` (`gather_facts: false`), one role, group_vars for the vars.
    pub fn write_ansible(&self, dir: &Path, apt: &AptRef, rev: usize) -> Result<()> {
        let role = dir.join("roles/bench");
        self.write_payload(&role.join("files"), &role.join("templates"), rev)?;
        fs::write(role.join("files/bench.asc"), &apt.key_armored)?;
        fs::write(role.join("files/bench.sources"), Self::sources(apt))?;
        for (name, facts) in [("local.yml", true), ("local-nofacts.yml", false)] {
            fs::write(
                dir.join(name),
                format!(
                    "- hosts: localhost\n  connection: local\n  gather_facts: {facts}\n  roles: [bench]\n"
                ),
            )?;
        }
        fs::create_dir_all(dir.join("group_vars"))?;
        fs::write(
            dir.join("group_vars/all.yml"),
            format!(
                "site: {SITE}\nntp_servers: [{}]\nbench_statics: {}\n",
                NTP.join(", "),
                self.statics()
            ),
        )?;
        fs::create_dir_all(role.join("tasks"))?;
        fs::create_dir_all(role.join("handlers"))?;
        let mut t = String::new();
        t.push_str("- name: apt keyring\n  copy: {src: bench.asc, dest: /etc/apt/keyrings/bench.asc, mode: \"0644\"}\n");
        t.push_str("- name: apt source\n  copy: {src: bench.sources, dest: /etc/apt/sources.list.d/bench.sources, mode: \"0644\"}\n  register: bench_source\n");
        let _ = write!(
            t,
            "- name: packages\n  apt:\n    name: [{}]\n    install_recommends: false\n    update_cache: \"{{{{ bench_source is changed }}}}\"\n",
            package_names().join(", ")
        );
        t.push_str("- name: directories\n  file: {path: \"{{ item }}\", state: directory, mode: \"0755\"}\n  loop: [/etc/bench, /srv/bench]\n");
        if self.statics() > 0 {
            t.push_str("- name: static files\n  copy: {src: \"static-{{ item }}.conf\", dest: \"/etc/bench/static-{{ item }}.conf\", mode: \"0644\"}\n  loop: \"{{ range(1, bench_statics + 1) | list }}\"\n");
        }
        let _ = write!(
            t,
            "- name: templates\n  template: {{src: \"tmpl-{{{{ item }}}}.conf.j2\", dest: \"/etc/bench/tmpl-{{{{ item }}}}.conf\", mode: \"0644\"}}\n  loop: \"{{{{ range(1, {}) | list }}}}\"\n  notify: restart bench-svc-1\n",
            TEMPLATES + 1
        );
        let _ = write!(
            t,
            "- name: services\n  systemd: {{name: \"{{{{ item }}}}\", enabled: true}}\n  loop: [{}]\n",
            SERVICES.join(", ")
        );
        t.push_str("- name: user\n  user: {name: bench, system: true, home: /srv/bench, shell: /usr/sbin/nologin, create_home: false}\n");
        t.push_str("- name: first boot\n  shell: echo initialized > /srv/bench/initialized\n  args: {creates: /srv/bench/initialized}\n");
        fs::write(role.join("tasks/main.yml"), t)?;
        fs::write(
            role.join("handlers/main.yml"),
            "- name: restart bench-svc-1\n  systemd: {name: bench-svc-1, state: restarted}\n",
        )?;
        Ok(())
    }

    /// A rash script `dir/bench.rh` with its files and templates beside it; `at` is where `dir`
    /// is on the device (the script names its files by absolute path). rash has no `creates:`,
    /// so the guard is a `stat` and a `when`.
    pub fn write_rash(&self, dir: &Path, at: &str, apt: &AptRef, rev: usize) -> Result<()> {
        self.write_payload(&dir.join("files"), &dir.join("templates"), rev)?;
        fs::write(dir.join("files/bench.asc"), &apt.key_armored)?;
        fs::write(dir.join("files/bench.sources"), Self::sources(apt))?;
        let mut t = String::from("#!/usr/bin/env rash\ntasks:\n");
        let _ = write!(
            t,
            "  - set_vars:\n      site: {SITE}\n      ntp_servers: [{}]\n",
            NTP.join(", ")
        );
        t.push_str("  - name: apt keyring\n    copy: {src: AT/files/bench.asc, dest: /etc/apt/keyrings/bench.asc, mode: \"0644\"}\n");
        t.push_str("  - name: apt source\n    copy: {src: AT/files/bench.sources, dest: /etc/apt/sources.list.d/bench.sources, mode: \"0644\"}\n    register: bench_source\n");
        let _ = write!(
            t,
            "  - name: packages\n    apt:\n      name: [{}]\n      install_recommends: false\n      update_cache: \"{{{{ bench_source.changed }}}}\"\n",
            package_names().join(", ")
        );
        t.push_str("  - name: directories\n    file: {path: \"{{ item }}\", state: directory, mode: \"0755\"}\n    loop: [/etc/bench, /srv/bench]\n");
        if self.statics() > 0 {
            let _ = write!(
                t,
                "  - name: static files\n    copy: {{src: \"AT/files/static-{{{{ item }}}}.conf\", dest: \"/etc/bench/static-{{{{ item }}}}.conf\", mode: \"0644\"}}\n    loop: \"{{{{ range(1, {}) | list }}}}\"\n",
                self.statics() + 1
            );
        }
        let _ = write!(
            t,
            "  - name: templates\n    template: {{src: \"AT/templates/tmpl-{{{{ item }}}}.conf.j2\", dest: \"/etc/bench/tmpl-{{{{ item }}}}.conf\", mode: \"0644\"}}\n    loop: \"{{{{ range(1, {}) | list }}}}\"\n    notify: restart bench-svc-1\n",
            TEMPLATES + 1
        );
        let _ = write!(
            t,
            "  - name: services\n    systemd: {{name: \"{{{{ item }}}}\", enabled: true}}\n    loop: [{}]\n",
            SERVICES.join(", ")
        );
        t.push_str("  - name: user\n    user: {name: bench, system: true, home: /srv/bench, shell: /usr/sbin/nologin, create_home: false}\n");
        t.push_str("  - name: first boot marker\n    stat: {path: /srv/bench/initialized}\n    register: bench_marker\n");
        t.push_str("  - name: first boot\n    command: {cmd: \"sh -c 'echo initialized > /srv/bench/initialized'\"}\n    when: not bench_marker.stat.exists\n");
        t.push_str("handlers:\n  - name: restart bench-svc-1\n    systemd: {name: bench-svc-1, state: restarted}\n    ignore_errors: true\n");
        fs::write(dir.join("bench.rh"), t.replace("AT/", &format!("{at}/")))?;
        Ok(())
    }
}
