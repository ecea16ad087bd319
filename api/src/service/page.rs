//! Relay-style paging of lists ordered by a time-ordered UUID (v7): opaque cursors and the
//! `first` bounds every connection shares.

use base64::Engine as _;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub const DEFAULT_PAGE: u64 = 20;
pub const MAX_PAGE: u64 = 100;

/// One page of a list, with whether more follow and how many the whole list holds.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next: bool,
    pub total: u64,
}

/// `first` of a connection: default 20, 1..=100 or BAD_USER_INPUT.
pub fn first(first: Option<i32>) -> AppResult<u64> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::bad_input("first", format!("first must be between 1 and {MAX_PAGE}"))
            }),
    }
}

/// An opaque cursor naming the list it belongs to, so one list's cursor is refused by another.
pub fn cursor(list: &str, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{list}:{id}"))
}

/// The id an `after` cursor points at, or BAD_USER_INPUT naming `after`.
pub fn after(list: &str, cursor: Option<&str>) -> AppResult<Option<Uuid>> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bad = || AppError::bad_input("after", "not a cursor of this list");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (name, id) = text.split_once(':').ok_or_else(bad)?;
    if name != list {
        return Err(bad());
    }
    Uuid::parse_str(id).map(Some).map_err(|_| bad())
}

/// Cuts a fetched `first + 1` rows down to `first`, saying whether more follow.
pub fn finish<T>(mut items: Vec<T>, first: u64, total: u64) -> Page<T> {
    let has_next = items.len() as u64 > first;
    items.truncate(usize::try_from(first).unwrap_or(usize::MAX));
    Page {
        items,
        has_next,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_their_list() {
        let id = Uuid::now_v7();
        let c = cursor("users", id);
        assert_eq!(after("users", Some(&c)).unwrap(), Some(id));
        assert!(after("facilities", Some(&c)).is_err());
        assert!(after("users", Some("nonsense")).is_err());
        assert_eq!(after("users", None).unwrap(), None);
    }

    #[test]
    fn first_is_bounded() {
        assert_eq!(first(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(first(Some(100)).unwrap(), 100);
        assert!(first(Some(0)).is_err());
        assert!(first(Some(101)).is_err());
        assert!(first(Some(-1)).is_err());
    }
}
