//! Watches one file for a change of its contents (the operator JWT: a signing key added with
//! `nsc edit operator --sk generate`, a Kubernetes ConfigMap update), so trust is reloaded
//! without a SIGHUP.
//!
//! The parent directory is watched, not the file: editors and Kubernetes replace files by
//! renaming (a ConfigMap volume swaps a `..data` symlink), which a watch on the old inode would
//! miss. Any event in the directory re-reads the file; only a different SHA-256 of its contents
//! counts as a change, so touching or rewriting it unchanged does nothing.

use std::path::{Path, PathBuf};

use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// A watch on one file; [`FileWatch::changed`] resolves when its contents differ from what
/// they were when the watch started.
pub struct FileWatch {
    path: PathBuf,
    digest: Option<[u8; 32]>,
    events: mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
}

/// Whether a directory event may have changed the file. Opening, reading and closing are not
/// changes — and re-reading the file after each event opens and closes it, so counting them
/// would wake the reader forever (it spun at 2,000 reads a second, half a core, on every
/// instance with an operator JWT file). A write also reports a modification or creation,
/// which counts; an error counts too (events may have been lost).
fn may_change_contents(event: &notify::Result<notify::Event>) -> bool {
    !matches!(event, Ok(e) if e.kind.is_access())
}

fn digest_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}

impl FileWatch {
    /// Starts watching `path`'s directory.
    pub fn new(path: &Path) -> notify::Result<FileWatch> {
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if may_change_contents(&event) {
                    // A full queue already holds a wake-up: the reader re-reads the file anyway.
                    let _ = tx.try_send(());
                }
            })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(FileWatch {
            path: path.to_owned(),
            digest: digest_of(path),
            events,
            _watcher: watcher,
        })
    }

    /// Waits until the file's contents change (a file that disappears is not a change: a
    /// replacement is about to appear).
    pub async fn changed(&mut self) {
        loop {
            if self.events.recv().await.is_none() {
                // The watcher is gone: never report a change.
                return std::future::pending().await;
            }
            match digest_of(&self.path) {
                Some(now) if Some(now) != self.digest => {
                    self.digest = Some(now);
                    return;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};
    use notify::{Event, EventKind};

    #[test]
    fn reading_the_file_is_not_a_change_but_writing_it_is() {
        let access = [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Close(AccessMode::Read),
            AccessKind::Read,
        ];
        for kind in access {
            assert!(!may_change_contents(&Ok(Event::new(EventKind::Access(
                kind
            )))));
        }
        let changes = [
            EventKind::Modify(ModifyKind::Data(DataChange::Content)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(notify::event::RemoveKind::File),
            EventKind::Any,
        ];
        for kind in changes {
            assert!(may_change_contents(&Ok(Event::new(kind))), "{kind:?}");
        }
        assert!(may_change_contents(&Err(notify::Error::generic("lost"))));
    }
}
