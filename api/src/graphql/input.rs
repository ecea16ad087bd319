//! One rule at the edge for every string that comes in, before any resolver runs: each string
//! of the document's arguments and of the variables (JSON payloads included, keys and values)
//! is checked here, so no resolver, service or database ever sees a NUL.
//!
//! - everywhere: U+0000 is refused;
//! - identifiers (login IDs, slugs, reference numbers, ids, cursors, client mutation ids,
//!   issuers, device labels, file names, …, see [`is_identifier`]): every control character
//!   (C0, DEL, C1) and the bidi overrides and isolates (U+202A–202E, U+2066–2069) are refused;
//! - free text: line breaks and tabs are kept; the rest of C0 and the bidi controls are refused.
//!
//! A refusal is `BAD_USER_INPUT` with `extensions.field` naming the input field, like any other.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, ServerError, Value as ConstValue, Variables};

/// What kind of string a field holds, decided by the field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Identifier,
    FreeText,
}

/// Field names (the last part of the path) whose strings are identifiers rather than prose.
const IDENTIFIER_NAMES: &[&str] = &[
    "action",
    "after",
    "before",
    "certificateSerial",
    "clientMutationId",
    "code",
    "contactEmail",
    "contentType",
    "cursor",
    "deviceLabel",
    "email",
    "fileName",
    "id",
    "ids",
    "ip",
    "issuer",
    "key",
    "loginId",
    "method",
    "outcome",
    "phone",
    "referenceNumber",
    "serialNumber",
    "sessionHash",
    "slug",
    "subject",
    "targetType",
    "tenant",
    "token",
    "url",
];

/// Identifiers: the names listed above and every `…Id` / `…Ids`.
pub fn is_identifier(field: &str) -> bool {
    IDENTIFIER_NAMES.contains(&field) || field.ends_with("Id") || field.ends_with("Ids")
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The first character `kind` refuses in `text`, if any.
pub fn refused_char(text: &str, kind: TextKind) -> Option<char> {
    text.chars().find(|&c| match kind {
        TextKind::Identifier => c.is_control() || is_bidi_control(c),
        TextKind::FreeText => {
            c == '\0'
                || (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r') && c != '\u{7F}')
                || is_bidi_control(c)
        }
    })
}

/// Checks one string of the field at `path` (its last segment names the field).
pub fn check_text(path: &str, text: &str) -> Result<(), crate::error::AppError> {
    let leaf = leaf_name(path);
    let kind = if is_identifier(leaf) {
        TextKind::Identifier
    } else {
        TextKind::FreeText
    };
    match refused_char(text, kind) {
        None => Ok(()),
        Some(c) => Err(crate::error::AppError::bad_input(
            path,
            format!(
                "{path} contains a character that is not allowed here (U+{:04X})",
                c as u32
            ),
        )),
    }
}

/// `addStaff[0].roomIds[1]` -> `roomIds`.
fn leaf_name(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Checks every string of the document's arguments and of the variables.
pub fn check_document(doc: &ExecutableDocument, variables: &Variables) -> Result<(), ServerError> {
    let mut walker = Walker {
        variables,
        result: Ok(()),
    };
    for (_, operation) in doc.operations.iter() {
        walker.selection_set(&operation.node.selection_set.node);
        for var in &operation.node.variable_definitions {
            if let Some(default) = &var.node.default_value {
                walker.const_value(var.node.name.node.as_str(), &default.node);
            }
        }
    }
    for fragment in doc.fragments.values() {
        walker.selection_set(&fragment.node.selection_set.node);
    }
    // Variables no argument uses (directives, typos) still must not carry NUL.
    for (name, value) in variables.iter() {
        walker.const_value(name.as_str(), value);
    }
    walker.result.map_err(|e| {
        let gql = e.into_graphql();
        let mut err = ServerError::new(gql.message, None);
        err.extensions = gql.extensions;
        err
    })
}

struct Walker<'a> {
    variables: &'a Variables,
    result: Result<(), crate::error::AppError>,
}

impl Walker<'_> {
    fn selection_set(&mut self, set: &SelectionSet) {
        for item in &set.items {
            if self.result.is_err() {
                return;
            }
            match &item.node {
                Selection::Field(field) => {
                    let arguments = field.node.arguments.iter().chain(
                        field
                            .node
                            .directives
                            .iter()
                            .flat_map(|d| d.node.arguments.iter()),
                    );
                    for (name, value) in arguments {
                        let Ok(value) = value.node.clone().into_const_with(self.substituted());
                        self.argument(&name.node, &value);
                    }
                    self.selection_set(&field.node.selection_set.node);
                }
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node);
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }

    /// An argument, its variables substituted: `input` objects name their fields directly
    /// (`tenant`, not `input.tenant`).
    fn argument(&mut self, name: &Name, value: &ConstValue) {
        let path = if name.as_str() == "input" {
            ""
        } else {
            name.as_str()
        };
        self.const_value(path, value);
    }

    fn substituted(&self) -> impl Fn(Name) -> Result<ConstValue, std::convert::Infallible> + '_ {
        |var| {
            Ok(self
                .variables
                .get(&var)
                .cloned()
                .unwrap_or(ConstValue::Null))
        }
    }

    fn const_value(&mut self, path: &str, value: &ConstValue) {
        if self.result.is_err() {
            return;
        }
        match value {
            ConstValue::String(s) => self.text(path, s),
            ConstValue::Enum(e) => self.text(path, e.as_str()),
            ConstValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.const_value(&format!("{path}[{i}]"), item);
                }
            }
            ConstValue::Object(fields) => {
                for (key, item) in fields {
                    let child = join(path, key.as_str());
                    self.text(&child, key.as_str());
                    self.const_value(&child, item);
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, path: &str, text: &str) {
        if self.result.is_ok() {
            self.result = check_text(if path.is_empty() { "input" } else { path }, text);
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_everywhere_and_free_text_keeps_line_breaks() {
        assert!(check_text("body", "line\nnext\tcol\r\n").is_ok());
        assert!(check_text("body", "a\0b").is_err());
        assert!(check_text("body", "a\u{7}b").is_err());
        assert!(check_text("body", "evil\u{202E}txt").is_err());
        assert!(check_text("loginId", "a\nb").is_err());
        assert!(check_text("addStaff[0].roomIds[1]", "x\u{2066}").is_err());
        assert!(check_text("loginId", "f0001-001").is_ok());
        assert!(check_text("body", "日本語のメモ").is_ok());
    }

    #[test]
    fn the_field_is_named_by_its_path() {
        let Err(crate::error::AppError::BadUserInput { field, .. }) =
            check_text("addStaff[0].loginId", "x\0")
        else {
            panic!("expected BAD_USER_INPUT");
        };
        assert_eq!(field, "addStaff[0].loginId");
        assert_eq!(leaf_name("addStaff[0].roomIds[1]"), "roomIds");
    }
}
