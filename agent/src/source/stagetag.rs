//! Which `<stage>/<n>` tag strict mode takes. Kept apart from the run so that the two rules that
//! defend against a hostile tagger are unit-tested on their own: the number never goes down
//! (rollback), and, with `verify.max_tag_step`, it never jumps further than the step in one run
//! (fast-forward: a tag numbered far ahead, signed with a stolen key, would otherwise make every
//! later genuine tag look like a rollback). A device that was offline for long still catches up,
//! one step per run, through the tags the fleet really made.

use crate::source::fetch::TagRef;

/// The tag to verify, and a warning when newer tags exist beyond the allowed step.
#[derive(Debug)]
pub struct Pick<'a> {
    pub number: u64,
    pub tag: &'a TagRef,
    pub skipped: Option<String>,
}

/// Why no tag was taken, and the newest tag's commit (the head the report shows as refused).
#[derive(Debug)]
pub struct NoPick {
    pub reason: String,
    pub newest: Option<gix::ObjectId>,
}

/// The newest `<stage>/<n>` tag that is not older than `last` (the number accepted last) and,
/// with a step, not more than `last + step`. `last` 0 means none was accepted yet: no bound.
pub fn pick<'a>(
    tags: &'a [TagRef],
    stage: &str,
    last: u64,
    max_step: Option<u64>,
) -> Result<Pick<'a>, NoPick> {
    let prefix = format!("{stage}/");
    let numbered: Vec<(u64, &TagRef)> = tags
        .iter()
        .filter_map(|t| {
            let n = t.name.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, t))
        })
        .collect();
    let Some(&(newest, newest_tag)) = numbered.iter().max_by_key(|(n, _)| *n) else {
        return Err(NoPick {
            reason: format!("no tag {prefix}<number> on the server"),
            newest: None,
        });
    };
    let refuse = |reason| NoPick {
        reason,
        newest: Some(newest_tag.target),
    };
    if newest < last {
        return Err(refuse(format!(
            "the newest tag {prefix}{newest} is older than the last accepted {prefix}{last}: refusing a rollback"
        )));
    }
    let ceiling = match max_step {
        Some(step) if last > 0 => last.saturating_add(step),
        _ => u64::MAX,
    };
    let (number, tag) = *numbered
        .iter()
        .filter(|(n, _)| *n >= last && *n <= ceiling)
        .max_by_key(|(n, _)| *n)
        .ok_or_else(|| {
            refuse(format!(
                "the newest tag {prefix}{newest} jumps more than verify.max_tag_step ({}) past the last accepted {prefix}{last}, and no tag lies in between: refusing a fast-forward; tag the release within the step, or raise verify.max_tag_step on the device",
                max_step.unwrap_or_default()
            ))
        })?;
    let skipped = (newest > number).then(|| {
        format!(
            "tag {prefix}{newest} is more than verify.max_tag_step ({}) past the last accepted {prefix}{last}: taking {prefix}{number} in this run",
            max_step.unwrap_or_default()
        )
    });
    Ok(Pick {
        number,
        tag,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<TagRef> {
        names
            .iter()
            .map(|n| TagRef {
                name: n.to_string(),
                tag: gix::ObjectId::null(gix::hash::Kind::Sha1),
                target: gix::ObjectId::null(gix::hash::Kind::Sha1),
            })
            .collect()
    }

    #[test]
    fn takes_the_newest_of_its_own_stage() {
        let t = tags(&["production/3", "production/10", "canary/99", "production/x"]);
        let p = pick(&t, "production", 3, None).unwrap();
        assert_eq!((p.number, p.tag.name.as_str()), (10, "production/10"));
        assert!(p.skipped.is_none());
    }

    #[test]
    fn an_older_newest_tag_is_a_rollback() {
        let t = tags(&["production/3"]);
        let e = pick(&t, "production", 4, Some(10)).unwrap_err().reason;
        assert!(e.contains("refusing a rollback"), "{e}");
    }

    #[test]
    fn a_tag_far_ahead_is_not_taken_past_the_step() {
        let t = tags(&["production/5", "production/7", "production/1000000"]);
        let p = pick(&t, "production", 5, Some(10)).unwrap();
        assert_eq!(p.number, 7);
        let w = p.skipped.unwrap();
        assert!(w.contains("production/1000000"), "{w}");
    }

    #[test]
    fn a_lone_tag_far_ahead_is_a_fast_forward() {
        let t = tags(&["production/1000000"]);
        let e = pick(&t, "production", 5, Some(10)).unwrap_err().reason;
        assert!(e.contains("refusing a fast-forward"), "{e}");
        assert!(e.contains("verify.max_tag_step"), "{e}");
    }

    #[test]
    fn the_step_is_inclusive_and_the_first_tag_is_unbounded() {
        let t = tags(&["production/15", "production/16"]);
        assert_eq!(pick(&t, "production", 5, Some(10)).unwrap().number, 15);
        assert_eq!(pick(&t, "production", 0, Some(1)).unwrap().number, 16);
        assert_eq!(pick(&t, "production", 5, None).unwrap().number, 16);
    }
}
