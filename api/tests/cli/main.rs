//! The `renkei` binary as a user runs it: exit codes, one-line errors, first start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn renkei() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_renkei"));
    // The developer's own settings must not leak into these tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("RENKEI_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn bad_setting_exits_2_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = renkei()
        .current_dir(dir.path())
        .arg("serve")
        .env("RENKEI_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("RENKEI_LISTEN"), "{lines:?}");
}

#[test]
fn bad_setting_in_config_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("renkei.toml"), "graphql_max_depth = -3\n").unwrap();
    let out = renkei()
        .current_dir(dir.path())
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert!(
        lines[0].contains("graphql_max_depth") && lines[0].contains("renkei.toml"),
        "{lines:?}"
    );
}

#[test]
fn unreachable_database_is_one_line_and_quick() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = renkei()
        .current_dir(dir.path())
        .arg("serve")
        .env(
            "RENKEI_DATABASE_URL",
            "postgres://renkei:secretpw@127.0.0.1:1/renkei",
        )
        .env("RENKEI_DATABASE_CONNECT_TIMEOUT_SECONDS", "2")
        .env("RENKEI_LOG", "off")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("database") && lines[0].contains("unreachable"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("secretpw"), "password leaked: {lines:?}");
}

#[test]
fn unreachable_redis_is_one_line_and_quick() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = renkei()
        .current_dir(dir.path())
        .arg("serve")
        .env("RENKEI_LISTEN", "127.0.0.1:0")
        .env("RENKEI_REDIS_URL", "redis://:redispw@127.0.0.1:1")
        .env("RENKEI_REDIS_TIMEOUT_SECONDS", "1")
        .env("RENKEI_LOG", "off")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("redis") && lines[0].contains("unreachable"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("redispw"), "password leaked: {lines:?}");
}

#[test]
fn schema_prints_the_sdl_and_nothing_else() {
    let out = renkei().arg("schema").output().unwrap();
    assert!(out.status.success());
    let sdl = String::from_utf8(out.stdout).unwrap();
    assert!(sdl.contains("type Query"));
    assert!(out.stderr.is_empty());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql")).unwrap();
    assert_eq!(
        sdl, committed,
        "schema.graphql is stale: run `cargo run -q -p renkei-api -- schema > schema.graphql`"
    );
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["migrate", "down", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = renkei().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn migrate_up_status_down_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = renkei()
            .current_dir(dir.path())
            .args(args)
            .env("RENKEI_LOG", "off")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["migrate", "status"]).contains("Pending"));
    run(&["migrate", "up"]);
    let status = run(&["migrate", "status"]);
    assert!(
        status.contains("Applied") && !status.contains("Pending"),
        "{status}"
    );
    run(&["migrate", "down", "--steps", "1"]);
    assert!(run(&["migrate", "status"]).contains("Pending"));
}

/// The README's first command on a fresh checkout: `renkei serve` creates ./data and answers.
/// (How fast it starts is a benchmark figure, not asserted here: a busy CI machine varies.)
#[tokio::test]
async fn serve_on_a_fresh_directory_creates_data_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let mut child = renkei()
        .current_dir(dir.path())
        .arg("serve")
        .env("RENKEI_LISTEN", format!("127.0.0.1:{port}"))
        .env("RENKEI_LOG", "warn")
        // Far longer than the wait below: a shutdown that waited for the grace period shows.
        .env("RENKEI_SHUTDOWN_GRACE_SECONDS", "600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The self-signed certificate is the point of this test, not something to verify here.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut healthy = None;
    while started.elapsed() < Duration::from_secs(120) {
        if let Ok(resp) = client
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            healthy = Some(resp.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = client
        .get(format!("https://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| r.status());
    // Closing our connections first: with none in flight, shutdown must not wait for the grace period.
    drop(client);
    let stopping = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stopping.elapsed() < Duration::from_secs(300),
        "shutdown waited for the grace period: {:?}",
        stopping.elapsed()
    );
    let code = healthy.expect("healthz answered");
    assert_eq!(code, 200);
    assert_eq!(ready.unwrap(), 200);
    assert!(dir.path().join("data/renkei.db").exists());
    assert!(dir.path().join("data/tls/server.crt").exists());
    assert!(
        status.success(),
        "SIGTERM should end serve cleanly: {status:?}"
    );
}

#[test]
fn tenant_create_writes_private_credentials_and_expiring_lists_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        renkei()
            .current_dir(dir.path())
            .args(args)
            .env("RENKEI_LOG", "off")
            .output()
            .unwrap()
    };
    let out = run(&[
        "tenant",
        "create",
        "--slug",
        "kita",
        "--name",
        "北区",
        "--admin",
        "kita-admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let creds_path = dir.path().join("data/tenants/kita/credentials.json");
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&creds_path).unwrap()).unwrap();
    let password = creds["password"].as_str().unwrap();
    assert_eq!(password.chars().count(), 16);
    assert!(
        !stdout.contains(password),
        "the password must not be printed"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(creds["loginId"], "kita-admin");

    // The same slug again is refused.
    let again = run(&[
        "tenant", "create", "--slug", "kita", "--name", "x", "--admin", "other",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // A bad slug names the field.
    let bad = run(&[
        "tenant", "create", "--slug", "Kita!", "--name", "x", "--admin", "adm",
    ]);
    assert!(!bad.status.success());

    // Default validity is two years: nothing within 30 days, the admin's within 800.
    let soon = run(&[
        "certificates",
        "expiring",
        "--tenant",
        "kita",
        "--within",
        "30d",
    ]);
    assert!(soon.status.success());
    assert!(!String::from_utf8_lossy(&soon.stdout).contains("kita-admin"));
    let later = run(&[
        "certificates",
        "expiring",
        "--tenant",
        "kita",
        "--within",
        "800d",
    ]);
    assert!(String::from_utf8_lossy(&later.stdout).contains("kita-admin"));
    let unknown = run(&["certificates", "expiring", "--tenant", "nowhere"]);
    assert!(!unknown.status.success());
}

// ---------------------------------------------------------------------------------------------
// renkei audit: export, purge, verify
// ---------------------------------------------------------------------------------------------

/// The keys of one exported event, in the order of the CSV header.
const AUDIT_KEYS: [&str; 15] = [
    "id",
    "chain",
    "seq",
    "at",
    "actorId",
    "sessionHash",
    "action",
    "targetType",
    "targetId",
    "roomId",
    "outcome",
    "ip",
    "certificateSerial",
    "detail",
    "hash",
];

/// `renkei <args>` in `dir` (its ./data), logs off, with extra settings.
fn run_in(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = renkei();
    cmd.current_dir(dir)
        .args(args)
        .env("RENKEI_LOG", "off")
        .env("RENKEI_BOOTSTRAP", "false");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.output().unwrap()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `renkei tenant create` wrote for the first CITY_ADMIN, as a device would hold it.
struct AdminCredentials {
    tenant: String,
    login_id: String,
    password: String,
    identity_pem: Vec<u8>,
}

fn create_tenant_in(dir: &std::path::Path, slug: &str) -> AdminCredentials {
    let out = run_in(
        dir,
        &[
            "tenant", "create", "--slug", slug, "--name", "北区", "--admin", "chief",
        ],
        &[],
    );
    assert_success(&out, "tenant create");
    let tenant_dir = dir.join("data/tenants").join(slug);
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tenant_dir.join("credentials.json")).unwrap())
            .unwrap();
    let p12 = std::fs::read(tenant_dir.join(creds["pkcs12Path"].as_str().unwrap())).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        creds["pkcs12Password"].as_str().unwrap(),
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .unwrap();
    let (_, chain) = store.private_key_chain().unwrap();
    let mut pem = String::new();
    for cert in chain.certs() {
        pem.push_str(&pem_block("CERTIFICATE", cert.as_der()));
    }
    pem.push_str(&pem_block("PRIVATE KEY", chain.key().as_der()));
    AdminCredentials {
        tenant: slug.to_string(),
        login_id: creds["loginId"].as_str().unwrap().to_string(),
        password: creds["password"].as_str().unwrap().to_string(),
        identity_pem: pem.into_bytes(),
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Runs `renkei serve` in `dir` just long enough for the admin to log in with `wrong` wrong
/// passwords and then the right one (each recorded in the audit log), then stops it with SIGTERM.
async fn serve_and_log_in(dir: &std::path::Path, admin: &AdminCredentials, wrong: usize) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = renkei()
        .current_dir(dir)
        .arg("serve")
        .env("RENKEI_LISTEN", format!("127.0.0.1:{port}"))
        .env("RENKEI_LOG", "off")
        .env("RENKEI_BOOTSTRAP", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server's self-signed certificate is not what these tests are about.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(&admin.identity_pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(resp) = client
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && resp.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login = |password: String| {
        let client = client.clone();
        let body = serde_json::json!({
            "query": "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token } }",
            "variables": { "t": admin.tenant, "l": admin.login_id, "p": password },
        });
        async move {
            client
                .post(format!("https://127.0.0.1:{port}/graphql"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    for i in 0..wrong {
        let resp = login(format!("Wrong-password-{i}")).await;
        assert_eq!(
            resp["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{resp}"
        );
    }
    let resp = login(admin.password.clone()).await;
    assert!(resp["data"]["login"]["token"].is_string(), "{resp}");
    drop(client);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "serve did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "serve ended with {status:?}");
}

/// The SQLite database `renkei` keeps in `dir`, opened directly (as someone with access to the
/// file could).
async fn open_database(dir: &std::path::Path) -> sea_orm::DatabaseConnection {
    sea_orm::Database::connect(format!(
        "sqlite://{}?mode=rw",
        dir.join("data/renkei.db").display()
    ))
    .await
    .unwrap()
}

/// `renkei audit export --format jsonl`: one JSON object per line.
fn export_jsonl(dir: &std::path::Path, slug: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "export", "--tenant", slug, "--format", "jsonl"];
    args.extend_from_slice(extra);
    let out = run_in(dir, &args, &[]);
    assert_success(&out, "audit export");
    parse_jsonl(&stdout_of(&out))
}

fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

fn at_of(event: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("`at` is not RFC 3339 ({e}): {event}"))
}

fn ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn count_action(events: &[serde_json::Value], action: &str) -> usize {
    events.iter().filter(|e| e["action"] == action).count()
}

/// The exported events of one chain (`changes` or `reads`), in export order.
fn in_chain<'a>(events: &'a [serde_json::Value], chain: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["chain"] == chain).collect()
}

/// Oldest first, one unbroken run of `seq` in each chain, times in order, every key of the
/// format.
fn assert_export_shape(events: &[serde_json::Value]) {
    for e in events {
        let keys: std::collections::BTreeSet<&str> =
            e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            AUDIT_KEYS.iter().copied().collect(),
            "keys of an exported event: {e}"
        );
        assert!(e["detail"].is_object(), "detail is an object: {e}");
        let hash = e["hash"].as_str().unwrap();
        assert!(
            hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{e}"
        );
        assert!(
            ["ALLOWED", "DENIED", "FAILED"].contains(&e["outcome"].as_str().unwrap()),
            "{e}"
        );
        assert!(
            ["changes", "reads"].contains(&e["chain"].as_str().unwrap()),
            "{e}"
        );
        at_of(e);
    }
    for chain in ["changes", "reads"] {
        for pair in in_chain(events, chain).windows(2) {
            assert_eq!(
                pair[1]["seq"].as_i64().unwrap(),
                pair[0]["seq"].as_i64().unwrap() + 1,
                "oldest first, no gaps: {} then {}",
                pair[0],
                pair[1]
            );
        }
    }
    for pair in events.windows(2) {
        assert!(at_of(&pair[0]) <= at_of(&pair[1]), "{pair:?}");
    }
}

/// A minimal RFC 4180 reader: quoted fields, doubled quotes, line breaks inside quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn assert_no_progress_bar(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "a progress bar on a stderr that is not a terminal: {stderr:?}"
    );
}

#[tokio::test]
async fn audit_export_writes_jsonl_and_csv_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_tenant_in(dir.path(), "kita");
    serve_and_log_in(dir.path(), &admin, 2).await;

    let out = run_in(
        dir.path(),
        &["audit", "export", "--tenant", "kita", "--format", "jsonl"],
        &[],
    );
    assert_success(&out, "audit export jsonl");
    assert_no_progress_bar(&out);
    let jsonl = stdout_of(&out);
    let events = parse_jsonl(&jsonl);
    assert_export_shape(&events);
    assert_eq!(
        (&events[0]["chain"], &events[0]["seq"]),
        (&serde_json::json!("changes"), &serde_json::json!(1)),
        "the whole log, from its start"
    );
    // Tenant creation (the tenant, its admin, the admin's certificate); then the logins.
    assert_eq!(events[0]["action"], "tenant.create", "{:#?}", events);
    assert_eq!(events[0]["detail"]["slug"], "kita", "{}", events[0]);
    assert_eq!(events[1]["action"], "user.create", "{:#?}", events);
    assert_eq!(
        events[1]["targetId"], events[0]["detail"]["adminUserId"],
        "{:#?}",
        events
    );
    assert_eq!(events[2]["action"], "certificate.issue", "{:#?}", events);
    assert!(events[2]["detail"]["serial"].is_string(), "{}", events[2]);
    assert_eq!(count_action(&events, "login.failure"), 2, "{events:#?}");
    assert_eq!(count_action(&events, "login.success"), 1, "{events:#?}");
    let failures: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["action"] == "login.failure")
        .collect();
    for f in &failures {
        assert_eq!(f["detail"]["reason"], "wrong_password", "{f}");
        assert_eq!(f["outcome"], "FAILED");
        assert_eq!(f["ip"], "127.0.0.1");
        assert!(f["actorId"].is_string(), "{f}");
        assert!(f["certificateSerial"].is_string(), "{f}");
    }
    let success = events
        .iter()
        .find(|e| e["action"] == "login.success")
        .unwrap();
    assert!(
        success["sessionHash"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{success}"
    );
    assert!(
        !jsonl.contains(&admin.password) && !jsonl.contains("Wrong-password-"),
        "passwords in the export"
    );

    // --from: only the events from then on (inclusive).
    let from = failures[0]["at"].as_str().unwrap();
    let since = export_jsonl(dir.path(), "kita", &["--from", from]);
    let expected: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| at_of(e) >= at_of(failures[0]))
        .cloned()
        .collect();
    assert_eq!(ids(&since), ids(&expected));
    assert!(!ids(&since).contains(&events[0]["id"].as_str().unwrap().to_string()));
    // --to: before then (exclusive).
    let until = export_jsonl(dir.path(), "kita", &["--to", from]);
    assert_eq!(ids(&until).len() + ids(&since).len(), events.len());
    // A whole day as a date, in the tenant's time zone: everything of today and earlier.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(
        ids(&export_jsonl(dir.path(), "kita", &["--to", &tomorrow])),
        ids(&events)
    );

    // CSV: the same events, the header first, detail as JSON text.
    let out = run_in(
        dir.path(),
        &["audit", "export", "--tenant", "kita", "--format", "csv"],
        &[],
    );
    assert_success(&out, "audit export csv");
    let csv = stdout_of(&out);
    assert_eq!(
        csv.lines().next().unwrap().trim_end(),
        AUDIT_KEYS.join(","),
        "the CSV header"
    );
    let rows = parse_csv(&csv);
    assert_eq!(rows.len(), events.len() + 1, "{csv}");
    for (row, event) in rows[1..].iter().zip(&events) {
        assert_eq!(row.len(), AUDIT_KEYS.len(), "{row:?}");
        assert_eq!(row[0], event["id"].as_str().unwrap());
        assert_eq!(row[1], event["chain"].as_str().unwrap());
        assert_eq!(row[2], event["seq"].to_string());
        assert_eq!(row[6], event["action"].as_str().unwrap());
        assert_eq!(row[14], event["hash"].as_str().unwrap());
        let detail: serde_json::Value = serde_json::from_str(&row[13])
            .unwrap_or_else(|e| panic!("detail is not JSON text ({e}): {row:?}"));
        assert_eq!(detail, event["detail"]);
    }

    // --output: the file holds the export, stdout does not.
    let file = dir.path().join("kita-audit.jsonl");
    let out = run_in(
        dir.path(),
        &[
            "audit",
            "export",
            "--tenant",
            "kita",
            "--format",
            "jsonl",
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_success(&out, "audit export --output");
    let written = parse_jsonl(&std::fs::read_to_string(&file).unwrap());
    assert!(written.len() >= events.len());
    assert_eq!(ids(&written[..events.len()]), ids(&events));
    let stdout = stdout_of(&out);
    assert!(
        !stdout.contains(events[0]["id"].as_str().unwrap()),
        "with --output the events go to the file only: {stdout}"
    );

    // An unknown tenant: an error, one line.
    let out = run_in(dir.path(), &["audit", "export", "--tenant", "nowhere"], &[]);
    assert!(!out.status.success());
    assert_eq!(stderr_lines(&out).len(), 1, "{:?}", stderr_lines(&out));
}

#[tokio::test]
async fn audit_purge_respects_retention_and_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_tenant_in(dir.path(), "kita");
    serve_and_log_in(dir.path(), &admin, 1).await;
    let events = export_jsonl(dir.path(), "kita", &[]);
    assert_export_shape(&events);
    let verify =
        |envs: &[(&str, &str)]| run_in(dir.path(), &["audit", "verify", "--tenant", "kita"], envs);
    assert_success(&verify(&[]), "audit verify before any purge");

    // The default retention is five years: nothing this young may go.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let now = chrono::Utc::now().to_rfc3339();
    for before in [tomorrow.as_str(), now.as_str()] {
        let out = run_in(
            dir.path(),
            &["audit", "purge", "--tenant", "kita", "--before", before],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "purge --before {before}");
        assert_eq!(stderr_lines(&out).len(), 1, "{:?}", stderr_lines(&out));
    }
    assert_eq!(ids(&export_jsonl(dir.path(), "kita", &[])), ids(&events));

    // With no retention: everything before the first login goes, the rest stays as it was.
    let first_login = events
        .iter()
        .find(|e| e["action"] == "login.failure")
        .unwrap();
    let cut = first_login["at"].as_str().unwrap().to_string();
    let old = events
        .iter()
        .filter(|e| at_of(e) < at_of(first_login))
        .count();
    assert!(old >= 1, "tenant creation came before the logins");
    let no_retention = [("RENKEI_AUDIT_RETENTION_DAYS", "0")];
    let out = run_in(
        dir.path(),
        &["audit", "purge", "--tenant", "kita", "--before", &cut],
        &no_retention,
    );
    assert_success(&out, "audit purge");
    let printed = stdout_of(&out);
    assert!(
        printed
            .split(|c: char| !c.is_ascii_digit())
            .any(|n| n == old.to_string()),
        "purge prints how many it removed ({old}): {printed}"
    );
    let kept = export_jsonl(dir.path(), "kita", &[]);
    assert_eq!(kept, events[old..].to_vec(), "the rest is untouched");
    assert_success(&verify(&[]), "audit verify after a purge");

    // The chain goes on from where it was cut.
    serve_and_log_in(dir.path(), &admin, 1).await;
    let later = export_jsonl(dir.path(), "kita", &[]);
    assert_export_shape(&later);
    assert_eq!(later[..kept.len()].to_vec(), kept);
    assert!(later.len() >= kept.len() + 2);
    assert_success(&verify(&[]), "audit verify after new events");

    // Even when everything is purged, later events still verify.
    let now = chrono::Utc::now().to_rfc3339();
    let out = run_in(
        dir.path(),
        &["audit", "purge", "--tenant", "kita", "--before", &now],
        &no_retention,
    );
    assert_success(&out, "audit purge of everything");
    assert!(export_jsonl(dir.path(), "kita", &[]).is_empty());
    assert_success(&verify(&[]), "audit verify of an emptied log");
    serve_and_log_in(dir.path(), &admin, 0).await;
    let fresh = export_jsonl(dir.path(), "kita", &[]);
    assert!(!fresh.is_empty());
    let seq_of = |e: &&serde_json::Value| e["seq"].as_i64().unwrap();
    assert_eq!(
        in_chain(&fresh, "changes").first().map(seq_of),
        in_chain(&later, "changes").last().map(|e| seq_of(e) + 1),
        "seq carries on after a purge"
    );
    assert_success(&verify(&[]), "audit verify after purging everything");

    let out = run_in(
        dir.path(),
        &["audit", "purge", "--tenant", "nowhere", "--before", &now],
        &no_retention,
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn audit_verify_exits_1_and_names_an_altered_event() {
    use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _, Set};
    let dir = tempfile::tempdir().unwrap();
    let admin = create_tenant_in(dir.path(), "kita");
    serve_and_log_in(dir.path(), &admin, 1).await;
    let verify = || run_in(dir.path(), &["audit", "verify", "--tenant", "kita"], &[]);
    let out = verify();
    assert_success(&out, "audit verify");
    let events = export_jsonl(dir.path(), "kita", &[]);
    let report = format!(
        "{}{}",
        stdout_of(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&events.len().to_string()),
        "the report gives how many events were verified ({}): {report}",
        events.len()
    );

    // Someone with access to the database file edits a failed login's address.
    let failure = events
        .iter()
        .find(|e| e["action"] == "login.failure")
        .unwrap();
    let id: uuid::Uuid = failure["id"].as_str().unwrap().parse().unwrap();
    let db = open_database(dir.path()).await;
    let row = entity::audit_event::Entity::find_by_id(id)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let mut edited = row.into_active_model();
    edited.ip = Set(Some("10.6.6.6".into()));
    edited.update(&db).await.unwrap();
    db.close().await.unwrap();

    let out = verify();
    assert_eq!(out.status.code(), Some(1), "a broken chain exits 1");
    let report = format!(
        "{}{}",
        stdout_of(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&id.to_string()),
        "the report names the altered event {id}: {report}"
    );
    let unknown = run_in(dir.path(), &["audit", "verify", "--tenant", "nowhere"], &[]);
    assert!(!unknown.status.success());
}

#[tokio::test]
async fn the_read_chain_migration_keeps_the_chain_and_is_not_undone_over_read_events() {
    use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _, Set};
    let dir = tempfile::tempdir().unwrap();
    let admin = create_tenant_in(dir.path(), "kita");
    serve_and_log_in(dir.path(), &admin, 1).await;
    let events = export_jsonl(dir.path(), "kita", &[]);
    assert!(
        events.iter().all(|e| e["chain"] == "changes"),
        "{events:#?}"
    );
    let verify = || run_in(dir.path(), &["audit", "verify", "--tenant", "kita"], &[]);

    // Undoing the read-chain migration means undoing the ones after it too.
    let steps = {
        use migration::MigratorTrait as _;
        let migrations = migration::Migrator::migrations();
        let read_chain = migrations
            .iter()
            .position(|m| m.name() == "m20261124_000008_audit_read_chain")
            .unwrap();
        (migrations.len() - read_chain).to_string()
    };

    // Back to one chain and forward again: the events are the changes chain, unchanged.
    let out = run_in(dir.path(), &["migrate", "down", "--steps", &steps], &[]);
    assert_success(&out, "migrate down to one chain");
    let out = run_in(dir.path(), &["migrate", "up"], &[]);
    assert_success(&out, "migrate up to two chains");
    assert_eq!(export_jsonl(dir.path(), "kita", &[]), events);
    assert_success(&verify(), "audit verify after the round trip");

    // Once the reads chain holds an event, undoing it is refused: events are never dropped.
    let db = open_database(dir.path()).await;
    let first: uuid::Uuid = events[0]["id"].as_str().unwrap().parse().unwrap();
    let mut read = entity::audit_event::Entity::find_by_id(first)
        .one(&db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    let read_id = uuid::Uuid::now_v7();
    read.id = Set(read_id);
    read.chain = Set(1);
    read.seq = Set(1);
    read.action = Set("user.read".into());
    read.insert(&db).await.unwrap();
    db.close().await.unwrap();
    let out = run_in(dir.path(), &["migrate", "down", "--steps", &steps], &[]);
    assert!(!out.status.success(), "undoing over read events must fail");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("read chain"), "{lines:?}");
    // The later migrations undone before the refusal come back; the events were never touched.
    let out = run_in(dir.path(), &["migrate", "up"], &[]);
    assert_success(&out, "migrate up after the refusal");
    let after = export_jsonl(dir.path(), "kita", &[]);
    assert!(after.iter().any(|e| e["id"] == read_id.to_string()));
    assert_eq!(after.len(), events.len() + 1);
}

/// A fresh PostgreSQL database when `RENKEI_TEST_DB=postgres`, else None (SQLite in the dir).
async fn fresh_pg_database() -> Option<String> {
    if !matches!(
        std::env::var("RENKEI_TEST_DB").as_deref(),
        Ok("postgres" | "postgresql" | "pg")
    ) {
        return None;
    }
    use sea_orm::ConnectionTrait as _;
    let admin_url = std::env::var("RENKEI_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
    let name = format!("renkei_cli_{}", uuid_like());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    admin.close().await.ok();
    let base = admin_url.rsplit_once('/').unwrap().0;
    Some(format!("{base}/{name}"))
}

fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Reads a child's stderr until it says it listens (true) or ends (false); keeps the lines.
fn wait_listening(child: &mut std::process::Child) -> (bool, Vec<String>) {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let up = line.contains("listening on");
                lines.push(line);
                if up {
                    // Keep draining stderr so the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return (true, lines);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return (false, lines),
        }
    }
    (false, lines)
}

/// Any number of replicas may start at once on an empty database: exactly one migrates and
/// bootstraps under the migration lock, and every one comes up.
#[tokio::test]
async fn three_serve_instances_started_at_once_on_an_empty_database_all_come_up() {
    use sea_orm::{ConnectionTrait as _, Statement};
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let pg = fresh_pg_database().await;
        let mut children = Vec::new();
        for i in 0..3 {
            let mut cmd = renkei();
            cmd.current_dir(dir.path())
                .arg("serve")
                .env("RENKEI_LISTEN", "127.0.0.1:0")
                .env("RENKEI_LOG", "info")
                .env("RENKEI_BOOTSTRAP", "true")
                .env("RENKEI_PASSWORD_HASH_CONCURRENCY", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(url) = &pg {
                // Replicas: one database, one master key, each its own data directory.
                cmd.env("RENKEI_DATABASE_URL", url)
                    .env(
                        "RENKEI_MASTER_KEY",
                        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                    )
                    .env("RENKEI_DATA_DIR", dir.path().join(format!("data{i}")));
            }
            children.push(cmd.spawn().unwrap());
        }
        let mut outcomes = Vec::new();
        for child in &mut children {
            outcomes.push(wait_listening(child));
        }
        for child in &children {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
        }
        for child in &mut children {
            child.wait().unwrap();
        }
        for (i, (up, lines)) in outcomes.iter().enumerate() {
            assert!(
                up,
                "round {round}, instance {i} did not come up: {lines:#?}"
            );
        }
        let db = match &pg {
            Some(url) => sea_orm::Database::connect(url).await.unwrap(),
            None => open_database(dir.path()).await,
        };
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM tenants",
            ))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        assert_eq!(n, 1, "round {round}: one bootstrapped tenant");
        db.close().await.ok();
    }
}

/// `audit verify`, `audit export` and `certificates expiring` only read: on a database whose
/// schema is behind they say so in one line, exit 3, and leave the schema as it was.
#[test]
fn read_only_commands_refuse_when_the_schema_is_behind_and_never_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let status = |dir: &std::path::Path| {
        stdout_of(&run_in(
            dir,
            &["migrate", "status"],
            &[("RENKEI_LOG", "off")],
        ))
    };
    for setup in [&["migrate", "status"][..], &["migrate", "up"][..]] {
        assert_success(
            &run_in(dir.path(), setup, &[("RENKEI_LOG", "off")]),
            "setup",
        );
        if setup[1] == "up" {
            assert_success(
                &run_in(
                    dir.path(),
                    &["migrate", "down", "--steps", "1"],
                    &[("RENKEI_LOG", "off")],
                ),
                "migrate down",
            );
        }
        let before = status(dir.path());
        assert!(before.contains("Pending"), "{before}");
        for args in [
            &["audit", "verify", "--tenant", "demo"][..],
            &["audit", "export", "--tenant", "demo"][..],
            &["certificates", "expiring", "--tenant", "demo"][..],
        ] {
            let out = run_in(dir.path(), args, &[]);
            assert_eq!(out.status.code(), Some(3), "{args:?}");
            let lines = stderr_lines(&out);
            assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
            assert!(lines[0].contains("renkei migrate up"), "{lines:?}");
            assert_eq!(status(dir.path()), before, "{args:?} changed the schema");
        }
    }
}

/// With `log_format = json` even a fatal start-up error is a JSON record, whether the
/// configuration loaded or not.
#[test]
fn fatal_start_up_errors_are_json_in_json_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[(&str, &str)]; 2] = [
        &[("RENKEI_LISTEN", "not-an-address")],
        &[
            (
                "RENKEI_DATABASE_URL",
                "postgres://renkei:secretpw@127.0.0.1:1/renkei",
            ),
            ("RENKEI_DATABASE_CONNECT_TIMEOUT_SECONDS", "1"),
            ("RENKEI_LOG", "error"),
        ],
    ];
    for envs in cases {
        let mut cmd = renkei();
        cmd.current_dir(dir.path())
            .arg("serve")
            .env("RENKEI_LOG_FORMAT", "json");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(record["level"], "ERROR", "{record}");
        assert!(!lines[0].contains("secretpw"), "{lines:?}");
    }
}

/// Logs written to a pipe carry no colour codes, and each migration is one line.
#[test]
fn migrations_log_one_plain_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let pending = stdout_of(&run_in(
        dir.path(),
        &["migrate", "status"],
        &[("RENKEI_LOG", "off")],
    ))
    .lines()
    .filter(|l| l.starts_with("Pending"))
    .count();
    assert!(pending > 0);
    let out = run_in(dir.path(), &["migrate", "up"], &[("RENKEI_LOG", "info")]);
    assert_success(&out, "migrate up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape in piped logs: {stderr}"
    );
    let migration_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("m20") || l.to_lowercase().contains("migration"))
        .collect();
    assert_eq!(migration_lines.len(), pending, "{migration_lines:#?}");
}

#[tokio::test]
async fn tenant_push_gateway_set_show_remove_seals_the_secret_and_never_prints_it() {
    use sea_orm::EntityTrait as _;
    let dir = tempfile::tempdir().unwrap();
    create_tenant_in(dir.path(), "kita");
    let secret = "gw-secret-0123456789abcdef0123456789";
    let url = "https://push.vendor.example/_matrix/push/v1/notify";
    let set = [
        "tenant",
        "push-gateway",
        "set",
        "--tenant",
        "kita",
        "--url",
        url,
        "--secret-env",
        "GW_SECRET",
    ];

    // The variable missing, a short secret, an http URL: refused with one line, nothing stored.
    let out = run_in(dir.path(), &set, &[]);
    assert!(!out.status.success());
    assert!(
        stderr_lines(&out).join("\n").contains("GW_SECRET"),
        "{out:?}"
    );
    let out = run_in(dir.path(), &set, &[("GW_SECRET", "short")]);
    assert!(!out.status.success());
    let mut http = set;
    http[6] = "http://push.vendor.example/notify";
    let out = run_in(dir.path(), &http, &[("GW_SECRET", secret)]);
    assert!(!out.status.success());
    assert!(stderr_lines(&out).join("\n").contains("https"), "{out:?}");

    let out = run_in(dir.path(), &set, &[("GW_SECRET", secret)]);
    assert_success(&out, "push-gateway set");
    let show = run_in(
        dir.path(),
        &["tenant", "push-gateway", "show", "--tenant", "kita"],
        &[],
    );
    assert_success(&show, "push-gateway show");
    let shown = stdout_of(&show);
    assert!(shown.contains(url) && shown.contains("(sealed)"), "{shown}");
    for out in [&out, &show] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
    }
    let db = open_database(dir.path()).await;
    let rows = entity::tenant_push_gateway::Entity::find()
        .all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].url, url);
    assert!(!rows[0].secret_sealed.0.contains(secret));
    db.close().await.unwrap();

    let out = run_in(
        dir.path(),
        &["tenant", "push-gateway", "remove", "--tenant", "kita"],
        &[],
    );
    assert_success(&out, "push-gateway remove");
    let show = run_in(
        dir.path(),
        &["tenant", "push-gateway", "show", "--tenant", "kita"],
        &[],
    );
    assert!(stdout_of(&show).contains("has no push gateway"));
}
