use serde_json::{Value, json};

use renkei_tests::{TestOptions, spawn_app, spawn_app_with};

#[tokio::test]
async fn typename_query_answers_over_http2() {
    let app = spawn_app().await;
    let resp = app
        .client()
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
}

#[tokio::test]
async fn graphql_response_json_is_used_when_asked_with_400_for_invalid_requests() {
    let app = spawn_app().await;
    let http = &app.client().http;
    let ask = |query: &'static str| {
        http.post(app.url("/graphql"))
            .header(
                "accept",
                "application/graphql-response+json, application/json;q=0.9",
            )
            .json(&json!({ "query": query }))
            .send()
    };
    let ok = ask("{ __typename }").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["content-type"],
        "application/graphql-response+json"
    );

    let invalid = ask("{ noSuchField }").await.unwrap();
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("noSuchField")
    );

    // The same invalid request with plain application/json is 200, per GraphQL over HTTP.
    let legacy = http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ noSuchField }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);
    assert_eq!(legacy.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn unauthenticated_field_errors_carry_the_contract_code() {
    let app = spawn_app().await;
    let resp = app.client().graphql("{ tenant { id } }", json!({})).await;
    resp.expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn other_content_types_and_malformed_json_are_refused() {
    let app = spawn_app().await;
    let http = &app.client().http;
    let text = http
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body("{ __typename }")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let broken = http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused() {
    let app = spawn_app_with(TestOptions {
        env: vec![("RENKEI_MAX_BODY_BYTES".into(), "2048".into())],
        ..Default::default()
    })
    .await;
    let padding = "x".repeat(4096);
    let resp = app
        .client()
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": format!("{{ __typename }} # {padding}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn deep_queries_are_refused() {
    let app = spawn_app_with(TestOptions {
        env: vec![("RENKEI_GRAPHQL_MAX_DEPTH".into(), "3".into())],
        ..Default::default()
    })
    .await;
    let deep = "{ __schema { types { fields { type { name } } } } }";
    let resp = app.client().graphql(deep, json!({})).await;
    let message = resp.errors()[0]["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("nested too deep"), "{}", resp.body);
}

#[tokio::test]
async fn introspection_is_on_in_development_and_off_in_production() {
    let dev = spawn_app().await;
    let resp = dev
        .client()
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(resp.ok()["__schema"]["queryType"]["name"], "Query");

    let prod = spawn_app_with(TestOptions {
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
    let resp = prod
        .client()
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(
        resp.data()["__schema"].is_null(),
        "introspection answered in production: {}",
        resp.body
    );
    assert!(!resp.body.to_string().contains("Query"), "{}", resp.body);
    // GraphiQL is a development tool too.
    let page = prod
        .client()
        .http
        .get(prod.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 405);
}

#[tokio::test]
async fn get_with_html_accept_serves_graphiql() {
    let app = spawn_app().await;
    let page = app
        .client()
        .http
        .get(app.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("graphiql"), "not GraphiQL");
    assert!(html.contains("/graphql/ws"));
    let plain = app.client().get("/graphql").await;
    assert_eq!(plain.status(), 405);
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = spawn_app().await;
    let resp = app.client().get("/healthz").await;
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers().contains_key("strict-transport-security"));
}
