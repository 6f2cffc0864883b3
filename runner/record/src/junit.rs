//! JUnit XML, the test report format CI systems read (GitLab's test
//! reports, Jenkins' junit step, GitHub test-reporter actions): a run's
//! checks as test cases grouped by step, or a load audit's gates.
//!
//! The shape is Ant's `XMLJUnitResultFormatter` output, the dialect those
//! tools share: `testsuites` › `testsuite` › `testcase`, a failed case
//! holding one `failure` (the thing tested said no) or `error` (it could
//! not be tested).

use std::io;
use std::time::{Duration, SystemTime};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use crate::{RunRecord, Status};

/// A group of test cases: one step of a run, or a load audit's gates.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// Shown as the group's title.
    pub name: String,
    /// When it started.
    pub timestamp: Option<SystemTime>,
    /// How long it took.
    pub time: Duration,
    /// Its cases, in order.
    pub cases: Vec<Case>,
}

/// One test case: a check, a failed request, or a gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The dotted path CI tools group by (`journey.step`).
    pub classname: String,
    /// The case's own name.
    pub name: String,
    /// How long it took (zero when the case has no duration of its own).
    pub time: Duration,
    /// How it went.
    pub outcome: Outcome,
}

/// How a test case went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It held.
    Passed,
    /// What was tested said no: a check that failed, a gate not met.
    Failure {
        /// One line, for the tool's summary.
        message: String,
        /// The whole story.
        text: String,
    },
    /// It could not be tested: the run stopped, a request got no answer.
    Error {
        /// One line, for the tool's summary.
        message: String,
        /// The whole story.
        text: String,
    },
}

/// A run as suites: one per step holding its checks (and its failed
/// requests, which fail a step without a check saying so), plus a `run`
/// suite with one case for the run as a whole, so a journey that stopped
/// before any check still shows as a failed test.
pub fn run_suites(rec: &RunRecord) -> Vec<Suite> {
    let mut suites = Vec::new();
    for step in &rec.steps {
        let classname = format!("{}.{}", rec.journey, step.name);
        let mut cases = Vec::new();
        for check in &step.checks {
            let outcome = if check.passed {
                Outcome::Passed
            } else {
                let detail = check.detail.clone().unwrap_or_default();
                Outcome::Failure {
                    message: if detail.is_empty() {
                        format!("check '{}' failed", check.name)
                    } else {
                        detail.clone()
                    },
                    text: detail,
                }
            };
            cases.push(Case {
                classname: classname.clone(),
                name: check.name.clone(),
                time: Duration::ZERO,
                outcome,
            });
        }
        for (req, err) in step
            .requests
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| (r, e)))
        {
            let what = format!("{}: {}", err.kind.as_str(), err.message);
            cases.push(Case {
                classname: classname.clone(),
                name: format!("request {} {}", req.method, req.url),
                time: req.timings.total,
                outcome: Outcome::Error {
                    message: what.clone(),
                    text: what,
                },
            });
        }
        suites.push(Suite {
            name: format!("{} › {}", rec.journey, step.name),
            timestamp: rec.started_at.checked_add(step.start),
            time: step.duration,
            cases,
        });
    }
    let outcome = match (rec.status, &rec.error) {
        (Status::Pass, _) => Outcome::Passed,
        (Status::Fail, _) => {
            let failed: Vec<String> = rec
                .steps
                .iter()
                .flat_map(|s| s.checks.iter().filter(|c| !c.passed))
                .map(|c| c.name.clone())
                .collect();
            let message = match (failed.is_empty(), &rec.error) {
                (_, Some(e)) => e.message.clone(),
                (false, None) => format!("failed checks: {}", failed.join(", ")),
                (true, None) => "a request failed".to_string(),
            };
            Outcome::Failure {
                text: message.clone(),
                message,
            }
        }
        (_, err) => {
            let message = err
                .as_ref()
                .map(|e| format!("{}: {}", e.kind.as_str(), e.message))
                .unwrap_or_else(|| format!("the run ended {}", rec.status.as_str()));
            Outcome::Error {
                text: message.clone(),
                message,
            }
        }
    };
    suites.push(Suite {
        name: format!("{} › run", rec.journey),
        timestamp: Some(rec.started_at),
        time: rec.duration,
        cases: vec![Case {
            classname: rec.journey.clone(),
            name: "run".into(),
            time: rec.duration,
            outcome,
        }],
    });
    suites
}

/// The suites as a JUnit XML document named `name`.
pub fn to_xml(name: &str, suites: &[Suite]) -> io::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let [tests, failures, errors] = tally(suites.iter().flat_map(|s| &s.cases));
    let total: Duration = suites.iter().map(|s| s.time).sum();
    let name = xml_chars(name);
    w.write_event(Event::Start(BytesStart::new("testsuites").with_attributes(
        [
            ("name", name.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", errors.as_str()),
            ("time", seconds(total).as_str()),
        ],
    )))?;
    for (id, suite) in suites.iter().enumerate() {
        write_suite(&mut w, id, suite)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut out = w.into_inner();
    out.push(b'\n');
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn write_suite(w: &mut Writer<Vec<u8>>, id: usize, suite: &Suite) -> io::Result<()> {
    let [tests, failures, errors] = tally(&suite.cases);
    let id = id.to_string();
    let name = xml_chars(&suite.name);
    let time = seconds(suite.time);
    // JUnit's timestamp is ISO 8601 without a zone (taken as UTC).
    let timestamp = suite.timestamp.map(|t| {
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .trim_end_matches('Z')
            .to_string()
    });
    let mut start = BytesStart::new("testsuite").with_attributes([
        ("id", id.as_str()),
        ("name", name.as_str()),
        ("tests", tests.as_str()),
        ("failures", failures.as_str()),
        ("errors", errors.as_str()),
        ("skipped", "0"),
        ("time", time.as_str()),
    ]);
    if let Some(ts) = &timestamp {
        start.push_attribute(("timestamp", ts.as_str()));
    }
    w.write_event(Event::Start(start))?;
    for case in &suite.cases {
        let classname = xml_chars(&case.classname);
        let name = xml_chars(&case.name);
        let time = seconds(case.time);
        let start = BytesStart::new("testcase").with_attributes([
            ("classname", classname.as_str()),
            ("name", name.as_str()),
            ("time", time.as_str()),
        ]);
        let (tag, message, text) = match &case.outcome {
            Outcome::Passed => {
                w.write_event(Event::Empty(start))?;
                continue;
            }
            Outcome::Failure { message, text } => ("failure", message, text),
            Outcome::Error { message, text } => ("error", message, text),
        };
        w.write_event(Event::Start(start))?;
        let message = xml_chars(first_line(message));
        let mut el = BytesStart::new(tag).with_attributes([("message", message.as_str())]);
        el.push_attribute(("type", if tag == "failure" { "check" } else { "error" }));
        if text.is_empty() {
            w.write_event(Event::Empty(el))?;
        } else {
            w.write_event(Event::Start(el))?;
            w.write_event(Event::Text(BytesText::new(&xml_chars(text))))?;
            w.write_event(Event::End(BytesEnd::new(tag)))?;
        }
        w.write_event(Event::End(BytesEnd::new("testcase")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    Ok(())
}

/// The counts of `tests`, `failures` and `errors` attributes, as written.
fn tally<'a>(cases: impl IntoIterator<Item = &'a Case>) -> [String; 3] {
    let mut n = [0usize; 3];
    for case in cases {
        n[0] += 1;
        match case.outcome {
            Outcome::Passed => {}
            Outcome::Failure { .. } => n[1] += 1,
            Outcome::Error { .. } => n[2] += 1,
        }
    }
    n.map(|v| v.to_string())
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `s` without the characters XML 1.0 cannot carry even escaped (control
/// characters other than tab and line breaks, lone surrogates' stand-ins):
/// a check's detail is the journey's to write, and one such byte would
/// make the whole report unreadable to the CI tool.
fn xml_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' => '\u{fffd}',
            '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_do_not_reach_the_document() {
        let suites = [Suite {
            name: "a\u{1}b".into(),
            timestamp: None,
            time: Duration::from_millis(1500),
            cases: vec![Case {
                classname: "j.s".into(),
                name: "x < y & \"z\"".into(),
                time: Duration::ZERO,
                outcome: Outcome::Failure {
                    message: "saw \u{7}bell\nsecond line".into(),
                    text: "saw \u{7}bell\nsecond line".into(),
                },
            }],
        }];
        let xml = to_xml("waymark", &suites).expect("written");
        assert!(!xml.contains('\u{1}') && !xml.contains('\u{7}'), "{xml}");
        assert!(xml.contains("x &lt; y &amp; &quot;z&quot;"), "{xml}");
        assert!(xml.contains(r#"message="saw �bell""#), "{xml}");
        assert!(
            xml.contains(r#"tests="1" failures="1" errors="0" time="1.500""#),
            "{xml}"
        );
    }
}
