//! Every integration suite in tests/tests/ runs in CI: the test command (`scripts/test`) names
//! each one in a `stage … suites …` line, so a new suite cannot be left out by accident (a suite
//! `cargo test` alone would run, but whose chroot stage never lists it, would never run in CI).

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn every_suite_in_tests_tests_is_named_by_a_stage_of_scripts_test() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = std::fs::read_to_string(here.join("../scripts/test")).unwrap();
        let staged: BTreeSet<&str> = script
            .lines()
            .filter(|l| l.starts_with("stage "))
            .filter_map(|l| l.split_once(" suites "))
            .flat_map(|(_, names)| names.split_whitespace())
            .collect();
        let suites: BTreeSet<String> = std::fs::read_dir(here.join("tests"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".rs").map(str::to_string)
            })
            .collect();
        assert!(suites.len() > 10, "no suites found: {suites:?}");
        let missing: Vec<&String> = suites
            .iter()
            .filter(|s| !staged.contains(s.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "suites scripts/test never runs: {missing:?}; add them to a `stage … suites` line"
        );
        let stale: Vec<&&str> = staged.iter().filter(|s| !suites.contains(**s)).collect();
        assert!(
            stale.is_empty(),
            "scripts/test names suites that do not exist: {stale:?}"
        );
    }
}
