//! Closed sets stored as short strings, so SQLite and PostgreSQL hold the same text.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One closed set: stored as its SCREAMING_SNAKE_CASE name in a string column of `db_type`
/// (the migrations create the columns), serialised the same way.
macro_rules! stored_enum {
    ($db:tt, $(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize,
            Deserialize,
        )]
        #[sea_orm(rs_type = "String", db_type = $db, rename_all = "SCREAMING_SNAKE_CASE")]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }
    };
}

stored_enum!(
    "String(StringLen::N(32))",
    Role {
        PlatformOperator,
        CityAdmin,
        FacilityAdmin,
        Staff,
    }
);

stored_enum!(
    "String(StringLen::N(16))",
    AccountStatus {
        Active,
        Locked,
        Suspended,
    }
);

stored_enum!(
    "String(StringLen::N(32))",
    FacilityKind {
        MedicalInstitution,
        CareProvider,
    }
);

stored_enum!(
    "String(StringLen::N(32))",
    Occupation {
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
);

stored_enum!(
    "String(StringLen::N(16))",
    CertificateStatus {
        Active,
        Revoked,
        Expired,
    }
);

stored_enum!(
    "String(StringLen::N(16))",
    /// How an audited operation ended.
    AuditOutcome {
        /// Done as asked.
        Allowed,
        /// Refused by authorization (the caller may not do this).
        Denied,
        /// Tried and failed (wrong password, invalid input on a security operation).
        Failed,
    }
);

stored_enum!(
    "String(StringLen::N(32))",
    /// Which paper form an application replaces.
    ApplicationKind {
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
);

stored_enum!(
    "String(StringLen::N(16))",
    ApplicationStatus {
        Submitted,
        Approved,
        Rejected,
        Withdrawn,
    }
);

stored_enum!(
    "String(StringLen::N(32))",
    /// OPEN: members read and write. CLOSING: end of service posted, waiting for the city.
    /// CLOSED: an archive its last members read and nobody writes.
    RoomStatus { Open, Closing, Closed }
);
stored_enum!(
    "String(StringLen::N(32))",
    Sex {
        Male,
        Female,
        Other,
        Unknown
    }
);
stored_enum!(
    "String(StringLen::N(32))",
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
    "String(StringLen::N(32))",
    /// Who signed the consent form (form 8).
    Consenter { Patient, Family, Guardian }
);
stored_enum!(
    "String(StringLen::N(32))",
    /// EXPIRED is stored once noticed; a PENDING invitation past `expires_at` is expired too.
    InvitationStatus { Pending, Accepted, Declined, Revoked, Expired }
);
stored_enum!(
    "String(StringLen::N(32))",
    NoteCategory {
        Contact,
        Report,
        Question,
        VisitRecord,
        Discharge,
        EndOfService,
        Other
    }
);
stored_enum!(
    "String(StringLen::N(32))",
    /// The sections of a room's care information.
    CareInfoKind {
        MedicalHistory,
        Medications,
        Allergies,
        Adl,
        CarePlan,
        Services,
        EmergencyPlan,
        Other
    }
);
