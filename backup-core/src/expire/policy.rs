//! Which backups `expire` keeps: a pure function of the backups (oldest first), their pins, the
//! policy and the current time.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::ExpireError;

/// The retention rules; at least one of `keep_last` and `keep_within` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N complete backups (N >= 1).
    pub keep_last: Option<u32>,
    /// Keep every backup that ended within this long before now, and the newest one that ended
    /// before that, so that every moment of the duration stays recoverable.
    pub keep_within: Option<Duration>,
}

impl Policy {
    /// Refuses a policy that would keep nothing by rule (the newest backup is kept anyway, but
    /// a `0` is more likely a typo than a wish).
    pub fn validate(&self) -> Result<(), ExpireError> {
        if self.keep_last.is_none() && self.keep_within.is_none() {
            return Err(ExpireError::Policy(
                "give --keep-last N or --keep-within DURATION (or both)".into(),
            ));
        }
        if self.keep_last == Some(0) {
            return Err(ExpireError::Policy(
                "--keep-last must be at least 1 (the newest backup is never deleted)".into(),
            ));
        }
        if self.keep_within == Some(Duration::ZERO) {
            return Err(ExpireError::Policy(
                "--keep-within must be longer than 0 (for example 7d or 36h)".into(),
            ));
        }
        Ok(())
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    /// The newest backup is never deleted.
    Newest,
    /// Among the newest `--keep-last`.
    KeepLast,
    /// Ended within `--keep-within`.
    KeepWithin,
    /// The newest backup that ended before the `--keep-within` window: the base for recovery
    /// to the window's first moments.
    BeforeWindow,
    /// Pinned with `pgstream keep`.
    Pinned,
    /// A kept incremental backup is restored with it (its chain: expire/chain.rs).
    Chain,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Newest => "newest",
            KeepReason::KeepLast => "keep-last",
            KeepReason::KeepWithin => "keep-within",
            KeepReason::BeforeWindow => "newest before the keep-within window",
            KeepReason::Pinned => "pinned",
            KeepReason::Chain => "needed by a kept incremental backup",
        }
    }
}

/// One backup as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub end_time: SystemTime,
    pub pinned: bool,
}

/// For each candidate (given oldest first, by id), why it is kept; an empty list means it is
/// expired.
pub fn select(candidates: &[Candidate], policy: &Policy, now: SystemTime) -> Vec<Vec<KeepReason>> {
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); candidates.len()];
    if let Some(last) = reasons.last_mut() {
        last.push(KeepReason::Newest);
    }
    if let Some(n) = policy.keep_last {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let skip = candidates.len().saturating_sub(n);
        for r in reasons.iter_mut().skip(skip) {
            r.push(KeepReason::KeepLast);
        }
    }
    if let Some(within) = policy.keep_within {
        // A duration beyond the epoch keeps everything.
        let window_start = now.checked_sub(within).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut before: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if c.end_time >= window_start {
                reasons[i].push(KeepReason::KeepWithin);
            } else if before.is_none_or(|b| c.end_time >= candidates[b].end_time) {
                before = Some(i);
            }
        }
        if let Some(b) = before {
            reasons[b].push(KeepReason::BeforeWindow);
        }
    }
    for (i, c) in candidates.iter().enumerate() {
        if c.pinned {
            reasons[i].push(KeepReason::Pinned);
        }
    }
    for r in &mut reasons {
        r.sort();
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// Backups that ended `hours_ago` hours before now, oldest first.
    fn backups(hours_ago: &[u64]) -> Vec<Candidate> {
        hours_ago
            .iter()
            .enumerate()
            .map(|(i, h)| Candidate {
                id: format!("b{i}"),
                end_time: now() - HOUR * (*h as u32),
                pinned: false,
            })
            .collect()
    }

    fn kept(reasons: &[Vec<KeepReason>]) -> Vec<usize> {
        (0..reasons.len())
            .filter(|&i| !reasons[i].is_empty())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let c = backups(&[50, 40, 30, 20, 10]);
        let policy = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let r = select(&c, &policy, now());
        assert_eq!(kept(&r), vec![3, 4]);
        assert_eq!(r[4], vec![KeepReason::Newest, KeepReason::KeepLast]);
        let policy = Policy {
            keep_last: Some(9),
            ..Policy::default()
        };
        assert_eq!(kept(&select(&c, &policy, now())), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn keep_within_keeps_the_window_and_the_newest_backup_before_it() {
        let c = backups(&[72, 49, 47, 30, 10]);
        let policy = Policy {
            keep_within: Some(48 * HOUR),
            ..Policy::default()
        };
        let r = select(&c, &policy, now());
        // 49 h ago is the base for recovery to any moment after 48 h ago.
        assert_eq!(kept(&r), vec![1, 2, 3, 4]);
        assert_eq!(r[1], vec![KeepReason::BeforeWindow]);
        assert_eq!(r[2], vec![KeepReason::KeepWithin]);
    }

    #[test]
    fn keep_within_with_every_backup_older_keeps_only_the_newest() {
        let c = backups(&[72, 60, 50]);
        let policy = Policy {
            keep_within: Some(HOUR),
            ..Policy::default()
        };
        let r = select(&c, &policy, now());
        assert_eq!(kept(&r), vec![2]);
        assert_eq!(r[2], vec![KeepReason::Newest, KeepReason::BeforeWindow]);
    }

    #[test]
    fn the_before_window_backup_is_the_one_that_ended_last() {
        // Ids are start order; a long backup can end after a later, shorter one.
        let mut c = backups(&[80, 70, 5]);
        c[0].end_time = now() - 60 * HOUR;
        let policy = Policy {
            keep_within: Some(24 * HOUR),
            ..Policy::default()
        };
        assert_eq!(kept(&select(&c, &policy, now())), vec![0, 2]);
    }

    #[test]
    fn both_rules_keep_the_union_and_pins_are_always_kept() {
        let mut c = backups(&[100, 90, 80, 30, 20, 10]);
        c[0].pinned = true;
        let policy = Policy {
            keep_last: Some(1),
            keep_within: Some(25 * HOUR),
        };
        let r = select(&c, &policy, now());
        assert_eq!(kept(&r), vec![0, 3, 4, 5]);
        assert_eq!(r[0], vec![KeepReason::Pinned]);
        assert_eq!(r[3], vec![KeepReason::BeforeWindow]);
    }

    #[test]
    fn the_newest_backup_is_kept_even_by_a_window_that_holds_nothing() {
        let c = backups(&[5]);
        let policy = Policy {
            keep_within: Some(HOUR),
            ..Policy::default()
        };
        assert_eq!(kept(&select(&c, &policy, now())), vec![0]);
        assert!(select(&[], &policy, now()).is_empty());
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(Policy::default().validate().is_err());
        let zero = Policy {
            keep_last: Some(0),
            ..Policy::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        let zero = Policy {
            keep_within: Some(Duration::ZERO),
            ..Policy::default()
        };
        assert!(zero.validate().is_err());
        let ok = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        assert!(ok.validate().is_ok());
    }
}
