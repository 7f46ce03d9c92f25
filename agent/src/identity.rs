//! Which device this is. The id picks `devices/<id>.yaml`, so it must be stable and never a path.
//!
//! Order: the command line, the config, then /etc/machine-id of the managed root.

use std::path::Path;

use crate::load::check_device_id;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no device id: /etc/machine-id is missing or empty under {root}, and none is configured; set `device: {{id: …}}` in /etc/tend/tend.yaml or pass --device")]
    Missing { root: String },
    #[error("{0}")]
    Invalid(String),
}

pub fn device_id(
    root: &Path,
    flag: Option<&str>,
    configured: Option<&str>,
) -> Result<String, IdentityError> {
    let id = match flag.or(configured) {
        Some(id) => id.to_string(),
        None => std::fs::read_to_string(root.join("etc/machine-id"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::Missing {
                root: root.display().to_string(),
            })?,
    };
    check_device_id(&id).map_err(IdentityError::Invalid)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_config_beats_machine_id() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/machine-id"), "0123abcd\n").unwrap();
        assert_eq!(device_id(d.path(), None, None).unwrap(), "0123abcd");
        assert_eq!(device_id(d.path(), None, Some("cfg")).unwrap(), "cfg");
        assert_eq!(
            device_id(d.path(), Some("flag"), Some("cfg")).unwrap(),
            "flag"
        );
        assert!(
            device_id(d.path(), Some("../etc"), None).is_err(),
            "a path is never an id"
        );
    }

    #[test]
    fn missing_machine_id_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = device_id(d.path(), None, None).unwrap_err().to_string();
        assert!(e.contains("machine-id") && e.contains("--device"), "{e}");
    }
}
