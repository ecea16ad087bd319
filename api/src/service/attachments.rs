//! Attachments: photos, documents and short videos a member uploads to a room, then references
//! from a note. The type comes from the bytes (magic numbers), never from the client; the size
//! is checked while the bytes are copied; the bytes are stored content-addressed (SHA-256)
//! through the [`BlobStore`](crate::storage::BlobStore).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use entity::attachment;
use entity::kinds::AuditOutcome;

use crate::authz::rooms::RoomAccess;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{now, rooms};
use crate::state::AppState;

/// The kinds of file a room takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    Heic,
    Pdf,
    Mp4,
}

impl Kind {
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Heic => "image/heic",
            Kind::Pdf => "application/pdf",
            Kind::Mp4 => "video/mp4",
        }
    }

    fn is_video(self) -> bool {
        self == Kind::Mp4
    }
}

/// How many leading bytes [`sniff`] needs.
pub const SNIFF_BYTES: usize = 32;

/// The kind of a file from its first bytes, or `None` for anything we do not take.
pub fn sniff(head: &[u8]) -> Option<Kind> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(Kind::Jpeg);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Kind::Png);
    }
    if head.starts_with(b"%PDF-") {
        return Some(Kind::Pdf);
    }
    // ISO base media files (HEIF, MP4): a `ftyp` box first, with the major brand after it.
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let brand = &head[8..12];
        const HEIF: [&[u8; 4]; 8] = [
            b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
        ];
        const MP4: [&[u8; 4]; 9] = [
            b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ",
        ];
        if HEIF.iter().any(|b| b.as_slice() == brand) {
            return Some(Kind::Heic);
        }
        if MP4.iter().any(|b| b.as_slice() == brand) {
            return Some(Kind::Mp4);
        }
    }
    None
}

/// The client's file name without any directory part or control characters, at most 255
/// characters; "file" when nothing is left.
pub fn clean_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim().to_string();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file".to_string()
    } else {
        cleaned
    }
}

/// What staging an upload found out.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub sha256: String,
}

/// Copies an upload into the staging directory, sniffing its type from the first bytes,
/// hashing it, and stopping as soon as it passes its type's limit. Blocking: runs on the
/// blocking pool.
pub fn stage(
    mut source: impl std::io::Read,
    staging_dir: &std::path::Path,
    max_bytes: u64,
    max_video_bytes: u64,
) -> AppResult<Staged> {
    let too_large = |limit: u64| {
        AppError::bad_input(
            "file",
            format!("the file is larger than the limit of {limit} bytes"),
        )
    };
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut source)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(AppError::internal)?;
    if head.is_empty() {
        return Err(AppError::bad_input("file", "the file is empty"));
    }
    let kind = sniff(&head).ok_or_else(|| {
        AppError::bad_input(
            "file",
            "only JPEG, PNG, HEIC, PDF and MP4 files can be attached",
        )
    })?;
    let limit = if kind.is_video() {
        max_video_bytes
    } else {
        max_bytes
    };
    let path = staging_dir.join(Uuid::now_v7().to_string());
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(AppError::internal)?;
        let mut hasher = Sha256::new();
        let mut size = head.len() as u64;
        hasher.update(&head);
        out.write_all(&head).map_err(AppError::internal)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = source.read(&mut buf).map_err(AppError::internal)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(AppError::internal)?;
        }
        if size > limit {
            return Err(too_large(limit));
        }
        out.sync_all().map_err(AppError::internal)?;
        Ok(Staged {
            path: path.clone(),
            kind,
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result
}

/// `uploadAttachment` (a member of an OPEN room with consent): stores the bytes and records the
/// attachment, not yet on any note.
pub async fn upload(
    state: &AppState,
    access: &RoomAccess,
    file_name: &str,
    content: std::fs::File,
    origin: &Origin,
) -> AppResult<attachment::Model> {
    // The client's file name is input like any argument (NUL, control and bidi characters).
    crate::graphql::input::check_text("file", file_name)?;
    // Refuse early when the room cannot take it, before copying any bytes.
    rooms::writable_in(&state.db, access.room.id, access.user_id).await?;
    let staging = state.blobs.staging_dir().to_path_buf();
    let (max, max_video) = (
        state.config.attachment_max_bytes,
        state.config.attachment_video_max_bytes,
    );
    let staged = tokio::task::spawn_blocking(move || stage(content, &staging, max, max_video))
        .await
        .map_err(AppError::internal)??;
    if let Err(e) = state.blobs.put(&staged.sha256, &staged.path).await {
        let _ = std::fs::remove_file(&staged.path);
        return Err(AppError::internal(e));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    let room = rooms::writable_in(&txn, access.room.id, access.user_id).await?;
    let created = attachment::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(room.tenant_id),
        room_id: Set(room.id),
        uploaded_by: Set(access.user_id),
        file_name: Set(clean_file_name(file_name)),
        content_type: Set(staged.kind.content_type().to_string()),
        size_bytes: Set(i64::try_from(staged.size).unwrap_or(i64::MAX)),
        sha256: Set(staged.sha256),
        note_id: Set(None),
        created_at: Set(now()),
    }
    .insert(&txn)
    .await?;
    let event = Event::new(room.tenant_id, "attachment.upload", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("attachment", created.id)
        .detail("contentType", created.content_type.clone())
        .detail("sizeBytes", created.size_bytes);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(created)
}

/// An attachment of the caller's tenant (NOT_FOUND otherwise).
pub async fn in_tenant(
    db: &impl sea_orm::ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<attachment::Model> {
    attachment::Entity::find_by_id(id)
        .filter(attachment::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field(err: AppError) -> String {
        match err {
            AppError::BadUserInput { field, .. } => field,
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        }
    }

    #[test]
    fn the_type_comes_from_the_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some(Kind::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(Kind::Png));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(Kind::Pdf));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0"), Some(Kind::Heic));
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0\x02\0"), Some(Kind::Mp4));
        assert_eq!(sniff(b"\0\0\0\x20ftypqt  \0\0\x02\0"), None);
        assert_eq!(sniff(b"<html><script>"), None);
        assert_eq!(sniff(b"GIF89a"), None);
    }

    #[test]
    fn file_names_lose_their_directories() {
        assert_eq!(clean_file_name("C:\\Users\\me\\写真.jpg"), "写真.jpg");
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("a\u{0}b\n.pdf"), "ab.pdf");
        assert_eq!(clean_file_name("dir/"), "file");
    }

    #[test]
    fn staging_hashes_and_stops_at_the_limit_of_the_type() {
        let dir = tempfile::tempdir().unwrap();
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(std::iter::repeat_n(7u8, 100));
        let staged = stage(png.as_slice(), dir.path(), 108, 1000).unwrap();
        assert_eq!(staged.kind, Kind::Png);
        assert_eq!(staged.size, 108);
        assert_eq!(staged.sha256, hex::encode(Sha256::digest(&png)));
        assert_eq!(std::fs::read(&staged.path).unwrap(), png);

        let err = stage(png.as_slice(), dir.path(), 107, 1000).unwrap_err();
        assert_eq!(field(err), "file");
        // A video may be larger than a picture.
        let mut mp4 = b"\0\0\0\x20ftypisom".to_vec();
        mp4.extend(std::iter::repeat_n(0u8, 500));
        assert!(stage(mp4.as_slice(), dir.path(), 100, 1000).is_ok());
        assert_eq!(
            field(stage(&b""[..], dir.path(), 100, 1000).unwrap_err()),
            "file"
        );
        assert_eq!(
            field(stage(&b"hello"[..], dir.path(), 100, 1000).unwrap_err()),
            "file"
        );
        // Refused uploads leave nothing behind: only the one accepted PNG and MP4 remain.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
