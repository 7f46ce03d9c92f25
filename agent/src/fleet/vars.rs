//! Vars: layered by precedence, with device-local values allowed only where the repo says so.
//!
//! Precedence, lowest first: role defaults < fleet.yaml < groups (in order) < device file < local
//! vars files. A later layer replaces a var's whole value (no deep merge: what you read in the
//! highest layer is what you get). Local files are not reviewed, so they may set only vars the
//! repo declares `local`; vars declared `secret` are redacted everywhere tend writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::load::{Fleet, FLEET_FILE};
use crate::fleet::model::{Keyed, Names, Vars};
use crate::fleet::resolve::Resolved;

/// Names the templates provide themselves; a var may not shadow them.
pub const RESERVED: &[&str] = &["facts", "item", "tend", "loop"];

#[derive(Debug, Default)]
pub struct VarSet {
    pub values: Map<String, Value>,
    /// Where each var's winning value comes from ("fleet.yaml:7", "/etc/tend/vars.d/x.yaml").
    pub origin: BTreeMap<String, String>,
    pub local: BTreeSet<String>,
    pub secret: BTreeSet<String>,
}

/// How local and secret vars without a value are treated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a device: they stay undefined, and using one is an error.
    Device,
    /// Offline validation: they render as `<local:NAME>` placeholders.
    Placeholders,
}

fn check_var_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!("'{name}' is not a valid var name: use letters, digits and '_', not starting with a digit"));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "'{name}' is reserved for tend's own template values"
        ));
    }
    Ok(())
}

impl VarSet {
    fn layer(&mut self, vars: &Vars, file: &str, diags: &mut Diagnostics) {
        for (k, v) in &vars.0 {
            let line = k.referenced.line();
            if let Err(m) = check_var_name(&k.value) {
                diags.push(Diagnostic::new(file, line, m).fix("rename the var"));
                continue;
            }
            self.values.insert(k.value.clone(), v.clone());
            self.origin
                .insert(k.value.clone(), format!("{file}:{line}"));
        }
    }

    fn declare(set: &mut BTreeSet<String>, names: &Names, file: &str, diags: &mut Diagnostics) {
        for n in names {
            match check_var_name(&n.value) {
                Ok(()) => {
                    set.insert(n.value.clone());
                }
                Err(m) => diags.push(Diagnostic::new(file, n.referenced.line(), m)),
            }
        }
    }

    /// The repo's layers for a resolved device.
    pub fn from_repo(fleet: &Fleet, resolved: &Resolved, diags: &mut Diagnostics) -> Self {
        let mut set = VarSet::default();
        for role in &resolved.roles {
            let path = role.path();
            set.layer(&role.file.defaults, &path, diags);
            Self::declare(&mut set.local, &role.file.local, &path, diags);
            Self::declare(&mut set.secret, &role.file.secret, &path, diags);
        }
        set.layer(&fleet.file.vars, FLEET_FILE, diags);
        Self::declare(&mut set.local, &fleet.file.local, FLEET_FILE, diags);
        Self::declare(&mut set.secret, &fleet.file.secret, FLEET_FILE, diags);
        for g in &resolved.groups {
            set.layer(&g.file.vars, &Fleet::group_path(&g.name), diags);
        }
        if let Some(d) = &resolved.device {
            set.layer(&d.vars, &Fleet::device_path(&resolved.device_id), diags);
        }
        set
    }

    /// Applies device-local vars files (device paths, read under `root`). Every key must be
    /// declared `local`; otherwise the file is refused with a diagnostic and none of it applies.
    pub fn apply_local_files(&mut self, root: &Path, files: &[String], diags: &mut Diagnostics) {
        for file in files {
            let full = root.join(file.trim_start_matches('/'));
            let bytes = match std::fs::read(&full) {
                Ok(b) => b,
                Err(e) => {
                    diags.push(Diagnostic::new(
                        file,
                        0,
                        format!("cannot read local vars file: {e}"),
                    ));
                    continue;
                }
            };
            let entries: Vec<(String, u64, Value)> = if file.ends_with(".json") {
                match serde_json::from_slice::<Map<String, Value>>(&bytes) {
                    Ok(m) => m.into_iter().map(|(k, v)| (k, 0, v)).collect(),
                    Err(e) => {
                        diags.push(Diagnostic::new(
                            file,
                            e.line() as u64,
                            format!("not a JSON object of vars: {e}"),
                        ));
                        continue;
                    }
                }
            } else {
                match crate::yaml::parse::<Keyed<Value>>(file, &bytes) {
                    Ok(m) => {
                        m.0.into_iter()
                            .map(|(k, v)| (k.value, k.referenced.line(), v))
                            .collect()
                    }
                    Err(d) => {
                        diags.push(d);
                        continue;
                    }
                }
            };
            let refused: Vec<&(String, u64, Value)> = entries
                .iter()
                .filter(|(k, _, _)| !self.local.contains(k))
                .collect();
            if !refused.is_empty() {
                for (k, line, _) in refused {
                    diags.push(
                        Diagnostic::new(file, *line, format!("sets `{k}`, which the fleet repo does not declare `local`; an unreviewed file may not override reviewed config"))
                            .fix(format!("remove `{k}` from this file, or declare it under `local:` in fleet.yaml (a reviewed change)")),
                    );
                }
                continue;
            }
            for (k, _, v) in entries {
                self.values.insert(k.clone(), v);
                self.origin.insert(k, file.clone());
            }
        }
    }

    /// In validation, local and secret vars with no value get a visible placeholder.
    pub fn fill_placeholders(&mut self) {
        for (kind, names) in [("local", &self.local), ("secret", &self.secret)] {
            for n in names {
                if !self.values.contains_key(n) {
                    self.values
                        .insert(n.clone(), Value::String(format!("<{kind}:{n}>")));
                    self.origin.insert(n.clone(), "placeholder".into());
                }
            }
        }
    }

    /// Every string inside the values of secret vars.
    pub fn secret_values(&self) -> Vec<String> {
        fn collect(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
                Value::Object(o) => o.values().for_each(|x| collect(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for n in &self.secret {
            if let Some(v) = self.values.get(n) {
                collect(v, &mut out);
            }
        }
        out
    }

    /// The values with secrets replaced, for `tend render` and reports.
    pub fn redacted(&self) -> Map<String, Value> {
        let mut m = self.values.clone();
        for n in &self.secret {
            if let Some(v) = m.get_mut(n) {
                *v = Value::String(tend_roles::redact::REDACTED.into());
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_with_local(local: &[&str]) -> VarSet {
        let mut s = VarSet::default();
        s.local = local.iter().map(|s| s.to_string()).collect();
        s
    }

    #[test]
    fn local_file_may_set_only_declared_vars() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/tend/vars.d")).unwrap();
        std::fs::write(
            d.path().join("etc/tend/vars.d/a.yaml"),
            "token: abc\nmotd: hacked\n",
        )
        .unwrap();
        let mut s = set_with_local(&["token"]);
        s.values
            .insert("motd".into(), Value::String("reviewed".into()));
        let mut diags = Diagnostics::default();
        s.apply_local_files(d.path(), &["/etc/tend/vars.d/a.yaml".into()], &mut diags);
        assert_eq!(diags.0.len(), 1, "{diags}");
        assert_eq!(diags.0[0].line, 2);
        assert!(diags.0[0].message.contains("`motd`"));
        assert_eq!(
            s.values["motd"], "reviewed",
            "a refused file changes nothing"
        );
        assert!(
            !s.values.contains_key("token"),
            "a refused file applies none of its vars"
        );
    }

    #[test]
    fn mender_configure_json_is_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("dc.json"), r#"{"wifi_psk": "s3cret-psk"}"#).unwrap();
        let mut s = set_with_local(&["wifi_psk"]);
        s.secret.insert("wifi_psk".into());
        let mut diags = Diagnostics::default();
        s.apply_local_files(d.path(), &["/dc.json".into()], &mut diags);
        assert!(diags.is_empty(), "{diags}");
        assert_eq!(s.secret_values(), ["s3cret-psk"]);
        assert_eq!(s.redacted()["wifi_psk"], "<redacted>");
    }

    #[test]
    fn placeholders_fill_only_missing_values() {
        let mut s = set_with_local(&["a", "b"]);
        s.values.insert("a".into(), Value::from(1));
        s.fill_placeholders();
        assert_eq!(s.values["a"], 1);
        assert_eq!(s.values["b"], "<local:b>");
    }
}
