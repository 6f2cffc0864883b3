//! `[[maintenance]]`: windows in which runs go on and are stored, but their
//! alerts are held and availability leaves them out.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use toml::Spanned;

use super::JourneyConfig;
use crate::schedule::Schedule;
use crate::spans::Reader;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    pub(super) name: Option<Spanned<String>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) duration: Option<Spanned<String>>,
    pub(super) start: Option<Spanned<String>>,
    pub(super) end: Option<Spanned<String>>,
    pub(super) journeys: Option<Vec<Spanned<String>>>,
    pub(super) tags: Option<Vec<Spanned<String>>>,
}

/// When a window is open.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// From each time of a cron schedule, for `duration`.
    Recurring {
        /// The starts.
        schedule: Schedule,
        /// How long each lasts.
        duration: Duration,
    },
    /// Once.
    Once {
        /// From.
        start: SystemTime,
        /// To (exclusive).
        end: SystemTime,
    },
}

/// One `[[maintenance]]` window.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceConfig {
    /// Its name, in records (`maintenance`) and the UI.
    pub name: String,
    /// When it is open.
    pub when: When,
    /// The journeys it covers by name; with `tags` empty too, every journey.
    pub journeys: Vec<String>,
    /// The journeys it covers by tag.
    pub tags: Vec<String>,
}

impl MaintenanceConfig {
    /// Whether the window covers `journey` (its name and tags).
    pub fn covers(&self, journey: &str, tags: &[String]) -> bool {
        (self.journeys.is_empty() && self.tags.is_empty())
            || self.journeys.iter().any(|j| j == journey)
            || self.tags.iter().any(|t| tags.contains(t))
    }

    /// Whether the window is open at `at`.
    pub fn open_at(&self, at: SystemTime) -> bool {
        match &self.when {
            When::Once { start, end } => *start <= at && at < *end,
            // Open when a start fell in the last `duration`.
            When::Recurring { schedule, duration } => at
                .checked_sub(*duration)
                .and_then(|from| schedule.next_after(from, &self.name))
                .is_some_and(|start| start <= at),
        }
    }
}

/// The window covering `journey` at `at`, if any.
pub fn window_for<'a>(
    windows: &'a [MaintenanceConfig],
    journey: &JourneyConfig,
    at: SystemTime,
) -> Option<&'a MaintenanceConfig> {
    windows
        .iter()
        .find(|w| w.covers(&journey.name, &journey.tags) && w.open_at(at))
}

pub(super) fn read_maintenance(
    r: &mut Reader,
    i: usize,
    span: Range<usize>,
    raw: RawMaintenance,
    journeys: &[JourneyConfig],
) -> Option<MaintenanceConfig> {
    let label = format!("[[maintenance]] #{}", i + 1);
    let key = |k: &str| format!("{label} → {k}");
    let before = r.errors.len();
    let name = raw
        .name
        .map_or_else(|| format!("maintenance #{}", i + 1), Spanned::into_inner);
    let when = match (&raw.schedule, &raw.start) {
        (Some(s), None) => {
            let schedule = match Schedule::cron(s.get_ref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    r.error(s.span(), key("schedule"), e);
                    None
                }
            };
            let duration = match &raw.duration {
                Some(d) => r.duration(d, &key("duration")),
                None => {
                    r.error(
                        span.clone(),
                        label.clone(),
                        "a recurring window needs 'duration' (e.g. \"2h\")",
                    );
                    None
                }
            };
            schedule
                .zip(duration)
                .map(|(schedule, duration)| When::Recurring { schedule, duration })
        }
        (None, Some(s)) => {
            let time =
                |v: &Spanned<String>, k: &str, r: &mut Reader| match humantime::parse_rfc3339_weak(
                    v.get_ref(),
                ) {
                    Ok(t) => Some(t),
                    Err(_) => {
                        r.error(
                            v.span(),
                            key(k),
                            format!(
                                "'{}' is not an RFC 3339 time (2026-12-06T02:00:00Z)",
                                v.get_ref()
                            ),
                        );
                        None
                    }
                };
            let start = time(s, "start", r);
            let end = match &raw.end {
                Some(e) => time(e, "end", r),
                None => {
                    r.error(span.clone(), label.clone(), "'start' needs 'end'");
                    None
                }
            };
            match (start, end) {
                (Some(start), Some(end)) if start < end => Some(When::Once { start, end }),
                (Some(_), Some(_)) => {
                    if let Some(e) = &raw.end {
                        r.error(e.span(), key("end"), "the window ends before it starts");
                    }
                    None
                }
                _ => None,
            }
        }
        (Some(s), Some(_)) => {
            r.error(
                s.span(),
                key("schedule"),
                "give 'schedule' + 'duration' (recurring) or 'start' + 'end' (once), not both",
            );
            None
        }
        (None, None) => {
            r.error(
                span.clone(),
                label.clone(),
                "missing 'schedule' + 'duration' (recurring) or 'start' + 'end' (once)",
            );
            None
        }
    };
    let mut names = Vec::new();
    for j in raw.journeys.unwrap_or_default() {
        if journeys.iter().any(|c| c.name == *j.get_ref()) {
            names.push(j.into_inner());
        } else {
            r.error(
                j.span(),
                key("journeys"),
                format!("no [[journey]] is named '{}'", j.get_ref()),
            );
        }
    }
    let tags: Vec<String> = raw
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(Spanned::into_inner)
        .collect();
    if r.errors.len() > before {
        return None;
    }
    Some(MaintenanceConfig {
        name,
        when: when?,
        journeys: names,
        tags,
    })
}
