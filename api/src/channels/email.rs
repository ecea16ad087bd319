//! Notification e-mails: what kind of thing happened and a link, never a name, label, note
//! text or vital. One mail per notification, or one digest of several.

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use sha2::{Digest as _, Sha256};

use super::{Outbound, Outcome};

/// One line per kind, in Japanese and English; `notify`'s kinds are matched by what they name,
/// anything else is "a new notification".
fn describe(kind: &str) -> &'static str {
    let k = kind.to_ascii_uppercase();
    if k.contains("MENTION") {
        "担当の患者ルームで、あなた宛てのメンションがあります。 / You were mentioned in one of your patient rooms."
    } else if k.contains("REPLY") {
        "担当の患者ルームで、あなたの投稿に返信がありました。 / Someone replied to your note in one of your patient rooms."
    } else if k.contains("INVITATION") {
        "患者ルームへの招待があります。 / You were invited to a patient room."
    } else if k.contains("CLOSURE") || k.contains("CLOSE") {
        "担当の患者ルームの終了について更新があります。 / A patient room closure was requested or done."
    } else if k.contains("APPLICATION") {
        "申請の状況に更新があります。 / An application changed status."
    } else if k.contains("CERTIFICATE") {
        "端末の証明書の有効期限が近づいています。 / A device certificate of yours expires soon."
    } else if k.contains("LOGIN") {
        "初めて使われた証明書でログインがありました。 / Your account was logged in from a new certificate."
    } else if k.contains("NOTE") {
        "担当の患者ルームに新しい投稿があります。 / A new note in one of your patient rooms."
    } else {
        "新しいお知らせがあります。 / A new notification."
    }
}

fn domain_of(from: &Mailbox) -> String {
    from.email.domain().to_owned()
}

/// The same notifications always make the same `Message-ID`, so a mail retried after an
/// uncertain failure can be recognised as a repeat.
fn message_id(from: &Mailbox, items: &[Outbound]) -> String {
    match items {
        [one] => format!("<{}@{}>", one.notification_id, domain_of(from)),
        many => {
            let mut ids: Vec<_> = many.iter().map(|i| i.notification_id).collect();
            ids.sort();
            let mut h = Sha256::new();
            for id in ids {
                h.update(id.as_bytes());
            }
            format!(
                "<digest.{}@{}>",
                hex::encode(&h.finalize()[..16]),
                domain_of(from)
            )
        }
    }
}

pub(super) fn message(
    from: &Mailbox,
    to: Mailbox,
    items: &[Outbound],
    public_url: Option<&str>,
) -> Result<Message, lettre::error::Error> {
    let urgent = items.iter().any(|i| i.urgent);
    let subject = match (items.len(), urgent) {
        (1, true) => "【Renkei・至急】新しいお知らせがあります".to_owned(),
        (1, false) => "【Renkei】新しいお知らせがあります".to_owned(),
        (n, true) => format!("【Renkei・至急を含む】新しいお知らせが{n}件あります"),
        (n, false) => format!("【Renkei】新しいお知らせが{n}件あります"),
    };
    let mut text = String::new();
    if items.len() > 1 {
        text.push_str(&format!(
            "Renkei に新しいお知らせが{}件あります。 / {} new notifications in Renkei.\n\n",
            items.len(),
            items.len()
        ));
    }
    for item in items {
        if item.urgent {
            text.push_str("【至急 / URGENT】 ");
        }
        text.push_str(describe(&item.kind));
        text.push('\n');
    }
    text.push('\n');
    match public_url {
        Some(url) => text.push_str(&format!(
            "内容は Renkei でご確認ください。 / Open Renkei to read it:\n{url}/\n"
        )),
        None => text.push_str("内容は Renkei でご確認ください。 / Open Renkei to read it.\n"),
    }
    text.push_str(
        "\nこのメールには患者さんの情報は含まれていません。通知の設定は Renkei で変更できます。\n\
         This e-mail carries no patient information. Notification settings are in Renkei.\n",
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .date_now()
        .message_id(Some(message_id(from, items)))
        .header(ContentType::TEXT_PLAIN)
        .body(text)
}

/// Temporary SMTP answers, timeouts and unreachable servers are retried; a 5xx answer (unknown
/// recipient, refused sender) is not. Reasons name the class and code, never the server's text
/// (it may quote the address).
pub(super) fn outcome_of(e: &lettre::transport::smtp::Error) -> Outcome {
    let code = e.status().map(|c| format!(" {c}")).unwrap_or_default();
    if e.is_permanent() {
        Outcome::Failed(format!("the mail server refused the mail{code}"))
    } else if e.is_transient() {
        Outcome::Retry(format!(
            "the mail server answered a temporary failure{code}"
        ))
    } else if e.is_timeout() {
        Outcome::Retry("the mail server timed out".into())
    } else if e.is_tls() {
        Outcome::Retry("TLS with the mail server failed".into())
    } else {
        Outcome::Retry("the mail server is unreachable".into())
    }
}
