//! Typed HTTPS clients for tests: GraphQL calls with an optional client certificate and session.

use serde_json::{Value, json};

use crate::TestApp;

#[derive(Clone)]
pub struct TestClient {
    pub http: reqwest::Client,
    pub base_url: String,
    pub token: Option<String>,
}

/// A GraphQL response, with helpers to read the error code the contract promises.
#[derive(Debug, Clone)]
pub struct Gql {
    pub status: reqwest::StatusCode,
    pub body: Value,
}

impl Gql {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn errors(&self) -> &[Value] {
        self.body["errors"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// `extensions.code` of the first error.
    pub fn code(&self) -> Option<&str> {
        self.errors().first()?["extensions"]["code"].as_str()
    }
    pub fn field(&self) -> Option<&str> {
        self.errors().first()?["extensions"]["field"].as_str()
    }
    /// Panics with the whole response when there were errors.
    pub fn ok(&self) -> &Value {
        assert!(self.errors().is_empty(), "unexpected errors: {}", self.body);
        self.data()
    }
    /// Asserts the first error has this code.
    pub fn expect_code(&self, code: &str) {
        assert_eq!(
            self.code(),
            Some(code),
            "expected {code}, got {}",
            self.body
        );
    }
}

impl TestClient {
    pub fn new(app: &TestApp, identity_pem: Option<&[u8]>) -> Self {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&app.server_ca_pem).unwrap())
            .https_only(true)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem).unwrap());
        }
        TestClient {
            http: builder.build().unwrap(),
            base_url: app.base_url.clone(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub async fn graphql(&self, query: &str, variables: Value) -> Gql {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON body");
        Gql { status, body }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{}", self.base_url, path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }
}

/// One file of a GraphQL multipart request.
#[derive(Debug, Clone)]
pub struct UploadFile<'a> {
    /// The client's file name, sent as is in the part's `Content-Disposition`.
    pub name: &'a str,
    /// The part's `Content-Type` (what the client claims, not necessarily what the bytes are).
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

impl TestClient {
    /// A GraphQL multipart request (https://github.com/jaydenseric/graphql-multipart-request-spec):
    /// parts `operations`, `map` and the file as part `0`, mapped to the variable path `variable`
    /// (e.g. `variables.file`, whose value in `variables` should be null).
    pub async fn graphql_upload(
        &self,
        query: &str,
        variables: Value,
        variable: &str,
        file: UploadFile<'_>,
    ) -> Gql {
        let boundary = format!("renkei-test-{}", uuid::Uuid::new_v4().simple());
        let operations = json!({ "query": query, "variables": variables }).to_string();
        let map = json!({ "0": [variable] }).to_string();
        let mut body: Vec<u8> = Vec::with_capacity(file.bytes.len() + 1024);
        for (name, value) in [("operations", operations), ("map", map)] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                file.name, file.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(file.bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut req = self
            .http
            .post(format!("{}/graphql", self.base_url))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("a body");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), HTTP {status}: {text}"));
        Gql { status, body }
    }
}
