//! Room content over plain HTTP: attachment downloads and the FHIR R4 export of vital signs.
//! Both authenticate exactly like GraphQL (session token bound to the connection's client
//! certificate), take the member capability from the enforcer, and audit every answer,
//! refusals included.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::AuditOutcome;
use entity::vital_record;

use crate::auth::tls::ConnectionInfo;
use crate::authz::rooms::{self as room_authz, RoomAccess};
use crate::error::AppError;
use crate::graphql::context::{Caller, RequestContext, authenticate};
use crate::http::{HttpState, session_token};
use crate::service::audit::Event;
use crate::service::{attachments, rooms, vitals};

/// The logged-in caller of a plain HTTP request, and its origin for the audit.
async fn caller_of(
    state: &HttpState,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
) -> Result<(Caller, RequestContext), Response> {
    let (peer, ip) = crate::auth::trust::client_identity(
        conn,
        headers,
        &state.app.config.trusted_proxies,
        &state.app.trust,
    );
    if !crate::http::cookie_request_allowed(headers, &state.app.config.allowed_origins, false) {
        return Err(crate::http::cross_site_refused());
    }
    let request = RequestContext::new(peer, ip, session_token(headers));
    match authenticate(&state.app, &request).await {
        Ok(caller) => Ok((caller, request)),
        Err(e) => Err(error_response(e)),
    }
}

fn error_response(e: AppError) -> Response {
    e.into_response()
}

/// The member capability for `room_id`; a refusal is audited as DENIED with `action`.
async fn member(
    state: &HttpState,
    caller: &Caller,
    request: &RequestContext,
    room_id: Uuid,
    action: &'static str,
) -> Result<RoomAccess, Response> {
    let room = rooms::in_tenant(&state.app.db, caller.tenant.id, room_id)
        .await
        .map_err(error_response)?;
    match room_authz::member(&state.app.authz, &caller.user, room) {
        Ok(access) => Ok(access),
        Err(e) => {
            let event = Event::new(caller.tenant.id, action, AuditOutcome::Denied)
                .by(&caller.origin(request))
                .room(room_id)
                .target("room", room_id);
            if let Err(e) = crate::service::audit::record_now(&state.app.db, event).await {
                return Err(error_response(e));
            }
            Err(error_response(e))
        }
    }
}

async fn audit_read(
    state: &HttpState,
    caller: &Caller,
    request: &RequestContext,
    action: &'static str,
    room_id: Uuid,
    target: (&'static str, Uuid),
) -> Result<(), Response> {
    let event = Event::new(caller.tenant.id, action, AuditOutcome::Allowed)
        .by(&caller.origin(request))
        .room(room_id)
        .target(target.0, target.1);
    state.app.audit.read(event).await.map_err(error_response)
}

/// `GET /attachments/{id}`: the bytes, to members of the attachment's room, as a download.
pub async fn attachment(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (caller, request) = match caller_of(&state, &conn, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_response(AppError::NotFound);
    };
    let found = match attachments::in_tenant(&state.app.db, caller.tenant.id, id).await {
        Ok(found) => found,
        Err(e) => return error_response(e),
    };
    if let Err(response) = member(
        &state,
        &caller,
        &request,
        found.room_id,
        "attachment.download",
    )
    .await
    {
        return response;
    }
    let reader = match state.app.blobs.open(&found.sha256).await {
        Ok(reader) => reader,
        Err(e) => return error_response(AppError::internal(e)),
    };
    if let Err(response) = audit_read(
        &state,
        &caller,
        &request,
        "attachment.download",
        found.room_id,
        ("attachment", found.id),
    )
    .await
    {
        return response;
    }
    let body = Body::from_stream(chunks(reader));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&found.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(found.size_bytes));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&found.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266).
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The blob as a stream of 64 KiB chunks for the response body.
fn chunks(
    reader: crate::storage::BlobReader,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send {
    futures_util::stream::try_unfold(reader, |mut reader| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((axum::body::Bytes::from(buf), reader)))
    })
}

// ---------------------------------------------------------------------------------------------
// FHIR R4 export
// ---------------------------------------------------------------------------------------------

const JP_CORE_VITAL_SIGNS: &str =
    "http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_VitalSigns";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

fn coding(code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": LOINC, "code": code, "display": display }], "text": display })
}

fn quantity(vital: &vitals::Vital, value: f64) -> Value {
    json!({ "value": value, "unit": vital.ucum, "system": UCUM, "code": vital.ucum })
}

/// The Observations of one vital record: one per value, blood pressure as one panel with a
/// systolic and a diastolic component.
pub fn observations(record: &vital_record::Model, subject: &Value) -> Vec<Value> {
    let base = |id_suffix: &str, code: Value| {
        json!({
            "resourceType": "Observation",
            "id": format!("{}-{id_suffix}", record.id),
            "meta": { "profile": [JP_CORE_VITAL_SIGNS] },
            "status": "final",
            "category": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs"
                }]
            }],
            "code": code,
            "subject": subject,
            "effectiveDateTime": record.measured_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    };
    let mut out = Vec::new();
    if record.systolic_mm_hg.is_some() || record.diastolic_mm_hg.is_some() {
        let (panel, display) = vitals::BLOOD_PRESSURE_PANEL;
        let mut obs = base("bp", coding(panel, display));
        let mut components = Vec::new();
        for (vital, value) in [
            (&vitals::SYSTOLIC, record.systolic_mm_hg),
            (&vitals::DIASTOLIC, record.diastolic_mm_hg),
        ] {
            if let Some(v) = value {
                components.push(json!({
                    "code": coding(vital.loinc, vital.display),
                    "valueQuantity": quantity(vital, f64::from(v)),
                }));
            }
        }
        obs["component"] = Value::Array(components);
        out.push(obs);
    }
    let singles = [
        (&vitals::PULSE, record.pulse_per_min.map(f64::from)),
        (&vitals::TEMPERATURE, record.temperature_celsius),
        (&vitals::SPO2, record.spo2_percent.map(f64::from)),
        (
            &vitals::RESPIRATORY_RATE,
            record.respiratory_rate_per_min.map(f64::from),
        ),
        (&vitals::WEIGHT, record.weight_kg),
        (&vitals::GLUCOSE, record.blood_glucose_mg_dl.map(f64::from)),
    ];
    for (vital, value) in singles {
        if let Some(v) = value {
            let mut obs = base(vital.loinc, coding(vital.loinc, vital.display));
            obs["valueQuantity"] = quantity(vital, v);
            out.push(obs);
        }
    }
    out
}

/// `GET /fhir/rooms/{id}/Observation`: the room's vital signs as a FHIR R4 searchset Bundle
/// (`application/fhir+json`), members only.
pub async fn fhir_observations(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (caller, request) = match caller_of(&state, &conn, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(room_id) = Uuid::parse_str(&id) else {
        return error_response(AppError::NotFound);
    };
    let access = match member(&state, &caller, &request, room_id, "fhir.export").await {
        Ok(access) => access,
        Err(response) => return response,
    };
    let records = match vitals::all(&state.app.db, &access).await {
        Ok(records) => records,
        Err(e) => return error_response(e),
    };
    if let Err(response) = audit_read(
        &state,
        &caller,
        &request,
        "fhir.export",
        room_id,
        ("room", room_id),
    )
    .await
    {
        return response;
    }
    let subject = json!({
        "identifier": { "system": "urn:renkei:room", "value": room_id.to_string() },
        "display": access.room.patient_label,
    });
    let entries: Vec<Value> = records
        .iter()
        .flat_map(|r| observations(r, &subject))
        .map(|resource| json!({ "resource": resource, "search": { "mode": "match" } }))
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": crate::service::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "total": entries.len(),
        "entry": entries,
    });
    (
        [
            (header::CONTENT_TYPE, "application/fhir+json; charset=utf-8"),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        bundle.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn disposition_keeps_the_name_and_a_safe_fallback() {
        assert_eq!(
            content_disposition("写真 1.jpg"),
            "attachment; filename=\"___1.jpg\"; filename*=UTF-8''%E5%86%99%E7%9C%9F%201%2Ejpg"
        );
        assert!(!content_disposition("a\"b.pdf").contains("a\"b"));
    }

    #[test]
    fn blood_pressure_is_one_panel_and_other_values_one_observation_each() {
        let record = vital_record::Model {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            room_id: Uuid::now_v7(),
            recorded_by: Uuid::now_v7(),
            measured_at: chrono::Utc::now(),
            systolic_mm_hg: Some(128),
            diastolic_mm_hg: Some(82),
            pulse_per_min: None,
            temperature_celsius: Some(36.8),
            spo2_percent: None,
            respiratory_rate_per_min: None,
            weight_kg: None,
            blood_glucose_mg_dl: None,
            note: None,
            created_at: chrono::Utc::now(),
        };
        let obs = observations(&record, &json!({"display": "x"}));
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0]["code"]["coding"][0]["code"], "85354-9");
        assert_eq!(
            obs[0]["component"][1]["code"]["coding"][0]["code"],
            "8462-4"
        );
        assert_eq!(obs[0]["component"][1]["valueQuantity"]["code"], "mm[Hg]");
        assert_eq!(obs[1]["code"]["coding"][0]["code"], "8310-5");
        assert_eq!(obs[1]["valueQuantity"]["code"], "Cel");
        assert_eq!(obs[1]["meta"]["profile"][0], JP_CORE_VITAL_SIGNS);
    }
}
