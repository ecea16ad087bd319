//! GraphQL output types and enums, built from entity models. The database schema is not the API.

use async_graphql::{ComplexObject, Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;

use entity::{certificate, facility, tenant, user};

use crate::authz;
use crate::graphql::context::ContextExt as _;

/// Relay page information of every connection.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// Renders a stored UTC time with the tenant's offset (RFC 3339, e.g. +09:00).
pub fn local(at: DateTime<Utc>, tz: Tz) -> DateTime<FixedOffset> {
    at.with_timezone(&tz).fixed_offset()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::Role")]
pub enum Role {
    PlatformOperator,
    CityAdmin,
    FacilityAdmin,
    Staff,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::AccountStatus")]
pub enum AccountStatus {
    Active,
    Locked,
    Suspended,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::FacilityKind")]
pub enum FacilityKind {
    MedicalInstitution,
    CareProvider,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::Occupation")]
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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::CertificateStatus")]
pub enum CertificateStatus {
    Active,
    Revoked,
    Expired,
}

/// How a PKCS#12 bundle is encrypted: MODERN (AES-256-CBC, PBKDF2-SHA256, SHA-256 MAC) or
/// LEGACY (3DES, SHA-1 MAC) for older iOS and Android.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Pkcs12Encoding {
    Modern,
    Legacy,
}

impl From<Pkcs12Encoding> for crate::auth::pki::Pkcs12Encoding {
    fn from(e: Pkcs12Encoding) -> Self {
        match e {
            Pkcs12Encoding::Modern => crate::auth::pki::Pkcs12Encoding::Modern,
            Pkcs12Encoding::Legacy => crate::auth::pki::Pkcs12Encoding::Legacy,
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Tenant {
    pub id: ID,
    pub slug: String,
    pub name: String,
    /// Rule ⑫: facility admins may issue and revoke certificates, unlock and reset passwords
    /// of their own facility's users.
    pub facility_admin_delegation: bool,
}

impl From<&tenant::Model> for Tenant {
    fn from(t: &tenant::Model) -> Self {
        Tenant {
            id: ID(t.id.to_string()),
            slug: t.slug.clone(),
            name: t.name.clone(),
            facility_admin_delegation: t.facility_admin_delegation,
        }
    }
}

impl PageInfo {
    /// Page information of a forward page whose edges carry these cursors.
    pub fn forward(cursors: &[String], has_next_page: bool, after: bool) -> PageInfo {
        PageInfo {
            has_next_page,
            has_previous_page: after,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

/// The total of a connection as the contract's `Int`.
pub fn total(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[derive(SimpleObject)]
pub struct FacilityEdge {
    pub cursor: String,
    pub node: Facility,
}

#[derive(SimpleObject)]
pub struct FacilityConnection {
    pub edges: Vec<FacilityEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

impl FacilityConnection {
    pub fn new(page: crate::service::page::Page<facility::Model>, after: bool) -> Self {
        let edges: Vec<FacilityEdge> = page
            .items
            .into_iter()
            .map(|model| FacilityEdge {
                cursor: crate::service::page::cursor("facilities", model.id),
                node: Facility { model },
            })
            .collect();
        let cursors: Vec<String> = edges.iter().map(|e| e.cursor.clone()).collect();
        FacilityConnection {
            page_info: PageInfo::forward(&cursors, page.has_next, after),
            total_count: total(page.total),
            edges,
        }
    }
}

#[derive(SimpleObject)]
pub struct UserEdge {
    pub cursor: String,
    pub node: User,
}

#[derive(SimpleObject)]
pub struct UserConnection {
    pub edges: Vec<UserEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

impl UserConnection {
    pub fn new(page: crate::service::page::Page<user::Model>, after: bool, tz: Tz) -> Self {
        let edges: Vec<UserEdge> = page
            .items
            .into_iter()
            .map(|model| UserEdge {
                cursor: crate::service::page::cursor("users", model.id),
                node: User::new(model, tz),
            })
            .collect();
        let cursors: Vec<String> = edges.iter().map(|e| e.cursor.clone()).collect();
        UserConnection {
            page_info: PageInfo::forward(&cursors, page.has_next, after),
            total_count: total(page.total),
            edges,
        }
    }
}

pub struct Facility {
    pub model: facility::Model,
}

#[Object]
impl Facility {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn kind(&self) -> FacilityKind {
        self.model.kind.into()
    }
    /// `F0012`: the number in the city's register; its staff log in as `f0012-001`.
    async fn code(&self) -> Option<&str> {
        self.model.code.as_deref()
    }
    async fn name(&self) -> &str {
        &self.model.name
    }
    async fn representative_name(&self) -> Option<&str> {
        self.model.representative_name.as_deref()
    }
    async fn address(&self) -> Option<&str> {
        self.model.address.as_deref()
    }
    async fn phone(&self) -> Option<&str> {
        self.model.phone.as_deref()
    }
    async fn inside_municipality(&self) -> bool {
        self.model.inside_municipality
    }
    async fn status(&self) -> AccountStatus {
        self.model.status.into()
    }
    /// CITY_ADMIN, or FACILITY_ADMIN/STAFF of this facility.
    async fn staff(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<UserConnection> {
        use crate::service::{page, register};
        let caller = ctx.caller().await?;
        let scope = authz::register_scope(&caller.user)?;
        let facility_id = scope.facility(&self.model)?;
        let first = page::first(first)?;
        let after_id = page::after("users", after.as_deref())?;
        let state = ctx.state()?;
        let filter = register::UserFilter {
            facility_id: Some(facility_id),
            ..register::UserFilter::default()
        };
        let found = register::users(&state.db, scope, &filter, first, after_id).await?;
        Ok(UserConnection::new(found, after_id.is_some(), caller.tz()))
    }
}

pub struct User {
    pub model: user::Model,
    pub tz: Tz,
}

impl User {
    pub fn new(model: user::Model, tz: Tz) -> Self {
        User { model, tz }
    }

    /// The user a stored id names (submitter, reviewer, actor, member …), if any.
    pub async fn by_id(ctx: &Context<'_>, id: Option<uuid::Uuid>, tz: Tz) -> Result<Option<User>> {
        let Some(id) = id else {
            return Ok(None);
        };
        if let Ok(loaders) = ctx.data::<crate::graphql::loaders::Loaders>() {
            return Ok(loaders.users.load_one(id).await?.map(|u| User::new(u, tz)));
        }
        let state = ctx.state()?;
        Ok(crate::service::users::by_id(&state.db, id)
            .await?
            .map(|u| User::new(u, tz)))
    }
}

/// LOCKED only while the lock lasts; an expired lockout shows as ACTIVE.
pub fn effective_status(user: &user::Model) -> entity::kinds::AccountStatus {
    use entity::kinds::AccountStatus as S;
    match (user.status, user.locked_until) {
        (S::Locked, Some(until)) if until <= Utc::now() => S::Active,
        (status, _) => status,
    }
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn login_id(&self) -> &str {
        &self.model.login_id
    }
    async fn display_name(&self) -> &str {
        &self.model.display_name
    }
    async fn display_name_kana(&self) -> Option<&str> {
        self.model.display_name_kana.as_deref()
    }
    async fn occupation(&self) -> Occupation {
        self.model.occupation.into()
    }
    async fn role(&self) -> Role {
        self.model.role.into()
    }
    async fn status(&self) -> AccountStatus {
        effective_status(&self.model).into()
    }
    /// Null for CITY_ADMIN and PLATFORM_OPERATOR.
    async fn facility(&self, ctx: &Context<'_>) -> Result<Option<Facility>> {
        let Some(id) = self.model.facility_id else {
            return Ok(None);
        };
        if let Ok(loaders) = ctx.data::<crate::graphql::loaders::Loaders>() {
            return Ok(loaders
                .facilities
                .load_one(id)
                .await?
                .map(|model| Facility { model }));
        }
        let state = ctx.state()?;
        Ok(crate::service::users::facility(&state.db, id)
            .await?
            .map(|model| Facility { model }))
    }
    async fn tenant(&self, ctx: &Context<'_>) -> Result<Tenant> {
        let state = ctx.state()?;
        let tenant = crate::service::users::tenant_of(&state.db, &self.model).await?;
        Ok(Tenant::from(&tenant))
    }
    async fn must_change_password(&self) -> bool {
        self.model.must_change_password
    }
    /// Personal-information pledge (form 6); null until accepted.
    async fn pledge_accepted_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.pledge_accepted_at.map(|at| local(at, self.tz))
    }
    /// Self, CITY_ADMIN, or FACILITY_ADMIN of the same facility.
    async fn certificates(&self, ctx: &Context<'_>) -> Result<Vec<Certificate>> {
        let caller = ctx.caller_before_password_change().await?;
        if !authz::can_see_certificates(&caller.user, &self.model) {
            return Err(crate::error::AppError::Forbidden.into());
        }
        let state = ctx.state()?;
        Ok(
            crate::service::certificates::for_user(&state.db, self.model.id)
                .await?
                .into_iter()
                .map(|model| Certificate { model, tz: self.tz })
                .collect(),
        )
    }
    /// Links to the tenant's identity provider (federated login): self or CITY_ADMIN.
    async fn external_identities(&self, ctx: &Context<'_>) -> Result<Vec<ExternalIdentity>> {
        let caller = ctx.caller_before_password_change().await?;
        let city = caller.user.role == entity::kinds::Role::CityAdmin
            && caller.user.tenant_id == self.model.tenant_id;
        if caller.user.id != self.model.id && !city {
            return Err(crate::error::AppError::Forbidden.into());
        }
        let state = ctx.state()?;
        Ok(crate::service::oidc::links_of(&state.db, self.model.id)
            .await?
            .into_iter()
            .map(|model| ExternalIdentity { model, tz: self.tz })
            .collect())
    }
}

pub struct Certificate {
    pub model: certificate::Model,
    pub tz: Tz,
}

/// The user's account at the tenant's identity provider, for federated login.
pub struct ExternalIdentity {
    pub model: entity::external_identity::Model,
    pub tz: Tz,
}

#[Object]
impl ExternalIdentity {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    /// The provider's issuer URL.
    async fn issuer(&self) -> &str {
        &self.model.issuer
    }
    /// The user's `sub` at the provider.
    async fn subject(&self) -> &str {
        &self.model.subject
    }
    /// `ADMIN` (linked by a CITY_ADMIN) or `EMAIL` (at a first login by verified e-mail).
    async fn method(&self) -> &str {
        &self.model.method
    }
    async fn linked_at(&self) -> DateTime<FixedOffset> {
        local(self.model.linked_at, self.tz)
    }
    /// The CITY_ADMIN who linked it; null when linked by e-mail.
    async fn linked_by(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        User::by_id(ctx, self.model.linked_by, self.tz).await
    }
}

#[Object]
impl Certificate {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    /// Hex, as in the certificate and the CRL.
    async fn serial_number(&self) -> &str {
        &self.model.serial_hex
    }
    /// Hex of SHA-256 over the DER certificate.
    async fn fingerprint_sha256(&self) -> &str {
        &self.model.fingerprint_sha256
    }
    async fn device_label(&self) -> &str {
        &self.model.device_label
    }
    async fn not_before(&self) -> DateTime<FixedOffset> {
        local(self.model.not_before, self.tz)
    }
    async fn not_after(&self) -> DateTime<FixedOffset> {
        local(self.model.not_after, self.tz)
    }
    async fn status(&self) -> CertificateStatus {
        self.model.status.into()
    }
    async fn revoked_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.revoked_at.map(|at| local(at, self.tz))
    }
    async fn revocation_reason(&self) -> Option<&str> {
        self.model.revocation_reason.as_deref()
    }
}

/// Returned once: the PKCS#12 bundle and its password are never stored in retrievable form.
#[derive(SimpleObject)]
pub struct CertificateIssuance {
    pub certificate: Certificate,
    /// Client certificate + private key + tenant CA chain.
    pub pkcs12_base64: String,
    /// The 電子証明書用PW, random, at least 16 characters.
    pub pkcs12_password: String,
}

impl CertificateIssuance {
    pub fn from_issuance(issuance: crate::service::certificates::Issuance, tz: Tz) -> Self {
        use base64::Engine as _;
        use secrecy::ExposeSecret as _;
        CertificateIssuance {
            pkcs12_base64: base64::engine::general_purpose::STANDARD.encode(&issuance.pkcs12_der),
            pkcs12_password: issuance.pkcs12_password.expose_secret().to_string(),
            certificate: Certificate {
                model: issuance.certificate,
                tz,
            },
        }
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct LoginPayload {
    pub token: String,
    /// Absolute expiry; idle expiry is shorter and slides.
    pub expires_at: DateTime<FixedOffset>,
    #[graphql(skip)]
    pub user_model: user::Model,
    #[graphql(skip)]
    pub tz: Tz,
    pub must_change_password: bool,
    pub must_accept_pledge: bool,
}

#[ComplexObject]
impl LoginPayload {
    async fn user(&self) -> User {
        User::new(self.user_model.clone(), self.tz)
    }
}

/// The contract's `Date`: a calendar day, `YYYY-MM-DD` (birth dates, consent dates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date(pub chrono::NaiveDate);

#[async_graphql::Scalar(name = "Date")]
impl async_graphql::ScalarType for Date {
    fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
        match &value {
            async_graphql::Value::String(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| {
                    async_graphql::InputValueError::custom("a date is written YYYY-MM-DD")
                }),
            _ => Err(async_graphql::InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}
