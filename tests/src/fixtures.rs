//! People and tenants for tests, made through the same service functions the CLI uses, and
//! logged in through the real API over TLS with their real PKCS#12 bundles.

use base64::Engine as _;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _, Set};
use secrecy::ExposeSecret as _;
use serde_json::json;
use uuid::Uuid;

use entity::kinds::{AccountStatus, FacilityKind, Occupation, Role};
use renkei::service::{certificates, tenants};

use crate::{TestApp, TestClient};

/// A user with both factors in hand.
#[derive(Clone, Debug)]
pub struct Person {
    pub id: Uuid,
    pub tenant: String,
    pub tenant_id: Uuid,
    pub login_id: String,
    pub password: String,
    /// PEM certificate + key, as a device would hold after importing the PKCS#12.
    pub identity_pem: Vec<u8>,
    pub certificate_id: Uuid,
    pub fingerprint: String,
}

/// Turns a PKCS#12 bundle into the PEM identity reqwest (rustls) wants.
pub fn identity_from_pkcs12(der: &[u8], password: &str) -> Vec<u8> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        der,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .expect("PKCS#12 opens with its password");
    let (_, chain) = store.private_key_chain().expect("PKCS#12 holds a key");
    let mut pem = String::new();
    for cert in chain.certs() {
        pem.push_str(&pem_block("CERTIFICATE", cert.as_der()));
    }
    pem.push_str(&pem_block("PRIVATE KEY", chain.key().as_der()));
    pem.into_bytes()
}

pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl TestApp {
    /// A new tenant with its CA and CITY_ADMIN (initial password, must change it).
    pub async fn create_tenant(&self, slug: &str) -> Person {
        let state = self.state();
        let created = tenants::create_tenant(
            &state.db,
            &state.master_key,
            &state.hasher,
            tenants::NewTenant {
                slug: slug.into(),
                name: format!("{slug} city"),
                admin_login_id: "admin".into(),
                admin_display_name: "Admin Person".into(),
                time_zone: chrono_tz::Asia::Tokyo,
            },
        )
        .await
        .expect("tenant created");
        state.trust_changed().await;
        let issuance = &created.admin_certificate;
        Person {
            id: created.admin.id,
            tenant: slug.into(),
            tenant_id: created.tenant.id,
            login_id: created.admin.login_id.clone(),
            password: created.admin_password.expose_secret().to_string(),
            identity_pem: identity_from_pkcs12(
                &issuance.pkcs12_der,
                issuance.pkcs12_password.expose_secret(),
            ),
            certificate_id: issuance.certificate.id,
            fingerprint: issuance.certificate.fingerprint_sha256.clone(),
        }
    }

    /// A facility of the tenant, registered as the city's approval would (with a code).
    pub async fn create_facility(&self, tenant_id: Uuid, name: &str) -> Uuid {
        let txn = renkei::db::begin_write(&self.db).await.unwrap();
        let facility = renkei::service::facilities::create(
            &txn,
            tenant_id,
            renkei::service::facilities::NewFacility {
                kind: FacilityKind::MedicalInstitution,
                name: name.into(),
                address: "1-1 Chuo".into(),
                phone: "03-0000-0000".into(),
                representative_name: "Rep".into(),
                inside_municipality: true,
            },
            &renkei::service::audit::Origin::default(),
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
        facility.id
    }

    /// A user with a random initial password (must change it) and a certificate.
    pub async fn create_user(
        &self,
        tenant: &Person,
        login_id: &str,
        role: Role,
        facility_id: Option<Uuid>,
    ) -> Person {
        let password = renkei::auth::pki::random_password(16);
        let hash = self
            .state()
            .hasher
            .hash(password.clone().into())
            .await
            .unwrap();
        self.insert_person(tenant, login_id, role, facility_id, Some((password, hash)))
            .await
    }

    /// A user past the password change and the pledge, with a certificate but no password: no
    /// Argon2id, for benchmarks that need hundreds of people (sessions are opened in the store).
    pub async fn create_user_without_password(
        &self,
        tenant: &Person,
        login_id: &str,
        role: Role,
        facility_id: Option<Uuid>,
    ) -> Person {
        self.insert_person(tenant, login_id, role, facility_id, None)
            .await
    }

    /// `password`: (the password, its hash) of a user who must change it; None: a user with no
    /// password who has changed nothing and accepted the pledge.
    async fn insert_person(
        &self,
        tenant: &Person,
        login_id: &str,
        role: Role,
        facility_id: Option<Uuid>,
        password: Option<(String, String)>,
    ) -> Person {
        let state = self.state();
        let now = chrono::Utc::now();
        let initial = password.is_some();
        let (password, hash) = match password {
            Some((password, hash)) => (password, Some(entity::user::PasswordHash(hash))),
            None => (String::new(), None),
        };
        let user = entity::user::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.tenant_id),
            facility_id: Set(facility_id),
            login_id: Set(login_id.into()),
            display_name: Set(format!("{login_id} Person")),
            display_name_kana: Set(None),
            email: Set(None),
            occupation: Set(Occupation::Nurse),
            role: Set(role),
            status: Set(AccountStatus::Active),
            password_hash: Set(hash),
            must_change_password: Set(initial),
            password_changed_at: Set((!initial).then_some(now)),
            pledge_accepted_at: Set((!initial).then_some(now)),
            pledge_version: Set(
                (!initial).then(|| renkei::service::accounts::PLEDGE_VERSION.into())
            ),
            failed_login_count: Set(0),
            locked_until: Set(None),
            suspension_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await
        .unwrap();
        let tenant_model = renkei::service::users::tenant_of(&self.db, &user)
            .await
            .unwrap();
        let issuance = certificates::issue(
            &self.db,
            &state.master_key,
            &tenant_model,
            &user,
            "test device",
            None,
            // Made by the test, not by anyone's request: recorded with no actor.
            &renkei::service::audit::Origin::default(),
        )
        .await
        .unwrap();
        Person {
            id: user.id,
            tenant: tenant.tenant.clone(),
            tenant_id: tenant.tenant_id,
            login_id: login_id.into(),
            password,
            identity_pem: identity_from_pkcs12(
                &issuance.pkcs12_der,
                issuance.pkcs12_password.expose_secret(),
            ),
            certificate_id: issuance.certificate.id,
            fingerprint: issuance.certificate.fingerprint_sha256.clone(),
        }
    }

    /// A client presenting `person`'s certificate, not logged in.
    pub fn client_for(&self, person: &Person) -> TestClient {
        self.client_with_identity(&person.identity_pem)
    }

    /// Logs in over TLS with the person's certificate and password; returns the client with its token.
    pub async fn login(&self, person: &Person) -> TestClient {
        let client = self.client_for(person);
        let resp = client
            .graphql(
                "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token } }",
                json!({ "t": person.tenant, "l": person.login_id, "p": person.password }),
            )
            .await;
        let token = resp.ok()["login"]["token"].as_str().unwrap().to_string();
        client.with_token(token)
    }

    /// A session of someone past the initial password change and the pledge, for tests about
    /// something else. Both flags are set in the database rather than through the API (tested
    /// on their own): in a debug build a real password change costs seconds of Argon2id.
    pub async fn ready_session(&self, person: &Person) -> TestClient {
        self.edit_user(person.id, |active| {
            active.must_change_password = Set(false);
            active.pledge_accepted_at = Set(Some(chrono::Utc::now()));
            active.pledge_version = Set(Some(renkei::service::accounts::PLEDGE_VERSION.into()));
        })
        .await;
        self.login(person).await
    }

    /// Changes a user's row directly in the database (set-up of states the API reaches only
    /// slowly or not at all).
    pub async fn edit_user(&self, id: Uuid, edit: impl FnOnce(&mut entity::user::ActiveModel)) {
        let user = entity::user::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .unwrap()
            .expect("user exists");
        let mut active = user.into_active_model();
        edit(&mut active);
        active.update(&self.db).await.unwrap();
    }

    /// Logs in, replaces the initial password with a good one and accepts the pledge: a user
    /// ready for everyday work. Updates `person.password`.
    pub async fn login_ready(&self, person: &mut Person) -> TestClient {
        let client = self.login(person).await;
        let new_password = format!("Renkei-{}-Zq7!", &Uuid::new_v4().simple().to_string()[..8]);
        client
            .graphql(
                "mutation($c:String!,$n:String!){ changePassword(currentPassword:$c, newPassword:$n) }",
                json!({ "c": person.password, "n": new_password }),
            )
            .await
            .ok();
        person.password = new_password;
        client
            .graphql("mutation { acceptPledge { id } }", json!({}))
            .await
            .ok();
        client
    }
}
