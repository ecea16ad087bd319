//! Where attachment bytes live: content-addressed by their SHA-256, behind a small trait so an
//! object store (S3-compatible) can replace the file system. The file store keeps
//! `<data_dir>/attachments/ab/abcdef…` (0600 files in 0700 directories); replicas share the
//! directory (a volume) or use an object store.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::AsyncRead;

pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// A directory on local disk where uploads are staged (hashed and checked) before `put`.
    fn staging_dir(&self) -> &Path;
    /// Moves a staged file into the store under its hash; a blob already there is kept (same
    /// hash, same bytes) and the staged copy removed.
    async fn put(&self, sha256: &str, staged: &Path) -> io::Result<()>;
    /// Opens a stored blob for reading.
    async fn open(&self, sha256: &str) -> io::Result<BlobReader>;
}

pub struct FileStore {
    root: PathBuf,
    staging: PathBuf,
}

impl FileStore {
    pub fn new(root: PathBuf) -> io::Result<FileStore> {
        let staging = root.join("staging");
        create_private_dir(&root)?;
        create_private_dir(&staging)?;
        Ok(FileStore { root, staging })
    }

    fn path_of(&self, sha256: &str) -> io::Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a SHA-256 hex digest",
            ));
        }
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl BlobStore for FileStore {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    async fn put(&self, sha256: &str, staged: &Path) -> io::Result<()> {
        let target = self.path_of(sha256)?;
        let staged = staged.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = target.parent() {
                create_private_dir(dir)?;
            }
            if target.exists() {
                std::fs::remove_file(&staged)
            } else {
                std::fs::rename(&staged, &target)
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn open(&self, sha256: &str) -> io::Result<BlobReader> {
        let file = tokio::fs::File::open(self.path_of(sha256)?).await?;
        Ok(Box::pin(file))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn stores_by_hash_and_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("attachments")).unwrap();
        let hash = "ab".repeat(32);
        for _ in 0..2 {
            let staged = store.staging_dir().join("upload");
            std::fs::write(&staged, b"bytes").unwrap();
            store.put(&hash, &staged).await.unwrap();
            assert!(!staged.exists());
        }
        let mut text = String::new();
        store
            .open(&hash)
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "bytes");
        assert!(store.open("../../etc/passwd").await.is_err());
    }
}
