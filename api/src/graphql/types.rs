//! GraphQL output types and enums, built from entity models. The database schema is not the API.

use async_graphql::{Enum, ID, SimpleObject};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    PlatformOperator,
    CityAdmin,
    FacilityAdmin,
    Staff,
}

impl From<entity::kinds::Role> for Role {
    fn from(r: entity::kinds::Role) -> Self {
        use entity::kinds::Role as R;
        match r {
            R::PlatformOperator => Role::PlatformOperator,
            R::CityAdmin => Role::CityAdmin,
            R::FacilityAdmin => Role::FacilityAdmin,
            R::Staff => Role::Staff,
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Tenant {
    pub id: ID,
    pub slug: String,
    pub name: String,
}

impl From<entity::tenant::Model> for Tenant {
    fn from(t: entity::tenant::Model) -> Self {
        Tenant {
            id: ID(t.id.to_string()),
            slug: t.slug,
            name: t.name,
        }
    }
}
