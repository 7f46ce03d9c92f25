//! What a resource reads from its role while it is built (`validate`'s [`Sources`]): role files
//! and templates through the fleet tree and the memory budget, with the full diagnostic of a
//! failure kept aside, and a hash of everything read, for the resource's fingerprint.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tend_roles::{spec::Content, Sources};

use crate::diag::Diagnostic;
use crate::fleet::budget::{Budget, Read, BUDGET_FIX};
use crate::fleet::fingerprints::Fingerprint;
use crate::fleet::render::RoleEnv;
use crate::source::tree::{check_relative, Tree, PATH_FIX};

pub(super) struct Ctx<'a> {
    pub(super) tree: &'a Arc<dyn Tree>,
    pub(super) role: &'a str,
    pub(super) path: &'a str,
    pub(super) env: &'a RoleEnv,
    pub(super) ctx: &'a minijinja::Value,
    /// The handler's name when building a handler.
    pub(super) handler: Option<&'a str>,
    /// Holds each distinct content once and counts what the desired state needs.
    pub(super) budget: &'a Budget,
    /// Keep each rendered spec beside its resource (`tend render`); a run drops it once built.
    pub(super) keep_spec: bool,
}

/// What a resource reads from its role while it is built.
///
/// A resource sees its role's files and templates as strings, so the full diagnostic (a template
/// file's own line, the fix) is kept aside here and used when the resource reports the error.
///
/// It also hashes every content it hands out: with the spec, that is the resource's fingerprint,
/// which tells a change the repo asked for from a repair of drift (`report::cause`).
pub(super) struct RoleSources<'a> {
    c: &'a Ctx<'a>,
    ctx: &'a minijinja::Value,
    pub(super) failure: RefCell<Option<Diagnostic>>,
    contents: RefCell<Sha256>,
}

impl<'a> RoleSources<'a> {
    pub(super) fn new(c: &'a Ctx<'a>, ctx: &'a minijinja::Value) -> Self {
        Self {
            c,
            ctx,
            failure: RefCell::default(),
            contents: RefCell::new(Sha256::new()),
        }
    }

    /// What the resource built from a spec wants, as a hash: its type and rendered spec (secrets
    /// included: a new secret is a new desired state; [`spec_digest`], taken before the build
    /// consumes the spec) and every content it read.
    pub(super) fn fingerprint(&self, spec_digest: &[u8]) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(spec_digest);
        h.update([0]);
        h.update(self.contents.borrow().clone().finalize());
        Fingerprint::of(&h.finalize())
    }

    fn seen(&self, content: Content) -> Content {
        let mut h = self.contents.borrow_mut();
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
        content
    }
    fn fail(&self, d: Diagnostic) -> String {
        let msg = d.message.clone();
        *self.failure.borrow_mut() = Some(d);
        msg
    }

    fn role_path(&self, dir: &str, name: &str) -> Result<String, String> {
        check_relative(name)
            .map_err(|e| self.fail(Diagnostic::new(self.c.path, 0, e.to_string()).fix(PATH_FIX)))?;
        Ok(format!("roles/{}/{dir}/{name}", self.c.role))
    }

    fn over_budget(&self, message: String) -> String {
        self.fail(Diagnostic::new(self.c.path, 0, message).fix(BUDGET_FIX))
    }
}

impl Sources for RoleSources<'_> {
    fn file(&self, name: &str) -> Result<Content, String> {
        let path = self.role_path("files", name)?;
        match self.c.budget.file(&path, || self.c.tree.read(&path)) {
            Ok(Some(b)) => Ok(self.seen(b)),
            Err(Read::Over(m)) => Err(self.over_budget(m)),
            Ok(None) => Err(self.fail(
                Diagnostic::new(self.c.path, 0, format!("{path} does not exist")).fix(format!(
                    "add the file to roles/{}/files/, or correct the name",
                    self.c.role
                )),
            )),
            Err(Read::Source(e)) => {
                let fix = e.fix().unwrap_or(PATH_FIX);
                Err(self.fail(Diagnostic::new(self.c.path, 0, e.to_string()).fix(fix)))
            }
        }
    }

    fn content(&self, bytes: Vec<u8>) -> Result<Content, String> {
        let content = self
            .c
            .budget
            .intern(bytes)
            .map_err(|m| self.over_budget(m))?;
        Ok(self.seen(content))
    }

    fn template(&self, name: &str) -> Result<Content, String> {
        let path = self.role_path("templates", name)?;
        let rendered = self.c.env.template(name, self.ctx).map_err(|e| {
            let d = match e.file {
                Some(file) => Diagnostic::new(file, e.line, e.message),
                None if e.message.starts_with("template not found") => {
                    Diagnostic::new(self.c.path, 0, format!("{path} does not exist")).fix(format!(
                        "add the template to roles/{}/templates/, or correct the name",
                        self.c.role
                    ))
                }
                None if e.message.contains("symlink")
                    || e.message.contains("leaves the fleet repo") =>
                {
                    Diagnostic::new(self.c.path, 0, format!("{path}: {}", e.message)).fix(PATH_FIX)
                }
                None => Diagnostic::new(self.c.path, 0, format!("{path}: {}", e.message)),
            };
            self.fail(d)
        })?;
        self.content(rendered.into_bytes())
    }

    fn in_handler(&self) -> bool {
        self.c.handler.is_some()
    }
}

/// The part of a resource's fingerprint that its type and rendered spec make.
pub(super) fn spec_digest(kind: &str, spec: &Value) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    // Serialized straight into the hash (the same bytes as `spec.to_string()`), not into a copy.
    serde_json::to_writer(&mut h, spec).expect("a JSON value serializes, and hashing cannot fail");
    h.finalize().to_vec()
}
