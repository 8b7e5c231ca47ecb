//! `--env-file`: `KEY=VALUE` lines read anew for every generation (DESIGN.md
//! §1). Blank lines and lines starting with `#` are skipped; whitespace
//! around the key and the value is trimmed; one pair of matching quotes
//! (`"…"` or `'…'`) around the value is stripped, with nothing inside
//! interpreted (no escapes, no `$VAR`), as systemd's `EnvironmentFile=` does
//! for the common cases. Anything else is an error naming the line.

use thiserror::Error;

/// A line that is not `KEY=VALUE`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("line {line}: {why}")]
pub struct EnvFileError {
    /// 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

/// The variables of an env file, in order (a later line wins at exec, as in a shell).
///
/// # Errors
/// The first malformed line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let fail = |why: &str| EnvFileError { line: i + 1, why: why.to_string() };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(fail(&format!("{line:?} is not KEY=VALUE")));
        };
        let key = key.trim();
        let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(fail(&format!("{key:?} is not a variable name (letters, digits, _)")));
        }
        vars.push((key.to_string(), unquote(value.trim()).map_err(fail)?.to_string()));
    }
    Ok(vars)
}

fn unquote(value: &str) -> Result<&str, &'static str> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            return rest.strip_suffix(quote).ok_or("a quote that is not closed at the end");
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_values_comments_blank_lines_and_one_pair_of_quotes() {
        let text = "# a comment\n\nA=1\n  B = two words  \nC=\"quoted # not a comment\"\nD='x'\nE=\nF=a=b\nG=\"\"\"\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "quoted # not a comment"),
                ("D", "x"),
                ("E", ""),
                ("F", "a=b"),
                ("G", "\""),
            ])
        );
    }

    #[test]
    fn a_malformed_line_is_named_by_its_number() {
        assert_eq!(parse("A=1\nnot a pair\n").unwrap_err().line, 2);
        assert_eq!(parse("A=1\n\n1X=2").unwrap_err().line, 3);
        assert_eq!(parse("=2").unwrap_err().line, 1);
        assert_eq!(parse("A=\"open").unwrap_err().line, 1);
        assert_eq!(parse("A='mixed\"").unwrap_err().line, 1);
        let shown = parse("A=1\nexport B=2").unwrap_err().to_string();
        assert_eq!(shown, "line 2: \"export B\" is not a variable name (letters, digits, _)");
    }
}
