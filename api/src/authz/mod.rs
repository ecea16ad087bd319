//! Authorization: who may do what, handed to resolvers as capabilities. A service function
//! that changes another user's account takes a [`UserAdmin`], which only this module creates.

pub mod enforcer;
pub mod rooms;
pub mod sync;

use entity::kinds::Role;
use entity::{facility, tenant, user};

use crate::error::{AppError, AppResult};

/// The caller may administer `target`'s account: CITY_ADMIN of the same tenant, or (rule ⑫,
/// when the tenant delegates) FACILITY_ADMIN of the target's facility.
pub struct UserAdmin {
    pub admin: user::Model,
    pub target: user::Model,
}

/// How far the administration reaches: the guide reserves some acts to the city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminScope {
    /// Certificates, unlock, password reset: the city, or a delegated facility admin.
    Delegable,
    /// Suspension and reactivation: the city only.
    CityOnly,
}

pub fn user_admin(
    caller: &user::Model,
    tenant: &tenant::Model,
    target: user::Model,
    scope: AdminScope,
) -> AppResult<UserAdmin> {
    // Other tenants' ids do not exist for the caller.
    if target.tenant_id != caller.tenant_id {
        return Err(AppError::NotFound);
    }
    let allowed = match caller.role {
        Role::CityAdmin => true,
        Role::FacilityAdmin => {
            scope == AdminScope::Delegable
                && tenant.facility_admin_delegation
                && caller.facility_id.is_some()
                && caller.facility_id == target.facility_id
                && target.role != Role::CityAdmin
        }
        Role::Staff | Role::PlatformOperator => false,
    };
    if !allowed {
        return Err(AppError::Forbidden);
    }
    Ok(UserAdmin {
        admin: caller.clone(),
        target,
    })
}

/// Who may see a user's certificates: the user, CITY_ADMIN, FACILITY_ADMIN of the same facility.
pub fn can_see_certificates(caller: &user::Model, target: &user::Model) -> bool {
    if caller.tenant_id != target.tenant_id {
        return false;
    }
    caller.id == target.id
        || caller.role == Role::CityAdmin
        || (caller.role == Role::FacilityAdmin
            && caller.facility_id.is_some()
            && caller.facility_id == target.facility_id)
}

/// Who may look a user up: the city sees its whole register, a facility its own people.
pub fn can_see_user(caller: &user::Model, target: &user::Model) -> bool {
    if caller.tenant_id != target.tenant_id {
        return false;
    }
    caller.id == target.id
        || caller.role == Role::CityAdmin
        || (caller.facility_id.is_some() && caller.facility_id == target.facility_id)
}

/// The caller may review the audit trail of its tenant (CITY_ADMIN only, MHLW 6.0 §17 review).
#[derive(Debug, Clone, Copy)]
pub struct AuditReader {
    pub tenant_id: uuid::Uuid,
}

pub fn audit_reader(caller: &user::Model) -> AppResult<AuditReader> {
    match caller.role {
        Role::CityAdmin => Ok(AuditReader {
            tenant_id: caller.tenant_id,
        }),
        Role::FacilityAdmin | Role::Staff | Role::PlatformOperator => Err(AppError::Forbidden),
    }
}

/// The caller administers its tenant (CITY_ADMIN): reviews applications, suspends and
/// reactivates, reads the register and its statistics.
#[derive(Debug, Clone, Copy)]
pub struct CityAdmin {
    pub tenant_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
}

pub fn city_admin(caller: &user::Model) -> AppResult<CityAdmin> {
    match caller.role {
        Role::CityAdmin => Ok(CityAdmin {
            tenant_id: caller.tenant_id,
            user_id: caller.id,
        }),
        Role::FacilityAdmin | Role::Staff | Role::PlatformOperator => Err(AppError::Forbidden),
    }
}

/// The caller is the FACILITY_ADMIN of this facility: it files forms 3 and 7 for it.
#[derive(Debug, Clone)]
pub struct FacilityAdmin {
    pub admin: user::Model,
    pub facility: facility::Model,
}

/// Other tenants' facilities do not exist for the caller (NOT_FOUND); anyone but this
/// facility's admin is FORBIDDEN.
pub fn facility_admin_of(
    caller: &user::Model,
    facility: facility::Model,
) -> AppResult<FacilityAdmin> {
    if facility.tenant_id != caller.tenant_id {
        return Err(AppError::NotFound);
    }
    if caller.role == Role::FacilityAdmin && caller.facility_id == Some(facility.id) {
        Ok(FacilityAdmin {
            admin: caller.clone(),
            facility,
        })
    } else {
        Err(AppError::Forbidden)
    }
}

/// Which applications the caller sees: the city all of its tenant's, a facility admin its
/// facility's, anyone else those it submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationScope {
    Tenant(uuid::Uuid),
    Facility {
        tenant_id: uuid::Uuid,
        facility_id: uuid::Uuid,
    },
    Submitter {
        tenant_id: uuid::Uuid,
        user_id: uuid::Uuid,
    },
}

pub fn application_scope(caller: &user::Model) -> ApplicationScope {
    match (caller.role, caller.facility_id) {
        (Role::CityAdmin, _) => ApplicationScope::Tenant(caller.tenant_id),
        (Role::FacilityAdmin, Some(facility_id)) => ApplicationScope::Facility {
            tenant_id: caller.tenant_id,
            facility_id,
        },
        _ => ApplicationScope::Submitter {
            tenant_id: caller.tenant_id,
            user_id: caller.id,
        },
    }
}

impl ApplicationScope {
    pub fn tenant_id(&self) -> uuid::Uuid {
        match *self {
            ApplicationScope::Tenant(t)
            | ApplicationScope::Facility { tenant_id: t, .. }
            | ApplicationScope::Submitter { tenant_id: t, .. } => t,
        }
    }

    /// Whether one application (already known to be of the tenant) is in the scope.
    pub fn covers(&self, app: &entity::application::Model) -> bool {
        match *self {
            ApplicationScope::Tenant(t) => app.tenant_id == t,
            ApplicationScope::Facility {
                tenant_id,
                facility_id,
            } => app.tenant_id == tenant_id && app.facility_id == Some(facility_id),
            ApplicationScope::Submitter { tenant_id, user_id } => {
                app.tenant_id == tenant_id && app.submitted_by == Some(user_id)
            }
        }
    }
}

/// How much of the city's register (facilities, users) the caller reads: the city all of it,
/// a facility's people their own facility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterScope {
    Tenant(uuid::Uuid),
    Facility {
        tenant_id: uuid::Uuid,
        facility_id: uuid::Uuid,
    },
}

pub fn register_scope(caller: &user::Model) -> AppResult<RegisterScope> {
    match (caller.role, caller.facility_id) {
        (Role::CityAdmin, _) => Ok(RegisterScope::Tenant(caller.tenant_id)),
        (Role::FacilityAdmin | Role::Staff, Some(facility_id)) => Ok(RegisterScope::Facility {
            tenant_id: caller.tenant_id,
            facility_id,
        }),
        _ => Err(AppError::Forbidden),
    }
}

impl RegisterScope {
    pub fn tenant_id(&self) -> uuid::Uuid {
        match *self {
            RegisterScope::Tenant(t) | RegisterScope::Facility { tenant_id: t, .. } => t,
        }
    }

    /// Narrows to one facility of the tenant: FORBIDDEN outside the caller's own.
    pub fn facility(&self, facility: &facility::Model) -> AppResult<uuid::Uuid> {
        if facility.tenant_id != self.tenant_id() {
            return Err(AppError::NotFound);
        }
        match *self {
            RegisterScope::Tenant(_) => Ok(facility.id),
            RegisterScope::Facility { facility_id, .. } if facility_id == facility.id => {
                Ok(facility.id)
            }
            RegisterScope::Facility { .. } => Err(AppError::Forbidden),
        }
    }
}
