//! Authorization: who may do what, handed to resolvers as capabilities. A service function
//! that changes another user's account takes a [`UserAdmin`], which only this module creates.

use entity::kinds::Role;
use entity::{tenant, user};

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
