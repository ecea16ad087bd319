//! GraphQL types of applications (the city's forms): the application itself, the inputs of a
//! registration, and what a review produced.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;

use entity::application;

use crate::graphql::context::ContextExt as _;
use crate::graphql::types::{
    CertificateIssuance, Facility, FacilityKind, Occupation, PageInfo, User, local, total,
};
use crate::service::applications::{IssuedAccount, Review};
use crate::service::{forms, page, users};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::ApplicationKind")]
pub enum ApplicationKind {
    Registration,
    Change,
    Suspension,
    RoomCreation,
    RoomMembership,
    RoomClosure,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::ApplicationStatus")]
pub enum ApplicationStatus {
    Submitted,
    Approved,
    Rejected,
    Withdrawn,
}

pub struct Application {
    pub model: application::Model,
    pub tz: Tz,
}

#[Object]
impl Application {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    /// Human-readable, unique per tenant, e.g. R2026-000123.
    async fn reference_number(&self) -> &str {
        &self.model.reference_number
    }
    async fn kind(&self) -> ApplicationKind {
        self.model.kind.into()
    }
    async fn status(&self) -> ApplicationStatus {
        self.model.status.into()
    }
    /// The facility it concerns; for a registration, the facility its approval created.
    async fn facility(&self, ctx: &Context<'_>) -> Result<Option<Facility>> {
        let Some(id) = self.model.facility_id else {
            return Ok(None);
        };
        let state = ctx.state()?;
        Ok(users::facility(&state.db, id)
            .await?
            .map(|model| Facility { model }))
    }
    /// Null when submitted without an account (registration).
    async fn submitted_by(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        User::by_id(ctx, self.model.submitted_by, self.tz).await
    }
    async fn submitted_at(&self) -> DateTime<FixedOffset> {
        local(self.model.submitted_at, self.tz)
    }
    /// The form's content, validated per kind.
    async fn payload(&self) -> Json<serde_json::Value> {
        Json(serde_json::from_str(&self.model.payload).unwrap_or(serde_json::Value::Null))
    }
    async fn reviewed_by(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        User::by_id(ctx, self.model.reviewed_by, self.tz).await
    }
    async fn reviewed_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.reviewed_at.map(|at| local(at, self.tz))
    }
    async fn review_note(&self) -> Option<&str> {
        self.model.review_note.as_deref()
    }
}

#[derive(SimpleObject)]
pub struct ApplicationEdge {
    pub cursor: String,
    pub node: Application,
}

#[derive(SimpleObject)]
pub struct ApplicationConnection {
    pub edges: Vec<ApplicationEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

impl ApplicationConnection {
    pub fn new(found: page::Page<application::Model>, after: bool, tz: Tz) -> Self {
        let edges: Vec<ApplicationEdge> = found
            .items
            .into_iter()
            .map(|model| ApplicationEdge {
                cursor: page::cursor("applications", model.id),
                node: Application { model, tz },
            })
            .collect();
        let cursors: Vec<String> = edges.iter().map(|e| e.cursor.clone()).collect();
        ApplicationConnection {
            page_info: PageInfo::forward(&cursors, found.has_next, after),
            total_count: total(found.total),
            edges,
        }
    }
}

/// What approving an application produced. Passwords appear here once and nowhere else.
#[derive(SimpleObject)]
pub struct IssuedCredential {
    pub user: User,
    pub initial_password: String,
    pub certificate: CertificateIssuance,
}

impl IssuedCredential {
    fn new(issued: IssuedAccount, tz: Tz) -> Self {
        use secrecy::ExposeSecret as _;
        IssuedCredential {
            initial_password: issued.initial_password.expose_secret().to_string(),
            certificate: CertificateIssuance::from_issuance(issued.certificate, tz),
            user: User::new(issued.user, tz),
        }
    }
}

#[derive(SimpleObject)]
pub struct ReviewResult {
    pub application: Application,
    pub issued: Vec<IssuedCredential>,
    /// The room a ROOM_* application opened, changed or closed.
    pub room: Option<crate::graphql::rooms::Room>,
}

impl ReviewResult {
    pub fn new(review: Review, tz: Tz, room: Option<crate::graphql::rooms::Room>) -> Self {
        ReviewResult {
            room,
            application: Application {
                model: review.application,
                tz,
            },
            issued: review
                .issued
                .into_iter()
                .map(|i| IssuedCredential::new(i, tz))
                .collect(),
        }
    }
}

#[derive(InputObject)]
pub struct StaffInput {
    pub display_name: String,
    pub display_name_kana: Option<String>,
    pub occupation: Occupation,
    pub email: Option<String>,
    #[graphql(default_with = "Some(false)")]
    pub facility_admin: Option<bool>,
    #[graphql(default_with = "Some(String::from(\"default\"))")]
    pub device_label: Option<String>,
}

#[derive(InputObject)]
pub struct FacilityInput {
    pub kind: FacilityKind,
    pub name: String,
    pub address: String,
    pub phone: String,
    pub representative_name: String,
    #[graphql(default_with = "Some(true)")]
    pub inside_municipality: Option<bool>,
}

#[derive(InputObject)]
pub struct RegistrationInput {
    /// Tenant slug.
    pub tenant: String,
    pub facility: FacilityInput,
    /// At least one; at least one facilityAdmin.
    pub staff: Vec<StaffInput>,
    /// Form 5; must be true.
    pub representative_pledge_accepted: bool,
    pub contact_email: String,
}

impl RegistrationInput {
    /// The form as submitted, before its rules are checked by `forms`.
    pub fn into_form(self) -> (String, forms::RegistrationForm) {
        let form = forms::RegistrationForm {
            facility: forms::FacilityForm {
                kind: self.facility.kind.into(),
                name: self.facility.name,
                address: self.facility.address,
                phone: self.facility.phone,
                representative_name: self.facility.representative_name,
                inside_municipality: self.facility.inside_municipality.unwrap_or(true),
            },
            staff: self
                .staff
                .into_iter()
                .map(|s| forms::StaffEntry {
                    display_name: s.display_name,
                    display_name_kana: s.display_name_kana,
                    occupation: s.occupation.into(),
                    email: s.email,
                    facility_admin: s.facility_admin.unwrap_or(false),
                    device_label: s.device_label.unwrap_or_else(|| "default".into()),
                    room_ids: Vec::new(),
                })
                .collect(),
            representative_pledge_accepted: self.representative_pledge_accepted,
            contact_email: self.contact_email,
        };
        (self.tenant, form)
    }
}
