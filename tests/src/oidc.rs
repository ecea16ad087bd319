//! Federated login against a real OpenID provider: `tests/oidc/provider.mjs` (npm's
//! `oidc-provider`) over HTTPS with a test CA, and a "browser" that walks the redirects between
//! Renkei and the provider with a person's client certificate.
//!
//! Order of a test: [`IdpCa::new`] → spawn the app with [`IdpCa::env`] (the server reads its
//! extra trusted roots at start-up) → [`TestIdp::start`] with the app's redirect URI (known
//! only after spawn) → [`TestIdp::configure`] the tenant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::{StatusCode, Url, header};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use uuid::Uuid;

use entity::audit_event;
use entity::kinds::Role;
use renkei::service::oidc::IdpConfig;

use crate::{Person, TestApp};

/// The cookie that carries a flow's `state` from start to callback.
pub const FLOW_COOKIE: &str = "__Host-renkei_oidc";
/// The session cookie a successful callback sets.
pub const SESSION_COOKIE: &str = "__Host-renkei_session";

/// The provider's test CA and its HTTPS certificate for 127.0.0.1, as PEM files.
pub struct IdpCa {
    dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl IdpCa {
    pub fn new() -> IdpCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Renkei test IdP CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let dir = tempfile::Builder::new()
            .prefix("renkei-test-idp-")
            .tempdir()
            .unwrap();
        let ca_pem = ca_cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        IdpCa { dir, ca_pem }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// What the app needs to trust the provider: pass it as `TestOptions::env`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "RENKEI_OIDC_CA_FILE".into(),
            self.ca_file().display().to_string(),
        )]
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for IdpCa {
    fn default() -> Self {
        IdpCa::new()
    }
}

/// A confidential client registered at the provider.
#[derive(Debug, Clone)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

impl IdpClient {
    /// The client `renkei` with the callbacks of these apps for `slug`.
    pub fn renkei(apps: &[&TestApp], slug: &str) -> IdpClient {
        IdpClient {
            client_id: "renkei".into(),
            client_secret: format!("secret-{}", Uuid::new_v4().simple()),
            redirect_uris: apps.iter().map(|a| callback_url(a, slug)).collect(),
        }
    }
}

/// `https://127.0.0.1:<port>/auth/oidc/<slug>/callback`: the redirect URI Renkei sends when
/// reached through the harness (its `Host` header).
pub fn callback_url(app: &TestApp, slug: &str) -> String {
    app.url(&format!("/auth/oidc/{slug}/callback"))
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// A running `tests/oidc/provider.mjs`, killed on drop.
pub struct TestIdp {
    pub issuer: String,
    pub clients: Vec<IdpClient>,
    http: reqwest::Client,
    stderr_file: PathBuf,
    _child: tokio::process::Child,
}

impl TestIdp {
    pub async fn start(ca: &IdpCa, clients: Vec<IdpClient>) -> TestIdp {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test OpenID provider's packages are missing in {}: run `npm ci --prefix tests/oidc` \
             (tests/run.sh does it)",
            dir.join("node_modules").display()
        );
        let clients_json: Vec<Value> = clients
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "redirect_uris": c.redirect_uris,
                })
            })
            .collect();
        let stderr_file = ca.path(&format!("provider-{}.log", Uuid::new_v4().simple()));
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("PROVIDER_CERT", ca.path("server.pem"))
            .env("PROVIDER_KEY", ca.path("server.key"))
            .env(
                "PROVIDER_CLIENTS",
                serde_json::to_string(&clients_json).unwrap(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `node` (Node.js must be on PATH for the OpenID provider): {e}")
            });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Waits for the ready line only so that a broken provider fails the test instead of
        // hanging it; nothing here is about speed.
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Ok(ready) = serde_json::from_str::<Value>(&line)
                    && ready["issuer"].is_string()
                {
                    return Some(ready);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "the OpenID provider did not start: {}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            )
        });
        // Keep draining stdout so the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestIdp {
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            clients,
            http,
            stderr_file,
            _child: child,
        }
    }

    /// Sets the tenant's provider to this one (first client), CITY_ADMIN only.
    pub async fn configure(&self, app: &TestApp, slug: &str, link_by_email: bool) {
        self.configure_roles(app, slug, vec![Role::CityAdmin], link_by_email)
            .await;
    }

    pub async fn configure_roles(
        &self,
        app: &TestApp,
        slug: &str,
        allowed_roles: Vec<Role>,
        link_by_email: bool,
    ) {
        let client = &self.clients[0];
        renkei::service::oidc::configure(
            &app.state().db,
            &app.state().master_key,
            slug,
            IdpConfig {
                issuer: self.issuer.clone(),
                client_id: client.client_id.clone(),
                client_secret: SecretString::from(client.client_secret.clone()),
                allowed_roles,
                link_by_email,
            },
        )
        .await
        .expect("the tenant's provider is set");
    }

    async fn control(&self, path: &str, body: Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NO_CONTENT,
            "provider {path}: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// From now on, whoever the browser is, the provider logs in `sub`.
    pub async fn login_as(&self, sub: &str, email: Option<&str>, email_verified: bool) {
        self.control(
            "/test/login",
            json!({ "sub": sub, "email": email, "email_verified": email_verified }),
        )
        .await;
    }

    /// From now on the provider answers logins with `error=<error>`.
    pub async fn refuse_logins(&self, error: &str) {
        self.control("/test/login", json!({ "error": error })).await;
    }

    /// Spoils the ID tokens of the first client: `wrong_audience`, `expired`, `bad_nonce`,
    /// `wrong_issuer`, `bad_signature`; `None` for good tokens again.
    pub async fn tamper(&self, mode: Option<&str>) {
        self.control(
            "/test/tamper",
            json!({ "client_id": self.clients[0].client_id, "mode": mode }),
        )
        .await;
    }

    /// What the provider wrote on stderr, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

/// A browser of one person: their client certificate towards Renkei, its own cookies at the
/// provider, no automatic redirects.
pub struct Browser {
    http: reqwest::Client,
    idp_cookies: BTreeMap<String, String>,
}

/// A flow walked up to the provider's redirect back to Renkei; both parts may be tampered
/// with before [`Browser::callback`].
#[derive(Debug, Clone)]
pub struct Flow {
    pub callback_url: String,
    /// `__Host-renkei_oidc` as the start set it.
    pub cookie: Option<String>,
}

impl Flow {
    /// A query parameter of the callback URL (`code`, `state`, `error`).
    pub fn param(&self, name: &str) -> Option<String> {
        Url::parse(&self.callback_url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The callback URL with `name` set to `value`.
    pub fn with_param(&self, name: &str, value: &str) -> Flow {
        let mut url = Url::parse(&self.callback_url).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == name {
                    value.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        Flow {
            callback_url: url.to_string(),
            cookie: self.cookie.clone(),
        }
    }

    /// The same callback sent to this app: another instance of the deployment, or the server
    /// behind its public URL.
    pub fn on(&self, app: &TestApp) -> Flow {
        let mut url = Url::parse(&self.callback_url).unwrap();
        let base = Url::parse(&app.base_url).unwrap();
        url.set_host(base.host_str()).unwrap();
        url.set_port(base.port()).unwrap();
        Flow {
            callback_url: url.to_string(),
            cookie: self.cookie.clone(),
        }
    }
}

/// What the callback answered.
#[derive(Debug)]
pub struct Landing {
    pub status: StatusCode,
    pub location: String,
    pub set_cookies: Vec<String>,
}

impl Landing {
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name && !v.is_empty()).then(|| v.to_string())
        })
    }

    pub fn session_token(&self) -> Option<String> {
        self.cookie(SESSION_COOKIE)
    }

    /// `oidc_error` of the redirect.
    pub fn error(&self) -> Option<String> {
        Url::parse("https://renkei.invalid")
            .unwrap()
            .join(&self.location)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == "oidc_error")
            .map(|(_, v)| v.into_owned())
    }

    /// `303` to `/` with the session cookie; returns the session token.
    pub fn expect_success(&self) -> String {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{self:?}");
        assert_eq!(self.location, "/", "{self:?}");
        self.session_token()
            .unwrap_or_else(|| panic!("no session cookie: {self:?}"))
    }

    /// `303` to `/?oidc_error=<reason>` without a session.
    pub fn expect_error(&self, reason: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{self:?}");
        assert_eq!(self.location, format!("/?oidc_error={reason}"), "{self:?}");
        assert_eq!(self.session_token(), None, "{self:?}");
    }
}

impl Browser {
    /// `person`'s browser (`None`: one without a client certificate). Like a real browser it
    /// speaks HTTP/2 when the server offers it (ALPN).
    pub fn new(app: &TestApp, ca: &IdpCa, person: Option<&Person>) -> Browser {
        Browser::build(app, ca, person, false)
    }

    /// The same, limited to HTTP/1.1 (which has a `Host` header; HTTP/2 has `:authority`).
    pub fn http1(app: &TestApp, ca: &IdpCa, person: Option<&Person>) -> Browser {
        Browser::build(app, ca, person, true)
    }

    fn build(app: &TestApp, ca: &IdpCa, person: Option<&Person>, http1: bool) -> Browser {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&app.server_ca_pem).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        if http1 {
            builder = builder.http1_only();
        }
        if let Some(person) = person {
            builder = builder.identity(reqwest::Identity::from_pem(&person.identity_pem).unwrap());
        }
        Browser {
            http: builder.build().unwrap(),
            idp_cookies: BTreeMap::new(),
        }
    }

    /// `GET /auth/oidc/<slug>/start`, as it is.
    pub async fn start(&self, app: &TestApp, slug: &str) -> reqwest::Response {
        self.http
            .get(app.url(&format!("/auth/oidc/{slug}/start")))
            .send()
            .await
            .expect("start request sent")
    }

    /// Start, then the provider's pages (with the cookies it sets) up to its redirect to
    /// `/auth/oidc/<slug>/callback` (on the app, or on its public URL when it has one).
    pub async fn begin(&mut self, app: &TestApp, slug: &str) -> Flow {
        let resp = self.start(app, slug).await;
        if resp.status() != StatusCode::SEE_OTHER {
            panic!(
                "start answered {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let cookie = set_cookies(&resp).into_iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((&c, ""));
            let (n, v) = pair.split_once('=')?;
            (n == FLOW_COOKIE).then(|| v.to_string())
        });
        let mut url = location(&resp, None);
        let callback_path = format!("/auth/oidc/{slug}/callback");
        for _ in 0..10 {
            let parsed = Url::parse(&url).unwrap();
            if parsed.path() == callback_path {
                return Flow {
                    callback_url: url,
                    cookie,
                };
            }
            let mut req = self.http.get(&url);
            if !self.idp_cookies.is_empty() {
                let jar: Vec<String> = self
                    .idp_cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                req = req.header(header::COOKIE, jar.join("; "));
            }
            let resp = req.send().await.expect("provider request sent");
            for c in set_cookies(&resp) {
                let (pair, attributes) = c.split_once(';').unwrap_or((&c, ""));
                let Some((n, v)) = pair.split_once('=') else {
                    continue;
                };
                let gone = v.is_empty()
                    || attributes
                        .to_ascii_lowercase()
                        .contains("expires=thu, 01 jan 1970");
                if gone {
                    self.idp_cookies.remove(n.trim());
                } else {
                    self.idp_cookies.insert(n.trim().into(), v.into());
                }
            }
            assert!(
                resp.status().is_redirection(),
                "the provider did not redirect at {url}: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
            url = location(&resp, Some(&url));
        }
        panic!("the provider never sent the browser back to Renkei (last: {url})");
    }

    /// Sends the (possibly tampered) callback, with the flow cookie when there is one.
    pub async fn callback(&self, flow: &Flow) -> Landing {
        let mut req = self.http.get(&flow.callback_url);
        if let Some(cookie) = &flow.cookie {
            req = req.header(header::COOKIE, format!("{FLOW_COOKIE}={cookie}"));
        }
        let resp = req.send().await.expect("callback request sent");
        Landing {
            status: resp.status(),
            location: resp
                .headers()
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            set_cookies: set_cookies(&resp),
        }
    }

    /// The whole flow in one go.
    pub async fn log_in(&mut self, app: &TestApp, slug: &str) -> Landing {
        let flow = self.begin(app, slug).await;
        self.callback(&flow).await
    }
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

fn location(resp: &reqwest::Response, base: Option<&str>) -> String {
    let value = resp
        .headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("a redirect without Location: {resp:?}"))
        .to_str()
        .unwrap();
    match base {
        Some(base) => Url::parse(base).unwrap().join(value).unwrap().to_string(),
        None => value.to_string(),
    }
}

/// The tenant's audit events with this action, oldest first.
pub async fn audit_events(app: &TestApp, tenant_id: Uuid, action: &str) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::TenantId.eq(tenant_id))
        .filter(audit_event::Column::Action.eq(action))
        .order_by_asc(audit_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
}

/// An event's detail object.
pub fn detail(event: &audit_event::Model) -> Value {
    serde_json::from_str(&event.detail).unwrap()
}

/// The tenant's latest `login.failure`, checked to be a federated one with this reason and
/// issuer.
pub async fn expect_failure_audit(
    app: &TestApp,
    tenant_id: Uuid,
    issuer: &str,
    reason: &str,
) -> audit_event::Model {
    let events = audit_events(app, tenant_id, "login.failure").await;
    let event = events
        .last()
        .unwrap_or_else(|| panic!("no login.failure event (wanted {reason})"))
        .clone();
    let d = detail(&event);
    assert_eq!(d["reason"], reason, "{d}");
    assert_eq!(d["method"], "oidc", "{d}");
    assert_eq!(d["issuer"], issuer, "{d}");
    event
}
