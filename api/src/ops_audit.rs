//! Operator commands on the audit trail: export (JSONL or CSV), purge past retention with a
//! signed checkpoint, and verification of a tenant's chain.

use std::io::{IsTerminal as _, Write};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use entity::audit_event;

use crate::ops::{Ops, describe};
use crate::service::audit::{self, ChainReport, Filter, Purged};

/// A refusal caused by the command line itself (exit code 2, like a bad setting).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

const COLUMNS: [&str; 15] = [
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

/// Events read per query while exporting.
const EXPORT_PAGE: u64 = 2000;

/// `YYYY-MM-DD` (midnight in the tenant's time zone) or an RFC 3339 time.
pub fn parse_when(s: &str, tz: chrono_tz::Tz, what: &str) -> Result<DateTime<Utc>, UsageError> {
    let s = s.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(s) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|midnight| midnight.and_local_timezone(tz).earliest())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| {
            UsageError(format!(
                "--{what} '{s}' is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
}

fn row(event: &audit_event::Model) -> Value {
    json!({
        "id": event.id,
        "chain": audit::Chain::from_id(event.chain).map_or("unknown", audit::Chain::name),
        "seq": event.seq,
        "at": event.at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "actorId": event.actor_id,
        "sessionHash": event.session_hash,
        "action": event.action,
        "targetType": event.target_type,
        "targetId": event.target_id,
        "roomId": event.room_id,
        "outcome": audit::outcome_str(event.outcome),
        "ip": event.ip,
        "certificateSerial": event.certificate_serial,
        "detail": serde_json::from_str::<Value>(&event.detail).unwrap_or(Value::Null),
        "hash": event.hash,
    })
}

/// RFC 4180: quote a field holding a comma, quote or line break; double inner quotes.
fn csv_field(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

impl Ops {
    /// Writes the tenant's events in `[from, to)`, oldest first; returns how many.
    pub async fn audit_export(
        &self,
        slug: &str,
        from: Option<&str>,
        to: Option<&str>,
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> anyhow::Result<u64> {
        let tenant = self.tenant(slug).await?;
        let tz: chrono_tz::Tz = tenant.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
        let filter = Filter {
            from: from.map(|s| parse_when(s, tz, "from")).transpose()?,
            to: to.map(|s| parse_when(s, tz, "to")).transpose()?,
            ..Filter::default()
        };
        let total = audit::count(&self.db, tenant.id, &filter)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
        let progress = if std::io::stderr().is_terminal() && total > EXPORT_PAGE {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events  {elapsed_precise} (eta {eta})",
            ) {
                bar.set_style(style);
            }
            Some(bar)
        } else {
            None
        };
        if format == ExportFormat::Csv {
            writeln!(out, "{}", COLUMNS.join(",")).context("writing the export")?;
        }
        let mut written = 0_u64;
        let mut after = audit::Position::OLDEST;
        loop {
            let (page, next) = audit::export_page(&self.db, tenant.id, &filter, after, EXPORT_PAGE)
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            if page.is_empty() {
                break;
            }
            after = next;
            for event in &page {
                let value = row(event);
                match format {
                    ExportFormat::Jsonl => writeln!(out, "{value}"),
                    ExportFormat::Csv => {
                        let fields: Vec<String> =
                            COLUMNS.iter().map(|c| csv_field(&value[*c])).collect();
                        writeln!(out, "{}", fields.join(","))
                    }
                }
                .context("writing the export")?;
            }
            written += page.len() as u64;
            if let Some(bar) = &progress {
                bar.set_position(written);
            }
        }
        out.flush().context("writing the export")?;
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        Ok(written)
    }

    /// Removes the tenant's events older than `before`, which must be past the retention period.
    pub async fn audit_purge(&self, slug: &str, before: &str) -> anyhow::Result<Purged> {
        let tenant = self.tenant(slug).await?;
        let tz: chrono_tz::Tz = tenant.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
        let before = parse_when(before, tz, "before")?;
        let days = self.config.audit_retention_days;
        let limit = crate::service::now() - chrono::Duration::days(i64::from(days));
        if before > limit {
            return Err(UsageError(format!(
                "--before {} is within the retention period of {days} days (audit_retention_days): the oldest allowed is {}",
                before.to_rfc3339(),
                limit.to_rfc3339()
            ))
            .into());
        }
        audit::purge(&self.db, self.master_key(), tenant.id, before)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
    }

    pub async fn audit_verify(&self, slug: &str) -> anyhow::Result<ChainReport> {
        let tenant = self.tenant(slug).await?;
        audit::verify_chain(&self.db, tenant.id)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_tenant_midnight_and_rfc3339_is_exact() {
        let tokyo = chrono_tz::Asia::Tokyo;
        let d = parse_when("2026-04-01", tokyo, "from").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-03-31T15:00:00+00:00");
        let t = parse_when("2026-04-01T09:30:00+09:00", tokyo, "from").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-04-01T00:30:00+00:00");
        assert!(parse_when("yesterday", tokyo, "from").is_err());
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field(&Value::Null), "");
        assert_eq!(csv_field(&json!("plain")), "plain");
        assert_eq!(csv_field(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&json!({"k":"v"})), "\"{\"\"k\"\":\"\"v\"\"}\"");
    }
}
