//! Replays the committed seed corpora (and the inputs that once crashed a target) through every
//! target: the regression check CI runs on stable, without libFuzzer.

use std::path::{Path, PathBuf};

/// Every file under `corpus/<target>/` and `regressions/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(here.join(dir).join(target)) else {
            continue;
        };
        out.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8]), at_least: usize) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= at_least,
        "{target}: {} seeds, expected at least {at_least}: was corpus/{target} deleted?",
        inputs.len()
    );
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        // A panic names the input, so it can be run alone: `cargo +nightly fuzz run T <path>`.
        eprintln!("{target}: {}", path.display());
        run(&data);
    }
    println!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn fleet_loader_corpus() {
    replay("fleet_loader", crate::fleet_loader, 10);
}

#[test]
fn template_corpus() {
    replay("template", crate::template, 10);
}

#[test]
fn deb822_corpus() {
    replay("deb822", crate::deb822, 5);
}

#[test]
fn dpkg_status_corpus() {
    replay("dpkg_status", crate::dpkg_status, 5);
}

#[test]
fn allowed_signers_corpus() {
    replay("allowed_signers", crate::allowed_signers, 5);
}

/// The separator format reads back what it wrote, so seeds built from real fleets are faithful.
#[test]
fn mem_tree_round_trips_its_input_format() {
    use tend_agent::source::tree::Tree;
    let files = vec![
        ("fleet.yaml".to_string(), b"format: 1\n".to_vec()),
        ("roles/r/role.yaml".to_string(), b"resources: []\n".to_vec()),
    ];
    let tree = crate::MemTree::from_input(&crate::MemTree::to_input(&files));
    assert_eq!(tree.read("fleet.yaml").unwrap().unwrap(), b"format: 1\n");
    assert_eq!(
        tree.list("roles").unwrap(),
        [("r".to_string(), tend_agent::source::tree::EntryKind::Dir)]
    );
    assert!(tree.read("../x").is_err());
}

#[test]
fn http_response_corpus() {
    replay("http_response", crate::http_response, 5);
}
