//! The casbin enforcer: the model and static rules of `policies/`, fed with tenant roles and
//! room memberships from our own tables (the tables are the truth; the enforcer is an index of
//! them, loaded at start-up and changed by the same code path that writes them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use casbin::{
    Adapter, CoreApi as _, DefaultModel, Enforcer, Filter, MatchingFn, Model, RoleManager,
};
use parking_lot::RwLock;
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

/// Loads the static `p` rules of policy.csv; groupings go to [`CompactRoles`] directly.
struct StaticRules;

#[async_trait::async_trait]
impl Adapter for StaticRules {
    async fn load_policy(&mut self, m: &mut dyn Model) -> casbin::Result<()> {
        for rule in static_rules() {
            m.add_policy("p", "p", rule);
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

/// Groupings (`g` rules) of one instance, kept compactly: every name is interned once and a
/// user's links are a short list of (role, domain) pairs. casbin's default role manager keeps a
/// graph per domain, which for 100,000 room domains costs several hundred megabytes; ours only
/// needs direct links (a user holds a role in a domain; roles do not inherit from each other),
/// which is all `policies/model.conf` uses.
#[derive(Default)]
pub struct CompactRoles {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    links: HashMap<u32, Vec<(u32, u32)>>,
}

/// The id of "no domain".
const NO_DOMAIN: &str = "";

impl CompactRoles {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn link(&mut self, user: &str, role: &str, domain: &str) {
        let (u, r, d) = (self.intern(user), self.intern(role), self.intern(domain));
        let links = self.links.entry(u).or_default();
        if !links.contains(&(r, d)) {
            links.push((r, d));
        }
    }

    fn unlink(&mut self, user: &str, role: &str, domain: &str) {
        let (Some(u), Some(r), Some(d)) = (self.id(user), self.id(role), self.id(domain)) else {
            return;
        };
        if let Some(links) = self.links.get_mut(&u) {
            links.retain(|l| *l != (r, d));
            if links.is_empty() {
                self.links.remove(&u);
            }
        }
    }

    /// Drops every link of `user` (before setting its current ones).
    fn unlink_all(&mut self, user: &str) {
        if let Some(u) = self.id(user) {
            self.links.remove(&u);
        }
    }

    fn name(&self, id: u32) -> String {
        self.names
            .get(id as usize)
            .map(|n| n.to_string())
            .unwrap_or_default()
    }

    /// How many links are held.
    pub fn len(&self) -> usize {
        self.links.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

impl RoleManager for CompactRoles {
    fn clear(&mut self) {
        *self = CompactRoles::default();
    }

    fn add_link(&mut self, name1: &str, name2: &str, domain: Option<&str>) {
        self.link(name1, name2, domain.unwrap_or(NO_DOMAIN));
    }

    fn matching_fn(&mut self, _role: Option<MatchingFn>, _domain: Option<MatchingFn>) {
        // Names and domains are matched exactly; patterns live in the `p` rules (keyMatch).
    }

    fn delete_link(
        &mut self,
        name1: &str,
        name2: &str,
        domain: Option<&str>,
    ) -> casbin::Result<()> {
        self.unlink(name1, name2, domain.unwrap_or(NO_DOMAIN));
        Ok(())
    }

    fn has_link(&self, name1: &str, name2: &str, domain: Option<&str>) -> bool {
        if name1 == name2 {
            return true;
        }
        let (Some(u), Some(r), Some(d)) = (
            self.id(name1),
            self.id(name2),
            self.id(domain.unwrap_or(NO_DOMAIN)),
        ) else {
            return false;
        };
        self.links
            .get(&u)
            .is_some_and(|links| links.contains(&(r, d)))
    }

    fn get_roles(&self, name: &str, domain: Option<&str>) -> Vec<String> {
        let (Some(u), Some(d)) = (self.id(name), self.id(domain.unwrap_or(NO_DOMAIN))) else {
            return Vec::new();
        };
        self.links
            .get(&u)
            .map(|links| {
                links
                    .iter()
                    .filter(|(_, ld)| *ld == d)
                    .map(|(r, _)| self.name(*r))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn get_users(&self, name: &str, domain: Option<&str>) -> Vec<String> {
        let (Some(r), Some(d)) = (self.id(name), self.id(domain.unwrap_or(NO_DOMAIN))) else {
            return Vec::new();
        };
        self.links
            .iter()
            .filter(|(_, links)| links.contains(&(r, d)))
            .map(|(u, _)| self.name(*u))
            .collect()
    }
}

fn compact_roles(snapshot: Snapshot) -> CompactRoles {
    let mut roles = CompactRoles::default();
    for (user, tenant, role) in snapshot.tenant_roles {
        if let Some(role) = tenant_role(role) {
            roles.link(&user_subject(user), role, &tenant_domain(tenant));
        }
    }
    for (user, room) in snapshot.memberships {
        roles.link(&user_subject(user), ROOM_MEMBER, &room_domain(room));
    }
    roles
}

/// The role a room member holds in `room:<id>`.
pub const ROOM_MEMBER: &str = "room_member";

const TENANT_ROLES: [&str; 3] = ["city_admin", "facility_admin", "staff"];

/// The enforcer, shared by every request of this instance: casbin's model, matcher and static
/// `p` rules, with groupings held by [`CompactRoles`].
pub struct Authorizer {
    enforcer: Enforcer,
    roles: Arc<RwLock<CompactRoles>>,
    /// While a full reload reads the database: users changed meanwhile, to refresh again after
    /// the swap (their change may be missing from the snapshot being read).
    reloading: parking_lot::Mutex<Option<HashSet<Uuid>>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    pub async fn new(snapshot: Snapshot) -> casbin::Result<Self> {
        let model = DefaultModel::from_str(MODEL).await?;
        let mut enforcer = Enforcer::new(model, StaticRules).await?;
        enforcer.enable_auto_save(false);
        let roles = Arc::new(RwLock::new(CompactRoles::default()));
        let shared: Arc<RwLock<dyn RoleManager>> = roles.clone();
        // Registers `g` on our role manager (and builds links from the model: there are none).
        enforcer.set_role_manager(shared)?;
        *roles.write() = compact_roles(snapshot);
        Ok(Authorizer {
            enforcer,
            roles,
            reloading: parking_lot::Mutex::new(None),
        })
    }

    /// Whether `user` may `act` on `obj` in `domain` (`room:<id>` or `tenant:<id>`).
    pub fn allowed(&self, user: Uuid, domain: &str, obj: &str, act: &str) -> bool {
        self.enforcer
            .enforce((user_subject(user).as_str(), domain, obj, act))
            .unwrap_or(false)
    }

    /// Whether `user` is a member of `room` (may read its content).
    pub fn is_room_member(&self, user: Uuid, room: Uuid) -> bool {
        self.allowed(user, &room_domain(room), "content", "read")
    }

    /// Makes the user's grouping in its tenant match `role` (the caller's row, just read).
    /// Cheap when it already does, which is nearly always.
    pub fn ensure_tenant_role(&self, user: Uuid, tenant: Uuid, role: Role) {
        let subject = user_subject(user);
        let domain = tenant_domain(tenant);
        let wanted = tenant_role(role);
        let matches = {
            let roles = self.roles.read();
            TENANT_ROLES
                .iter()
                .all(|r| roles.has_link(&subject, r, Some(&domain)) == (Some(*r) == wanted))
        };
        if !matches {
            let mut roles = self.roles.write();
            for r in TENANT_ROLES {
                roles.unlink(&subject, r, &domain);
            }
            if let Some(r) = wanted {
                roles.link(&subject, r, &domain);
            }
        }
    }

    /// Replaces everything `user` holds with its current rows: its tenant role (`None` when
    /// suspended) and the rooms it is a member of.
    pub fn set_user(&self, user: Uuid, tenant: Uuid, role: Option<Role>, rooms: &[Uuid]) {
        let subject = user_subject(user);
        {
            let mut roles = self.roles.write();
            roles.unlink_all(&subject);
            if let Some(r) = role.and_then(tenant_role) {
                roles.link(&subject, r, &tenant_domain(tenant));
            }
            for room in rooms {
                roles.link(&subject, ROOM_MEMBER, &room_domain(*room));
            }
        }
        if let Some(touched) = self.reloading.lock().as_mut() {
            touched.insert(user);
        }
    }

    /// Starts a full reload: from now on, changed users are remembered.
    pub fn begin_reload(&self) {
        *self.reloading.lock() = Some(HashSet::new());
    }

    /// Swaps in a fresh snapshot; returns the users changed while it was read, whose current
    /// rows the caller applies again with [`Authorizer::set_user`].
    pub fn finish_reload(&self, snapshot: Snapshot) -> Vec<Uuid> {
        let fresh = compact_roles(snapshot);
        *self.roles.write() = fresh;
        self.reloading
            .lock()
            .take()
            .map(|set| set.into_iter().collect())
            .unwrap_or_default()
    }

    /// Ends a reload that could not read its snapshot: the current groupings stay.
    pub fn abort_reload(&self) {
        self.reloading.lock().take();
    }

    /// Replaces everything with a fresh snapshot at once (tests, benchmark).
    pub fn reload(&self, snapshot: Snapshot) {
        *self.roles.write() = compact_roles(snapshot);
    }

    /// How many groupings are held.
    pub fn groupings(&self) -> usize {
        self.roles.read().len()
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
        assert_eq!(authz.groupings(), 3);
        assert!(authz.is_room_member(alice, room));
        assert!(!authz.is_room_member(alice, other_room));
        assert!(!authz.is_room_member(bob, room));
        assert!(authz.allowed(alice, &room_domain(room), "content", "write"));
        // The city manages rooms of its tenant but is no member of any.
        assert!(authz.allowed(city, &tenant_domain(tenant), "rooms", "manage"));
        assert!(!authz.allowed(alice, &tenant_domain(tenant), "rooms", "manage"));
        assert!(!authz.is_room_member(city, room));
        assert!(!authz.allowed(city, &tenant_domain(Uuid::now_v7()), "rooms", "manage"));
        // A tenant role is no room role, and a room role no tenant role.
        assert!(!authz.allowed(alice, &tenant_domain(tenant), "content", "read"));

        authz.set_user(bob, tenant, Some(Role::Staff), &[room]);
        assert!(authz.is_room_member(bob, room));
        authz.set_user(alice, tenant, Some(Role::Staff), &[]);
        assert!(!authz.is_room_member(alice, room));
        assert!(authz.is_room_member(bob, room));

        // Suspended: no tenant role, no rooms.
        authz.set_user(city, tenant, None, &[]);
        assert!(!authz.allowed(city, &tenant_domain(tenant), "rooms", "manage"));
        // The caller's row says CITY_ADMIN again (reactivated): the grouping follows.
        authz.ensure_tenant_role(city, tenant, Role::CityAdmin);
        assert!(authz.allowed(city, &tenant_domain(tenant), "rooms", "manage"));
        authz.ensure_tenant_role(city, tenant, Role::Staff);
        assert!(!authz.allowed(city, &tenant_domain(tenant), "rooms", "manage"));

        authz.reload(Snapshot {
            tenant_roles: vec![],
            memberships: vec![(alice, other_room)],
        });
        assert!(!authz.is_room_member(bob, room));
        assert!(authz.is_room_member(alice, other_room));
    }

    #[tokio::test]
    async fn changes_made_during_a_full_reload_survive_it() {
        let (alice, tenant, room) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let authz = Authorizer::new(Snapshot {
            tenant_roles: vec![(alice, tenant, Role::Staff)],
            memberships: vec![(alice, room)],
        })
        .await
        .unwrap();
        authz.begin_reload();
        // Read before the removal below: the snapshot still has the membership.
        let stale = Snapshot {
            tenant_roles: vec![(alice, tenant, Role::Staff)],
            memberships: vec![(alice, room)],
        };
        authz.set_user(alice, tenant, Some(Role::Staff), &[]);
        let again = authz.finish_reload(stale);
        assert_eq!(again, vec![alice]);
        // The caller applies alice's current rows again.
        authz.set_user(alice, tenant, Some(Role::Staff), &[]);
        assert!(!authz.is_room_member(alice, room));
    }

    #[test]
    fn compact_roles_answer_like_a_role_manager() {
        let mut rm = CompactRoles::default();
        rm.add_link("user:a", "room_member", Some("room:1"));
        rm.add_link("user:a", "staff", Some("tenant:t"));
        rm.add_link("user:b", "room_member", Some("room:1"));
        assert!(rm.has_link("user:a", "room_member", Some("room:1")));
        assert!(!rm.has_link("user:a", "room_member", Some("room:2")));
        assert!(rm.has_link("x", "x", None));
        assert_eq!(rm.get_roles("user:a", Some("room:1")), vec!["room_member"]);
        let mut users = rm.get_users("room_member", Some("room:1"));
        users.sort();
        assert_eq!(users, vec!["user:a", "user:b"]);
        rm.delete_link("user:a", "room_member", Some("room:1"))
            .unwrap();
        assert!(!rm.has_link("user:a", "room_member", Some("room:1")));
        assert_eq!(rm.len(), 2);
        rm.clear();
        assert!(rm.is_empty());
    }
}
