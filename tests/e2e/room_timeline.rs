//! Issue 7, efficient reads: a timeline page with authors, their facilities, mentions,
//! revisions and 既読 runs a small constant number of SQL statements, however many notes the
//! page holds (per-request DataLoaders): about a dozen (at most 24) for 5 notes and for 50. Counted with the server's statement counter, which
//! sees every statement requests run (the audit writer has its own, uncounted handle).

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use entity::kinds::Role;

use crate::rooms::{Kita, id_of, room_with, yamada};

const POST: &str = "mutation($i:PostNoteInput!){ postNote(input:$i){ id } }";
const MARK: &str = "mutation($r:ID!,$n:ID!){ markRead(roomId:$r, upToNoteId:$n) }";
const TIMELINE: &str = "query($r:ID!,$n:Int){ room(id:$r){ notes(first:$n){ totalCount edges { node { id body category createdAt author { id displayName facility { id name } } mentions { id displayName } revisions { body } attachments { id } replyTo { id } readBy { readAt user { id displayName } } } } } } }";

async fn statements_for(
    kita: &Kita,
    client: &renkei_tests::TestClient,
    room: &str,
    n: i32,
) -> (u64, Value) {
    // Let the session and audit traffic of earlier calls settle.
    kita.app.state().audit.flush().await;
    let before = kita.app.state().statements.load(Ordering::SeqCst);
    let resp = client.graphql(TIMELINE, json!({ "r": room, "n": n })).await;
    let after = kita.app.state().statements.load(Ordering::SeqCst);
    (after - before, resp.ok()["room"]["notes"].clone())
}

#[tokio::test]
async fn a_timeline_page_costs_the_same_few_statements_for_5_or_50_notes() {
    let kita = Kita::new().await;
    let (nurse, nurse_c) = kita.staff("tl-nurse", kita.a).await;
    let (carer, carer_c) = kita.staff("tl-carer", kita.b).await;
    let (doc, doc_c) = kita.person("tl-doc", Role::FacilityAdmin, kita.a).await;
    let room = room_with(
        &kita.city,
        yamada(),
        &[(&nurse, &nurse_c), (&carer, &carer_c), (&doc, &doc_c)],
        &[],
    )
    .await;
    let room = id_of(&room);
    let authors = [&nurse_c, &carer_c, &doc_c];
    let mut last = String::new();
    for i in 0..50 {
        let resp = authors[i % 3]
            .graphql(
                POST,
                json!({ "i": {
                    "roomId": room,
                    "body": format!("訪問記録 {i}"),
                    "mentionUserIds": [nurse.id.to_string(), carer.id.to_string()],
                } }),
            )
            .await;
        last = id_of(&resp.ok()["postNote"]);
    }
    for reader in [&nurse_c, &carer_c] {
        let resp = reader.graphql(MARK, json!({ "r": room, "n": last })).await;
        resp.ok();
    }

    let (small, page5) = statements_for(&kita, &doc_c, &room, 5).await;
    let (large, page50) = statements_for(&kita, &doc_c, &room, 50).await;
    assert_eq!(page5["edges"].as_array().unwrap().len(), 5);
    let edges = page50["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 50);
    assert_eq!(page50["totalCount"], 50);
    // The page is complete: every author with a facility, both mentions, and the 既読 of the
    // two readers on every note they did not write.
    for edge in edges {
        let node = &edge["node"];
        assert!(node["author"]["facility"]["name"].is_string(), "{node}");
        assert_eq!(node["mentions"].as_array().unwrap().len(), 2, "{node}");
        let readers = node["readBy"].as_array().unwrap();
        let author = node["author"]["id"].as_str().unwrap();
        let expected = [&nurse, &carer]
            .iter()
            .filter(|p| p.id.to_string() != author)
            .count();
        assert_eq!(readers.len(), expected, "{node}");
    }
    // Without loaders the 50-note page would need 50+ statements for each of its per-note
    // fields (300+ in all). With them it needs one per kind of row, about a dozen; a kind may
    // split into two batches when its loads arrive in different batching windows on a busy
    // machine, so the bound leaves room for that, whatever the page size.
    assert!(
        small <= 24 && large <= 24,
        "statements grow with the page: {small} for 5 notes, {large} for 50"
    );
}
