//! Issue 18, end to end: what an attacker, a fuzzer and a spec audit found. Each test pins one
//! point of the issue: login with another user's certificate, cross-site cookie requests,
//! control characters in arguments, error codes, headers, attachments of deleted notes, form 7
//! rooms, oversized bodies over HTTP/1.1 and database connections killed under a request.
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use serde_json::{Value, json};

use entity::kinds::Role;
use renkei_tests::{Gql, TestClient};

use crate::rooms::{Kita, room_with, yamada};

const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token } }";
const SESSION_COOKIE: &str = "__Host-renkei_session";
const POST_NOTE: &str = "mutation($i:PostNoteInput!){ postNote(input:$i){ id body } }";
const UPLOAD: &str =
    "mutation($r:ID!,$file:Upload!){ uploadAttachment(roomId:$r, file:$file){ id } }";
const NOTES: &str = "query($id:ID!){ room(id:$id){ notes(first: 50){ totalCount } } }";

fn jpeg() -> Vec<u8> {
    let mut bytes = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01".to_vec();
    bytes.resize(600, 0);
    bytes
}

async fn gql_of(resp: reqwest::Response) -> Gql {
    let status = resp.status();
    let text = resp.text().await.expect("a body");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), HTTP {status}: {text}"));
    Gql { status, body }
}

/// A JSON GraphQL POST with exactly these extra headers (no bearer token unless given).
async fn post_json(client: &TestClient, body: &Value, headers: &[(&str, &str)]) -> Gql {
    let mut req = client
        .http
        .post(format!("{}/graphql", client.base_url))
        .json(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    gql_of(req.send().await.expect("request sent")).await
}

/// An upload as a multipart POST with exactly these extra headers.
async fn post_upload(client: &TestClient, room: &str, headers: &[(&str, &str)]) -> Gql {
    let boundary = "renkei-hardening-boundary";
    let operations = json!({ "query": UPLOAD, "variables": { "r": room, "file": null } });
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\":[\"variables.file\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&jpeg());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req = client
        .http
        .post(format!("{}/graphql", client.base_url))
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    gql_of(req.send().await.expect("request sent")).await
}

// ---------------------------------------------------------------------------------------------
// 1. login with another user's certificate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_certificate_cannot_test_other_users_passwords() {
    let k = Kita::with_env(&[("RENKEI_LOGIN_IP_MAX_FAILURES", "4")]).await;
    let a = k.user("alice", Role::Staff, k.a).await;
    let b = k.user("bob", Role::Staff, k.a).await;
    let with_a = k.app.client_for(&a);
    let hasher = &k.app.state().hasher;

    let mut answers = Vec::new();
    for (what, login, password) in [
        (
            "B's right password",
            b.login_id.as_str(),
            b.password.as_str(),
        ),
        (
            "B's wrong password",
            b.login_id.as_str(),
            "Wrong-password-1!",
        ),
        ("an unknown login ID", "nobody", "Wrong-password-1!"),
    ] {
        let before = hasher.verifications();
        let resp = with_a
            .graphql(LOGIN, json!({ "t": "kita", "l": login, "p": password }))
            .await;
        assert_eq!(
            hasher.verifications(),
            before + 1,
            "{what}: one Argon2id verification, as for any login"
        );
        resp.expect_code("CERTIFICATE_REQUIRED");
        answers.push((what, resp.errors()[0].clone()));
    }
    for (what, error) in &answers[1..] {
        assert_eq!(error, &answers[0].1, "{what} answers like {}", answers[0].0);
    }
    // B's account is not touched by attempts with A's certificate.
    let bob = {
        use sea_orm::EntityTrait as _;
        entity::user::Entity::find_by_id(b.id)
            .one(&k.app.db)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(bob.failed_login_count, 0);
    // The attempts count against the IP: the fourth failure is the last one allowed.
    let resp = with_a
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": b.login_id, "p": b.password }),
        )
        .await;
    resp.expect_code("CERTIFICATE_REQUIRED");
    let resp = with_a
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": b.login_id, "p": b.password }),
        )
        .await;
    resp.expect_code("RATE_LIMITED");
}

// ---------------------------------------------------------------------------------------------
// 2. cross-site requests with the session cookie
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cookie_requests_must_come_from_an_allowed_origin() {
    let k = Kita::with_env(&[("RENKEI_PUBLIC_URL", "https://renkei.example.jp/base")]).await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await;
    let room_id = room["id"].as_str().unwrap().to_string();
    let token = doc_c.token.clone().unwrap();
    let cookie = format!("{SESSION_COOKIE}={token}");
    let device = k.app.client_for(&doc);
    let note = |body: &str| json!({ "query": POST_NOTE, "variables": { "i": { "roomId": room_id, "body": body } } });
    let allowed = "https://renkei.example.jp";
    let evil = "https://evil.example";

    // Refused: a foreign Origin, a cross-site fetch without Origin, a multipart without the
    // preflight header (even from the allowed origin).
    for (what, headers) in [
        (
            "foreign origin",
            vec![("cookie", cookie.as_str()), ("origin", evil)],
        ),
        (
            "the origin the request addressed",
            vec![("cookie", cookie.as_str()), ("origin", &*k.app.base_url)],
        ),
        (
            "cross-site without Origin",
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "a look-alike origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "https://renkei.example.jp.evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ] {
        let resp = post_json(&device, &note(what), &headers).await;
        assert_eq!(resp.status, 403, "{what}: {}", resp.body);
        resp.expect_code("FORBIDDEN");
    }
    for (what, headers) in [
        (
            "multipart from a foreign origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", evil),
                ("x-renkei-csrf", "1"),
            ],
        ),
        (
            "multipart without the header",
            vec![("cookie", cookie.as_str()), ("origin", allowed)],
        ),
        (
            "multipart without the header nor Origin",
            vec![("cookie", cookie.as_str())],
        ),
    ] {
        let resp = post_upload(&device, &room_id, &headers).await;
        assert_eq!(resp.status, 403, "{what}: {}", resp.body);
        resp.expect_code("FORBIDDEN");
    }
    // Nothing was posted or stored.
    let notes = doc_c.graphql(NOTES, json!({ "id": room_id })).await;
    assert_eq!(notes.ok()["room"]["notes"]["totalCount"], 0);
    assert_eq!(attachment_rows(&k).await, 0);
    // An attachment download by cookie from a cross-site page is refused too (HTTP 403).
    let resp = device
        .http
        .get(k.app.url(&format!("/attachments/{}", uuid::Uuid::new_v4())))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(gql_of(resp).await.code(), Some("FORBIDDEN"));

    // Allowed: the allowed origin, same-origin fetches, non-browser clients, and Bearer tokens
    // from anywhere.
    for (what, headers) in [
        (
            "allowed origin",
            vec![("cookie", cookie.as_str()), ("origin", allowed)],
        ),
        (
            "same-origin without Origin",
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
        ),
        (
            "no Origin (not a browser)",
            vec![("cookie", cookie.as_str())],
        ),
    ] {
        let resp = post_json(&device, &note(what), &headers).await;
        assert!(resp.errors().is_empty(), "{what}: {}", resp.body);
    }
    let bearer = format!("Bearer {token}");
    let resp = post_json(
        &device,
        &note("bearer"),
        &[("authorization", &bearer), ("origin", evil)],
    )
    .await;
    assert!(resp.errors().is_empty(), "bearer: {}", resp.body);
    let resp = post_upload(
        &device,
        &room_id,
        &[
            ("cookie", cookie.as_str()),
            ("origin", allowed),
            ("x-renkei-csrf", "1"),
        ],
    )
    .await;
    assert!(
        resp.errors().is_empty(),
        "multipart with the header: {}",
        resp.body
    );
    let resp = post_upload(
        &device,
        &room_id,
        &[
            ("cookie", cookie.as_str()),
            ("apollo-require-preflight", "true"),
        ],
    )
    .await;
    assert!(
        resp.errors().is_empty(),
        "multipart, Apollo's header: {}",
        resp.body
    );
    let resp = post_upload(
        &device,
        &room_id,
        &[("authorization", &bearer), ("origin", evil)],
    )
    .await;
    assert!(
        resp.errors().is_empty(),
        "multipart with a bearer token: {}",
        resp.body
    );
    let notes = doc_c.graphql(NOTES, json!({ "id": room_id })).await;
    assert_eq!(notes.ok()["room"]["notes"]["totalCount"], 4);
    assert_eq!(attachment_rows(&k).await, 3);
}

async fn attachment_rows(k: &Kita) -> u64 {
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    entity::attachment::Entity::find()
        .count(&k.app.db)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 10. security headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_api_answer_carries_the_security_headers() {
    let k = Kita::new().await;
    let client = k.app.client();
    let graphql = client
        .http
        .post(k.app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    let refused = client
        .http
        .post(k.app.url("/graphql"))
        .body("x")
        .send()
        .await
        .unwrap();
    let health = client.get("/healthz").await;
    let missing = client.get("/attachments/not-an-id").await;
    for (what, resp) in [
        ("graphql", graphql),
        ("refused", refused),
        ("healthz", health),
        ("attachment", missing),
    ] {
        let h = resp.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        assert_eq!(
            get("content-security-policy"),
            "default-src 'none'; frame-ancestors 'none'",
            "{what}"
        );
        assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
        assert_eq!(get("x-frame-options"), "DENY", "{what}");
        assert_eq!(get("cross-origin-resource-policy"), "same-origin", "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. NUL, control and bidi characters in every string argument
// ---------------------------------------------------------------------------------------------

const INTROSPECT: &str = "{ __schema { queryType { name } mutationType { name } types { name kind fields { name args { name type { ...T } } type { ...T } } inputFields { name type { ...T } } enumValues { name } } } } fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// The schema as introspection tells it, with what a test needs to build calls.
struct Introspected {
    types: std::collections::HashMap<String, Value>,
}

impl Introspected {
    fn named(ty: &Value) -> (&str, &str) {
        let mut t = ty;
        while t["ofType"].is_object() {
            t = &t["ofType"];
        }
        (t["kind"].as_str().unwrap(), t["name"].as_str().unwrap())
    }

    /// The GraphQL type expression (`[String!]!`) of an introspected type.
    fn type_string(ty: &Value) -> String {
        match ty["kind"].as_str().unwrap() {
            "NON_NULL" => format!("{}!", Self::type_string(&ty["ofType"])),
            "LIST" => format!("[{}]", Self::type_string(&ty["ofType"])),
            _ => ty["name"].as_str().unwrap().to_string(),
        }
    }

    /// A valid value of `ty`, with `poison` at `target` (a path of input field names) when given.
    fn value(&self, ty: &Value, target: Option<&[String]>, poison: &Value, depth: usize) -> Value {
        match ty["kind"].as_str().unwrap() {
            "NON_NULL" => self.value(&ty["ofType"], target, poison, depth),
            "LIST" => json!([self.value(&ty["ofType"], target, poison, depth)]),
            _ => {
                let name = ty["name"].as_str().unwrap();
                if let Some([]) = target {
                    return poison.clone();
                }
                match name {
                    "String" => json!("x"),
                    "ID" => json!("00000000-0000-7000-8000-000000000000"),
                    "Int" => json!(1),
                    "Float" => json!(1.0),
                    "Boolean" => json!(true),
                    "Date" => json!("2026-01-01"),
                    "DateTime" => json!("2026-01-01T00:00:00+09:00"),
                    "JSON" => json!({}),
                    _ => {
                        let t = &self.types[name];
                        match t["kind"].as_str().unwrap() {
                            "ENUM" => t["enumValues"][0]["name"].clone(),
                            "INPUT_OBJECT" => {
                                let mut out = serde_json::Map::new();
                                for f in t["inputFields"].as_array().unwrap() {
                                    let fname = f["name"].as_str().unwrap();
                                    let sub = target.and_then(|t| {
                                        (t.first().map(String::as_str) == Some(fname))
                                            .then(|| &t[1..])
                                    });
                                    let required = f["type"]["kind"] == "NON_NULL";
                                    if (required && depth < 4) || sub.is_some() {
                                        out.insert(
                                            fname.into(),
                                            self.value(&f["type"], sub, poison, depth + 1),
                                        );
                                    }
                                }
                                Value::Object(out)
                            }
                            other => panic!("no value for {name} ({other})"),
                        }
                    }
                }
            }
        }
    }

    /// Paths (input field names) of every String/ID (and JSON) inside `ty`.
    fn string_paths(&self, ty: &Value, depth: usize) -> Vec<Vec<String>> {
        let (kind, name) = Self::named(ty);
        match (kind, name) {
            ("SCALAR", "String" | "ID" | "JSON") => vec![vec![]],
            ("INPUT_OBJECT", _) if depth < 4 => {
                let mut out = Vec::new();
                for f in self.types[name]["inputFields"].as_array().unwrap() {
                    for mut p in self.string_paths(&f["type"], depth + 1) {
                        p.insert(0, f["name"].as_str().unwrap().to_string());
                        out.push(p);
                    }
                }
                out
            }
            _ => vec![],
        }
    }
}

#[tokio::test]
async fn every_string_argument_refuses_nul_with_bad_user_input() {
    let k = Kita::new().await;
    let intro = k.city.graphql(INTROSPECT, json!({})).await;
    let schema = &intro.ok()["__schema"];
    let types: std::collections::HashMap<String, Value> = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let intro = Introspected { types };
    let mut calls = 0;
    let mut failures = Vec::new();
    for (op, root) in [
        ("query", schema["queryType"]["name"].as_str().unwrap()),
        ("mutation", schema["mutationType"]["name"].as_str().unwrap()),
    ] {
        for field in intro.types[root]["fields"].as_array().unwrap() {
            let fname = field["name"].as_str().unwrap();
            let args = field["args"].as_array().unwrap();
            if args
                .iter()
                .any(|a| Introspected::named(&a["type"]).1 == "Upload")
            {
                continue; // multipart: tested on its own below
            }
            let (ret_kind, _) = Introspected::named(&field["type"]);
            let selection = if matches!(ret_kind, "SCALAR" | "ENUM") {
                ""
            } else {
                "{ __typename }"
            };
            for (ai, arg) in args.iter().enumerate() {
                for target in intro.string_paths(&arg["type"], 0) {
                    let (_, leaf_type) = {
                        // JSON takes an object holding the NUL; the others the string itself.
                        let mut t = &arg["type"];
                        for step in &target {
                            let (_, n) = Introspected::named(t);
                            t = &intro.types[n]["inputFields"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|f| f["name"] == step.as_str())
                                .unwrap()["type"];
                        }
                        Introspected::named(t)
                    };
                    let poison = if leaf_type == "JSON" {
                        json!({ "name": "a\u{0}b" })
                    } else {
                        json!("a\u{0}b")
                    };
                    let mut defs = Vec::new();
                    let mut uses = Vec::new();
                    let mut vars = serde_json::Map::new();
                    for (bi, other) in args.iter().enumerate() {
                        let required = other["type"]["kind"] == "NON_NULL";
                        if bi != ai && !required {
                            continue;
                        }
                        let var = format!("v{bi}");
                        defs.push(format!(
                            "${var}: {}",
                            Introspected::type_string(&other["type"])
                        ));
                        uses.push(format!("{}: ${var}", other["name"].as_str().unwrap()));
                        let t = (bi == ai).then_some(target.as_slice());
                        vars.insert(var, intro.value(&other["type"], t, &poison, 0));
                    }
                    let query = format!(
                        "{op}({}) {{ {fname}({}) {selection} }}",
                        defs.join(", "),
                        uses.join(", ")
                    );
                    let resp = k.city.graphql(&query, Value::Object(vars.clone())).await;
                    calls += 1;
                    let what = format!("{fname}({}.{})", arg["name"], target.join("."));
                    if resp.code() != Some("BAD_USER_INPUT") || resp.field().is_none() {
                        failures.push(format!("{what}: {}", resp.body));
                    }
                }
            }
        }
    }
    assert!(calls > 100, "walked only {calls} arguments");
    assert!(
        failures.is_empty(),
        "{} of {calls} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Inline literals, identifiers and free text.
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await;
    let room_id = room["id"].as_str().unwrap();
    let inline = format!(
        "mutation {{ postNote(input: {{ roomId: \"{room_id}\", body: \"x\\u0000y\" }}) {{ id }} }}"
    );
    let resp = doc_c.graphql(&inline, json!({})).await;
    resp.expect_code("BAD_USER_INPUT");
    assert_eq!(resp.field(), Some("body"));
    for (what, input, ok) in [
        (
            "free text keeps line breaks and tabs",
            json!({ "roomId": room_id, "body": "a\nb\tc\r\nd" }),
            true,
        ),
        (
            "free text refuses other C0",
            json!({ "roomId": room_id, "body": "a\u{7}b" }),
            false,
        ),
        (
            "free text refuses bidi overrides",
            json!({ "roomId": room_id, "body": "a\u{202E}b" }),
            false,
        ),
        (
            "identifiers refuse line breaks",
            json!({ "roomId": room_id, "body": "ok", "clientMutationId": "a\nb" }),
            false,
        ),
        (
            "identifiers refuse bidi isolates",
            json!({ "roomId": room_id, "body": "ok", "clientMutationId": "a\u{2067}b" }),
            false,
        ),
    ] {
        let resp = doc_c.graphql(POST_NOTE, json!({ "i": input })).await;
        if ok {
            assert!(resp.errors().is_empty(), "{what}: {}", resp.body);
        } else {
            resp.expect_code("BAD_USER_INPUT");
        }
    }
    // A multipart file name is input too.
    let resp = doc_c
        .graphql_upload(
            UPLOAD,
            json!({ "r": room_id, "file": null }),
            "variables.file",
            renkei_tests::UploadFile {
                name: "photo\u{202E}gpj.exe",
                content_type: "image/jpeg",
                bytes: &jpeg(),
            },
        )
        .await;
    resp.expect_code("BAD_USER_INPUT");
    assert_eq!(resp.field(), Some("file"));
}

// ---------------------------------------------------------------------------------------------
// 4. query cost
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn nested_connections_and_alias_floods_are_refused_before_running() {
    let k = Kita::with_env(&[("RENKEI_GRAPHQL_MAX_RESPONSE_BYTES", "20000")]).await;
    let nested = "{ users(first: 100) { edges { node { id facility { staff(first: 100) { edges { node { id facility { staff(first: 100) { edges { node { id } } } } } } } } } } } }";
    let aliases: String = (0..10_000).map(|i| format!("a{i}: __typename ")).collect();
    let small_aliases: String = (0..5_001).map(|i| format!("a{i}: __typename ")).collect();
    for (what, query) in [
        ("users > staff > staff", nested.to_string()),
        ("10,000 aliases of __typename", format!("{{ {aliases} }}")),
        (
            "2,001 aliases of __typename",
            format!("{{ {small_aliases} }}"),
        ),
        (
            "one connection of 100 with 51 fields",
            format!(
                "{{ users(first: 100) {{ edges {{ node {{ {} }} }} }} }}",
                (0..49).map(|i| format!("f{i}: id ")).collect::<String>()
            ),
        ),
    ] {
        let resp = k.city.graphql(&query, json!({})).await;
        resp.expect_code("GRAPHQL_VALIDATION_FAILED");
        assert!(
            resp.body.get("data").is_none_or(Value::is_null),
            "{what}: nothing ran"
        );
    }
    // Within the limit (5,000): 4,999 fields are fine, and so is a page of 100 with 49 fields.
    let fine: String = (0..4_999).map(|i| format!("a{i}: __typename ")).collect();
    let resp = k.city.graphql(&format!("{{ {fine} }}"), json!({})).await;
    // … but its answer passes the response ceiling set for this test (20,000 bytes).
    resp.expect_code("BAD_REQUEST");
    let page = format!(
        "{{ users(first: 100) {{ edges {{ node {{ {} }} }} }} }}",
        (0..47).map(|i| format!("f{i}: id ")).collect::<String>()
    );
    k.city.graphql(&page, json!({})).await.ok();
    let small: String = (0..500).map(|i| format!("a{i}: __typename ")).collect();
    k.city
        .graphql(&format!("{{ {small} }}"), json!({}))
        .await
        .ok();
}

// ---------------------------------------------------------------------------------------------
// 5. every error carries a code
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn parse_validation_and_coercion_errors_carry_codes() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await;
    let room_id = room["id"].as_str().unwrap();
    let mut deep = "id".to_string();
    for _ in 0..5 {
        deep = format!("facility {{ staff(first: 1) {{ edges {{ node {{ {deep} }} }} }} }}");
    }
    let deep = format!("{{ me {{ {deep} }} }}");
    for (what, query, vars, code) in [
        ("parse", "{ me { id ", json!({}), "GRAPHQL_PARSE_FAILED"),
        (
            "unknown field",
            "{ me { idd } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "wrong argument type",
            "{ rooms(first: \"x\") { totalCount } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "variable coercion",
            "query($n:Int){ rooms(first:$n) { totalCount } }",
            json!({ "n": "many" }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "missing variable",
            "query($n:Int!){ rooms(first:$n) { totalCount } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "too deep",
            deep.as_str(),
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "unknown operation name",
            "query A { me { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        let mut body = json!({ "query": query, "variables": vars });
        if what == "unknown operation name" {
            body["operationName"] = json!("B");
        }
        let resp = post_json(
            &doc_c,
            &body,
            &[(
                "authorization",
                &format!("Bearer {}", doc_c.token.clone().unwrap()),
            )],
        )
        .await;
        assert!(!resp.errors().is_empty(), "{what}: {}", resp.body);
        for e in resp.errors() {
            assert_eq!(e["extensions"]["code"], code, "{what}: {}", resp.body);
        }
        // graphql-response+json: HTTP 400 and no `data` key.
        let modern = post_json(
            &doc_c,
            &body,
            &[
                (
                    "authorization",
                    &format!("Bearer {}", doc_c.token.clone().unwrap()),
                ),
                ("accept", "application/graphql-response+json"),
            ],
        )
        .await;
        assert_eq!(modern.status, 400, "{what}: {}", modern.body);
        assert!(modern.body.get("data").is_none(), "{what}: {}", modern.body);
    }
    // A date that does not parse names its field.
    let resp = doc_c
        .graphql(
            "query($r:ID!,$f:DateTime){ room(id:$r){ vitals(from:$f){ totalCount } } }",
            json!({ "r": room_id, "f": "yesterday" }),
        )
        .await;
    assert_eq!(resp.code(), Some("BAD_USER_INPUT"), "{}", resp.body);
    assert_eq!(resp.field(), Some("from"), "{}", resp.body);
    // HTTP-level refusals: BAD_REQUEST with their status.
    let too_big = "x".repeat(1_100_000);
    let resp = post_json(&doc_c, &json!({ "query": too_big }), &[]).await;
    assert_eq!(resp.status, 413);
    resp.expect_code("BAD_REQUEST");
    let resp = gql_of(
        doc_c
            .http
            .post(k.app.url("/graphql"))
            .header("content-type", "text/plain")
            .body("{ me { id } }")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, 415);
    resp.expect_code("BAD_REQUEST");
    let resp = post_json(
        &doc_c,
        &json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]),
        &[],
    )
    .await;
    assert_eq!(resp.status, 400);
    resp.expect_code("BAD_REQUEST");
}

#[tokio::test]
async fn production_validation_messages_make_no_suggestions() {
    let prod = renkei_tests::spawn_app_with(renkei_tests::TestOptions {
        env: vec![
            ("RENKEI_ENV".into(), "production".into()),
            (
                "RENKEI_MASTER_KEY".into(),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let dev = renkei_tests::spawn_app().await;
    for (app, suggests) in [(&prod, false), (&dev, true)] {
        let resp = app.client().graphql("{ me { loginI } }", json!({})).await;
        resp.expect_code("GRAPHQL_VALIDATION_FAILED");
        let message = resp.errors()[0]["message"].as_str().unwrap();
        // The same query; only the environment differs.
        assert_eq!(message.contains("Did you mean"), suggests, "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. a database connection killed under a request
// ---------------------------------------------------------------------------------------------

/// Holds `ACCESS EXCLUSIVE` on `users` from the test's own connection, waits until one of the
/// app's connections is blocked on it (the request in flight), terminates that backend with
/// `pg_terminate_backend`, then releases the lock.
async fn kill_the_blocked_backend(k: &Kita, request: impl std::future::Future<Output = ()>) {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let db_name = k
        .app
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let admin = sea_orm::Database::connect(renkei_tests::pg_admin_url())
        .await
        .unwrap();
    let locker = sea_orm::Database::connect(k.app.database_url.clone())
        .await
        .unwrap();
    let txn = locker.begin().await.unwrap();
    txn.execute_unprepared("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let killer = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let killed = admin
                .query_all_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                    [db_name.clone().into()],
                ))
                .await
                .unwrap();
            if !killed.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the request never blocked on the lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::join!(request, killer);
    txn.rollback().await.unwrap();
}

#[tokio::test]
async fn a_connection_killed_under_a_request_is_unavailable() {
    if renkei_tests::backend() != renkei_tests::Backend::Postgres {
        eprintln!("skipped on SQLite: pg_terminate_backend is PostgreSQL's");
        return;
    }
    let k = Kita::new().await;
    let (_doc, doc_c) = k.staff("doc", k.a).await;

    // GraphQL: the session's user is read while `users` is locked; its connection dies.
    let resp = std::sync::Mutex::new(None);
    kill_the_blocked_backend(&k, async {
        *resp.lock().unwrap() = Some(doc_c.graphql("{ me { id } }", json!({})).await);
    })
    .await;
    let resp = resp.into_inner().unwrap().unwrap();
    resp.expect_code("UNAVAILABLE");

    // A plain route: 503 with the same code.
    let status = std::sync::Mutex::new(None);
    kill_the_blocked_backend(&k, async {
        let r = doc_c
            .get(&format!("/attachments/{}", uuid::Uuid::new_v4()))
            .await;
        *status.lock().unwrap() = Some((r.status(), gql_of(r).await));
    })
    .await;
    let (status, body) = status.into_inner().unwrap().unwrap();
    assert_eq!(status, 503, "{}", body.body);
    body.expect_code("UNAVAILABLE");

    // And the server recovers by itself once the database is back.
    doc_c.graphql("{ me { id } }", json!({})).await.ok();
}

// ---------------------------------------------------------------------------------------------
// 7. form 7 names only rooms the facility already works in
// ---------------------------------------------------------------------------------------------

const SUBMIT_CHANGE: &str =
    "mutation($f:ID!,$p:JSON!){ submitChange(facilityId:$f, payload:$p){ id status } }";
const REVIEW_CHANGE: &str = "mutation($id:ID!){ reviewApplication(id:$id, approve:true){ application { id status } issued { user { id } } } }";

#[tokio::test]
async fn a_staff_change_reaches_only_rooms_where_the_facility_has_a_member() {
    use crate::rooms::{REMOVE_MEMBER, patient};
    let k = Kita::new().await;
    let (head, head_c) = k.person("head", Role::FacilityAdmin, k.a).await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.b).await;
    let ours = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await;
    let ours = ours["id"].as_str().unwrap().to_string();
    let theirs = room_with(
        &k.city,
        patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
        &[(&nurse, &nurse_c)],
        &[],
    )
    .await;
    let theirs = theirs["id"].as_str().unwrap().to_string();
    let _ = head;
    let change = |rooms: Vec<&str>| json!({ "addStaff": [{ "displayName": "新人 看護師", "occupation": "NURSE", "roomIds": rooms }] });

    // A room where the facility has nobody: refused like a room that does not exist.
    let resp = head_c
        .graphql(
            SUBMIT_CHANGE,
            json!({ "f": k.a.to_string(), "p": change(vec![&ours, &theirs]) }),
        )
        .await;
    resp.expect_code("BAD_USER_INPUT");
    assert_eq!(
        resp.field(),
        Some("addStaff[0].roomIds[1]"),
        "{}",
        resp.body
    );

    // Its own room passes at submit, and approval invites the new person into it.
    let ok = head_c
        .graphql(
            SUBMIT_CHANGE,
            json!({ "f": k.a.to_string(), "p": change(vec![&ours]) }),
        )
        .await;
    let first = ok.ok()["submitChange"]["id"].as_str().unwrap().to_string();
    let later = head_c
        .graphql(
            SUBMIT_CHANGE,
            json!({ "f": k.a.to_string(), "p": change(vec![&ours]) }),
        )
        .await;
    let later = later.ok()["submitChange"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approved = k.city.graphql(REVIEW_CHANGE, json!({ "id": first })).await;
    assert_eq!(
        approved.ok()["reviewApplication"]["application"]["status"],
        "APPROVED"
    );

    // Checked again at approval: once the facility's member has left, the change is refused.
    k.city
        .graphql(
            REMOVE_MEMBER,
            json!({ "r": ours, "u": doc.id.to_string(), "why": "担当終了" }),
        )
        .await
        .ok();
    let resp = k.city.graphql(REVIEW_CHANGE, json!({ "id": later })).await;
    resp.expect_code("CONFLICT");
    let invited_later = {
        use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
        entity::invitation::Entity::find()
            .filter(entity::invitation::Column::RoomId.eq(uuid::Uuid::parse_str(&ours).unwrap()))
            .count(&k.app.db)
            .await
            .unwrap()
    };
    // The set-up's invitation of the doctor and the first change's one: nothing from the second.
    assert_eq!(invited_later, 2);
}
