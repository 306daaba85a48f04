//! Where each key of a YAML file is: a map from key path (`a.b[2].c`) to line number.
//!
//! serde_yaml gives a location only for the error it stops at; validation errors found later
//! (a bad IP, a duplicate name) need the line too, so the file is also walked once with
//! yaml-rust2's event parser, which reports a position for every key and sequence item.
//!
//! The index keeps a 64-bit hash of each path, not the path: a config of 10,000 targets has
//! some 40,000 paths, and their strings would cost several MiB for the daemon's whole start-up
//! (BENCHMARKS.md). Two paths of one file sharing a hash — a wrong line in a message — has a
//! chance of about one in 10^10 at that size.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use yaml_rust2::parser::{Event, Parser};

/// Key path → 1-based line, built once per loaded file.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    /// Hash of the path ([`path_hash`]) → line.
    lines: HashMap<u64, u32>,
}

/// A hash of `path` that is the same in every process (fixed keys).
fn path_hash(path: &str) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

enum Frame {
    /// A mapping; `key` is the key whose value comes next (None while a key is expected).
    Map { path: String, key: Option<String> },
    /// A sequence; `next` is the index of the next item.
    Seq { path: String, next: usize },
}

impl LineIndex {
    /// Indexes `text`. A file that does not parse gives an empty index (serde_yaml reports the
    /// syntax error with its own location).
    pub fn build(text: &str) -> Self {
        let mut index = LineIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, mark)) = parser.next_token() {
            let line = mark.line();
            match event {
                Event::StreamEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let child = join_key(path, &value);
                        index.record(&child, line);
                        *key = Some(value);
                        continue;
                    }
                    index.value_done(&mut stack, line);
                }
                Event::Alias(_) => index.value_done(&mut stack, line),
                Event::MappingStart(..) => {
                    let path = index.child_path(&mut stack, line);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = index.child_path(&mut stack, line);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    index.finish_value(&mut stack);
                }
                _ => {}
            }
        }
        index
    }

    /// Indexes `text`, falling back to a plain scan for top-level keys when the event parser
    /// could not read the file (serde_yaml and yaml-rust2 disagree on a few edge cases, such
    /// as tabs after a colon).
    pub fn build_with_fallback(text: &str) -> Self {
        let mut index = Self::build(text);
        for (n, line) in text.lines().enumerate() {
            if line.starts_with([' ', '\t', '#', '-']) {
                continue;
            }
            if let Some((key, _)) = line.split_once(':') {
                let key = key.trim();
                if !key.is_empty() {
                    index.record(key, n + 1);
                }
            }
        }
        index
    }

    /// The line of `path`, or of its closest indexed ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(&path_hash(p)) {
                return Some(*line as usize);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Records the first line seen for `path`.
    fn record(&mut self, path: &str, line: usize) {
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        self.lines.entry(path_hash(path)).or_insert(line);
    }

    /// The path of the value that starts now, recording its line when it is a sequence item.
    fn child_path(&mut self, stack: &mut [Frame], line: usize) -> String {
        match stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => join_key(path, key.as_deref().unwrap_or("")),
            Some(Frame::Seq { path, next }) => {
                let child = format!("{path}[{next}]");
                self.record(&child, line);
                child
            }
        }
    }

    /// A scalar value ended: record sequence items and advance the parent.
    fn value_done(&mut self, stack: &mut [Frame], line: usize) {
        if let Some(Frame::Seq { path, next }) = stack.last() {
            let item = format!("{path}[{next}]");
            self.record(&item, line);
        }
        self.finish_value(stack);
    }

    fn finish_value(&mut self, stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { next, .. }) => *next += 1,
            None => {}
        }
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
interval: 2000
redis:
  ipport: a
service_healthcheck_list:
  redis:
    port: 1
    iplist:
      - name: n1
        ip: 1.1.1.1
      - name: n2
        ip: bad
probe: {rise: 2, fall: 3}
list: [a, b]
";

    #[test]
    fn finds_keys_items_and_nested_values() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.line_of("interval"), Some(1));
        assert_eq!(idx.line_of("redis.ipport"), Some(3));
        assert_eq!(
            idx.line_of("service_healthcheck_list.redis.iplist"),
            Some(7)
        );
        assert_eq!(
            idx.line_of("service_healthcheck_list.redis.iplist[0]"),
            Some(8)
        );
        assert_eq!(
            idx.line_of("service_healthcheck_list.redis.iplist[1].ip"),
            Some(11)
        );
        assert_eq!(idx.line_of("probe.fall"), Some(12));
        assert_eq!(idx.line_of("list[1]"), Some(13));
    }

    #[test]
    fn unknown_paths_fall_back_to_the_closest_ancestor() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.line_of("redis.password"), Some(2));
        assert_eq!(idx.line_of("nothing.here"), None);
    }

    #[test]
    fn broken_yaml_does_not_panic() {
        let idx = LineIndex::build("a: [\n b: {\n");
        let _ = idx.line_of("a");
    }
}
