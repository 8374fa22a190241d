//! The plan rules for mailboxes (E3), in one place. No I/O: callers pass what exists.

use herald_core::domain::Plan;

pub use herald_core::config::PlanLimits;

/// A broken rule: its stable name, the limit, and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanViolation {
    pub rule: &'static str,
    pub limit: usize,
    pub message: String,
}

/// A user's mailbox as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct Owned {
    pub id: i64,
    pub sending_enabled: bool,
}

/// Whether the owner may have `candidate` (a new mailbox when `id` is `None`, else a change to
/// one of `existing`) beside their other mailboxes.
pub fn check(
    plan: Plan,
    limits: PlanLimits,
    existing: &[Owned],
    candidate_id: Option<i64>,
    sending_enabled: bool,
) -> Result<(), PlanViolation> {
    let others: Vec<&Owned> = existing
        .iter()
        .filter(|m| Some(m.id) != candidate_id)
        .collect();
    match plan {
        Plan::Base => {
            let sending =
                others.iter().filter(|m| m.sending_enabled).count() + usize::from(sending_enabled);
            if sending > limits.base_sending_mailboxes {
                return Err(PlanViolation {
                    rule: "base_sending_mailboxes",
                    limit: limits.base_sending_mailboxes,
                    message: format!(
                        "the base plan allows sending from {} mailbox(es) per user; turn sending off on another mailbox or move to the automation plan",
                        limits.base_sending_mailboxes
                    ),
                });
            }
        }
        Plan::Automation => {
            if others.len() + 1 > limits.automation_mailboxes {
                return Err(PlanViolation {
                    rule: "automation_mailboxes",
                    limit: limits.automation_mailboxes,
                    message: format!(
                        "the automation plan allows {} mailboxes per user",
                        limits.automation_mailboxes
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(id: i64, sending_enabled: bool) -> Owned {
        Owned {
            id,
            sending_enabled,
        }
    }

    #[test]
    fn base_allows_one_sending_mailbox_per_user() {
        let limits = PlanLimits::default();
        assert!(check(Plan::Base, limits, &[], None, true).is_ok());
        assert!(
            check(Plan::Base, limits, &[owned(1, true)], None, false).is_ok(),
            "receiving-only is fine"
        );
        let err = check(Plan::Base, limits, &[owned(1, true)], None, true).unwrap_err();
        assert_eq!((err.rule, err.limit), ("base_sending_mailboxes", 1));
        // Changing the sending mailbox itself is not a second one.
        assert!(check(Plan::Base, limits, &[owned(1, true)], Some(1), true).is_ok());
        assert!(
            check(
                Plan::Base,
                limits,
                &[owned(1, true), owned(2, false)],
                Some(2),
                true
            )
            .is_err()
        );
    }

    #[test]
    fn automation_allows_three_mailboxes_each_sending() {
        let limits = PlanLimits::default();
        let two = [owned(1, true), owned(2, true)];
        assert!(check(Plan::Automation, limits, &two, None, true).is_ok());
        let three = [owned(1, true), owned(2, true), owned(3, true)];
        let err = check(Plan::Automation, limits, &three, None, false).unwrap_err();
        assert_eq!((err.rule, err.limit), ("automation_mailboxes", 3));
        assert!(
            check(Plan::Automation, limits, &three, Some(3), true).is_ok(),
            "editing one of three"
        );
    }

    #[test]
    fn limits_are_configurable() {
        let limits = PlanLimits {
            base_sending_mailboxes: 2,
            automation_mailboxes: 1,
        };
        assert!(check(Plan::Base, limits, &[owned(1, true)], None, true).is_ok());
        assert!(check(Plan::Automation, limits, &[owned(1, false)], None, false).is_err());
    }
}
