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
#[tokio::test]
async fn serve_on_a_fresh_directory_creates_data_and_answers_within_two_seconds() {
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
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(resp) = client
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            healthy = Some((resp.status(), started.elapsed()));
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
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let (code, elapsed) = healthy.expect("healthz answered");
    assert_eq!(code, 200);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
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
