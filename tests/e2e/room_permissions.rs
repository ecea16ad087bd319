//! Issue 6: who may read and do what in a patient room, as two tables. Every room query field
//! and every room mutation is called by every kind of caller: a member, an invitee (PENDING),
//! non-members of the member's facility and of another facility, the FACILITY_ADMIN of the
//! member's facility (no member), the CITY_ADMIN, the CITY_ADMIN of another tenant, a former
//! (removed) member, a suspended user and an anonymous caller. The answer must be the one the
//! table names, and for mutations the room is read (as the city) before and after each call:
//! an allowed call must have changed it, a refused one must have left it alone. Queries run
//! against one room; each mutation cell gets a room of its own.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::fmt::Write as _;

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use entity::kinds::{AccountStatus, Role};
use renkei_tests::{Gql, Person, TestClient};

use crate::rooms::{
    ACCEPT, ACCESS_REPORT, APPLICATIONS, CLOSE_ROOM, DECLINE, INVITE, Kita, MY_INVITATIONS,
    OPEN_ROOM, RECORD_CONSENT, REMOVE_MEMBER, REQUEST_CLOSURE, REQUEST_MEMBERS, REQUEST_ROOM,
    REVOKE_INVITATION, ROOM_SUMMARY, ROOMS, WITHDRAW_CONSENT, city_view, consent, error_path,
    family_consent, id_of, ids, invitation_for, open_room, patient, room_with, set_status, str_of,
    yamada,
};

const OK: &str = "ok";
/// `rooms` / `myInvitations` answered and list the room.
const LISTED: &str = "listed";
/// … answered and do not list it.
const UNLISTED: &str = "unlisted";
const FORBID: &str = "FORBIDDEN";
const NOT_FOUND: &str = "NOT_FOUND";
const UNAUTH: &str = "UNAUTHENTICATED";
const SUSP: &str = "ACCOUNT_SUSPENDED";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    Member,
    Invitee,
    SameFacility,
    OtherFacility,
    FacilityAdmin,
    City,
    OtherCity,
    Former,
    Suspended,
    Anonymous,
}

/// The table's columns, in order.
const ACTORS: [Actor; 10] = [
    Actor::Member,
    Actor::Invitee,
    Actor::SameFacility,
    Actor::OtherFacility,
    Actor::FacilityAdmin,
    Actor::City,
    Actor::OtherCity,
    Actor::Former,
    Actor::Suspended,
    Actor::Anonymous,
];

impl Actor {
    fn name(self) -> &'static str {
        match self {
            Actor::Member => "member",
            Actor::Invitee => "invitee",
            Actor::SameFacility => "non-member, same facility",
            Actor::OtherFacility => "non-member, other facility",
            Actor::FacilityAdmin => "FACILITY_ADMIN (no member)",
            Actor::City => "CITY_ADMIN",
            Actor::OtherCity => "other tenant's CITY_ADMIN",
            Actor::Former => "former member",
            Actor::Suspended => "suspended user",
            Actor::Anonymous => "anonymous",
        }
    }
}

/// How a query's answer is read when it has no error.
#[derive(Clone, Copy)]
enum Kind {
    /// `room(id)`: the room itself.
    Room,
    /// One field of `room(id)`.
    RoomField(&'static str),
    /// `rooms`: listed or not.
    Rooms,
    /// `myInvitations`: listed or not.
    Invitations,
    /// A root field that must be non-null.
    Root(&'static str),
}

struct QueryCase {
    name: &'static str,
    query: &'static str,
    kind: Kind,
    expected: [&'static str; 10],
}

/// What each caller gets from each query field. Columns in [`ACTORS`] order: member, invitee,
/// same facility, other facility, FACILITY_ADMIN, CITY_ADMIN, other tenant's CITY_ADMIN, former
/// member, suspended user, anonymous.
const QUERIES: &[QueryCase] = &[
    QueryCase {
        name: "room",
        query: ROOM_SUMMARY,
        kind: Kind::Room,
        expected: [
            OK, OK, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
    QueryCase {
        name: "rooms",
        query: ROOMS,
        kind: Kind::Rooms,
        expected: [
            LISTED, UNLISTED, UNLISTED, UNLISTED, UNLISTED, LISTED, UNLISTED, UNLISTED, SUSP,
            UNAUTH,
        ],
    },
    QueryCase {
        name: "myInvitations",
        query: MY_INVITATIONS,
        kind: Kind::Invitations,
        expected: [
            UNLISTED, LISTED, UNLISTED, UNLISTED, UNLISTED, UNLISTED, UNLISTED, UNLISTED, SUSP,
            UNAUTH,
        ],
    },
    QueryCase {
        name: "Room.patient",
        query: "query($id:ID!){ room(id:$id){ id patient { name nameKana birthDate } } }",
        kind: Kind::RoomField("patient"),
        expected: [
            OK, FORBID, FORBID, FORBID, FORBID, FORBID, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
    QueryCase {
        name: "Room.members",
        query: "query($id:ID!){ room(id:$id){ id members { user { id } joinedAt } } }",
        kind: Kind::RoomField("members"),
        expected: [
            OK, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
    QueryCase {
        name: "Room.invitations",
        query: "query($id:ID!){ room(id:$id){ id invitations { id status } } }",
        kind: Kind::RoomField("invitations"),
        expected: [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
    QueryCase {
        name: "Room.consents",
        query: "query($id:ID!){ room(id:$id){ id consents { id consenter } } }",
        kind: Kind::RoomField("consents"),
        expected: [
            OK, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
    QueryCase {
        name: "Room.notes",
        query: "query($id:ID!){ room(id:$id){ id notes(first: 5){ totalCount } } }",
        kind: Kind::RoomField("notes"),
        expected: [
            OK, FORBID, FORBID, FORBID, FORBID, FORBID, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
    // The city's disclosure report; another tenant's room id is NOT_FOUND, as every other
    // tenant's id is (contract, error codes).
    QueryCase {
        name: "roomAccessReport",
        query: ACCESS_REPORT,
        kind: Kind::Root("roomAccessReport"),
        expected: [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    },
];

/// What each caller gets from each mutation, columns as in [`QUERIES`].
const MUTATIONS: &[(&str, [&str; 10])] = &[
    (
        "openRoom",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, OK, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "requestRoom",
        [OK, OK, OK, OK, OK, FORBID, FORBID, OK, SUSP, UNAUTH],
    ),
    (
        "requestRoomMembers",
        [
            OK, FORBID, FORBID, FORBID, OK, FORBID, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "requestRoomClosure",
        [
            OK, FORBID, FORBID, FORBID, FORBID, FORBID, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "inviteToRoom",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "revokeInvitation",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "removeRoomMember",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "closeRoom",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "recordConsent",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "withdrawConsent",
        [
            FORBID, FORBID, FORBID, FORBID, FORBID, OK, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "acceptInvitation",
        [
            FORBID, OK, FORBID, FORBID, FORBID, FORBID, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
    (
        "declineInvitation",
        [
            FORBID, OK, FORBID, FORBID, FORBID, FORBID, NOT_FOUND, FORBID, SUSP, UNAUTH,
        ],
    ),
];

/// The tenant, the callers and their sessions, and the room the queries look at.
struct World {
    k: Kita,
    member: Person,
    invitee: Person,
    former: Person,
    suspended: Person,
    /// A STAFF of the member's facility that nobody calls with: invited or asked for.
    candidate: Person,
    /// A STAFF of the other tenant: what its city invites.
    other_staff: Person,
    /// Sessions by column (none for the suspended user and the anonymous caller).
    clients: Vec<Option<TestClient>>,
    /// The room the query table reads: the member and the suspended user joined, the invitee is
    /// PENDING, the former member joined and was removed.
    base: String,
    patients: std::sync::atomic::AtomicUsize,
}

/// One fresh room for one mutation cell, set up like the base room (without the suspended
/// user): the member in, the invitee PENDING, the former member removed.
struct Fresh {
    id: String,
    invitation: String,
    consent: String,
}

enum Probe {
    /// How many rooms each tenant has.
    Rooms,
    /// How many applications each tenant has.
    Applications,
    /// The room as the city sees it, and the tenant's applications.
    Room(String),
}

struct Call {
    query: &'static str,
    vars: Value,
    probe: Probe,
}

impl World {
    async fn new() -> World {
        let k = Kita::new().await;
        let (member, member_c) = k.staff("member", k.a).await;
        let (invitee, invitee_c) = k.staff("invitee", k.a).await;
        let (_same, same_c) = k.staff("same", k.a).await;
        let (_other, other_c) = k.staff("other", k.b).await;
        let (_head, head_c) = k.person("head", Role::FacilityAdmin, k.a).await;
        let (former, former_c) = k.staff("former", k.a).await;
        let (suspended, suspended_c) = k.staff("suspended", k.a).await;
        let candidate = k.user("candidate", Role::Staff, k.a).await;
        let other_admin = k.app.create_tenant("minami").await;
        let other_city = k.app.ready_session(&other_admin).await;
        let other_staff = k
            .app
            .create_user(&other_admin, "minami-staff", Role::Staff, None)
            .await;

        let room = room_with(
            &k.city,
            yamada(),
            &[
                (&member, &member_c),
                (&former, &former_c),
                (&suspended, &suspended_c),
            ],
            &[&invitee],
        )
        .await;
        let base = id_of(&room);
        let removed = k
            .city
            .graphql(
                REMOVE_MEMBER,
                json!({ "r": base, "u": former.id.to_string(), "why": "担当交代" }),
            )
            .await;
        removed.ok();
        set_status(&k.app, suspended.id, AccountStatus::Suspended).await;

        let clients = vec![
            Some(member_c),
            Some(invitee_c),
            Some(same_c),
            Some(other_c),
            Some(head_c),
            Some(k.city.clone()),
            Some(other_city),
            Some(former_c),
            None,
            None,
        ];
        World {
            k,
            member,
            invitee,
            former,
            suspended,
            candidate,
            other_staff,
            clients,
            base,
            patients: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The client of one column. The suspended user gets a new session for every call (its
    /// first refusal ends the session); minted in the store, since it cannot log in.
    async fn client(&self, actor: Actor) -> TestClient {
        let column = ACTORS.iter().position(|a| *a == actor).unwrap();
        match actor {
            Actor::Anonymous => self.k.app.client(),
            Actor::Suspended => {
                let session = self
                    .k
                    .app
                    .state()
                    .sessions
                    .create(
                        self.suspended.id,
                        self.suspended.tenant_id,
                        &self.suspended.fingerprint,
                    )
                    .await
                    .unwrap();
                self.k
                    .app
                    .client_for(&self.suspended)
                    .with_token(session.token.expose_secret().to_string())
            }
            _ => self.clients[column].clone().unwrap(),
        }
    }

    fn other_city(&self) -> &TestClient {
        self.clients[6].as_ref().unwrap()
    }

    /// A new patient each time (rooms are not deduplicated by patient, but names help reading
    /// a failing grid).
    fn next_patient(&self) -> Value {
        let n = self
            .patients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        patient(
            "山田 太郎",
            "ヤマダ タロウ",
            &format!("19{:02}-05-01", 10 + (n % 80)),
        )
    }

    async fn fresh(&self) -> Fresh {
        let members_c = [&self.clients[0], &self.clients[7]];
        let room = open_room(
            &self.k.city,
            self.next_patient(),
            &[&self.member, &self.invitee, &self.former],
        )
        .await;
        let id = id_of(&room);
        for (person, client) in [&self.member, &self.former].into_iter().zip(members_c) {
            let client = client.as_ref().unwrap();
            client
                .graphql(ACCEPT, json!({ "id": invitation_for(&room, person) }))
                .await
                .ok();
        }
        self.k
            .city
            .graphql(
                REMOVE_MEMBER,
                json!({ "r": id, "u": self.former.id.to_string(), "why": "担当交代" }),
            )
            .await
            .ok();
        Fresh {
            invitation: invitation_for(&room, &self.invitee),
            consent: id_of(&room["consents"][0]),
            id,
        }
    }

    /// The call of one cell, with its room made for it.
    async fn prepare(&self, mutation: &str, actor: Actor) -> Call {
        let own_people = if actor == Actor::OtherCity {
            ids(&[&self.other_staff])
        } else {
            ids(&[&self.candidate])
        };
        let call = |query, vars, probe| Call { query, vars, probe };
        match mutation {
            "openRoom" => call(
                OPEN_ROOM,
                json!({ "p": self.next_patient(), "c": consent(), "i": own_people }),
                Probe::Rooms,
            ),
            "requestRoom" => call(
                REQUEST_ROOM,
                json!({ "p": self.next_patient(), "c": consent(), "m": own_people }),
                Probe::Applications,
            ),
            _ => {
                let room = self.fresh().await;
                let probe = Probe::Room(room.id.clone());
                let (query, vars) = match mutation {
                    "requestRoomMembers" => (
                        REQUEST_MEMBERS,
                        json!({ "r": room.id, "u": ids(&[&self.candidate]) }),
                    ),
                    "requestRoomClosure" => {
                        (REQUEST_CLOSURE, json!({ "r": room.id, "why": "施設入所" }))
                    }
                    "inviteToRoom" => (
                        INVITE,
                        json!({ "r": room.id, "u": ids(&[&self.candidate]) }),
                    ),
                    "revokeInvitation" => (REVOKE_INVITATION, json!({ "id": room.invitation })),
                    "removeRoomMember" => (
                        REMOVE_MEMBER,
                        json!({ "r": room.id, "u": self.member.id.to_string(), "why": "担当交代" }),
                    ),
                    "closeRoom" => (CLOSE_ROOM, json!({ "r": room.id, "e": "ご逝去" })),
                    "recordConsent" => (
                        RECORD_CONSENT,
                        json!({ "r": room.id, "c": family_consent() }),
                    ),
                    "withdrawConsent" => (WITHDRAW_CONSENT, json!({ "id": room.consent })),
                    "acceptInvitation" => (ACCEPT, json!({ "id": room.invitation })),
                    "declineInvitation" => (DECLINE, json!({ "id": room.invitation })),
                    other => panic!("no cell setup for {other}"),
                };
                call(query, vars, probe)
            }
        }
    }

    /// The probed state, as text to compare before and after.
    async fn snapshot(&self, probe: &Probe) -> String {
        let cities = [&self.k.city, self.other_city()];
        match probe {
            Probe::Rooms => {
                let mut out = String::new();
                for city in cities {
                    let resp = city.graphql(ROOMS, json!({ "n": 1 })).await;
                    write!(out, "rooms={} ", resp.ok()["rooms"]["totalCount"]).unwrap();
                }
                out
            }
            Probe::Applications => {
                let mut out = String::new();
                for city in cities {
                    write!(out, "applications={} ", applications(city).await).unwrap();
                }
                out
            }
            Probe::Room(id) => {
                let room = city_view(&self.k.city, id).await;
                let members: Vec<&str> = room["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| str_of(&m["user"]["id"]))
                    .collect();
                let invitations: Vec<String> = room["invitations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| format!("{}:{}", i["id"], i["status"]))
                    .collect();
                let consents: Vec<String> = room["consents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| format!("{}:{}", c["id"], c["withdrawnAt"]))
                    .collect();
                format!(
                    "status={} members={members:?} invitations={invitations:?} consents={consents:?} applications={}",
                    room["status"],
                    applications(&self.k.city).await
                )
            }
        }
    }
}

async fn applications(city: &TestClient) -> i64 {
    let resp = city.graphql(APPLICATIONS, json!({})).await;
    resp.ok()["applications"]["totalCount"].as_i64().unwrap()
}

/// How a query cell came out, in the table's words.
fn query_outcome(resp: &Gql, kind: Kind, base: &str) -> String {
    if let Some(code) = resp.code() {
        return code.to_string();
    }
    if !resp.errors().is_empty() {
        return format!("error without a code: {}", resp.body);
    }
    let data = resp.data();
    let listed = |items: Option<&Vec<Value>>, id: fn(&Value) -> &Value| match items {
        None => format!("not a list: {}", resp.body),
        Some(items) if items.iter().any(|i| id(i) == base) => LISTED.to_string(),
        Some(_) => UNLISTED.to_string(),
    };
    match kind {
        Kind::Room if data["room"]["id"] == base => OK.to_string(),
        Kind::Room => format!("wrong room: {}", resp.body),
        Kind::RoomField(field) if !data["room"][field].is_null() => OK.to_string(),
        Kind::RoomField(_) => format!("null without an error: {}", resp.body),
        Kind::Rooms => listed(data["rooms"]["edges"].as_array(), |e| &e["node"]["id"]),
        Kind::Invitations => listed(data["myInvitations"].as_array(), |i| &i["room"]["id"]),
        Kind::Root(root) if !data[root].is_null() => OK.to_string(),
        Kind::Root(_) => format!("null without an error: {}", resp.body),
    }
}

fn grid_header() -> String {
    let mut grid = format!("{:<20}", "");
    for actor in ACTORS {
        let short: String = actor.name().chars().take(17).collect();
        write!(grid, " {short:<17}").unwrap();
    }
    grid.push('\n');
    grid
}

#[tokio::test]
async fn every_room_query_answers_every_caller_as_the_table_says() {
    let world = World::new().await;
    // The suspended user cannot log in either.
    let login = world
        .k
        .app
        .client_for(&world.suspended)
        .graphql(
            "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token } }",
            json!({ "t": world.suspended.tenant, "l": world.suspended.login_id, "p": world.suspended.password }),
        )
        .await;
    assert_eq!(
        login.code(),
        Some(SUSP),
        "a suspended user logging in: {}",
        login.body
    );
    let mut wrong = Vec::new();
    let mut grid = grid_header();
    let room_column = |actor: Actor| {
        let column = ACTORS.iter().position(|a| *a == actor).unwrap();
        QUERIES[0].expected[column]
    };
    for case in QUERIES {
        write!(grid, "{:<20}", case.name).unwrap();
        for (column, actor) in ACTORS.into_iter().enumerate() {
            let want = case.expected[column];
            let client = world.client(actor).await;
            let vars = match case.kind {
                Kind::Rooms => json!({ "n": 100 }),
                Kind::Invitations => json!({}),
                Kind::Root(_) => json!({ "r": world.base }),
                Kind::Room | Kind::RoomField(_) => json!({ "id": world.base }),
            };
            let resp = client.graphql(case.query, vars).await;
            let got = query_outcome(&resp, case.kind, &world.base);
            let short: String = got.chars().take(17).collect();
            write!(grid, " {short:<17}").unwrap();
            let cell = format!("{} by {}", case.name, actor.name());
            if got != want {
                wrong.push(format!("{cell}: expected {want}, got {got}: {}", resp.body));
                continue;
            }
            // A field refused inside a room the caller may see: the field is not in the data
            // (async-graphql 7 leaves a failed field out rather than nulling the room) and the
            // error is at the field's path.
            if let Kind::RoomField(field) = case.kind
                && want != OK
                && room_column(actor) == OK
            {
                let room = &resp.data()["room"];
                if !(room.is_null() || room.get(field).is_none()) {
                    wrong.push(format!(
                        "{cell}: the refused field is in the data: {}",
                        resp.body
                    ));
                }
                let path = error_path(&resp);
                if path != ["room", field] {
                    wrong.push(format!(
                        "{cell}: the error should be at room.{field}, is at {path:?}"
                    ));
                }
            }
        }
        grid.push('\n');
    }
    assert!(
        wrong.is_empty(),
        "{} unexpected cell(s):\n{}\n\nobserved:\n{grid}",
        wrong.len(),
        wrong.join("\n"),
    );
}

#[tokio::test]
async fn every_room_mutation_answers_every_caller_as_the_table_says() {
    let world = World::new().await;
    let mut wrong = Vec::new();
    let mut grid = grid_header();
    for (mutation, expected) in MUTATIONS {
        write!(grid, "{mutation:<20}").unwrap();
        for (column, actor) in ACTORS.into_iter().enumerate() {
            let want = expected[column];
            let call = world.prepare(mutation, actor).await;
            let before = world.snapshot(&call.probe).await;
            let client = world.client(actor).await;
            let resp = client.graphql(call.query, call.vars).await;
            let after = world.snapshot(&call.probe).await;
            let got = match resp.code() {
                Some(code) => code.to_string(),
                None if resp.errors().is_empty() && !resp.data()[*mutation].is_null() => {
                    OK.to_string()
                }
                None => format!("error without a code: {}", resp.body),
            };
            let short: String = got.chars().take(17).collect();
            write!(grid, " {short:<17}").unwrap();
            let cell = format!("{mutation} by {}", actor.name());
            if got != want {
                wrong.push(format!("{cell}: expected {want}, got {got}: {}", resp.body));
                continue;
            }
            let changed = before != after;
            if want == OK && !changed {
                wrong.push(format!(
                    "{cell}: answered ok but nothing changed ({before})"
                ));
            }
            if want != OK && changed {
                wrong.push(format!(
                    "{cell}: refused with {got} but the room changed:\n  before {before}\n  after  {after}"
                ));
            }
        }
        grid.push('\n');
    }
    assert!(
        wrong.is_empty(),
        "{} unexpected cell(s):\n{}\n\nobserved:\n{grid}",
        wrong.len(),
        wrong.join("\n"),
    );
}
