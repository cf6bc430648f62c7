//! Observation text: OM's format, parsed out of model answers and merged into a record.
//!
//! ```text
//! Date: Nov 22, 2026
//! * 🔴 (14:30) User stated their name is Alex
//! * 🟡 (14:31) User prefers concise answers
//! ```
//!
//! Models drift from any format, so parsing is lenient: the `<observations>` block if there is
//! one, else the bullet lines; undated lines go under the date of the messages observed.

use serde::Serialize;

const DATE: &str = "Date: ";

/// What an observer or reflector answer holds.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Dated observation lines, normalised (every line under a `Date:` header).
    pub observations: String,
    pub current_task: Option<String>,
}

/// The text inside `<tag>…</tag>` where the tags start lines; `None` without an opening tag.
fn tagged<'a>(raw: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = raw
        .match_indices(&open)
        .find(|(i, _)| *i == 0 || raw[..*i].ends_with('\n'))?
        .0
        + open.len();
    let rest = &raw[start..];
    Some(rest.find(&close).map_or(rest, |end| &rest[..end]).trim_matches('\n'))
}

fn is_observation(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with(DATE) || l.starts_with("* ") || l.starts_with("- ") || marker(l).is_some()
}

fn marker(s: &str) -> Option<&'static str> {
    ["🔴", "🟡", "🟢", "✅"].into_iter().find(|m| s.starts_with(m))
}

/// Reads an observer or reflector answer; `date` heads lines the model left undated.
pub fn parse(raw: &str, date: &str) -> Parsed {
    let block = tagged(raw, "observations").map_or_else(
        || raw.lines().filter(|l| is_observation(l)).collect::<Vec<_>>().join("\n"),
        str::to_owned,
    );
    Parsed {
        observations: normalize(&block, date),
        current_task: tagged(raw, "current-task")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    }
}

/// Drops blank lines and makes sure every line sits under a `Date:` header.
fn normalize(block: &str, date: &str) -> String {
    let mut out = Vec::new();
    for line in block.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()) {
        if out.is_empty() && !line.starts_with(DATE) {
            out.push(format!("{DATE}{date}"));
        }
        out.push(line.to_owned());
    }
    out.join("\n")
}

/// Appends `new` observations to `old`, without repeating a date header already open.
pub fn merge(old: &str, new: &str) -> String {
    if old.is_empty() {
        return new.to_owned();
    }
    if new.is_empty() {
        return old.to_owned();
    }
    let last_header = old.lines().rev().find(|l| l.starts_with(DATE));
    let mut new_lines = new.lines().peekable();
    if new_lines.peek().copied() == last_header {
        new_lines.next();
    }
    let rest: Vec<&str> = new_lines.collect();
    if rest.is_empty() {
        return old.to_owned();
    }
    format!("{old}\n{}", rest.join("\n"))
}

/// One observation line, as the API shows it.
#[derive(Debug, PartialEq, Serialize)]
pub struct Line {
    pub date: Option<String>,
    pub time: Option<String>,
    /// `high`, `medium`, `low` or `done`.
    pub priority: Option<&'static str>,
    pub text: String,
}

/// Splits observations into lines with their date, time and priority.
pub fn lines(text: &str) -> Vec<Line> {
    let mut date = None;
    let mut out = Vec::new();
    for raw in text.lines() {
        if let Some(d) = raw.strip_prefix(DATE) {
            date = Some(d.trim().to_owned());
            continue;
        }
        let mut rest = raw.trim_start().trim_start_matches(['*', '-']).trim_start();
        let priority = marker(rest).map(|m| {
            rest = rest[m.len()..].trim_start();
            match m {
                "🔴" => "high",
                "🟡" => "medium",
                "🟢" => "low",
                _ => "done",
            }
        });
        let time = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .filter(|(t, _)| t.len() <= 8 && t.contains(':'))
            .map(|(t, r)| {
                rest = r.trim_start();
                t.to_owned()
            });
        if rest.is_empty() && priority.is_none() {
            continue;
        }
        out.push(Line {
            date: date.clone(),
            time,
            priority,
            text: rest.to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tagged_format() {
        let raw = "Some preamble\n<observations>\n* 🔴 (14:30) User stated their name is Alex.\n\n* 🟡 (14:30) User prefers concise answers.\n</observations>\n<current-task>\nPrimary: help Alex\n</current-task>";
        let p = parse(raw, "Nov 22, 2026");
        assert_eq!(
            p.observations,
            "Date: Nov 22, 2026\n* 🔴 (14:30) User stated their name is Alex.\n* 🟡 (14:30) User prefers concise answers."
        );
        assert_eq!(p.current_task.as_deref(), Some("Primary: help Alex"));
    }

    #[test]
    fn falls_back_to_bullets_and_keeps_model_dates() {
        let raw = "Here you go:\nDate: Nov 21, 2026\n* 🟢 (09:00) Small talk\nThanks!";
        let p = parse(raw, "Nov 22, 2026");
        assert_eq!(p.observations, "Date: Nov 21, 2026\n* 🟢 (09:00) Small talk");
        assert_eq!(p.current_task, None);
        assert_eq!(parse("nothing useful", "Nov 22, 2026"), Parsed::default());
    }

    #[test]
    fn merge_does_not_repeat_an_open_date() {
        let old = "Date: Nov 22, 2026\n* 🔴 (14:30) A";
        assert_eq!(
            merge(old, "Date: Nov 22, 2026\n* 🟡 (15:00) B"),
            format!("{old}\n* 🟡 (15:00) B")
        );
        assert_eq!(
            merge(old, "Date: Nov 23, 2026\n* 🟡 (09:00) C"),
            format!("{old}\nDate: Nov 23, 2026\n* 🟡 (09:00) C")
        );
        assert_eq!(merge("", old), old);
    }

    #[test]
    fn splits_lines_with_their_parts() {
        let l = lines("Date: Nov 22, 2026\n* 🔴 (14:30) Name is Alex\n* ✅ Done thing\n- plain note");
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].priority, Some("high"));
        assert_eq!(l[0].time.as_deref(), Some("14:30"));
        assert_eq!(l[0].date.as_deref(), Some("Nov 22, 2026"));
        assert_eq!(l[0].text, "Name is Alex");
        assert_eq!(l[1].priority, Some("done"));
        assert_eq!(l[1].time, None);
        assert_eq!(l[2].priority, None);
        assert_eq!(l[2].text, "plain note");
    }
}
