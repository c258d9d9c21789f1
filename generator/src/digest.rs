//! `OUT/.skillgen-digest`: skipping the render when nothing that feeds it changed.
//!
//! Rendering is a pure function of the registry (its bytes and file name, which the `@generated`
//! header names), the templates (names and bytes) and the generator itself. After a successful
//! run, [`generate`](crate::generate) writes, last and atomically, a digest of what it wrote:
//!
//! ```text
//! skillgen-digest 1
//! key 5f0c1d3a9b7e2468            hash of the inputs (see `Inputs::read`)
//! skills 804
//! support 38565 0a1b2c3d4e5f6789  SUPPORT.md: length, hash
//! file 46596 1122334455667788 src/lib.rs
//! ...                             one line per file of OUT/src, sorted
//! check 8899aabbccddeeff          hash of every line above
//! ```
//!
//! The next run hashes the inputs again; if the key matches, it reads `OUT/src` and the support
//! table and checks them against the digest: the same set of files (no extra file, directory or
//! symlink either), each with the recorded length and hash. Only then is the render skipped.
//! A hand-edited, deleted or added generated file, an edited registry or template, or a rebuilt
//! generator therefore all lead to a full render (which then writes only what differs), and a
//! digest that is missing, unreadable, truncated or garbled (`check` line) is ignored, never
//! trusted. `--force` skips the digest altogether. Where the outputs live (`--out`, `--support`)
//! is not part of the key: they are checked by content wherever the run looks for them. Dry runs
//! and failed runs leave the digest as it was.
//!
//! The generator's identity is its version and its executable's metadata (size, mtime, device
//! and inode): any rebuild — of the generator, `skillgen-vocab`, tera, syn, prettyplease, other
//! features or another profile — makes a new file, so the first run of a new build renders.
//! Where the executable cannot be found there is no key, and every run renders.
//!
//! The digest names no absolute path and no mtime of an output, so two output directories
//! generated from the same inputs by the same binary hold the same digest; it is a local cache
//! and is not committed (`.gitignore` has `**/.skillgen-*`): a clean clone has none and renders.
//! Hashes are std's `DefaultHasher` (SipHash-1-3, fixed keys): 64 bits, good against accidental
//! edits, not a security boundary; its algorithm may change between Rust releases, which also
//! changes the executable and so the key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Config, Error, tree};

/// The digest's file name inside OUT.
pub const FILE: &str = ".skillgen-digest";

const MAGIC: &str = "skillgen-digest 1";

/// Where the digest of `out` lives.
pub fn path(out: &Path) -> PathBuf {
    out.join(FILE)
}

/// Everything a render reads, read once: the key is computed from these same bytes, so a file
/// edited during the run cannot be rendered from one version and keyed with another.
#[derive(Debug)]
pub struct Inputs {
    /// The registry's bytes.
    pub registry: Vec<u8>,
    /// The templates (see [`crate::render::sources`]), or why they could not be read (reported
    /// after the registry's own problems, as before the digest existed).
    pub templates: Result<Vec<(String, String)>, Error>,
    /// The hash of the inputs and the generator, if the generator's identity is known and the
    /// templates could be read.
    pub key: Option<u64>,
}

impl Inputs {
    /// Reads the registry and the templates of `config` and computes the key.
    pub fn read(config: &Config) -> Result<Self, Error> {
        let registry = fs::read(&config.registry).map_err(|e| Error::io(&config.registry, e))?;
        let templates = crate::render::sources(&config.templates);
        let key = match (&templates, generator_identity()) {
            (Ok(templates), Some(identity)) => {
                let mut h = Fingerprint::new();
                h.bytes(MAGIC.as_bytes());
                h.bytes(identity.as_bytes());
                h.bytes(crate::registry_file_name(config).as_bytes());
                h.bytes(&registry);
                h.u64(templates.len() as u64);
                for (name, text) in templates {
                    h.bytes(name.as_bytes());
                    h.bytes(text.as_bytes());
                }
                Some(h.finish())
            }
            _ => None,
        };
        Ok(Self {
            registry,
            templates,
            key,
        })
    }
}

/// The running generator: its version and its executable's identity (computed once).
fn generator_identity() -> Option<&'static str> {
    static IDENTITY: OnceLock<Option<String>> = OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            // On Linux, `/proc/self/exe` is the running file itself, even if a rebuild has
            // replaced it on disk since this process started.
            let running = if cfg!(target_os = "linux") {
                fs::metadata("/proc/self/exe").ok()
            } else {
                None
            };
            let meta = match running {
                Some(meta) => meta,
                None => fs::metadata(std::env::current_exe().ok()?).ok()?,
            };
            let mtime = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            #[cfg(unix)]
            let (dev, ino) = {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino())
            };
            #[cfg(not(unix))]
            let (dev, ino) = (0u64, 0u64);
            Some(format!(
                "skillgen {} exe {} bytes, mtime {}.{:09}, dev {dev}, inode {ino}",
                env!("CARGO_PKG_VERSION"),
                meta.len(),
                mtime.as_secs(),
                mtime.subsec_nanos()
            ))
        })
        .as_deref()
}

/// A stored digest that matches the inputs and the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// Number of skills the registry had.
    pub skills: usize,
    /// The files of `OUT/src`, relative to OUT, sorted.
    pub files: Vec<PathBuf>,
}

/// A parsed digest file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digest {
    key: u64,
    skills: usize,
    support: (u64, u64),
    files: BTreeMap<PathBuf, (u64, u64)>,
}

/// Whether OUT already holds what rendering inputs with `key` gives: the digest in OUT has this
/// key, and `OUT/src` and the support table match it file for file. `None` when there is no
/// usable digest, anything differs or anything cannot be read (the caller then renders, and
/// reports any error the way it always did).
pub fn fresh(config: &Config, key: u64) -> Option<Fresh> {
    let text = fs::read_to_string(path(&config.out)).ok()?;
    let digest = parse(&text)?;
    if digest.key != key || fingerprint(&fs::read(&config.support).ok()?) != digest.support {
        return None;
    }
    let disk = tree::read(&config.out).ok()?;
    if !disk.others.is_empty()
        || disk.files.len() != digest.files.len()
        || tree::needed_dirs(digest.files.keys()) != disk.dirs
    {
        return None;
    }
    let files: Vec<(&PathBuf, &Vec<u8>)> = disk.files.iter().collect();
    let matches = crate::par::parallel_map(&files, |&(path, bytes)| {
        digest.files.get(path) == Some(&fingerprint(bytes))
    });
    if !matches.into_iter().all(|m| m) {
        return None;
    }
    Some(Fresh {
        skills: digest.skills,
        files: digest.files.into_keys().collect(),
    })
}

/// The digest of a completed run, or `None` if a path cannot be written on one line.
pub fn encode(
    key: u64,
    skills: usize,
    files: &BTreeMap<PathBuf, String>,
    support: &str,
) -> Option<String> {
    let mut text = String::with_capacity(64 + files.len() * 64);
    let (len, sum) = fingerprint(support.as_bytes());
    let _ = write!(
        text,
        "{MAGIC}\nkey {key:016x}\nskills {skills}\nsupport {len} {sum:016x}\n"
    );
    for (path, contents) in files {
        let path = path.to_str()?;
        if path.is_empty() || path.contains(['\n', '\r']) {
            return None;
        }
        let (len, sum) = fingerprint(contents.as_bytes());
        let _ = writeln!(text, "file {len} {sum:016x} {path}");
    }
    let check = hash(text.as_bytes());
    let _ = writeln!(text, "check {check:016x}");
    Some(text)
}

/// Replaces the digest of `out` with `text` if it differs (atomically: a staging file renamed
/// over it). Not flushed to disk: after a crash, a lost or garbled digest only costs a render.
pub fn write(out: &Path, text: &str) -> Result<bool, Error> {
    tree::write_file_atomic(&path(out), text.as_bytes(), false)
}

/// Deletes the digest of `out` (nothing to do if there is none).
pub fn remove(out: &Path) -> Result<(), Error> {
    let path = path(out);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
        _ => Ok(()),
    }
}

fn parse(text: &str) -> Option<Digest> {
    let body_len = text.strip_suffix('\n')?.rfind('\n')? + 1;
    let (body, last) = text.split_at(body_len);
    let check = hex(last.strip_prefix("check ")?.strip_suffix('\n')?)?;
    if check != hash(body.as_bytes()) {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let key = hex(lines.next()?.strip_prefix("key ")?)?;
    let skills = lines.next()?.strip_prefix("skills ")?.parse().ok()?;
    let mut support = lines.next()?.strip_prefix("support ")?.splitn(2, ' ');
    let support = (support.next()?.parse().ok()?, hex(support.next()?)?);
    let mut files = BTreeMap::new();
    for line in lines {
        let mut fields = line.strip_prefix("file ")?.splitn(3, ' ');
        let len = fields.next()?.parse().ok()?;
        let hash = hex(fields.next()?)?;
        let path = PathBuf::from(fields.next()?);
        if files.insert(path, (len, hash)).is_some() {
            return None;
        }
    }
    Some(Digest {
        key,
        skills,
        support,
        files,
    })
}

fn hex(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// (length, hash) of a file's bytes.
fn fingerprint(bytes: &[u8]) -> (u64, u64) {
    (bytes.len() as u64, hash(bytes))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// A hash over a sequence of length-prefixed fields.
struct Fingerprint(DefaultHasher);

impl Fingerprint {
    fn new() -> Self {
        Self(DefaultHasher::new())
    }

    fn u64(&mut self, n: u64) {
        self.0.write(&n.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.0.write(bytes);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        let files: BTreeMap<PathBuf, String> = [
            (PathBuf::from("src/lib.rs"), "pub mod a;\n".to_owned()),
            (PathBuf::from("src/a/mod.rs"), "// a\n".to_owned()),
        ]
        .into();
        encode(0xfeed, 2, &files, "# Support\n").unwrap()
    }

    #[test]
    fn encode_then_parse() {
        let digest = parse(&sample()).expect("parses");
        assert_eq!(digest.key, 0xfeed);
        assert_eq!(digest.skills, 2);
        assert_eq!(digest.support, fingerprint(b"# Support\n"));
        assert_eq!(
            digest.files.keys().collect::<Vec<_>>(),
            [Path::new("src/a/mod.rs"), Path::new("src/lib.rs")]
        );
        assert_eq!(
            digest.files[Path::new("src/lib.rs")],
            fingerprint(b"pub mod a;\n")
        );
    }

    #[test]
    fn a_damaged_digest_is_rejected() {
        let text = sample();
        assert!(parse("").is_none());
        assert!(parse("\n").is_none());
        assert!(parse("check 0000000000000000\n").is_none());
        // Truncated anywhere.
        for cut in 0..text.len() {
            assert!(parse(&text[..cut]).is_none(), "accepted {:?}", &text[..cut]);
        }
        // Any line changed, dropped or duplicated without fixing the check line.
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() - 1 {
            let mut edited = lines.clone();
            edited.remove(i);
            assert!(
                parse(&(edited.join("\n") + "\n")).is_none(),
                "dropped line {i}"
            );
            let mut edited = lines.clone();
            edited.insert(i, lines[i]);
            assert!(
                parse(&(edited.join("\n") + "\n")).is_none(),
                "doubled line {i}"
            );
        }
        let flipped = text.replacen("skills 2", "skills 3", 1);
        assert!(parse(&flipped).is_none());
        // A well-formed but foreign body with a correct check line is parsed, but only used if
        // its key matches and the disk matches it (see `fresh`).
        let body =
            "skillgen-digest 1\nkey 0000000000000001\nskills 0\nsupport 0 0000000000000000\n";
        let forged = format!("{body}check {:016x}\n", hash(body.as_bytes()));
        assert_eq!(parse(&forged).map(|d| d.key), Some(1));
        let bad_magic = body.replacen("digest 1", "digest 2", 1);
        let bad = format!("{bad_magic}check {:016x}\n", hash(bad_magic.as_bytes()));
        assert!(parse(&bad).is_none());
    }

    #[test]
    fn paths_that_do_not_fit_on_a_line_give_no_digest() {
        let files: BTreeMap<PathBuf, String> =
            [(PathBuf::from("src/a\nb.rs"), String::new())].into();
        assert!(encode(1, 1, &files, "").is_none());
    }

    #[test]
    fn the_generator_has_an_identity() {
        let id = generator_identity().expect("the test binary has metadata");
        assert!(id.starts_with(concat!("skillgen ", env!("CARGO_PKG_VERSION"))));
        assert_eq!(generator_identity(), Some(id), "computed once");
    }
}
