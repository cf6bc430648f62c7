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

use crate::ir::tokens;
use serde::Serialize;

const DATE: &str = "Date: ";

/// What an observer or reflector answer holds.
#[derive(Debug, Clone, Default, PartialEq)]
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

/// Reads an answer like [`parse`]; an answer with no `<observations>` block and no bullet
/// lines has each of its lines taken as a 🟡 observation, for [`check`] to judge (small models
/// drift from the format, and plain sentences can still be facts).
pub fn read(raw: &str, date: &str) -> Parsed {
    let parsed = parse(raw, date);
    if !parsed.observations.is_empty() || tagged(raw, "observations").is_some() {
        return parsed;
    }
    let kept: Vec<String> = raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('<'))
        .map(|l| format!("* 🟡 {l}"))
        .collect();
    Parsed {
        observations: normalize(&kept.join("\n"), date),
        current_task: parsed.current_task,
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

/// Where observations `text` splits so that what comes before stays within `budget` tokens
/// (whole lines, at least one observation), and the rest under the date header it was written
/// under (a split inside a date group keeps the date for both sides).
pub fn split_oldest(text: &str, budget: u64) -> (&str, String) {
    let mut end = 0;
    let mut spent = 0;
    let mut observed = false;
    for line in text.split_inclusive('\n') {
        spent += tokens::text(line);
        if spent > budget && observed {
            break;
        }
        observed |= !line.starts_with(DATE) && !line.trim().is_empty();
        end += line.len();
    }
    let (head, rest) = text.split_at(end);
    (head.trim_end_matches('\n'), under_its_date(head, rest))
}

/// The newest whole lines of observations `text` within `budget` tokens (the last one at
/// least), under the date header they were written under.
pub fn newest(text: &str, budget: u64) -> String {
    let mut start = text.len();
    let mut spent = 0;
    for line_start in text.rmatch_indices('\n').map(|(i, _)| i + 1).chain([0]) {
        spent += tokens::text(&text[line_start..start]);
        if spent > budget && !text[start..].trim().is_empty() {
            break;
        }
        start = line_start;
    }
    let (old, kept) = text.split_at(start);
    under_its_date(old, kept)
}

/// `rest`, the lines that followed `before`, opened by the last date header of `before` when
/// `rest` does not open with one.
fn under_its_date(before: &str, rest: &str) -> String {
    let rest = rest.trim_start_matches('\n');
    match before.lines().rev().find(|l| l.starts_with(DATE)) {
        Some(header) if !rest.is_empty() && !rest.starts_with(DATE) => format!("{header}\n{rest}"),
        _ => rest.to_owned(),
    }
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

/// Why an observer or reflector answer was refused (and the observations left as they were).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No observation line with words in it.
    Empty,
    /// A line that is only a marker, a time or punctuation.
    BareLine(String),
    /// A `Date:` header that is not a date, or a line whose time is not a time.
    BadDate(String),
    /// An observation line without its `(HH:MM)` time: a small model's chatter in list form
    /// ("* 🟡 I'm here to observe the user's behavior…") rather than something observed.
    NoTime(String),
    /// The instructions repeated, or the model talking to the user instead of observing.
    Echo(String),
    /// More tokens than what it observed or condensed (plus a header's worth).
    Longer { answer: u64, input: u64 },
    /// The same line or phrase over and over (a generation loop).
    Loop(String),
    /// A reflection that keeps less than [`REFLECTION_FLOOR`] of what it condensed.
    Shrunk { answer: u64, input: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| s.chars().take(80).collect::<String>();
        match self {
            Refusal::Empty => write!(f, "no observation lines"),
            Refusal::BareLine(l) => write!(f, "a line without text: {:?}", cut(l)),
            Refusal::BadDate(l) => write!(f, "not a date or time: {:?}", cut(l)),
            Refusal::NoTime(l) => write!(f, "an observation without its (HH:MM) time: {:?}", cut(l)),
            Refusal::Echo(l) => write!(f, "not an observation (instructions or chat): {:?}", cut(l)),
            Refusal::Longer { answer, input } => {
                write!(f, "{answer} tokens, longer than the {input} tokens it was given")
            }
            Refusal::Loop(l) => write!(f, "repeats itself: {:?}", cut(l)),
            Refusal::Shrunk { answer, input } => write!(
                f,
                "{answer} tokens keep less than a quarter of the {input} tokens it condensed"
            ),
        }
    }
}

/// The least share of its input's tokens a reflection must keep: compressing more than 4×
/// in one reflection is losing facts, not condensing them (a small model once turned 168
/// tokens into 10 tokens of bare markers).
pub const REFLECTION_FLOOR: f64 = 0.25;

/// Tokens an answer may exceed its input by: the `Date:` header and markers it adds to a
/// tiny transcript.
const OVERHEAD: u64 = 24;

/// What talking to the user looks like, as opposed to recording facts.
const CHAT: [&str; 15] = [
    "ready to assist",
    "please provide",
    "provide me with",
    "how can i help",
    "how can i assist",
    "how may i assist",
    "as an ai",
    "i'm sorry",
    "i am sorry",
    "requires observation",
    "i'd be happy to",
    "let me know if",
    "here to help",
    "help you with",
    "your task",
];

/// Lowercase words of letters and digits.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The number of times each `n`-word run occurs in `words`.
fn grams(words: &[String], n: usize) -> std::collections::HashMap<&[String], usize> {
    let mut out = std::collections::HashMap::new();
    for g in words.windows(n) {
        *out.entry(g).or_default() += 1;
    }
    out
}

/// Whether `d` reads as a date: `Nov 22, 2026`, `November 22, 2026` or `2026-11-22`.
fn is_date(d: &str) -> bool {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let d = d.trim();
    let iso = d.split('-').collect::<Vec<_>>();
    if let [y, m, day] = iso[..] {
        let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
        return ok(y, 4) && ok(m, 2) && ok(day, 2);
    }
    let parts: Vec<&str> = d.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let [month, day, year] = parts[..] else { return false };
    let month = month.to_lowercase();
    MONTHS.iter().any(|m| month.starts_with(m))
        && day.parse::<u8>().is_ok_and(|n| (1..=31).contains(&n))
        && year.len() == 4
        && year.parse::<u16>().is_ok()
}

/// Whether `t` is a 24-hour `HH:MM`.
fn is_time(t: &str) -> bool {
    t.split_once(':').is_some_and(|(h, m)| {
        h.parse::<u8>().is_ok_and(|h| h < 24) && m.len() == 2 && m.parse::<u8>().is_ok_and(|m| m < 60)
    })
}

/// Checks parsed `observations` (normalised, as [`parse`] gives them) against what they were
/// made from: `input` (the transcript, or the observations reflected) and the
/// `instructions` the model was given. `reflection` adds the floor of [`REFLECTION_FLOOR`].
pub fn check(observations: &str, input: &str, instructions: &str, reflection: bool) -> Result<(), Refusal> {
    // A chat phrase the conversation itself holds ("how can I help my son read?") is a fact.
    let heard = input.to_lowercase();
    let mut texts = Vec::new();
    let mut untimed = None;
    for raw in observations.lines() {
        if let Some(d) = raw.strip_prefix(DATE) {
            if !is_date(d) {
                return Err(Refusal::BadDate(raw.to_owned()));
            }
            continue;
        }
        let (_, time, text) = split_line(raw);
        if time.is_some_and(|t| !is_time(t)) {
            return Err(Refusal::BadDate(raw.to_owned()));
        }
        if text.chars().filter(|c| c.is_alphanumeric()).count() < 2 {
            return Err(Refusal::BareLine(raw.to_owned()));
        }
        let lower = text.to_lowercase();
        if CHAT.iter().any(|c| lower.contains(c) && !heard.contains(c)) {
            return Err(Refusal::Echo(raw.to_owned()));
        }
        // Indented lines are details under an observation; a reflection may merge times away.
        // Checked last, so that an echo or a loop is named as such.
        if time.is_none() && !reflection && !raw.starts_with(char::is_whitespace) {
            untimed.get_or_insert(raw);
        }
        texts.push(text);
    }
    if texts.is_empty() {
        return Err(Refusal::Empty);
    }
    // Words of the instructions that the input does not have: six in a row anywhere, or
    // runs of five covering half a line, are an echo (the format's example lines, the list
    // of priorities), not something the conversation said.
    let (given, taught) = (words(input), words(instructions));
    let (given5, taught5) = (grams(&given, 5), grams(&taught, 5));
    let echoed = |g: &[String]| taught5.contains_key(g) && !given5.contains_key(g);
    for t in &texts {
        let w = words(t);
        let mut covered = vec![false; w.len()];
        for (i, g) in w.windows(5).enumerate() {
            if echoed(g) {
                covered[i..i + 5].iter_mut().for_each(|c| *c = true);
                if w.get(i + 5).is_some_and(|_| echoed(&w[i + 1..i + 6])) {
                    return Err(Refusal::Echo(w[i..i + 6].join(" ")));
                }
            }
        }
        if covered.iter().filter(|c| **c).count() * 2 >= w.len().max(1) && covered.contains(&true) {
            return Err(Refusal::Echo((*t).to_owned()));
        }
    }
    let said = words(&texts.join("\n"));
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for t in &texts {
        let n = seen.entry(words(t).join(" ")).or_default();
        *n += 1;
        if *n >= 3 {
            return Err(Refusal::Loop((*t).to_owned()));
        }
    }
    let said5 = grams(&said, 5);
    let count = |m: &std::collections::HashMap<&[String], usize>, g: &[String]| m.get(g).copied().unwrap_or(0);
    if let Some(g) = said
        .windows(5)
        .find(|g| count(&said5, g) >= 4 && count(&said5, g) > count(&given5, g))
    {
        return Err(Refusal::Loop(g.join(" ")));
    }
    let (answer, input) = (crate::ir::tokens::text(observations), crate::ir::tokens::text(input));
    if answer > input + OVERHEAD {
        return Err(Refusal::Longer { answer, input });
    }
    if reflection && (answer as f64) < input as f64 * REFLECTION_FLOOR {
        return Err(Refusal::Shrunk { answer, input });
    }
    match untimed {
        Some(line) => Err(Refusal::NoTime(line.to_owned())),
        None => Ok(()),
    }
}

/// A line's priority marker, time and text, without its bullet.
fn split_line(raw: &str) -> (Option<&'static str>, Option<&str>, &str) {
    let mut rest = raw.trim_start().trim_start_matches(['*', '-']).trim_start();
    let m = marker(rest);
    if let Some(m) = m {
        rest = rest[m.len()..].trim_start();
    }
    let mut time = None;
    if let Some((t, r)) = rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
        if t.len() <= 8 && t.contains(':') {
            (time, rest) = (Some(t), r.trim_start());
        }
    }
    (m, time, rest)
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
        let (m, time, rest) = split_line(raw);
        let priority = m.map(|m| match m {
            "🔴" => "high",
            "🟡" => "medium",
            "🟢" => "low",
            _ => "done",
        });
        if rest.is_empty() && priority.is_none() {
            continue;
        }
        out.push(Line {
            date: date.clone(),
            time: time.map(str::to_owned),
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

    /// Observer and reflector answers, accepted or refused, and why. The SmolLM2 rows are
    /// what SmolLM2-135M answered to memgate's prompts (fixtures/local has the recordings).
    #[test]
    fn checks_answers_against_their_input() {
        use Refusal::*;
        let transcript = "Nov 22 2026:\nUser (14:30): My name is Alex and I live in Lisbon.\nAssistant (14:30): Nice to meet you, Alex!\nUser (14:31): I work as a nurse and I have two cats.\n";
        let observer = crate::memory::observer::INSTRUCTIONS;
        let ok: Result<(), Refusal> = Ok(());
        let rows: [(&str, &str, Result<(), Refusal>); 13] = [
            (
                "good, tagged",
                "<observations>\nDate: Nov 22, 2026\n* 🔴 (14:30) User's name is Alex; lives in Lisbon\n* 🔴 (14:31) User is a nurse with two cats\n</observations>",
                ok.clone(),
            ),
            (
                "a fact without its time (the format asks for one on every line)",
                "* 🟡 The user is Alex, a nurse from Lisbon.",
                Err(NoTime("* 🟡 The user is Alex, a nurse from Lisbon.".into())),
            ),
            (
                "SmolLM2 through memgate: chatter in list form, accepted before",
                "<observations>\n* 🟡 I'm here to observe the user's behavior, including their actions and responses.\n* 🟡 2. New tasks.\n</observations>",
                Err(NoTime("* 🟡 I'm here to observe the user's behavior, including their actions and responses.".into())),
            ),
            ("an indented detail needs no time", "* 🔴 (14:30) User is Alex\n  * a nurse from Lisbon", ok.clone()),
            (
                "SmolLM2: asks for input instead of observing",
                "I'm ready to assist. Please provide me with a message that requires observation.",
                Err(Echo("* 🟡 I'm ready to assist. Please provide me with a message that requires observation.".into())),
            ),
            ("bare markers", "<observations>\n* 🔴\n* 🟡 (14:30)\n</observations>", Err(BareLine("* 🔴".into()))),
            ("empty block", "<observations>\n</observations>", Err(Empty)),
            (
                "a date that is not one",
                "Date: sometime\n* 🔴 (14:30) User is Alex",
                Err(BadDate("Date: sometime".into())),
            ),
            (
                "the instructions' priorities echoed",
                "* 🔴 high: explicit user facts, preferences, unresolved goals, critical context",
                Err(Echo("high explicit user facts preferences unresolved".into())),
            ),
            (
                "the same line over and over",
                "* 🔴 User is Alex\n* 🔴 User is Alex\n* 🔴 User is Alex",
                Err(Loop("User is Alex".into())),
            ),
            (
                "a phrase loop inside one line",
                "* 🔴 User lives in Lisbon and lives in Lisbon and lives in Lisbon and lives in Lisbon and lives in Lisbon",
                Err(Loop("lives in lisbon and lives".into())),
            ),
            (
                "longer than the transcript",
                "* 🔴 User is Alex, who also enjoys hiking in the mountains on weekends, cooking Portuguese dishes, reading science fiction novels, playing the violin in a community orchestra, volunteering at the animal shelter downtown, and learning Japanese through evening classes at the university",
                Err(Longer { answer: 87, input: 58 }),
            ),
            ("an ISO date is a date", "Date: 2026-11-22\n* 🔴 (14:30) User is Alex from Lisbon", ok.clone()),
        ];
        for (case, answer, want) in rows {
            let parsed = read(answer, "Nov 22, 2026");
            assert_eq!(check(&parsed.observations, transcript, observer, false), want, "{case}");
        }
        // A reflection keeps at least a quarter of what it condensed.
        let observations = "Date: Nov 22, 2026\n* 🔴 (14:30) User's name is Alex; lives in Lisbon\n* 🔴 (14:31) User is a nurse with two cats named Tom and Jerry\n* 🟡 (14:40) User is planning a trip to Porto next spring";
        let condensed = "Date: Nov 22, 2026\n* 🔴 (14:30) Alex, a nurse in Lisbon with two cats, plans a trip to Porto";
        assert_eq!(check(condensed, observations, "", true), Ok(()));
        let gutted = "Date: Nov 22, 2026\n* 🔴 (14:30) Alex";
        assert!(matches!(check(gutted, observations, "", true), Err(Shrunk { .. })));
        assert_eq!(check(gutted, observations, "", false), Ok(()));
    }

    /// What SmolLM2-135M answered to memgate's own prompts (fixtures/local, README there), each
    /// refused; the reason printed for the record.
    #[test]
    fn refuses_what_a_real_small_model_answered() {
        let transcript = "Dec 3 2026:\nUser (18:57): My name is Alex and I live in Lisbon.\nUser (18:57): I work as a nurse at the city hospital.\nUser (18:58): I have two cats called Tom and Jerry.\nUser (18:58): My favourite food is grilled sardines.\n";
        let cases = [
            ("SmolLM2: priorities echoed after a greeting (once stored by memgate)", "I'm here to help you with your task.\n\nYour Task:\n- 🔴 High: explicit user facts, preferences, urgent details"),
            ("SmolLM2: the format's example lines echoed", "🔴 High: explicit user facts, preferences, urgent details\n✪️ (14:30) User stated they are vegetarian\n✫️ (14:31) User is planning a trip to Japan in April 2027\n⚡️ (14:32) User says Tom and Jerry have been with them for many years\n🟡 (14:33) User is planning a trip to Japan in April 2027\n✪️ (14:35) User mentions they're going to Tokyo, but they want to visit Kyoto first.\n⚡️ (14:36) User says Jerry has been with them for many years\n🟢 (14:38) User is planning a trip to Japan in April 2027\n✪️ (14:40) User mentions they're going to Tokyo, but they want to visit Kyoto first\n⚡️ (14:45) User says Tom and Jerry have been with them for many years\n🟢 (14:46) User is planning a trip to Japan in April 2027\n✪️"),
            ("SmolLM2: the prompt's transcript echoed", "## New Message History to Observe\n\nDec 3 2026:\nUser (18:59): I have two cats called Tom and Jerry.\nAssistant (18:59): Eu mesmos! Your favorite foods are quite unique. I think we could use a dish inspired by fish to create something that's both delicious and flavorful, just like how they usually eat grilled sardines. What do you say?\n\n---\n\n## New Message History to Observe\n\nDec 3 2026:\nUser (19:04): I am planning a trip to Japan in April.\nAssistant (19:05): Eu mesmos! Your favorite foods are quite unique, but what about your cats? How do you plan to bring them home with you?\n\n---\n\n## New Message History to Observe\n\nDec 3 2026:\nUser (18:47): I have two cats named Tom and Jerry.\nAssistant (18:59)\nUser (19:00): Eu mesmos! Your favorite foods are quite unique, but what about your cats? How do you plan to bring them home with you?"),
            ("SmolLM2: strict retry, example facts as bullets", "I'm a LinguaLingua's friendly and understanding AI. I'll be here to assist you today, no matter what your task is.\n\n## What Your Task Is\n\nYour task is to observe the user's actions in the message history above, focusing on their preferences, decisions made, outcomes achieved, and any unintended consequences of their actions.\n\n### What Your Task Is\n\n* The user states they are vegetarian\n* The user mentions a trip to Japan in April 2027"),
            ("SmolLM2 reflector: one line looping", "🔴 (18:57) User is planning a trip to Lisbon, Portugal.\n✨ (19:03) User has two cats named Tom and Jerry.\n❌ (20:04) User's favourite food is grilled sardines.\n🟡 (20:06) User is planning a trip to Lisbon, Portugal.\n🔴 (18:57) User has two cats named Tom and Jerry.\n✨ (19:03) User is planning a trip to Lisbon, Portugal.\n❌ (20:04) User's favourite food is grilled sardines.\n🟡 (20:06) User is planning a trip to Lisbon, Portugal.\n🔴 (18:57) User has two cats named Tom and Jerry.\n✨ (19:03) User is planning a trip to Lisbon, Portugal.\n❌ (20:04) User's favourite food is grilled sardines.\n🟡 (20:06) User is planning a trip to Lisbon, Portugal.\n🔴 (18:57) User has two cats named Tom"),
            ("SmolLM2 reflector: hours past 24", "🔴 (19:06) User is a medical doctor.\n✨ (23:45) User's favourite drink is a glass of wine.\n🟡 (27:08) User has two cats, Tom and Jerry.\n🏰 (28:12) User lives in Lisbon.\n🔴 (29:13) User works as a nurse at the city hospital.\n💻 (30:14) User is planning a trip to Portugal.\n👍 (31:15) User has two dogs, Max and Luna.\n🌟 (32:16) User's favourite sport is football.\n📐 (33:17) User is a medical doctor.\n🔴 (34:18) User lives in Lisbon.\n👍 (35:19) User has two cats, Max and Luna.\n🌟 (36:20) User's favourite sport is football.\n💻 (37:21) User is a medical doctor.\n🔴 (40:22) User lives in Lisbon.\n👍"),
        ];
        for (case, answer) in cases {
            let parsed = read(answer, "Dec 3, 2026");
            let verdict = check(
                &parsed.observations,
                transcript,
                crate::memory::observer::INSTRUCTIONS,
                false,
            );
            assert!(verdict.is_err(), "{case}: accepted {:?}", parsed.observations);
        }
    }

    #[test]
    fn chat_phrases_the_conversation_said_are_facts() {
        let transcript = "Dec 3 2026:\nUser (09:00): How can I help my son learn to read?\nUser (09:01): I'm sorry I was late yesterday.\n";
        let facts = "Date: Dec 3, 2026\n* 🟡 (09:00) User asked how can I help my son learn to read.\n* 🟢 (09:01) User said I'm sorry I was late yesterday.";
        assert_eq!(check(facts, transcript, "", false), Ok(()));
        let chat = "Date: Dec 3, 2026\n* 🟡 (09:00) I'm ready to assist with your reading questions.";
        assert!(matches!(check(chat, transcript, "", false), Err(Refusal::Echo(_))));
    }

    #[test]
    fn a_cut_inside_a_date_group_keeps_its_date_on_both_sides() {
        let text = "Date: Nov 22, 2026\n* 🔴 (14:30) aaaa\n* 🔴 (14:31) bbbb\nDate: Nov 23, 2026\n* 🔴 (09:00) cccc";
        assert_eq!(newest(text, 1000), text);
        assert_eq!(newest(text, 8), "Date: Nov 23, 2026\n* 🔴 (09:00) cccc");
        assert_eq!(
            newest(text, 24),
            "Date: Nov 22, 2026\n* 🔴 (14:31) bbbb\nDate: Nov 23, 2026\n* 🔴 (09:00) cccc"
        );
        let (head, rest) = split_oldest(text, 20);
        assert_eq!(head, "Date: Nov 22, 2026\n* 🔴 (14:30) aaaa");
        assert_eq!(
            rest,
            "Date: Nov 22, 2026\n* 🔴 (14:31) bbbb\nDate: Nov 23, 2026\n* 🔴 (09:00) cccc"
        );
        assert_eq!(split_oldest(text, 1000), (text, String::new()));
        // At least one observation, however small the budget.
        assert_eq!(split_oldest(text, 0).0, "Date: Nov 22, 2026\n* 🔴 (14:30) aaaa");
        assert_eq!(newest(text, 0), "Date: Nov 23, 2026\n* 🔴 (09:00) cccc");
    }
}
