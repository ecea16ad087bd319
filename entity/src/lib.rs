//! SeaORM entities: the tables, nothing else. GraphQL types and business rules live in `api`.

pub mod application;
pub mod attachment;
pub mod audit_chain;
pub mod audit_checkpoint;
pub mod audit_event;
pub mod care_info_version;
pub mod certificate;
pub mod consent;
pub mod counter;
pub mod external_identity;
pub mod facility;
pub mod invitation;
pub mod kinds;
pub mod note;
pub mod note_mention;
pub mod note_revision;
pub mod password_history;
pub mod patient_version;
pub mod read_marker;
pub mod room;
pub mod room_member;
pub mod tenant;
pub mod tenant_ca;
pub mod tenant_idp;
pub mod user;
pub mod vital_record;
