//! Templates and expressions: MiniJinja with strict undefined, one environment per role.
//!
//! A missing var is an error that names the var and where it was used; nothing renders to an
//! empty string by accident. Template files load only from the role's own `templates/`, through
//! the repo tree, so a template cannot read the device or another part of the disk. Rendering is
//! fuel-limited, so a template loop cannot hang a device.

use std::sync::Arc;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use crate::source::tree::{check_relative, Tree};

/// Instructions one render may execute.
const FUEL: u64 = 5_000_000;
/// Names the loader answers with the rest of the name itself: an inline template (a resource's
/// `"/etc/app-{{ item }}.conf"`) is compiled once per environment, not once per loop item or
/// device. No file name starts with NUL.
const INLINE: &str = "\0inline:";

pub struct RoleEnv {
    env: Environment<'static>,
    role: String,
}

/// A render failure, with the repo file and line when the error is inside a template file.
#[derive(Debug)]
pub struct RenderError {
    pub file: Option<String>,
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}:{}: {}", self.line, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// An error's message. An include chain (a template that includes itself, includes nested deep)
/// repeats "could not render include" at every level; the innermost cause is named once instead,
/// with where it happened and how deep.
fn describe(e: &minijinja::Error) -> String {
    let mut innermost = e;
    let mut depth = 0;
    while let Some(inner) =
        std::error::Error::source(innermost).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        innermost = inner;
        depth += 1;
    }
    let msg = describe_one(innermost);
    match (depth, innermost.name()) {
        (0, _) => msg,
        (_, Some(name)) => format!(
            "{msg} (in {name}:{}, included {depth} level(s) deep)",
            innermost.line().unwrap_or(0)
        ),
        (_, None) => format!("{msg} (included {depth} level(s) deep)"),
    }
}

fn describe_one(e: &minijinja::Error) -> String {
    let detail = e.detail().map(str::to_string);
    let mut msg = match (e.kind(), detail) {
        (ErrorKind::UndefinedError, Some(d)) => {
            format!("{d} (define the var in the repo, or guard its use with `is defined`)")
        }
        (ErrorKind::SyntaxError, Some(d)) => format!("template syntax error: {d}"),
        (ErrorKind::TemplateNotFound, Some(d)) => format!("template not found: {d}"),
        (ErrorKind::OutOfFuel, _) => {
            "template ran too long (a loop that does not end?)".to_string()
        }
        (_, Some(d)) => format!("{}: {d}", e.kind()),
        (_, None) => e.kind().to_string(),
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

impl RoleEnv {
    pub fn new(tree: Arc<dyn Tree>, role: &str) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        // Config files end with a newline; keep it, as Ansible's template module does.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build();
        if let Ok(syntax) = syntax {
            env.set_syntax(syntax);
        }
        let dir = format!("roles/{role}/templates");
        env.set_loader(move |name: &str| {
            if let Some(source) = name.strip_prefix(INLINE) {
                return Ok(Some(source.to_string()));
            }
            check_relative(name)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            let bytes = tree
                .read(&format!("{dir}/{name}"))
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            match bytes {
                None => Ok(None),
                Some(b) => String::from_utf8(b).map(Some).map_err(|_| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("{name} is not UTF-8 text"),
                    )
                }),
            }
        });
        Self {
            env,
            role: role.to_string(),
        }
    }

    fn file_error(&self, e: &minijinja::Error) -> RenderError {
        let file = e
            .name()
            .filter(|n| !n.starts_with('<'))
            .map(|n| format!("roles/{}/templates/{n}", self.role));
        RenderError {
            file,
            line: e.line().unwrap_or(0) as u64,
            message: describe(e),
        }
    }

    fn inline_error(e: &minijinja::Error) -> RenderError {
        RenderError {
            file: None,
            line: 0,
            message: describe(e),
        }
    }

    /// Renders `roles/<role>/templates/<name>`.
    pub fn template(&self, name: &str, ctx: &minijinja::Value) -> Result<String, RenderError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| self.file_error(&e))?;
        t.render(ctx).map_err(|e| self.file_error(&e))
    }

    /// Renders every string inside `v`. A string that is one `{{ expression }}` keeps the
    /// expression's type (a list stays a list), as in Ansible.
    pub fn value(&self, v: &Value, ctx: &minijinja::Value) -> Result<Value, RenderError> {
        match v {
            Value::String(s) => self.string(s, ctx),
            Value::Array(a) => a
                .iter()
                .map(|x| self.value(x, ctx))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(o) => {
                let mut out = serde_json::Map::new();
                for (k, x) in o {
                    out.insert(k.clone(), self.value(x, ctx)?);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn string(&self, s: &str, ctx: &minijinja::Value) -> Result<Value, RenderError> {
        if !(s.contains("{{") || s.contains("{%") || s.contains("{#")) {
            return Ok(Value::String(s.to_string()));
        }
        // Only a string that is exactly one `{{ }}` keeps a native type; "{{ x }}\n" is text.
        if s.starts_with("{{") && s.ends_with("}}") {
            if let Some(expr) = single_expression(s) {
                return self.expression(expr, ctx);
            }
        }
        self.env
            .get_template(&format!("{INLINE}{s}"))
            .and_then(|t| t.render(ctx))
            .map(Value::String)
            .map_err(|e| Self::inline_error(&e))
    }

    /// Evaluates an expression (the text of `when:`, or a `{{ }}` body) to a JSON value.
    pub fn expression(&self, expr: &str, ctx: &minijinja::Value) -> Result<Value, RenderError> {
        let v = self.eval(expr, ctx)?;
        serde_json::to_value(&v).map_err(|e| RenderError {
            file: None,
            line: 0,
            message: e.to_string(),
        })
    }

    /// Evaluates an expression; an undefined result is an error naming the undefined var, because
    /// expression evaluation (unlike rendering) hands undefined back instead of failing.
    fn eval(&self, expr: &str, ctx: &minijinja::Value) -> Result<minijinja::Value, RenderError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| Self::inline_error(&e))?;
        let v = compiled.eval(ctx).map_err(|e| Self::inline_error(&e))?;
        if !v.is_undefined() {
            return Ok(v);
        }
        let mut names: Vec<String> = compiled.undeclared_variables(true).into_iter().collect();
        names.sort();
        let name = names
            .into_iter()
            .find(|n| is_undefined_path(ctx, n))
            .unwrap_or_else(|| expr.trim().to_string());
        Err(RenderError {
            file: None,
            line: 0,
            message: format!("`{name}` is undefined (define the var in the repo, or guard its use with `is defined`)"),
        })
    }

    /// `when:` — a boolean, or an expression (with or without `{{ }}`) that is truthy.
    pub fn condition(&self, v: &Value, ctx: &minijinja::Value) -> Result<bool, RenderError> {
        let expr = match v {
            Value::Bool(b) => return Ok(*b),
            Value::String(s) => single_expression(s).unwrap_or(s),
            _ => {
                return Err(RenderError {
                    file: None,
                    line: 0,
                    message: "`when` must be an expression or true/false".into(),
                })
            }
        };
        Ok(self.eval(expr, ctx)?.is_true())
    }

    /// `loop:` — a list, or an expression that yields one.
    pub fn items(&self, v: &Value, ctx: &minijinja::Value) -> Result<Vec<Value>, RenderError> {
        let v = match v {
            Value::String(s) => self.expression(single_expression(s).unwrap_or(s), ctx)?,
            other => self.value(other, ctx)?,
        };
        match v {
            Value::Array(a) => Ok(a),
            Value::Object(o) => Ok(o
                .into_iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect()),
            other => Err(RenderError {
                file: None,
                line: 0,
                message: format!("`loop` must be a list, got {other}"),
            }),
        }
    }
}

/// Whether a dotted path (`facts.os`, `x`) is undefined in the context.
fn is_undefined_path(ctx: &minijinja::Value, path: &str) -> bool {
    let mut v = ctx.clone();
    for part in path.split('.') {
        match v.get_attr(part) {
            Ok(next) if !next.is_undefined() => v = next,
            _ => return true,
        }
    }
    false
}

/// The body of a string that is exactly one `{{ … }}`.
fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tree::DirTree;

    fn env_with(files: &[(&str, &str)]) -> (tempfile::TempDir, RoleEnv) {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        let tree: Arc<dyn Tree> = Arc::new(DirTree::new(d.path()).unwrap());
        (d, RoleEnv::new(tree, "web"))
    }

    #[test]
    fn undefined_var_is_named_with_template_and_line() {
        let (_d, env) = env_with(&[("roles/web/templates/site.j2", "a\nuser={{ kiosk_usr }}\n")]);
        let ctx = minijinja::context! { kiosk_user => "pi" };
        let e = env.template("site.j2", &ctx).unwrap_err();
        assert_eq!(e.file.as_deref(), Some("roles/web/templates/site.j2"));
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`kiosk_usr` is undefined"), "{e}");
    }

    #[test]
    fn single_expression_keeps_its_type() {
        let (_d, env) = env_with(&[]);
        let ctx = minijinja::context! { pkgs => vec!["a", "b"] };
        assert_eq!(
            env.value(&Value::from("{{ pkgs }}"), &ctx).unwrap(),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(
            env.value(&Value::from("x-{{ pkgs[0] }}"), &ctx).unwrap(),
            serde_json::json!("x-a")
        );
    }

    #[test]
    fn templates_cannot_include_outside_their_role() {
        let (_d, env) = env_with(&[
            (
                "roles/web/templates/t.j2",
                "{% include '../../../fleet.yaml' %}",
            ),
            ("fleet.yaml", "format: 1"),
        ]);
        assert!(env.template("t.j2", &minijinja::context! {}).is_err());
    }

    /// A template including itself printed "could not render include: error in …" 64 times.
    #[test]
    fn an_include_loop_names_its_cause_once() {
        let (_d, env) = env_with(&[("roles/web/templates/loop.j2", "{% include \"loop.j2\" %}\n")]);
        let e = env
            .template("loop.j2", &minijinja::Value::from(()))
            .unwrap_err();
        assert!(
            e.message
                .starts_with("invalid operation: recursion limit exceeded"),
            "{e}"
        );
        assert!(e.message.contains("(in loop.j2:1, included "), "{e}");
        assert!(!e.message.contains("could not render include"), "{e}");
        assert!(e.message.len() < 200, "{e}");
    }

    #[test]
    fn endless_template_runs_out_of_fuel() {
        let (_d, env) = env_with(&[(
            "roles/web/templates/t.j2",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )]);
        let e = env.template("t.j2", &minijinja::context! {}).unwrap_err();
        assert!(e.message.contains("too long"), "{e}");
    }

    #[test]
    fn conditions_and_loops() {
        let (_d, env) = env_with(&[]);
        let ctx = minijinja::context! { arch => "arm64", users => vec!["a", "b"] };
        assert!(env
            .condition(&Value::from("arch == 'arm64'"), &ctx)
            .unwrap());
        assert!(!env
            .condition(&Value::from("{{ arch == 'armhf' }}"), &ctx)
            .unwrap());
        assert_eq!(
            env.items(&Value::from("{{ users }}"), &ctx).unwrap().len(),
            2
        );
        assert!(env.items(&Value::from("arch"), &ctx).is_err());
    }

    #[test]
    fn undefined_var_in_an_expression_is_named_not_turned_into_null() {
        let (_d, env) = env_with(&[]);
        let ctx = minijinja::context! { admin_user => "ops", facts => minijinja::context! { os => "debian" } };
        for (input, name) in [
            ("{{ admin_usr }}", "admin_usr"),
            ("{{ facts.oss }}", "facts.oss"),
        ] {
            let e = env.value(&Value::from(input), &ctx).unwrap_err();
            assert!(
                e.message.contains(&format!("`{name}` is undefined")),
                "{input}: {}",
                e.message
            );
        }
        let e = env
            .condition(&Value::from("motd_enabled"), &ctx)
            .unwrap_err();
        assert!(
            e.message.contains("`motd_enabled` is undefined"),
            "{}",
            e.message
        );
        assert!(env
            .items(&Value::from("{{ nope }}"), &ctx)
            .unwrap_err()
            .message
            .contains("`nope`"));
        assert!(
            !env.condition(&Value::from("motd_enabled is defined"), &ctx)
                .unwrap(),
            "tests on definedness still work"
        );
        assert_eq!(
            env.value(&Value::from("{{ missing | default('x') }}"), &ctx)
                .unwrap(),
            Value::from("x")
        );
    }
}
