//! The casbin enforcer: the model and static rules of `policies/`, fed with tenant roles and
//! room memberships from our own tables (the tables are the truth; the enforcer is an index of
//! them, loaded at start-up and changed by the same code path that writes them).

use casbin::{Adapter, CoreApi as _, DefaultModel, Enforcer, Filter, MgmtApi as _, Model};
use uuid::Uuid;

use entity::kinds::Role;

/// `policies/model.conf` and `policies/policy.csv`, compiled in.
pub const MODEL: &str = include_str!("../../../policies/model.conf");
pub const POLICY: &str = include_str!("../../../policies/policy.csv");

pub fn user_subject(id: Uuid) -> String {
    format!("user:{id}")
}

pub fn room_domain(id: Uuid) -> String {
    format!("room:{id}")
}

pub fn tenant_domain(id: Uuid) -> String {
    format!("tenant:{id}")
}

/// The tenant role a user holds in `tenant:<id>`.
pub fn tenant_role(role: Role) -> Option<&'static str> {
    match role {
        Role::CityAdmin => Some("city_admin"),
        Role::FacilityAdmin => Some("facility_admin"),
        Role::Staff => Some("staff"),
        Role::PlatformOperator => None,
    }
}

/// The static `p` rules of policy.csv (comments and blank lines skipped).
pub fn static_rules() -> Vec<Vec<String>> {
    POLICY
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<String> = l.split(',').map(|f| f.trim().to_string()).collect();
            (fields.first().map(String::as_str) == Some("p") && fields.len() == 5)
                .then(|| fields[1..].to_vec())
        })
        .collect()
}

/// What the enforcer is loaded with at start-up and on a full reload.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// (user, tenant, role)
    pub tenant_roles: Vec<(Uuid, Uuid, Role)>,
    /// (user, room)
    pub memberships: Vec<(Uuid, Uuid)>,
}

/// Feeds a snapshot into the model in one pass; later changes are applied to the enforcer
/// directly (`auto_save` off), never written back through here.
struct SnapshotAdapter {
    snapshot: Snapshot,
}

#[async_trait::async_trait]
impl Adapter for SnapshotAdapter {
    async fn load_policy(&mut self, m: &mut dyn Model) -> casbin::Result<()> {
        for rule in static_rules() {
            m.add_policy("p", "p", rule);
        }
        for (user, tenant, role) in std::mem::take(&mut self.snapshot.tenant_roles) {
            if let Some(role) = tenant_role(role) {
                m.add_policy(
                    "g",
                    "g",
                    vec![user_subject(user), role.to_string(), tenant_domain(tenant)],
                );
            }
        }
        for (user, room) in std::mem::take(&mut self.snapshot.memberships) {
            m.add_policy(
                "g",
                "g",
                vec![user_subject(user), "room_member".into(), room_domain(room)],
            );
        }
        Ok(())
    }
    async fn load_filtered_policy<'a>(
        &mut self,
        m: &mut dyn Model,
        _f: Filter<'a>,
    ) -> casbin::Result<()> {
        self.load_policy(m).await
    }
    async fn save_policy(&mut self, _m: &mut dyn Model) -> casbin::Result<()> {
        Ok(())
    }
    async fn clear_policy(&mut self) -> casbin::Result<()> {
        Ok(())
    }
    fn is_filtered(&self) -> bool {
        false
    }
    async fn add_policy(&mut self, _s: &str, _p: &str, _r: Vec<String>) -> casbin::Result<bool> {
        Ok(true)
    }
    async fn add_policies(
        &mut self,
        _s: &str,
        _p: &str,
        _r: Vec<Vec<String>>,
    ) -> casbin::Result<bool> {
        Ok(true)
    }
    async fn remove_policy(&mut self, _s: &str, _p: &str, _r: Vec<String>) -> casbin::Result<bool> {
        Ok(true)
    }
    async fn remove_policies(
        &mut self,
        _s: &str,
        _p: &str,
        _r: Vec<Vec<String>>,
    ) -> casbin::Result<bool> {
        Ok(true)
    }
    async fn remove_filtered_policy(
        &mut self,
        _s: &str,
        _p: &str,
        _i: usize,
        _v: Vec<String>,
    ) -> casbin::Result<bool> {
        Ok(true)
    }
}

/// The enforcer, shared by every request of this instance.
pub struct Authorizer {
    enforcer: tokio::sync::RwLock<Enforcer>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

async fn build(snapshot: Snapshot) -> casbin::Result<Enforcer> {
    let model = DefaultModel::from_str(MODEL).await?;
    let mut enforcer = Enforcer::new(model, SnapshotAdapter { snapshot }).await?;
    enforcer.enable_auto_save(false);
    Ok(enforcer)
}

impl Authorizer {
    pub async fn new(snapshot: Snapshot) -> casbin::Result<Self> {
        Ok(Authorizer {
            enforcer: tokio::sync::RwLock::new(build(snapshot).await?),
        })
    }

    /// Replaces everything with a fresh snapshot (the periodic safety net).
    pub async fn reload(&self, snapshot: Snapshot) -> casbin::Result<()> {
        let fresh = build(snapshot).await?;
        *self.enforcer.write().await = fresh;
        Ok(())
    }

    /// Whether `user` may `act` on `obj` in `domain` (`room:<id>` or `tenant:<id>`).
    pub async fn allowed(&self, user: Uuid, domain: &str, obj: &str, act: &str) -> bool {
        let enforcer = self.enforcer.read().await;
        enforcer
            .enforce((user_subject(user).as_str(), domain, obj, act))
            .unwrap_or(false)
    }

    /// Whether `user` is a member of `room` (may read its content).
    pub async fn is_room_member(&self, user: Uuid, room: Uuid) -> bool {
        self.allowed(user, &room_domain(room), "content", "read")
            .await
    }

    pub async fn add_member(&self, user: Uuid, room: Uuid) -> casbin::Result<()> {
        self.enforcer
            .write()
            .await
            .add_grouping_policy(vec![
                user_subject(user),
                "room_member".into(),
                room_domain(room),
            ])
            .await?;
        Ok(())
    }

    pub async fn remove_member(&self, user: Uuid, room: Uuid) -> casbin::Result<()> {
        self.enforcer
            .write()
            .await
            .remove_grouping_policy(vec![
                user_subject(user),
                "room_member".into(),
                room_domain(room),
            ])
            .await?;
        Ok(())
    }

    /// Sets the user's role in its tenant (account created, role moved, suspended: `None`).
    pub async fn set_tenant_role(
        &self,
        user: Uuid,
        tenant: Uuid,
        role: Option<Role>,
    ) -> casbin::Result<()> {
        let mut enforcer = self.enforcer.write().await;
        let subject = user_subject(user);
        let domain = tenant_domain(tenant);
        for old in ["city_admin", "facility_admin", "staff"] {
            let rule = vec![subject.clone(), old.to_string(), domain.clone()];
            if enforcer.has_grouping_policy(rule.clone()) {
                enforcer.remove_grouping_policy(rule).await?;
            }
        }
        if let Some(role) = role.and_then(tenant_role) {
            enforcer
                .add_grouping_policy(vec![subject, role.to_string(), domain])
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_csv_holds_only_static_rules() {
        let rules = static_rules();
        assert!(!rules.is_empty());
        for rule in &rules {
            assert_eq!(rule.len(), 4, "{rule:?}");
            // Never one rule per room or member: domains are patterns.
            assert!(rule[1].ends_with(":*"), "{rule:?}");
            assert!(!rule[0].starts_with("user:"), "{rule:?}");
        }
    }

    #[tokio::test]
    async fn membership_is_a_grouping_in_the_rooms_domain() {
        let (alice, bob, city) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (room, other_room, tenant) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let authz = Authorizer::new(Snapshot {
            tenant_roles: vec![
                (alice, tenant, Role::Staff),
                (city, tenant, Role::CityAdmin),
            ],
            memberships: vec![(alice, room)],
        })
        .await
        .unwrap();
        assert!(authz.is_room_member(alice, room).await);
        assert!(!authz.is_room_member(alice, other_room).await);
        assert!(!authz.is_room_member(bob, room).await);
        assert!(
            authz
                .allowed(alice, &room_domain(room), "content", "write")
                .await
        );
        // The city manages rooms of its tenant but is no member of any.
        assert!(
            authz
                .allowed(city, &tenant_domain(tenant), "rooms", "manage")
                .await
        );
        assert!(
            !authz
                .allowed(alice, &tenant_domain(tenant), "rooms", "manage")
                .await
        );
        assert!(!authz.is_room_member(city, room).await);
        assert!(
            !authz
                .allowed(city, &tenant_domain(Uuid::now_v7()), "rooms", "manage")
                .await
        );

        authz.add_member(bob, room).await.unwrap();
        assert!(authz.is_room_member(bob, room).await);
        authz.remove_member(alice, room).await.unwrap();
        assert!(!authz.is_room_member(alice, room).await);
        assert!(authz.is_room_member(bob, room).await);

        authz.set_tenant_role(city, tenant, None).await.unwrap();
        assert!(
            !authz
                .allowed(city, &tenant_domain(tenant), "rooms", "manage")
                .await
        );

        authz
            .reload(Snapshot {
                tenant_roles: vec![],
                memberships: vec![(alice, other_room)],
            })
            .await
            .unwrap();
        assert!(!authz.is_room_member(bob, room).await);
        assert!(authz.is_room_member(alice, other_room).await);
    }
}
