//! Writing the rendered tree to `OUT/src`, atomically and only when something changed.
//!
//! The generator owns `OUT/src` entirely. A run computes the full tree in memory and compares it
//! byte for byte with what is on disk:
//!
//! - nothing changed ⇒ nothing is touched (every mtime is kept);
//! - otherwise a complete new tree is staged in `OUT/.skillgen-staging` — unchanged files are
//!   hard-linked from the current tree (so they keep their mtime; copy + restore mtime where
//!   links are not possible), changed files are written, the tree is flushed to disk — and
//!   then swapped with
//!   `OUT/src` in one step: `renameat2(RENAME_EXCHANGE)` on Linux; elsewhere `src` is renamed to
//!   `OUT/.skillgen-old`, the staging directory to `src`, and the old tree deleted.
//!
//! Readers therefore see either the old tree or the new one, never a mix. An interrupted run
//! is repaired by [`recover`] at the start of the next one: a leftover staging directory is
//! deleted, and if `src` is missing while `.skillgen-old` exists, the old tree is restored.
//! `OUT/.skillgen-digest` ([`crate::digest`]) is written after the swap, last.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// The directory under OUT that the generator owns.
pub const SRC_DIR: &str = "src";
/// Where the next tree is assembled.
pub const STAGING_DIR: &str = ".skillgen-staging";
/// Where the previous tree waits to be deleted (non-Linux swap).
pub const OLD_DIR: &str = ".skillgen-old";

/// What is on disk under `OUT/src`: files (relative to OUT) and directories.
#[derive(Debug, Default)]
pub struct DiskTree {
    /// File contents by path relative to OUT (`src/lib.rs`).
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Directories, relative to OUT (`src`, `src/encoder`).
    pub dirs: BTreeSet<PathBuf>,
    /// Entries that are neither files nor directories (symlinks, ...), relative to OUT.
    pub others: BTreeSet<PathBuf>,
}

/// How the rendered tree differs from disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// In the new tree, not on disk.
    pub missing: Vec<PathBuf>,
    /// On disk with different bytes.
    pub stale: Vec<PathBuf>,
    /// Identical on disk.
    pub unchanged: Vec<PathBuf>,
    /// On disk (files or other entries), not in the new tree.
    pub extra: Vec<PathBuf>,
    /// Directory structure differs (e.g. an empty leftover directory).
    pub dirs_differ: bool,
}

impl Diff {
    /// Whether disk already holds exactly the new tree.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.stale.is_empty()
            && self.extra.is_empty()
            && !self.dirs_differ
    }
}

/// Reads `OUT/src` (an absent directory is an empty tree). The files are read on all cores.
pub fn read(out: &Path) -> Result<DiskTree, Error> {
    let mut tree = DiskTree::default();
    let src = out.join(SRC_DIR);
    let mut files = Vec::new();
    match fs::symlink_metadata(&src) {
        Ok(m) if m.is_dir() => {
            tree.dirs.insert(PathBuf::from(SRC_DIR));
            walk(out, &src, &mut tree, &mut files)?;
        }
        Ok(_) => {
            tree.others.insert(PathBuf::from(SRC_DIR));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&src, e)),
    }
    let contents = crate::par::parallel_map(&files, |rel| {
        let path = out.join(rel);
        fs::read(&path).map_err(|e| Error::io(&path, e))
    });
    for (rel, bytes) in files.into_iter().zip(contents) {
        tree.files.insert(rel, bytes?);
    }
    Ok(tree)
}

/// Lists `dir` recursively: directories and other entries into `tree`, files into `files`.
fn walk(
    out: &Path,
    dir: &Path,
    tree: &mut DiskTree,
    files: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let rel = path.strip_prefix(out).unwrap_or(&path).to_owned();
        let ty = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ty.is_dir() {
            tree.dirs.insert(rel);
            walk(out, &path, tree, files)?;
        } else if ty.is_file() {
            files.push(rel);
        } else {
            tree.others.insert(rel);
        }
    }
    Ok(())
}

/// Directories (relative to OUT) that the files of `tree` need.
pub(crate) fn needed_dirs<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for p in paths {
        let mut cur = p.parent();
        while let Some(d) = cur {
            if d.as_os_str().is_empty() {
                break;
            }
            dirs.insert(d.to_owned());
            cur = d.parent();
        }
    }
    dirs
}

/// Compares the rendered tree with disk.
pub fn diff(new: &BTreeMap<PathBuf, String>, disk: &DiskTree) -> Diff {
    let mut d = Diff::default();
    for (path, text) in new {
        match disk.files.get(path) {
            None => d.missing.push(path.clone()),
            Some(bytes) if bytes.as_slice() == text.as_bytes() => d.unchanged.push(path.clone()),
            Some(_) => d.stale.push(path.clone()),
        }
    }
    for path in disk.files.keys().chain(disk.others.iter()) {
        if !new.contains_key(path) {
            d.extra.push(path.clone());
        }
    }
    d.extra.sort();
    d.dirs_differ = needed_dirs(new.keys()) != disk.dirs;
    d
}

/// Repairs what an interrupted run may have left: deletes a staging directory, restores
/// `src` from `.skillgen-old` if `src` is missing, and deletes a stale `.skillgen-old`.
pub fn recover(out: &Path) -> Result<(), Error> {
    let staging = out.join(STAGING_DIR);
    if staging.symlink_metadata().is_ok() {
        remove_all(&staging)?;
    }
    let old = out.join(OLD_DIR);
    let src = out.join(SRC_DIR);
    if old.symlink_metadata().is_ok() {
        if src.symlink_metadata().is_err() {
            fs::rename(&old, &src).map_err(|e| Error::io(&old, e))?;
        } else {
            remove_all(&old)?;
        }
    }
    Ok(())
}

fn remove_all(path: &Path) -> Result<(), Error> {
    let meta = path.symlink_metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(|e| Error::io(path, e))
    } else {
        fs::remove_file(path).map_err(|e| Error::io(path, e))
    }
}

/// Replaces `OUT/src` with `new` (paths relative to OUT, all under `src/`). `diff` must be the
/// diff of `new` against the current disk; unchanged files are linked, not rewritten.
pub fn apply(out: &Path, new: &BTreeMap<PathBuf, String>, diff: &Diff) -> Result<(), Error> {
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let staging = out.join(STAGING_DIR);
    let src = out.join(SRC_DIR);
    let unchanged: BTreeSet<&PathBuf> = diff.unchanged.iter().collect();

    fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let result = (|| {
        let staged_root = |rel: &Path| -> PathBuf {
            let inner = rel.strip_prefix(SRC_DIR).unwrap_or(rel);
            staging.join(inner)
        };
        for dir in needed_dirs(new.keys()) {
            if dir != Path::new(SRC_DIR) {
                let d = staged_root(&dir);
                fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
        }
        // Creating files is most of the cost (the kernel's inode allocation): spread it over
        // the cores. The first error in path order is reported.
        let files: Vec<(&PathBuf, &String)> = new.iter().collect();
        let written = crate::par::parallel_map(&files, |&(rel, text)| {
            let target = staged_root(rel);
            if unchanged.contains(rel) {
                link_or_copy(&out.join(rel), &target)
            } else {
                write_file(&target, text.as_bytes())
            }
        });
        written.into_iter().collect::<Result<(), Error>>()?;
        // Everything must be durable before the swap makes it visible.
        sync_tree(&staging, new.keys().map(|rel| staged_root(rel)))?;
        swap(out, &staging, &src)
    })();
    if result.is_err() && staging.symlink_metadata().is_ok() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))
}

/// Flushes the staged tree to disk: one `syncfs` on Linux (hundreds of per-file `fsync`s cost
/// seconds), otherwise `fsync` on every file and directory.
fn sync_tree(staging: &Path, files: impl Iterator<Item = PathBuf>) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let dir = fs::File::open(staging).map_err(|e| Error::io(staging, e))?;
        if rustix::fs::syncfs(&dir).is_ok() {
            return Ok(());
        }
    }
    let mut dirs = BTreeSet::new();
    for file in files {
        let f = fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        f.sync_all().map_err(|e| Error::io(&file, e))?;
        if let Some(parent) = file.parent() {
            dirs.insert(parent.to_owned());
        }
    }
    dirs.insert(staging.to_owned());
    for d in dirs {
        sync_dir(&d);
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), Error> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let modified = fs::metadata(from)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(from, e))?;
    let bytes = fs::read(from).map_err(|e| Error::io(from, e))?;
    write_file(to, &bytes)?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(to)
        .map_err(|e| Error::io(to, e))?;
    f.set_modified(modified).map_err(|e| Error::io(to, e))
}

/// Best effort: make directory entries durable (not supported everywhere).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Puts the staged tree in place of `src` and deletes the old tree.
fn swap(out: &Path, staging: &Path, src: &Path) -> Result<(), Error> {
    if src.symlink_metadata().is_err() {
        fs::rename(staging, src).map_err(|e| Error::io(src, e))?;
        sync_dir(out);
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, staging, CWD, src, RenameFlags::EXCHANGE) {
            Ok(()) => {
                sync_dir(out);
                // `staging` now holds the old tree.
                return remove_all(staging);
            }
            // Filesystems without RENAME_EXCHANGE fall back to the two-rename swap.
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(Error::io(src, e.into())),
        }
    }
    let old = out.join(OLD_DIR);
    fs::rename(src, &old).map_err(|e| Error::io(src, e))?;
    if let Err(e) = fs::rename(staging, src) {
        let _ = fs::rename(&old, src);
        return Err(Error::io(src, e));
    }
    sync_dir(out);
    remove_all(&old)
}

// ---------------------------------------------------------------------------------------------
// Single files outside OUT (`SUPPORT.md`): the same rules, one file.
// ---------------------------------------------------------------------------------------------

/// Where [`write_file_if_changed`] stages `path`: `.NAME.skillgen-tmp` next to it.
pub fn staging_file(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.skillgen-tmp"))
}

/// How `path` differs from `bytes`: `None` when identical, else `missing` or `stale`.
pub fn file_state(path: &Path, bytes: &[u8]) -> Result<Option<&'static str>, Error> {
    match fs::read(path) {
        Ok(current) if current == bytes => Ok(None),
        Ok(_) => Ok(Some("stale")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some("missing")),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Deletes what an interrupted [`write_file_if_changed`] of `path` left behind.
pub fn recover_file(path: &Path) -> Result<(), Error> {
    let staged = staging_file(path);
    match fs::remove_file(&staged) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&staged, e)),
        _ => Ok(()),
    }
}

/// Replaces `path` with `bytes` atomically (write a staging file next to it, flush, rename),
/// and only when the bytes differ, so that an unchanged file keeps its mtime. Returns whether
/// it wrote.
pub fn write_file_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, Error> {
    write_file_atomic(path, bytes, true)
}

/// [`write_file_if_changed`], with the flushes to disk only when `durable` (a cache file that
/// is verified before use need not survive a power cut).
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<bool, Error> {
    if file_state(path, bytes)?.is_none() {
        return Ok(false);
    }
    let staged = staging_file(path);
    let result = (|| {
        let mut f = fs::File::create(&staged).map_err(|e| Error::io(&staged, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&staged, e))?;
        if durable {
            f.sync_all().map_err(|e| Error::io(&staged, e))?;
        }
        drop(f);
        fs::rename(&staged, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&staged);
    }
    result?;
    if durable && let Some(dir) = path.parent() {
        sync_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        });
    }
    Ok(true)
}
