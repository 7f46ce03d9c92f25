//! What a resource reads from its role while it is built: the role's files and templates, through
//! the fleet tree and the memory budget, with errors that keep their file, line and fix.
//!
//! A resource type sees only the `Sources` trait (roles' spec contract), so it cannot reach past
//! its role's `files/` and `templates/`, and every byte it reads is counted once.

use std::sync::Arc;

use tend_roles::{spec::Content, Sources};

use crate::diag::Diagnostic;
use crate::fleet::budget::{Budget, Read, BUDGET_FIX};
use crate::fleet::render::RoleEnv;
use crate::source::tree::{check_relative, Tree, PATH_FIX};

/// What building one resource entry needs from its role and the run.
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
pub(super) struct RoleSources<'a> {
    c: &'a Ctx<'a>,
    ctx: &'a minijinja::Value,
    failure: std::cell::RefCell<Option<Diagnostic>>,
}

impl<'a> RoleSources<'a> {
    pub(super) fn new(c: &'a Ctx<'a>, ctx: &'a minijinja::Value) -> Self {
        RoleSources {
            c,
            ctx,
            failure: Default::default(),
        }
    }

    /// The full diagnostic of the last failure a resource reported as a string.
    pub(super) fn take_failure(&self) -> Option<Diagnostic> {
        self.failure.take()
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
            Ok(Some(b)) => Ok(b),
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
        self.c.budget.intern(bytes).map_err(|m| self.over_budget(m))
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
