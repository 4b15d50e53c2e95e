//! The markdown report: a summary of every target (what, natt, reference, ratio, target, met),
//! then one section per benchmark with its details and what exactly was measured.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// One target: a figure of natt's against a reference measured in the same run.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was measured.
    pub what: String,
    /// natt's figure (a median, as text with its unit).
    pub natt: String,
    /// The reference's figure.
    pub reference: String,
    /// natt's figure over the reference's, as text (`0.84x`), or `-`.
    pub ratio: String,
    /// The target, in words.
    pub target: String,
    /// Whether it was met; `None` for a figure given for information only.
    pub met: Option<bool>,
}

impl Check {
    fn met_text(&self) -> &'static str {
        match self.met {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "info",
        }
    }
}

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of cells, as many as headers.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table in markdown.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.headers);
        out.push_str(&line(&vec!["---".to_string(); self.headers.len()]));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// One benchmark's part of the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Its heading.
    pub title: String,
    /// Paragraphs before the tables: what is measured, and how.
    pub about: Vec<String>,
    /// Detail tables.
    pub tables: Vec<Table>,
    /// Paragraphs after the tables: what the figures say.
    pub notes: Vec<String>,
    /// Its targets, for the summary.
    pub checks: Vec<Check>,
}

impl Section {
    /// An empty section titled `title`.
    pub fn new(title: &str) -> Section {
        Section {
            title: title.to_string(),
            ..Section::default()
        }
    }

    /// A section that could not run: the error is the whole section, and a failed check.
    pub fn failed(title: &str, error: &str) -> Section {
        let mut s = Section::new(title);
        s.notes.push(format!("**This benchmark failed to run:** {error}"));
        s.checks.push(Check {
            what: format!("{title}: ran"),
            natt: "error".into(),
            reference: "-".into(),
            ratio: "-".into(),
            target: "runs".into(),
            met: Some(false),
        });
        s
    }
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The command, as typed.
    pub command: String,
    /// Lines about the machine and the run.
    pub machine: Vec<String>,
    /// Every section, in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// The report in markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("# natt benchmarks\n\n");
        for m in &self.machine {
            let _ = writeln!(out, "- {m}");
        }
        let _ = writeln!(out, "- command: `{}`\n", self.command);
        out.push_str(
            "Every figure is a median over many runs; each reference was measured in the same run, \
             interleaved with natt's runs, so that load on this shared machine affects both.\n\n",
        );
        out.push_str("## Summary\n\n");
        let mut summary = Table::new(&["what", "natt (median)", "reference (median)", "ratio", "target", "met?"]);
        for c in self.sections.iter().flat_map(|s| &s.checks) {
            summary.row(vec![
                c.what.clone(),
                c.natt.clone(),
                c.reference.clone(),
                c.ratio.clone(),
                c.target.clone(),
                c.met_text().to_string(),
            ]);
        }
        out.push_str(&summary.render());
        let checks = self.sections.iter().flat_map(|s| &s.checks);
        let (met, missed) = checks.fold((0, 0), |(m, x), c| match c.met {
            Some(true) => (m + 1, x),
            Some(false) => (m, x + 1),
            None => (m, x),
        });
        let _ = writeln!(out, "\n{met} targets met, {missed} missed.\n");
        for s in &self.sections {
            let _ = writeln!(out, "## {}\n", s.title);
            for p in &s.about {
                let _ = writeln!(out, "{p}\n");
            }
            for t in &s.tables {
                out.push_str(&t.render());
                out.push('\n');
            }
            for p in &s.notes {
                let _ = writeln!(out, "{p}\n");
            }
        }
        out
    }
}

/// Now, in UTC: `2026-11-25 13:05 UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    utc(secs)
}

/// Seconds since the epoch as a UTC date and time (the civil calendar from days, after
/// Howard Hinnant's `civil_from_days`).
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or_default();
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_611_901), "2026-11-25 13:05 UTC");
    }

    #[test]
    fn renders_a_summary_and_sections() {
        let mut s = Section::new("Mapping");
        s.about.push("What it is.".into());
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into(), "x|y".into()]);
        s.tables.push(t);
        s.checks.push(Check {
            what: "map".into(),
            natt: "1 ms".into(),
            reference: "2 ms".into(),
            ratio: "0.50x".into(),
            target: "<= 1x".into(),
            met: Some(true),
        });
        let r = Report {
            command: "cargo xtask bench".into(),
            machine: vec!["nproc: 2".into()],
            sections: vec![s, Section::failed("Serve", "boom")],
        };
        let md = r.render();
        assert!(md.contains("| map | 1 ms | 2 ms | 0.50x | <= 1x | yes |"), "{md}");
        assert!(md.contains("| Serve: ran | error | - | - | runs | **NO** |"), "{md}");
        assert!(md.contains("| 1 | x\\|y |"), "{md}");
        assert!(md.contains("1 targets met, 1 missed."), "{md}");
        assert!(md.contains("## Mapping\n\nWhat it is.\n"), "{md}");
    }
}
