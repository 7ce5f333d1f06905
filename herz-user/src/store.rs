//! The durable journal's directory: segment files named by their first sequence number,
//! memory-mapped shared, space reserved up front, one daemon at a time (a lock file).
//!
//! ```text
//! <dir>/LOCK                          flock()ed by the daemon that owns the directory
//! <dir>/00000000000000000001.hzj      messages 1 .. (format: herz_core::engine::journal::segment)
//! <dir>/00000000000000524289.hzj      ...
//! ```
//!
//! A segment file is created at its full size with `posix_fallocate`, so that a full disk is an
//! error at segment creation (the message is refused and counted) rather than a SIGBUS when a
//! store into the mapping finds no block behind it. Creating and deleting files fsyncs the
//! directory, so the set of segments survives a power cut along with their contents.

use std::{
    fs::{File, OpenOptions},
    io,
    ops::Range,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use herz_core::{
    engine::journal::{
        Journal,
        durable::{DurableConfig, OpenReport, SegmentStore, Segments},
        segment::SegmentMemory,
    },
    protocol::moldudp64::Session,
};
use memmap2::MmapMut;

const SUFFIX: &str = "hzj";

/// One segment file, mapped.
struct MappedSegment {
    map: MmapMut,
    /// Kept open for `fdatasync` of the file's size and blocks (the mapping is synced by msync).
    _file: File,
}

impl SegmentMemory for MappedSegment {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    fn sync(&self, range: Range<usize>) -> io::Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        // memmap2 rounds the start down to a page boundary.
        self.map.flush_range(range.start, range.len())
    }
}

/// Creates and deletes the segment files of one directory.
struct DirStore {
    dir: PathBuf,
    /// The directory itself, for fsync after creating or deleting a file.
    handle: File,
}

impl DirStore {
    fn path(&self, first_seq: u64) -> PathBuf {
        segment_path(&self.dir, first_seq)
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SUFFIX}"))
}

impl SegmentStore for DirStore {
    fn create(&mut self, first_seq: u64, len: usize) -> io::Result<Box<dyn SegmentMemory>> {
        let path = self.path(first_seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // SAFETY: plain FFI call on an open descriptor; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::from_raw_os_error(rc));
        }
        self.handle.sync_all()?;
        Ok(Box::new(map(file, &path)?))
    }

    fn remove(&mut self, first_seq: u64) -> io::Result<()> {
        std::fs::remove_file(self.path(first_seq))?;
        self.handle.sync_all()
    }
}

fn map(file: File, path: &Path) -> io::Result<MappedSegment> {
    // SAFETY: the file is private to this daemon (the directory is locked, see `open`); no other
    // process truncates it while mapped, and every access goes through the mapping's bounds.
    let map = unsafe { MmapMut::map_mut(&file) }
        .map_err(|e| io::Error::new(e.kind(), format!("mmap {}: {e}", path.display())))?;
    Ok(MappedSegment { map, _file: file })
}

/// What opening a journal directory found, for the start-up log.
#[derive(Debug)]
pub struct Opened {
    /// The journal.
    pub journal: Journal,
    /// Segments, messages and torn appends found.
    pub report: OpenReport,
    /// Whether the directory held a journal already (`false`: a new session was started).
    pub resumed: bool,
    /// How long reading the directory and recovering took.
    pub took: std::time::Duration,
    /// The directory's lock; released when dropped (at exit).
    pub lock: File,
}

/// Opens (or starts) the durable journal in `dir`. `wanted`: the session the configuration
/// names, if it names one; `fresh`: the session to start when the directory is empty. Refuses a
/// directory locked by another daemon, holding another session than `wanted`, or damaged in a
/// way that would renumber messages.
pub fn open(
    dir: &Path,
    config: DurableConfig,
    wanted: Option<Session>,
    fresh: Session,
    unix_ns: u64,
) -> anyhow::Result<Opened> {
    let start = Instant::now();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create journal directory {}", dir.display()))?;
    let lock = lock(dir)?;
    let found = segment_files(dir)?;
    let mut existing: Vec<(u64, Box<dyn SegmentMemory>)> = Vec::with_capacity(found.len());
    let newest = found.last().map(|(s, _)| *s);
    for (first_seq, path) in found {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open journal segment {}", path.display()))?;
        let len = file.metadata()?.len();
        if len == 0 {
            // Created, never reserved: the daemon died inside segment creation.
            if Some(first_seq) == newest {
                tracing::warn!(path = %path.display(), "removing an empty segment left by an interrupted start of a segment");
                std::fs::remove_file(&path)?;
                continue;
            }
            anyhow::bail!("journal segment {} is empty", path.display());
        }
        let segment = map(file, &path).with_context(|| format!("cannot map {}", path.display()))?;
        if Some(first_seq) == newest && segment.map[..8].iter().all(|&b| b == 0) {
            // Reserved but no header written: the same interruption, a moment later.
            tracing::warn!(path = %path.display(), "removing a segment without header left by an interrupted start of a segment");
            drop(segment);
            std::fs::remove_file(&path)?;
            continue;
        }
        existing.push((first_seq, Box::new(segment)));
    }
    let resumed = !existing.is_empty();
    let handle = File::open(dir)?;
    let store = DirStore {
        dir: dir.to_path_buf(),
        handle,
    };
    let (segments, report) = Segments::open(
        config,
        Box::new(store),
        existing,
        wanted.unwrap_or(fresh),
        unix_ns,
    )
    .with_context(|| format!("journal directory {}", dir.display()))?;
    if let Some(wanted) = wanted
        && segments.session() != wanted
    {
        anyhow::bail!(
            "journal directory {} holds session {}, but journal.session is {wanted}: a new session starts only on purpose: `herz journal new-session` archives this one (or remove journal.session to continue {})",
            dir.display(),
            segments.session(),
            segments.session()
        );
    }
    Ok(Opened {
        journal: Journal::durable(segments),
        report,
        resumed,
        took: start.elapsed(),
        lock,
    })
}

/// Takes the directory's lock file, or says who holds it.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: plain FFI call on an open descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow::bail!(
            "journal directory {} is in use by another herz daemon (pid {})",
            dir.display(),
            holder.trim()
        );
    }
    file.set_len(0)?;
    std::fs::write(&path, std::process::id().to_string())?;
    Ok(file)
}

/// What a journal directory holds, read without opening the journal (`herz journal info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirInfo {
    /// The session of its segments (`None`: no segment).
    pub session: Option<Session>,
    /// Segment files.
    pub segments: usize,
    /// The oldest segment's first sequence number.
    pub first_seq: Option<u64>,
    /// Bytes of the segment files.
    pub bytes: u64,
}

/// The segment files of `dir`, by first sequence number.
fn segment_files(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read journal directory {}", dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(first_seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(&format!(".{SUFFIX}")))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((first_seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the directory's session and size from the segment headers.
pub fn info(dir: &Path) -> anyhow::Result<DirInfo> {
    let files = segment_files(dir)?;
    let mut bytes = 0;
    for (_, path) in &files {
        bytes += std::fs::metadata(path)?.len();
    }
    let session = match files.first() {
        Some((_, path)) => {
            let mut header = vec![0u8; herz_core::engine::journal::segment::HEADER_LEN];
            std::io::Read::read_exact(&mut File::open(path)?, &mut header)
                .with_context(|| format!("cannot read the header of {}", path.display()))?;
            let h = herz_core::engine::journal::segment::Header::decode(&header)
                .with_context(|| format!("{}", path.display()))?;
            Some(h.session)
        }
        None => None,
    };
    Ok(DirInfo {
        session,
        segments: files.len(),
        first_seq: files.first().map(|(s, _)| *s),
        bytes,
    })
}

/// Ends the directory's session on purpose: moves its segments to
/// `<dir>/archive/<session>-<unix seconds>/`, so that the next start begins a new session at
/// sequence 1. Refused while a daemon holds the directory. Returns the archive directory.
pub fn archive_session(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let _lock = lock(dir)?;
    let info = info(dir)?;
    let Some(session) = info.session else {
        return Ok(None);
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let archive = dir
        .join("archive")
        .join(format!("{}-{stamp}", session.to_string().trim()));
    std::fs::create_dir_all(&archive)
        .with_context(|| format!("cannot create {}", archive.display()))?;
    for (_, path) in segment_files(dir)? {
        let to = archive.join(path.file_name().expect("a file name"));
        std::fs::rename(&path, &to)
            .with_context(|| format!("cannot move {} to {}", path.display(), to.display()))?;
    }
    File::open(&archive)?.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(Some(archive))
}
