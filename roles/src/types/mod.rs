//! The resource types, one file each; `crate::registry` lists them.

pub mod alternative;
pub mod apt_source;
pub mod command;
pub mod file;
pub mod group;
pub mod package;
pub mod service;
pub mod user;

#[cfg(test)]
mod tests {
    use crate::registry::find_type;
    use crate::spec::NoSources;
    use serde_json::json;

    fn managed(kind: &str, spec: serde_json::Value) -> Vec<crate::resource::Managed> {
        let t = find_type(kind).unwrap();
        (t.build)(spec, &NoSources).unwrap().managed()
    }

    #[test]
    fn what_a_resource_creates_is_managed_and_its_undo_builds_into_the_same_thing() {
        let cases = [
            (
                "file",
                json!({"path": "/etc/motd", "content": "hi\n"}),
                vec!["/etc/motd"],
            ),
            (
                "file",
                json!({"path": "/l", "state": "link", "target": "/x"}),
                vec!["/l"],
            ),
            (
                "apt_source",
                json!({"name": "vendor", "uris": "http://127.0.0.1/d", "suites": "bookworm", "components": "main", "key_content": "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n"}),
                vec!["vendor"],
            ),
            (
                "service",
                json!({"name": "kiosk", "enabled": true}),
                vec!["kiosk.service"],
            ),
            (
                "package",
                json!({"names": ["curl", "hello=1.0-1"]}),
                vec!["curl", "hello"],
            ),
            ("user", json!({"name": "kiosk"}), vec!["kiosk"]),
        ];
        for (kind, spec, keys) in cases {
            let m = managed(kind, spec.clone());
            let got: Vec<&str> = m.iter().map(|m| m.key.as_str()).collect();
            assert_eq!(got, keys, "{kind} {spec}");
            for one in &m {
                assert_eq!(one.kind, kind);
                let undo = (find_type(kind).unwrap().build)(one.undo.spec(), &NoSources)
                    .unwrap_or_else(|e| panic!("undo of {kind} {}: {e}", one.key));
                assert_eq!(undo.kind(), kind);
                assert!(undo.managed().is_empty(), "an undo manages nothing");
            }
        }
        assert!(managed("package", json!({"names": "xz-utils"}))[0].only_if_created);
    }

    #[test]
    fn what_a_resource_only_removes_or_adjusts_is_not_managed() {
        let cases = [
            ("file", json!({"path": "/srv/data", "state": "directory"})),
            ("file", json!({"path": "/etc/x", "state": "absent"})),
            ("apt_source", json!({"name": "old", "state": "absent"})),
            ("service", json!({"name": "ssh", "state": "started"})),
            ("service", json!({"name": "ssh", "enabled": false})),
            ("package", json!({"names": "telnet", "state": "purged"})),
            ("user", json!({"name": "pi", "state": "absent"})),
            ("group", json!({"name": "video"})),
            ("command", json!({"cmd": "true", "creates": "/done"})),
            (
                "alternative",
                json!({"name": "editor", "path": "/bin/nano"}),
            ),
        ];
        for (kind, spec) in cases {
            assert!(managed(kind, spec.clone()).is_empty(), "{kind} {spec}");
        }
    }
}
