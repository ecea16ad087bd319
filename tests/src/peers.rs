//! Real peers of the notification channels, each a Python process from `tests/peers/` that is
//! not our code: an SMTP server (aiosmtpd), a Web Push endpoint that decrypts with the
//! subscription's private key (http_ece) and verifies the VAPID JWT, and a push gateway that
//! checks the body's HMAC. Each prints what it received as JSON lines; tests wait for them.
//!
//! The push endpoint and the gateway speak HTTPS with a certificate of a test CA made here
//! once per process; [`PeerTls::ca_file`] is what `push_ca_file` / `smtp_ca_file` trust.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, oneshot};

/// How long a test waits for a peer to receive something before it fails. Generous: the
/// machine may be busy; a passing test returns as soon as the condition holds.
pub const PEER_DEADLINE: Duration = Duration::from_secs(60);

/// The test CA and the peers' server certificate (127.0.0.1 and localhost).
pub struct PeerTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn peer_tls() -> &'static PeerTls {
    static TLS: OnceLock<PeerTls> = OnceLock::new();
    TLS.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::Builder::new()
            .prefix("renkei-peers-")
            .tempdir()
            .unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Renkei test peers CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "peer.test");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("peer.pem");
        let key_file = dir.path().join("peer.key");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        std::fs::write(&cert_file, leaf.pem()).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        PeerTls {
            ca_file,
            cert_file,
            key_file,
            _dir: dir,
        }
    })
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One running peer process: its records, and a command line to it.
struct Process {
    child: Child,
    stdin: ChildStdin,
    replies: Replies,
    next_id: AtomicU64,
}

/// What a peer received, kept across restarts of its process.
#[derive(Clone, Default)]
struct Received {
    records: Arc<Mutex<Vec<Value>>>,
    changed: Arc<Notify>,
}

struct Peer {
    script: &'static str,
    args: Vec<String>,
    port: u16,
    ready: Value,
    received: Received,
    process: Option<Process>,
}

impl Peer {
    async fn start(script: &'static str, args: Vec<String>) -> Peer {
        let received = Received::default();
        let (process, ready) = spawn(script, &args, 0, &received).await;
        let port = ready["port"].as_u64().unwrap() as u16;
        Peer {
            script,
            args,
            port,
            ready,
            received,
            process: Some(process),
        }
    }

    async fn command(&mut self, cmd: Value) -> Value {
        let process = self.process.as_mut().expect("the peer is running");
        let id = process.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        process.replies.lock().unwrap().insert(id, tx);
        let mut cmd = cmd;
        cmd["id"] = json!(id);
        let line = format!("{cmd}\n");
        process.stdin.write_all(line.as_bytes()).await.unwrap();
        process.stdin.flush().await.unwrap();
        let reply = tokio::time::timeout(PEER_DEADLINE, rx)
            .await
            .expect("the peer answers its command")
            .unwrap();
        assert!(
            reply.get("error").is_none(),
            "{} refused {cmd}: {reply}",
            self.script
        );
        reply
    }

    async fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.child.kill().await.ok();
            p.child.wait().await.ok();
        }
    }

    /// Starts the process again on the same port.
    async fn restart(&mut self) {
        self.stop().await;
        let (process, ready) = spawn(self.script, &self.args, self.port, &self.received).await;
        assert_eq!(ready["port"].as_u64(), Some(u64::from(self.port)));
        self.process = Some(process);
    }

    fn records(&self) -> Vec<Value> {
        self.received.records.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PEER_DEADLINE;
        loop {
            let changed = self.received.changed.notified();
            let records = self.records();
            if done(&records) {
                return records;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let records = self.records();
                if done(&records) {
                    return records;
                }
                panic!(
                    "{}: gave up waiting for {what}; received {records:#?}",
                    self.script
                );
            }
        }
    }
}

async fn spawn(script: &str, args: &[String], port: u16, received: &Received) -> (Process, Value) {
    let dir = peers_dir();
    let mut child = Command::new(std::env::var("RENKEI_TEST_PYTHON").unwrap_or("python3".into()))
        .arg(dir.join(script))
        .arg("--port")
        .arg(port.to_string())
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {script}: {e} (tests/run.sh installs the peers)"));
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let replies: Replies = Arc::default();
    let (ready_tx, ready_rx) = oneshot::channel::<Value>();
    let received = received.clone();
    let task_replies = replies.clone();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                eprintln!("peer printed a line that is not JSON: {line}");
                continue;
            };
            if value.get("ready").is_some() {
                if let Some(tx) = ready_tx.take() {
                    tx.send(value).ok();
                }
            } else if let Some(record) = value.get("record") {
                received.records.lock().unwrap().push(record.clone());
                received.changed.notify_waiters();
            } else if let Some(id) = value.get("reply").and_then(Value::as_u64)
                && let Some(tx) = task_replies.lock().unwrap().remove(&id)
            {
                tx.send(value).ok();
            }
        }
    });
    let ready = tokio::time::timeout(PEER_DEADLINE, ready_rx)
        .await
        .unwrap_or_else(|_| panic!("{script} did not get ready"))
        .unwrap_or_else(|_| panic!("{script} exited before it was ready"));
    (
        Process {
            child,
            stdin,
            replies,
            next_id: AtomicU64::new(1),
        },
        ready,
    )
}

fn tls_args() -> Vec<String> {
    let tls = peer_tls();
    vec![
        "--cert".into(),
        tls.cert_file.display().to_string(),
        "--key".into(),
        tls.key_file.display().to_string(),
    ]
}

/// A browser's subscription at [`PushPeer`]: pass these to `registerPushSubscription`.
#[derive(Debug, Clone)]
pub struct PushSubscription {
    /// The peer's name for it, as in [`PushPeer::received`] records' `subscription`.
    pub id: String,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// A Web Push service and browser in one. Records (`received`) carry `subscription`, `ttl`,
/// `urgency`, `topic`, `content_encoding`, `vapid: {claims, k, problems}`, the decrypted
/// `payload` (JSON) and `payload_raw`, or `error` when it could not decrypt.
pub struct PushPeer(Peer);

impl PushPeer {
    pub async fn start() -> PushPeer {
        PushPeer(Peer::start("push_peer.py", tls_args()).await)
    }

    /// `https://127.0.0.1:PORT`, the `aud` every VAPID JWT must carry.
    pub fn origin(&self) -> String {
        self.0.ready["origin"].as_str().unwrap().to_string()
    }

    /// Settings for `TestOptions.env`: trust the peers' test CA.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "RENKEI_PUSH_CA_FILE".into(),
            peer_tls().ca_file.display().to_string(),
        )]
    }

    /// A new browser subscription (key pair and auth secret held by the peer).
    pub async fn subscribe(&mut self) -> PushSubscription {
        let r = self.0.command(json!({"cmd": "subscribe"})).await;
        PushSubscription {
            id: r["subscription"].as_str().unwrap().to_string(),
            endpoint: r["endpoint"].as_str().unwrap().to_string(),
            p256dh: r["p256dh"].as_str().unwrap().to_string(),
            auth: r["auth"].as_str().unwrap().to_string(),
        }
    }

    /// How the endpoint answers from now on: `ok` (201), `gone` (410), `notfound` (404),
    /// `error` (500) or `hang` (no answer for 30 s). `None` sets every subscription's.
    pub async fn set_mode(&mut self, subscription: Option<&PushSubscription>, mode: &str) {
        self.0
            .command(json!({"cmd": "mode", "subscription": subscription.map(|s| s.id.clone()), "mode": mode}))
            .await;
    }

    pub fn received(&self) -> Vec<Value> {
        self.0.records()
    }

    /// Waits until `done` holds for everything received so far, and returns it.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.0.wait_for(what, done).await
    }

    /// Waits for `n` messages to `sub` and returns them.
    pub async fn wait_for_messages(&self, sub: &PushSubscription, n: usize) -> Vec<Value> {
        let of = |records: &[Value]| -> Vec<Value> {
            records
                .iter()
                .filter(|r| r["subscription"] == json!(sub.id))
                .cloned()
                .collect()
        };
        let all = self
            .wait_for(&format!("{n} push message(s)"), |r| of(r).len() >= n)
            .await;
        of(&all)
    }

    pub async fn stop(&mut self) {
        self.0.stop().await
    }

    pub async fn restart(&mut self) {
        self.0.restart().await
    }
}

/// A push gateway. Records carry `path`, `content_type`, `signature_valid`, `body` (JSON) and
/// `body_raw`.
pub struct GatewayPeer(Peer);

impl GatewayPeer {
    /// A gateway that checks signatures with `secret`.
    pub async fn start(secret: &str) -> GatewayPeer {
        let mut peer = GatewayPeer(Peer::start("gateway_peer.py", tls_args()).await);
        peer.0
            .command(json!({"cmd": "secret", "secret": secret}))
            .await;
        peer
    }

    /// The URL to configure with `renkei tenant push-gateway set --url`.
    pub fn url(&self) -> String {
        self.0.ready["url"].as_str().unwrap().to_string()
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "RENKEI_PUSH_CA_FILE".into(),
            peer_tls().ca_file.display().to_string(),
        )]
    }

    /// `ok`, `error` (500) or `hang`.
    pub async fn set_mode(&mut self, mode: &str) {
        self.0.command(json!({"cmd": "mode", "mode": mode})).await;
    }

    /// Pushkeys the gateway answers in `rejected` from now on.
    pub async fn reject(&mut self, pushkeys: &[&str]) {
        self.0
            .command(json!({"cmd": "reject", "pushkeys": pushkeys}))
            .await;
    }

    pub fn received(&self) -> Vec<Value> {
        self.0.records()
    }

    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.0.wait_for(what, done).await
    }

    pub async fn stop(&mut self) {
        self.0.stop().await
    }

    pub async fn restart(&mut self) {
        self.0.restart().await
    }
}

/// How [`SmtpPeer`] is reached.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS (with the test CA's certificate) and refuse mail without it.
    pub starttls: bool,
    /// Require this login (`user`, `password`).
    pub auth: Option<(String, String)>,
}

/// An SMTP server. Records carry `mail_from`, `rcpt_tos`, `tls`, `authenticated`, `headers`
/// (lower-case names), `content_type`, `text` (the text/plain body) and `raw`.
pub struct SmtpPeer {
    peer: Peer,
    options: SmtpOptions,
}

impl SmtpPeer {
    /// Plain SMTP, no login.
    pub async fn start() -> SmtpPeer {
        SmtpPeer::start_with(SmtpOptions::default()).await
    }

    pub async fn start_with(options: SmtpOptions) -> SmtpPeer {
        let mut args = if options.starttls { tls_args() } else { vec![] };
        if let Some((user, password)) = &options.auth {
            args.push("--auth".into());
            args.push(format!("{user}:{password}"));
        }
        SmtpPeer {
            peer: Peer::start("smtp_peer.py", args).await,
            options,
        }
    }

    pub fn port(&self) -> u16 {
        self.peer.port
    }

    /// `smtp_url` for this peer: `smtp://` with STARTTLS, `smtp://…?tls=none` without.
    pub fn url(&self) -> String {
        let auth = match &self.options.auth {
            Some((u, p)) => format!("{u}:{p}@"),
            None => String::new(),
        };
        if self.options.starttls {
            format!("smtp://{auth}localhost:{}", self.port())
        } else {
            format!("smtp://{auth}127.0.0.1:{}?tls=none", self.port())
        }
    }

    /// Settings for `TestOptions.env`: `smtp_url`, `smtp_from`, the test CA.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("RENKEI_SMTP_URL".into(), self.url()),
            (
                "RENKEI_SMTP_FROM".into(),
                "Renkei <renkei@city.test>".into(),
            ),
            (
                "RENKEI_SMTP_CA_FILE".into(),
                peer_tls().ca_file.display().to_string(),
            ),
        ]
    }

    /// `ok`, or `tempfail` (451 to every recipient).
    pub async fn set_mode(&mut self, mode: &str) {
        self.peer
            .command(json!({"cmd": "mode", "mode": mode}))
            .await;
    }

    pub fn received(&self) -> Vec<Value> {
        self.peer.records()
    }

    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.peer.wait_for(what, done).await
    }

    /// Waits for `n` mails to `to` and returns them.
    pub async fn wait_for_mails(&self, to: &str, n: usize) -> Vec<Value> {
        let of = |records: &[Value]| -> Vec<Value> {
            records
                .iter()
                .filter(|r| {
                    r["rcpt_tos"]
                        .as_array()
                        .is_some_and(|a| a.contains(&json!(to)))
                })
                .cloned()
                .collect()
        };
        let all = self
            .wait_for(&format!("{n} mail(s) to {to}"), |r| of(r).len() >= n)
            .await;
        of(&all)
    }

    /// The server goes away (connections refused) until [`SmtpPeer::restart`].
    pub async fn stop(&mut self) {
        self.peer.stop().await
    }

    /// Back on the same port, with what it received so far kept.
    pub async fn restart(&mut self) {
        self.peer.restart().await
    }
}
