//! Reading YAML documents with positions: a [`Node`] is one value of the
//! parsed tree together with its field path (`spec.rules[0].backendRefs[1]`)
//! and where it starts in the file, so that every problem the mapping finds
//! names the field and its line and column. Mappings are read through
//! [`Node::fields`], which refuses any key the caller does not list.

use std::ops::Range;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// One problem in a YAML file, at a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Field path inside the document, e.g. `spec.rules[0].matches`.
    pub path: String,
    /// 1-based line and column of the field's value.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// The documents of a YAML stream, or the syntax error that stopped it.
pub fn documents(text: &str) -> Result<Vec<MarkedYaml<'static>>, FieldError> {
    MarkedYaml::load_from_str(text).map_err(|e| FieldError {
        path: String::new(),
        position: Some((e.marker().line(), e.marker().col() + 1)),
        message: format!("not valid YAML: {}", e.info()),
    })
}

/// A value in a document, with its path and the text it was read from.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    value: &'a MarkedYaml<'static>,
    text: &'a str,
    parent: Option<&'a Node<'a>>,
    key: Key<'a>,
}

#[derive(Clone, Copy)]
enum Key<'a> {
    Root,
    Field(&'a str),
    Index(usize),
}

impl<'a> Node<'a> {
    pub fn root(value: &'a MarkedYaml<'static>, text: &'a str) -> Node<'a> {
        Node {
            value,
            text,
            parent: None,
            key: Key::Root,
        }
    }

    /// The dotted path of this value inside its document.
    pub fn path(&self) -> String {
        let mut path = self.parent.map(Node::path).unwrap_or_default();
        match self.key {
            Key::Root => {}
            Key::Field(name) if path.is_empty() => path.push_str(name),
            Key::Field(name) => {
                path.push('.');
                path.push_str(name);
            }
            Key::Index(i) => path.push_str(&format!("[{i}]")),
        }
        path
    }

    /// 1-based line and column where the value starts.
    pub fn position(&self) -> (usize, usize) {
        let start = self.value.span.start;
        (start.line(), start.col() + 1)
    }

    /// Byte range of the value in the text (the parser counts characters).
    pub fn span(&self) -> Range<usize> {
        let byte = |chars: usize| {
            self.text
                .char_indices()
                .nth(chars)
                .map_or(self.text.len(), |(at, _)| at)
        };
        let start = byte(self.value.span.start.index());
        // Never empty: an empty range means "not in the file" to the config.
        start..byte(self.value.span.end.index()).max(start + 1)
    }

    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError {
            path: self.path(),
            position: Some(self.position()),
            message: message.into(),
        }
    }

    fn scalar(&self) -> Option<&'a Scalar<'static>> {
        match &self.value.data {
            YamlData::Value(scalar) => Some(scalar),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(Scalar::Null))
    }

    pub fn str(&self) -> Result<&'a str, FieldError> {
        match self.scalar() {
            Some(Scalar::String(text)) => Ok(text),
            _ => Err(self.error("must be a string")),
        }
    }

    /// A string; numbers and booleans are taken as written (a header value
    /// `1` is the string "1" to Kubernetes too).
    pub fn text(&self) -> Result<String, FieldError> {
        match self.scalar() {
            Some(Scalar::String(text)) => Ok(text.to_string()),
            Some(Scalar::Integer(n)) => Ok(n.to_string()),
            Some(Scalar::Boolean(b)) => Ok(b.to_string()),
            _ => Err(self.error("must be a string")),
        }
    }

    pub fn int(&self) -> Result<i64, FieldError> {
        match self.scalar() {
            Some(Scalar::Integer(n)) => Ok(*n),
            _ => Err(self.error("must be an integer")),
        }
    }

    /// The entries of a sequence (a missing value reads as none).
    pub fn items(&'a self) -> Result<Vec<Node<'a>>, FieldError> {
        match &self.value.data {
            YamlData::Sequence(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, value)| self.child(value, Key::Index(i)))
                .collect()),
            _ if self.is_null() => Ok(Vec::new()),
            _ => Err(self.error("must be a list")),
        }
    }

    /// The keys of a mapping, refusing any not in `allowed` (each entry a
    /// key and, for keys of the Gateway API that switchyard cannot honour,
    /// why: the error says so instead of the value being dropped).
    pub fn fields(&'a self, allowed: &[&str]) -> Result<Fields<'a>, FieldError> {
        let YamlData::Mapping(map) = &self.value.data else {
            if self.is_null() {
                return Ok(Fields {
                    parent: self,
                    entries: Vec::new(),
                });
            }
            return Err(self.error("must be a mapping"));
        };
        let mut entries = Vec::new();
        for (key, value) in map {
            let name = match &key.data {
                YamlData::Value(Scalar::String(name)) => name.as_ref(),
                _ => {
                    let at = self.child(key, Key::Root);
                    return Err(FieldError {
                        path: self.path(),
                        position: Some(at.position()),
                        message: "keys must be strings".into(),
                    });
                }
            };
            if !allowed.contains(&name) {
                let at = self.child(key, Key::Field(name));
                return Err(at.error(format!(
                    "unknown or unsupported field `{name}`: switchyard reads only {} here \
                     (see docs/gateway-api.md for what maps to what); remove it",
                    allowed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            entries.push((name, value));
        }
        Ok(Fields {
            parent: self,
            entries,
        })
    }

    /// The value of `key` in a mapping, with no check of the other keys.
    pub fn lookup(&'a self, key: &'a str) -> Option<Node<'a>> {
        let YamlData::Mapping(map) = &self.value.data else {
            return None;
        };
        map.iter()
            .find(|(k, _)| matches!(&k.data, YamlData::Value(Scalar::String(name)) if name == key))
            .map(|(_, value)| self.child(value, Key::Field(key)))
    }

    fn child(&'a self, value: &'a MarkedYaml<'static>, key: Key<'a>) -> Node<'a> {
        Node {
            value,
            text: self.text,
            parent: Some(self),
            key,
        }
    }
}

/// The keys of one mapping, each read at most once by name.
pub struct Fields<'a> {
    parent: &'a Node<'a>,
    entries: Vec<(&'a str, &'a MarkedYaml<'static>)>,
}

impl<'a> Fields<'a> {
    /// The value of `key`, if written (an explicit `null` counts as absent).
    pub fn get(&self, key: &'a str) -> Option<Node<'a>> {
        self.entries
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| self.parent.child(value, Key::Field(key)))
            .filter(|node| !node.is_null())
    }

    pub fn required(&self, key: &'a str) -> Result<Node<'a>, FieldError> {
        self.get(key).ok_or_else(|| {
            self.parent
                .error(format!("`{key}` is required here: add it"))
        })
    }

    /// The mapping itself (for errors about a combination of its keys).
    pub fn node(&self) -> &'a Node<'a> {
        self.parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_positions_point_at_the_value() {
        let text = "a:\n  b:\n  - x: 1\n  - y: \"é\"\n";
        let docs = documents(text).expect("yaml");
        let root = Node::root(&docs[0], text);
        let top = root.fields(&["a"]).expect("a");
        let a = top.required("a").expect("a");
        let a_fields = a.fields(&["b"]).expect("b");
        let b = a_fields.required("b").expect("b");
        let items = b.items().expect("list");
        let Err(second) = items[1].fields(&["x"]) else {
            panic!("y is not allowed");
        };
        assert_eq!(second.path, "a.b[1].y");
        assert_eq!(second.position, Some((4, 5)));
        let first = items[0].fields(&["x"]).expect("x");
        let x = first.required("x").expect("x");
        assert_eq!((x.int(), x.position()), (Ok(1), (3, 8)));
        assert_eq!(&text[x.span()], "1");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let error = documents("a: [1,\n").expect_err("unclosed");
        assert!(error.position.is_some());
        assert!(error.message.starts_with("not valid YAML"));
        // A key written twice is refused, not one of its values kept.
        let error = documents("a: 1\na: 2\n").expect_err("duplicate");
        assert_eq!(error.position, Some((2, 1)));
    }
}
