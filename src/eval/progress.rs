//! The progress line on stderr: a bar, counts, the running accuracy and an ETA.
//!
//! On a terminal the line redraws in place; otherwise (a log file, a CI job) each finished
//! question prints one line, so the log shows progress without carriage-return clutter.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const WIDTH: usize = 24;

/// Progress of one run.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    /// Finished before this run (resumed from the results file); not part of the ETA.
    earlier: usize,
    done: usize,
    correct: usize,
    failed: usize,
    start: Instant,
    tty: bool,
}

impl Progress {
    pub fn new(total: usize, earlier: usize, correct_earlier: usize) -> Progress {
        Progress {
            total,
            earlier,
            done: earlier,
            correct: correct_earlier,
            failed: 0,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Counts one finished question (`None`: it failed and is not in the results) and redraws.
    pub fn finished(&mut self, id: &str, correct: Option<bool>) {
        match correct {
            Some(ok) => {
                self.done += 1;
                self.correct += usize::from(ok);
            }
            None => self.failed += 1,
        }
        let line = self.line(id, correct);
        let mut err = std::io::stderr();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Ends the redrawn line, so what follows starts on its own.
    pub fn close(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }

    fn line(&self, id: &str, correct: Option<bool>) -> String {
        let settled = self.done + self.failed;
        let filled = (settled * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH - filled));
        let accuracy = percent(self.correct, self.done);
        let ran = settled - self.earlier;
        let left = self.total.saturating_sub(settled);
        let eta = match ran {
            0 => "?".to_owned(),
            _ => duration(self.start.elapsed().mul_f64(left as f64 / ran as f64)),
        };
        let what = match correct {
            Some(true) => "correct",
            Some(false) => "wrong",
            None => "failed",
        };
        let failed = if self.failed > 0 {
            format!(", {} failed", self.failed)
        } else {
            String::new()
        };
        format!(
            "[{bar}] {settled}/{} accuracy {accuracy} ({}/{}){failed}, elapsed {}, ETA {eta}  {id}: {what}",
            self.total,
            self.correct,
            self.done,
            duration(self.start.elapsed())
        )
    }
}

/// `83.33%`, or `-` with nothing to divide.
pub fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.2}%", part as f64 * 100.0 / whole as f64)
}

/// `1h02m`, `3m07s`, `12s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(percent(5, 6), "83.33%");
        assert_eq!(percent(0, 0), "-");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn eta_counts_only_this_runs_questions() {
        let mut p = Progress::new(4, 2, 1);
        p.tty = false;
        assert!(p.line("x", Some(true)).contains("2/4"), "{}", p.line("x", Some(true)));
        p.finished("q3", Some(true));
        let line = p.line("q3", Some(true));
        assert!(
            line.starts_with("[##################......] 3/4 accuracy 66.67% (2/3)"),
            "{line}"
        );
    }
}
