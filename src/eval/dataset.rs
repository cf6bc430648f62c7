//! The LongMemEval data format (`longmemeval_s.json`, `longmemeval_m.json`, `longmemeval_oracle.json`):
//! a JSON array of questions, each with its haystack of dated chat sessions.
//!
//! Fields the runner does not use (`haystack_session_ids`, `answer_session_ids`, a turn's
//! `has_answer`) are ignored, so the three published variants all load.

use serde::Deserialize;
use serde_json::Value;

/// One benchmark question with its history.
#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    pub question_id: String,
    /// `single-session-user`, `single-session-assistant`, `single-session-preference`,
    /// `multi-session`, `temporal-reasoning` or `knowledge-update`; an abstention question has
    /// one of these and an id ending in `_abs`.
    pub question_type: String,
    pub question: String,
    /// A string in most questions, a number in a few (counts): kept as written.
    pub answer: Value,
    /// `2023/05/30 (Tue) 23:40`, the form of every date in the data.
    pub question_date: String,
    pub haystack_dates: Vec<String>,
    pub haystack_sessions: Vec<Vec<Turn>>,
}

/// One message of a session.
#[derive(Debug, Clone, Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// A session ready to replay: when it happened and what was said.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    /// Milliseconds since the epoch, UTC (the data gives no zone).
    pub at: u64,
    pub turns: &'a [Turn],
}

impl Question {
    /// Whether the question has no answer in its history (LongMemEval marks these `_abs`).
    pub fn is_abstention(&self) -> bool {
        self.question_id.ends_with("_abs")
    }

    /// The reference answer as text.
    pub fn answer_text(&self) -> String {
        match &self.answer {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The sessions in date order (the data lists them in date order already, but does not
    /// promise it); ties keep their listed order.
    pub fn sessions(&self) -> Result<Vec<Session<'_>>, String> {
        if self.haystack_dates.len() != self.haystack_sessions.len() {
            return Err(format!(
                "question {}: {} haystack_dates for {} haystack_sessions",
                self.question_id,
                self.haystack_dates.len(),
                self.haystack_sessions.len()
            ));
        }
        let mut out = self
            .haystack_dates
            .iter()
            .zip(&self.haystack_sessions)
            .map(|(d, s)| {
                let at = parse_date(d).ok_or_else(|| {
                    format!(
                        "question {}: haystack date {d:?} is not YYYY/MM/DD (Ddd) HH:MM",
                        self.question_id
                    )
                })?;
                Ok(Session { at, turns: s })
            })
            .collect::<Result<Vec<_>, String>>()?;
        out.sort_by_key(|s| s.at);
        Ok(out)
    }
}

/// Reads a LongMemEval file.
pub fn load(path: &std::path::Path) -> Result<Vec<Question>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let questions: Vec<Question> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not LongMemEval data (a JSON array of questions with question_id, question_type, question, \
             answer, question_date, haystack_dates, haystack_sessions): {e}",
            path.display()
        )
    })?;
    let mut seen = std::collections::HashSet::new();
    if let Some(q) = questions.iter().find(|q| !seen.insert(q.question_id.as_str())) {
        return Err(format!(
            "{}: question_id {:?} appears twice",
            path.display(),
            q.question_id
        ));
    }
    Ok(questions)
}

/// `2023/05/30 (Tue) 23:40` (the weekday is ignored) in milliseconds since the epoch.
pub fn parse_date(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace();
    let date = parts.next()?;
    let time = parts.next_back().filter(|t| t.contains(':')).unwrap_or("00:00");
    let iso = format!("{}T{time}:00Z", date.replace('/', "-"));
    crate::clock::parse(&iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_benchmark_dates() {
        assert_eq!(
            parse_date("2023/05/30 (Tue) 23:40")
                .map(crate::clock::iso8601)
                .as_deref(),
            Some("2023-05-30T23:40:00.000Z")
        );
        assert_eq!(
            parse_date("2023/05/30").map(crate::clock::iso8601).as_deref(),
            Some("2023-05-30T00:00:00.000Z")
        );
        for bad in ["", "yesterday", "2023/13/01 (Mon) 10:00", "2023/05/30 (Tue) 25:00"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn sorts_sessions_by_date_and_spots_abstentions() {
        let q: Question = serde_json::from_value(serde_json::json!({
            "question_id": "q_abs", "question_type": "multi-session", "question": "?", "answer": 3,
            "question_date": "2023/06/01 (Thu) 10:00",
            "haystack_dates": ["2023/05/02 (Tue) 10:00", "2023/05/01 (Mon) 10:00"],
            "haystack_sessions": [[{"role": "user", "content": "second", "has_answer": true}],
                                  [{"role": "user", "content": "first"}]],
            "haystack_session_ids": ["b", "a"], "answer_session_ids": ["b"]
        }))
        .unwrap();
        assert!(q.is_abstention());
        assert_eq!(q.answer_text(), "3");
        let s = q.sessions().unwrap();
        assert_eq!(s[0].turns[0].content, "first");
        assert_eq!(s[1].turns[0].content, "second");
    }
}
