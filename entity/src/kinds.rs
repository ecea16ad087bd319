//! Closed sets stored as short strings, so SQLite and PostgreSQL hold the same text.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(32))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    PlatformOperator,
    CityAdmin,
    FacilityAdmin,
    Staff,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(16))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountStatus {
    Active,
    Locked,
    Suspended,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(32))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FacilityKind {
    MedicalInstitution,
    CareProvider,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(32))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Occupation {
    Physician,
    Dentist,
    Pharmacist,
    Nurse,
    PublicHealthNurse,
    CareManager,
    PhysicalTherapist,
    OccupationalTherapist,
    SpeechTherapist,
    Dietitian,
    DentalHygienist,
    SocialWorker,
    MedicalSocialWorker,
    CareWorker,
    HomeHelper,
    MunicipalOfficer,
    Clerk,
    Other,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(16))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateStatus {
    Active,
    Revoked,
    Expired,
}

/// How an audited operation ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(16))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditOutcome {
    /// Done as asked.
    Allowed,
    /// Refused by authorization (the caller may not do this).
    Denied,
    /// Tried and failed (wrong password, invalid input on a security operation).
    Failed,
}

/// Which paper form an application replaces.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(32))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationKind {
    /// Forms 4 + 1-2 or 2-2A + 5.
    Registration,
    /// Form 7.
    Change,
    /// Form 3.
    Suspension,
    /// Forms 8 + 9.
    RoomCreation,
    /// Form 9 (or 7).
    RoomMembership,
    /// No form: end-of-service note, then the city closes the room.
    RoomClosure,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(16))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationStatus {
    Submitted,
    Approved,
    Rejected,
    Withdrawn,
}

macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize,
            Deserialize,
        )]
        #[sea_orm(
            rs_type = "String",
            db_type = "String(StringLen::N(32))",
            rename_all = "SCREAMING_SNAKE_CASE"
        )]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }
    };
}

stored_enum!(
    /// OPEN: members read and write. CLOSING: end of service posted, waiting for the city.
    /// CLOSED: an archive its last members read and nobody writes.
    RoomStatus { Open, Closing, Closed }
);
stored_enum!(Sex {
    Male,
    Female,
    Other,
    Unknown
});
stored_enum!(
    /// 要介護度: 非該当, 要支援1–2, 要介護1–5, 申請中.
    CareLevel {
        NotApplicable,
        #[sea_orm(string_value = "SUPPORT_1")] #[serde(rename = "SUPPORT_1")] Support1,
        #[sea_orm(string_value = "SUPPORT_2")] #[serde(rename = "SUPPORT_2")] Support2,
        #[sea_orm(string_value = "CARE_1")] #[serde(rename = "CARE_1")] Care1,
        #[sea_orm(string_value = "CARE_2")] #[serde(rename = "CARE_2")] Care2,
        #[sea_orm(string_value = "CARE_3")] #[serde(rename = "CARE_3")] Care3,
        #[sea_orm(string_value = "CARE_4")] #[serde(rename = "CARE_4")] Care4,
        #[sea_orm(string_value = "CARE_5")] #[serde(rename = "CARE_5")] Care5,
        Pending
    }
);
stored_enum!(
    /// Who signed the consent form (form 8).
    Consenter { Patient, Family, Guardian }
);
stored_enum!(
    /// EXPIRED is stored once noticed; a PENDING invitation past `expires_at` is expired too.
    InvitationStatus { Pending, Accepted, Declined, Revoked, Expired }
);
stored_enum!(NoteCategory {
    Contact,
    Report,
    Question,
    VisitRecord,
    Discharge,
    EndOfService,
    Other
});
