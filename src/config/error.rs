//! Configuration errors: what is wrong, and where in which file, formatted as
//! `FILE:LINE:COL: message` so editors and CI logs can jump to the spot.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// Why a configuration could not be loaded. Messages never include file contents or secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(LocatedErrors),
}

/// Every problem found in one file, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedErrors(pub Vec<LocatedError>);

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Collects problems while validating one file, turning byte spans into line:column.
pub struct ErrorSink<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset of every line start, computed on first use: finding a line must not scan
    /// the file each time (a 10,000-route file asks once per route).
    line_starts: std::cell::OnceCell<Vec<usize>>,
    errors: Vec<LocatedError>,
    warnings: Vec<LocatedError>,
}

/// Suggests the closest known name for a misspelt one, if any is close enough to be a typo.
pub fn did_you_mean<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (wrong.chars().count() / 3).max(1);
    let known: Vec<&'a str> = known.into_iter().collect();
    let close = known
        .iter()
        .map(|name| (strsim::levenshtein(wrong, name), *name))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name);
    // "least_connections" is far from "least_conn" by edits but obviously meant it.
    close.or_else(|| {
        known
            .into_iter()
            .find(|name| name.len() >= 3 && (wrong.starts_with(name) || name.starts_with(wrong)))
    })
}

// === impl LocatedErrors ===

impl fmt::Display for LocatedErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

// === impl LocatedError ===

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        // Messages quote values from the file; a newline in one would start a line that
        // reads as another located error (`headland check` prints one error per line, which
        // editors and CI parse), so control characters are written escaped (fuzz finding F1).
        for c in self.message.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

// === impl ErrorSink ===

impl<'a> ErrorSink<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Self {
            file,
            text,
            line_starts: std::cell::OnceCell::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a problem that does not stop the file from loading: `headland check` prints
    /// it, `run` and reloads log it.
    pub fn warn_at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.locate(span.start);
        self.warnings.push(LocatedError {
            file: self.file.to_owned(),
            line,
            column,
            message: format!("warning: {}", message.into()),
        });
    }

    /// The warnings so far, sorted by position.
    pub fn take_warnings(&mut self) -> Vec<LocatedError> {
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.sort_by_key(|w| (w.line, w.column));
        warnings
    }

    /// Records `message` at the start of `span` (a byte range into the file).
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.locate(span.start);
        self.errors.push(LocatedError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        });
    }

    /// The 1-based line where `span` starts, to refer to another place in messages.
    pub fn line_of(&self, span: Range<usize>) -> usize {
        self.locate(span.start).0
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn locate(&self, offset: usize) -> (usize, usize) {
        let starts = self.line_starts.get_or_init(|| line_starts(self.text));
        let offset = offset.min(self.text.len());
        let index = starts
            .partition_point(|start| *start <= offset)
            .saturating_sub(1);
        let line_start = starts.get(index).copied().unwrap_or(0);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (index + 1, column)
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// All problems, sorted by position so the output reads top to bottom.
    pub fn finish(mut self) -> LocatedErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        LocatedErrors(self.errors)
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_line_and_column() {
        let text = "a = 1\nbb = 2\né = 3\n";
        let sink = ErrorSink::new("f.toml", text);
        assert_eq!(sink.locate(0), (1, 1));
        assert_eq!(sink.locate(6), (2, 1));
        assert_eq!(sink.locate(11), (2, 6));
        assert_eq!(
            sink.locate(18),
            (3, 5),
            "columns count characters, not bytes"
        );
        assert_eq!(sink.locate(999), (4, 1));
    }

    #[test]
    fn suggests_only_close_names() {
        let known = ["kong", "core", "admin"];
        assert_eq!(did_you_mean("kongg", known), Some("kong"));
        assert_eq!(did_you_mean("zzzzzz", known), None);
    }
}
