//! Room memberships and invitations as seen from an account: what a suspension (form 3,
//! `suspendUser`) must end.
//!
//! Rooms do not exist yet (they come with the rooms work, issue 6): until then a user has no
//! membership or invitation to end, and this hook, already called in the suspension's
//! transaction, has nothing to do. The rooms work fills it in.

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::error::AppResult;
use crate::service::audit::Origin;

/// Ends every room membership and revokes every pending invitation of `users`, in the
/// caller's transaction; returns how many memberships ended.
pub async fn end_for_suspended_users(
    _db: &impl ConnectionTrait,
    _tenant_id: Uuid,
    _users: &[Uuid],
    _origin: &Origin,
) -> AppResult<u64> {
    Ok(0)
}
