//! The forms behind applications, parsed into typed structs: what is stored as an
//! application's payload has passed these rules, and nothing else is stored.
//!
//! Every error is BAD_USER_INPUT naming the field by its path in the argument object
//! (`facility.phone`, `staff[1].displayNameKana`, `addStaff[0].occupation`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entity::kinds::{FacilityKind, Occupation};

use crate::error::{AppError, AppResult};
use crate::service::facilities::{FacilityChanges, NewFacility};

/// Staff a registration or a change may add at once.
pub const MAX_STAFF: usize = 200;

// ---------------------------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------------------------

/// Trimmed text of 1..=max characters with no control characters.
pub fn text(field: &str, value: &str, max: usize) -> AppResult<String> {
    trimmed(
        field,
        value,
        max,
        |_| false,
        "must not contain control characters",
    )
}

/// Trimmed free text of 1..=max characters over several lines: line breaks and tabs are kept,
/// other control characters refused.
pub fn multiline(field: &str, value: &str, max: usize) -> AppResult<String> {
    trimmed(
        field,
        value,
        max,
        |c| matches!(c, '\n' | '\r' | '\t'),
        "must not contain control characters other than line breaks and tabs",
    )
}

/// Trims and checks the length and the control characters (`allowed` lets some through).
fn trimmed(
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    control_message: &str,
) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(AppError::bad_input(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(AppError::bad_input(
            field,
            format!("at most {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(AppError::bad_input(field, control_message));
    }
    Ok(value.to_string())
}

/// Names in kana are written in full-width katakana (ヤマダ タロウ), with ー, ・ and spaces.
pub fn katakana(field: &str, value: &str) -> AppResult<String> {
    let value = text(field, value, 100)?;
    let is_kana = |c: char| {
        matches!(
            c,
            '\u{30A1}'..='\u{30FA}' | '\u{30FC}' | '\u{30FD}' | '\u{30FE}'
        )
    };
    let allowed = |c: char| is_kana(c) || matches!(c, '\u{30FB}' | ' ' | '\u{3000}');
    if !value.chars().all(allowed) || !value.chars().any(is_kana) {
        return Err(AppError::bad_input(
            field,
            "must be written in full-width katakana (e.g. ヤマダ タロウ)",
        ));
    }
    Ok(value)
}

/// An e-mail address of the usual shape: `local@domain.tld`, ASCII, no spaces.
pub fn email(field: &str, value: &str) -> AppResult<String> {
    let value = value.trim();
    let bad = || AppError::bad_input(field, "not a valid e-mail address (name@example.jp)");
    if value.len() > 254 || !value.is_ascii() {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()) && tld.len() >= 2);
    if local_ok && domain_ok {
        Ok(value.to_string())
    } else {
        Err(bad())
    }
}

/// A Japanese telephone number: 10 or 11 digits starting with 0 (`03-1234-5678`,
/// `090-1234-5678`), or `+81` and 9-10 digits; hyphens, spaces and parentheses allowed.
pub fn phone(field: &str, value: &str) -> AppResult<String> {
    let value = value.trim();
    let bad = || {
        AppError::bad_input(
            field,
            "not a valid telephone number (e.g. 03-1234-5678 or +81-3-1234-5678)",
        )
    };
    let (international, rest) = match value.strip_prefix("+81") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ' ' | '(' | ')'))
    {
        return Err(bad());
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    let ok = if international {
        (9..=10).contains(&digits.len()) && !digits.starts_with('0')
    } else {
        (10..=11).contains(&digits.len()) && digits.starts_with('0')
    };
    if ok {
        Ok(value.to_string())
    } else {
        Err(bad())
    }
}

pub fn optional<T>(
    value: Option<&str>,
    parse: impl FnOnce(&str) -> AppResult<T>,
) -> AppResult<Option<T>> {
    match value {
        Some(v) if !v.trim().is_empty() => parse(v).map(Some),
        _ => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// Staff and facility parts
// ---------------------------------------------------------------------------------------------

/// One person to be given an ID (form 1-2 / 2-2A line, or form 7 addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaffEntry {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name_kana: Option<String>,
    pub occupation: Occupation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub facility_admin: bool,
    #[serde(default = "default_device_label")]
    pub device_label: String,
    /// Form 7 only: rooms the new person is invited to once the change is approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub room_ids: Vec<Uuid>,
}

fn default_device_label() -> String {
    "default".to_string()
}

impl StaffEntry {
    /// Checks and normalises one entry; `at` is its path (`staff[0]`).
    pub fn validated(self, at: &str) -> AppResult<StaffEntry> {
        Ok(StaffEntry {
            display_name: text(&format!("{at}.displayName"), &self.display_name, 100)?,
            display_name_kana: optional(self.display_name_kana.as_deref(), |v| {
                katakana(&format!("{at}.displayNameKana"), v)
            })?,
            occupation: self.occupation,
            email: optional(self.email.as_deref(), |v| email(&format!("{at}.email"), v))?,
            facility_admin: self.facility_admin,
            device_label: text(&format!("{at}.deviceLabel"), &self.device_label, 64)?,
            room_ids: self.room_ids,
        })
    }
}

fn validated_staff(list: Vec<StaffEntry>, field: &str) -> AppResult<Vec<StaffEntry>> {
    if list.len() > MAX_STAFF {
        return Err(AppError::bad_input(
            field,
            format!("at most {MAX_STAFF} people per application"),
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, entry)| entry.validated(&format!("{field}[{i}]")))
        .collect()
}

/// The facility of a registration (form 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FacilityForm {
    pub kind: FacilityKind,
    pub name: String,
    pub address: String,
    pub phone: String,
    pub representative_name: String,
    pub inside_municipality: bool,
}

impl FacilityForm {
    pub fn validated(self) -> AppResult<FacilityForm> {
        Ok(FacilityForm {
            kind: self.kind,
            name: text("facility.name", &self.name, 200)?,
            address: text("facility.address", &self.address, 200)?,
            phone: phone("facility.phone", &self.phone)?,
            representative_name: text(
                "facility.representativeName",
                &self.representative_name,
                100,
            )?,
            inside_municipality: self.inside_municipality,
        })
    }

    pub fn to_new(&self) -> NewFacility {
        NewFacility {
            kind: self.kind,
            name: self.name.clone(),
            address: self.address.clone(),
            phone: self.phone.clone(),
            representative_name: self.representative_name.clone(),
            inside_municipality: self.inside_municipality,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The forms
// ---------------------------------------------------------------------------------------------

/// Registration: forms 4 + 1-2 (medical) or 2-2A (care) + 5 (the representative's pledge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationForm {
    pub facility: FacilityForm,
    pub staff: Vec<StaffEntry>,
    /// Form 5: always true once parsed.
    pub representative_pledge_accepted: bool,
    pub contact_email: String,
}

impl RegistrationForm {
    pub fn validated(self) -> AppResult<RegistrationForm> {
        let facility = self.facility.validated()?;
        if self.staff.is_empty() {
            return Err(AppError::bad_input("staff", "at least one staff member"));
        }
        let staff = validated_staff(self.staff, "staff")?;
        if let Some(i) = staff.iter().position(|s| !s.room_ids.is_empty()) {
            return Err(AppError::bad_input(
                format!("staff[{i}].roomIds"),
                "a new facility has no rooms yet; name rooms in a change (form 7)",
            ));
        }
        if !staff.iter().any(|s| s.facility_admin) {
            return Err(AppError::bad_input(
                "staff",
                "at least one staff member must be a facility admin (facilityAdmin: true)",
            ));
        }
        if !self.representative_pledge_accepted {
            return Err(AppError::bad_input(
                "representativePledgeAccepted",
                "the representative's pledge (form 5) must be accepted",
            ));
        }
        Ok(RegistrationForm {
            facility,
            staff,
            representative_pledge_accepted: true,
            contact_email: email("contactEmail", &self.contact_email)?,
        })
    }
}

/// A change to one staff member's details or role (form 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaffChange {
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name_kana: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupation: Option<Occupation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Moves the facility admin flag: true makes FACILITY_ADMIN, false makes STAFF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility_admin: Option<bool>,
}

/// Form 7: facility details, staff added, staff changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeForm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<FacilityChanges>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_staff: Vec<StaffEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub change_staff: Vec<StaffChange>,
}

impl ChangeForm {
    /// Parses the `payload` JSON of `submitChange`: unknown keys and wrong types are named by
    /// their path.
    pub fn parse(payload: serde_json::Value) -> AppResult<ChangeForm> {
        if !payload.is_object() {
            return Err(AppError::bad_input("payload", "must be a JSON object"));
        }
        let form: ChangeForm = serde_path_to_error::deserialize(payload).map_err(|e| {
            let field = field_of(&e.path().to_string());
            AppError::bad_input(field, e.inner().to_string())
        })?;
        form.validated()
    }

    fn validated(self) -> AppResult<ChangeForm> {
        let facility = match self.facility {
            Some(f) if !f.is_empty() => Some(FacilityChanges {
                name: optional(f.name.as_deref(), |v| text("facility.name", v, 200))?,
                address: optional(f.address.as_deref(), |v| text("facility.address", v, 200))?,
                phone: optional(f.phone.as_deref(), |v| phone("facility.phone", v))?,
                representative_name: optional(f.representative_name.as_deref(), |v| {
                    text("facility.representativeName", v, 100)
                })?,
                inside_municipality: f.inside_municipality,
            }),
            _ => None,
        };
        let add_staff = validated_staff(self.add_staff, "addStaff")?;
        if self.change_staff.len() > MAX_STAFF {
            return Err(AppError::bad_input(
                "changeStaff",
                format!("at most {MAX_STAFF} people per application"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut change_staff = Vec::with_capacity(self.change_staff.len());
        for (i, c) in self.change_staff.into_iter().enumerate() {
            let at = format!("changeStaff[{i}]");
            if !seen.insert(c.user_id) {
                return Err(AppError::bad_input(
                    format!("{at}.userId"),
                    "the same person is changed twice",
                ));
            }
            let change = StaffChange {
                user_id: c.user_id,
                display_name: optional(c.display_name.as_deref(), |v| {
                    text(&format!("{at}.displayName"), v, 100)
                })?,
                display_name_kana: optional(c.display_name_kana.as_deref(), |v| {
                    katakana(&format!("{at}.displayNameKana"), v)
                })?,
                occupation: c.occupation,
                email: optional(c.email.as_deref(), |v| email(&format!("{at}.email"), v))?,
                facility_admin: c.facility_admin,
            };
            if change.display_name.is_none()
                && change.display_name_kana.is_none()
                && change.occupation.is_none()
                && change.email.is_none()
                && change.facility_admin.is_none()
            {
                return Err(AppError::bad_input(at, "names no change"));
            }
            change_staff.push(change);
        }
        if facility.is_none() && add_staff.is_empty() && change_staff.is_empty() {
            return Err(AppError::bad_input(
                "payload",
                "nothing to change: give facility, addStaff or changeStaff",
            ));
        }
        Ok(ChangeForm {
            facility,
            add_staff,
            change_staff,
        })
    }
}

/// The path serde_path_to_error reports (it names an unknown key itself), or `payload` for
/// the object as a whole.
fn field_of(path: &str) -> String {
    if path.is_empty() || path == "." {
        "payload".to_string()
    } else {
        path.to_string()
    }
}

/// Form 3: stop these IDs (or the whole facility).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuspensionForm {
    pub user_ids: Vec<Uuid>,
    pub reason: String,
    pub whole_facility: bool,
}

/// Parses a reason for a suspension, rejection or closure.
pub fn reason(field: &str, value: &str) -> AppResult<String> {
    text(field, value, 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: AppError) -> String {
        match err {
            AppError::BadUserInput { field, .. } => field,
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        }
    }

    #[test]
    fn katakana_accepts_names_and_refuses_other_scripts() {
        assert_eq!(katakana("k", " ヤマダ　タロウ ").unwrap(), "ヤマダ　タロウ");
        assert!(katakana("k", "ヴァン・ゴッホ").is_ok());
        assert!(katakana("k", "コーヒー").is_ok());
        for bad in ["やまだ", "Yamada", "山田", "ヤマダ1", "・", "ｶﾀｶﾅ"] {
            assert_eq!(field(katakana("k", bad).unwrap_err()), "k", "{bad}");
        }
    }

    #[test]
    fn phone_numbers_follow_japanese_numbering() {
        for good in [
            "03-1234-5678",
            "090-1234-5678",
            "0312345678",
            "(03) 1234-5678",
            "+81-3-1234-5678",
            "+81 90 1234 5678",
        ] {
            assert!(phone("p", good).is_ok(), "{good}");
        }
        for bad in [
            "1234",
            "3-1234-5678",
            "03-1234-567",
            "090-1234-56789",
            "03-1234-5678 ext",
            "+81-03-1234-5678",
            "＋81",
            "",
        ] {
            assert!(phone("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_addresses_have_a_local_part_and_a_dotted_domain() {
        for good in ["a@example.jp", "kango.shi+renkei@clinic.example.co.jp"] {
            assert!(email("e", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@example.jp",
            "a@example",
            "a b@example.jp",
            "a@@example.jp",
            "a@ex..jp",
            "あ@example.jp",
            "a@example.1",
        ] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn change_payload_errors_name_the_field() {
        let err = ChangeForm::parse(
            serde_json::json!({ "addStaff": [{ "displayName": "A", "occupation": "WIZARD" }] }),
        )
        .unwrap_err();
        assert_eq!(field(err), "addStaff[0].occupation");
        let err =
            ChangeForm::parse(serde_json::json!({ "facility": { "colour": "red" } })).unwrap_err();
        assert_eq!(field(err), "facility.colour");
        let err = ChangeForm::parse(serde_json::json!({ "surprise": 1 })).unwrap_err();
        assert_eq!(field(err), "surprise");
        let err = ChangeForm::parse(serde_json::json!({})).unwrap_err();
        assert_eq!(field(err), "payload");
        let err = ChangeForm::parse(serde_json::json!([1])).unwrap_err();
        assert_eq!(field(err), "payload");
        let err =
            ChangeForm::parse(serde_json::json!({ "facility": { "phone": "12" } })).unwrap_err();
        assert_eq!(field(err), "facility.phone");
        let ok = ChangeForm::parse(serde_json::json!({ "addStaff": [{ "displayName": " 佐藤 花子 ", "displayNameKana": "サトウ ハナコ", "occupation": "NURSE" }] })).unwrap();
        assert_eq!(ok.add_staff[0].display_name, "佐藤 花子");
        assert_eq!(ok.add_staff[0].device_label, "default");
        // Re-serialised in the same shape, so the stored payload reads like the input.
        let stored = serde_json::to_value(&ok).unwrap();
        assert_eq!(stored["addStaff"][0]["occupation"], "NURSE");
    }
}
