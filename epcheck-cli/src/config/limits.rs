//! Bounds on the config text, checked before any YAML parser builds a tree (SPEC §13: input
//! size and nesting are bounded before parsing).
//!
//! Without them, a file with `key: ` and two hundred thousand `[` (or nested `{a: ` flow
//! mappings) kept the parsers busy for 15-45 s before it was rejected: both YAML parsers'
//! scanners look ahead over every pending flow level, which is quadratic, and yaml-rust2's
//! event stream cannot be used to count levels for the same reason. [`check_limits`] is
//! therefore a small linear scan of the text itself: it tracks indentation (block nesting,
//! with `- ` entries as levels), flow brackets outside quoted scalars, comments and block
//! scalars, and stops at the first line that passes [`MAX_DEPTH`]. It is an approximation of
//! YAML that can only over-count by unbalanced brackets a real config does not have.

use super::diagnostic::Diagnostic;
use super::validate::error_at;

/// Largest config accepted: 32 MiB, several times a config of 100,000 targets.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Deepest nesting of mappings and sequences accepted. A real config nests about six levels
/// (`endpoint_template.subsets[].ports[].port`); serde_yaml itself stops at 128.
pub const MAX_DEPTH: usize = 64;

/// The UTF-8 byte-order mark some editors write at the start of a file.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// `text` without a leading byte-order mark. The mark is not part of the document: serde_yaml
/// reads it as the start of a second document, yaml-rust2 does not, and neither counts it as a
/// line, so lines stay as the user sees them.
pub(super) fn strip_byte_order_mark(text: &str) -> &str {
    text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text)
}

/// Checks `text` (of any size) against [`MAX_BYTES`] and [`MAX_DEPTH`], in one pass over it.
pub(super) fn check_limits(text: &str) -> Result<(), Diagnostic> {
    if text.len() > MAX_BYTES {
        return Err(too_big(text.len() as u64));
    }
    let mut scan = Scan::default();
    for (n, line) in text.split('\n').enumerate() {
        if scan.line(line.as_bytes()) > MAX_DEPTH {
            return Err(error_at(
                "",
                Some(n + 1),
                &format!(
                    "mappings and lists nested deeper than {MAX_DEPTH} levels (a config needs \
                     fewer than ten): refused before parsing; check the file for runaway \
                     brackets or indentation"
                ),
            ));
        }
    }
    Ok(())
}

/// The state carried from one line to the next.
#[derive(Debug, Default)]
struct Scan {
    /// Columns of the open block levels, outermost first.
    indents: Vec<usize>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// The quote of a quoted scalar that goes on past the end of the line.
    quote: Option<u8>,
    /// While skipping the lines of a literal or folded block scalar: its parent's indentation.
    block_scalar: Option<usize>,
}

impl Scan {
    /// Reads one line; returns the deepest nesting reached on it.
    fn line(&mut self, line: &[u8]) -> usize {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let rest = &line[indent..];
        if let Some(parent) = self.block_scalar {
            if rest.is_empty() || indent > parent {
                return 0;
            }
            self.block_scalar = None;
        }
        let mut i = 0;
        if self.quote.is_none() && self.flow == 0 {
            if rest.is_empty() || rest[0] == b'#' {
                return 0;
            }
            while self.indents.last().is_some_and(|&top| top >= indent) {
                self.indents.pop();
            }
            self.indents.push(indent);
            // `- - x`: each entry indicator opens one more level.
            while rest.get(i) == Some(&b'-') && rest.get(i + 1).is_none_or(|b| *b == b' ') {
                i += 1;
                while rest.get(i) == Some(&b' ') {
                    i += 1;
                }
                self.indents.push(indent + i);
            }
        }
        let mut deepest = self.indents.len() + self.flow;
        let mut node_start = true;
        while i < rest.len() {
            let b = rest[i];
            let next_is_blank = rest.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\t');
            if let Some(q) = self.quote {
                if q == b'"' && b == b'\\' {
                    i += 2;
                    continue;
                }
                if b == q {
                    if q == b'\'' && rest.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    self.quote = None;
                    node_start = false;
                }
                i += 1;
                continue;
            }
            match b {
                b'#' if i == 0 || matches!(rest[i - 1], b' ' | b'\t') => break,
                b'"' | b'\'' if node_start => self.quote = Some(b),
                b'[' | b'{' if node_start || self.flow > 0 => {
                    self.flow += 1;
                    node_start = true;
                    deepest = deepest.max(self.indents.len() + self.flow);
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    node_start = false;
                }
                b',' if self.flow > 0 => node_start = true,
                b':' if next_is_blank || self.flow > 0 => node_start = true,
                b'-' | b'?' if node_start && next_is_blank => {}
                b'|' | b'>' if node_start && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    break;
                }
                // An anchor or a tag comes before its node: skip it, still at the node's start.
                b'&' | b'!' if node_start => {
                    while i + 1 < rest.len() && !matches!(rest[i + 1], b' ' | b'\t') {
                        i += 1;
                    }
                }
                b' ' | b'\t' => {}
                _ => node_start = false,
            }
            i += 1;
        }
        deepest
    }
}

/// The error for a file of `len` bytes, more than [`MAX_BYTES`].
pub(super) fn too_big(len: u64) -> Diagnostic {
    const MIB: u64 = 1024 * 1024;
    error_at(
        "",
        None,
        &format!(
            "the file is {:.1} MiB, more than the {} MiB a config may have: refused before \
             parsing; is this the right file?",
            len as f64 / MIB as f64,
            MAX_BYTES as u64 / MIB
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        let mut scan = Scan::default();
        text.split('\n')
            .map(|l| scan.line(l.as_bytes()))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn block_and_flow_levels_add_up() {
        assert_eq!(depth("a: 1\nb: 2\n"), 1);
        assert_eq!(depth("a:\n  b:\n    c: 1\n  d: 2\n"), 3);
        assert_eq!(depth("a:\n  - name: x\n    ip: y\n"), 3);
        assert_eq!(depth("a: - - - x\n"), 1);
        assert_eq!(depth("- - - x\n"), 4);
        assert_eq!(depth("a: [1, [2, {b: [3]}]]\n"), 5);
        assert_eq!(depth("a: [1,\n  [2,\n   [3]]]\n"), 4);
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_scalars_do_not_count() {
        assert_eq!(depth("a: \"[[[[\"\nb: '{{{{'\nc: it's [[[[\n"), 1);
        assert_eq!(depth("a: 1 # [[[[[[\nb: 'x''[[[['\n"), 1);
        assert_eq!(depth("a: |\n  [[[[[[\n  {{{{\nb: 1\n"), 1);
        assert_eq!(depth("a: [\"]]]\", '[[[', x]\n"), 2);
        assert_eq!(depth("a: &anchor [1, !!str [2]]\n"), 3);
    }
}
