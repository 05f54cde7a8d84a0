//! The on-disk spool: a bounded, fsync'd, ordered queue of line-protocol batches.
//!
//! Layout of the spool directory:
//! - `<first>-<last>.seg`: segments of records, oldest first. A record is one batch (one
//!   `enqueue` call): `len: u32 LE`, `crc32: u32 LE` of the payload, then the payload,
//!   line-protocol text. An append is one `write` + `fdatasync`; a crash mid-write leaves
//!   a torn final record that the next open detects by length or CRC, counts and cuts off.
//!   A plain segment has `first == last`; a fold of segments `a..=b` is written beside
//!   them as `a-b.seg` (tmp + fsync + rename + directory fsync) before they are deleted,
//!   so a crash in between leaves a fold that shadows what it replaced.
//! - `cursor`: `v1 <acked seg> <acked offset> <attempted seg> <attempted offset>`: every
//!   record before the first position was acknowledged by the server; records before the
//!   second may have reached it, so they are resent as they are and never folded (a
//!   folded record carries new sums under an existing timestamp, which must not meet a
//!   copy of one of its parts at the collector).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use inferwatt_core::lineproto::{decode, encode, Precision};

use crate::fold::fold_points;

/// Bytes before each record's payload: length and CRC-32.
pub const RECORD_HEADER_BYTES: u64 = 8;
/// Largest payload accepted in one record (guards against reading a corrupt length).
const MAX_RECORD_BYTES: u64 = 1 << 30;
/// Largest segment size before a new one is started.
const MAX_SEGMENT_BYTES: u64 = 16 << 20;

/// Why the spool cannot store or give back a batch.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool file '{path}': {source}; check that the directory exists, is writable by this user and its disk is not full")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool '{dir}' is full: {bytes} bytes waiting, a batch of {incoming} more would pass 'ship.spool_max_bytes' = {max} and folding cannot free more; restore the connection to the server or raise 'ship.spool_max_bytes'")]
    Full {
        dir: PathBuf,
        bytes: u64,
        incoming: u64,
        max: u64,
    },
    #[error("spooled batch in '{path}' at offset {offset} cannot be folded: {reason}")]
    Fold {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("cannot encode a point for the spool: {0}")]
    Encode(#[from] inferwatt_core::lineproto::EncodeError),
}

/// What the spool counted since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpoolCounters {
    /// Records found torn or corrupt (length or CRC) and cut off.
    pub torn_records_total: u64,
    /// Points merged away by folding (input points minus output points).
    pub folded_points_total: u64,
    /// Spooled batches that went into a fold.
    pub folded_batches_total: u64,
    /// Enqueues refused because the spool was full and folding could not free room.
    pub refused_enqueues_total: u64,
}

/// A position in the spool: (segment's first id, byte offset in it).
type Pos = (u64, u64);

#[derive(Debug, Clone, Copy)]
struct Rec {
    seg: u64,
    off: u64,
    len: u64,
    points: u64,
}

impl Rec {
    fn pos(&self) -> Pos {
        (self.seg, self.off)
    }
    fn bytes(&self) -> u64 {
        RECORD_HEADER_BYTES + self.len
    }
}

#[derive(Debug)]
struct Seg {
    last: u64,
    size: u64,
}

#[derive(Debug)]
struct Active {
    first: u64,
    file: File,
    size: u64,
}

/// A batch taken for sending: the first `records` records, their body and point count.
#[derive(Debug)]
pub struct Batch {
    pub records: usize,
    pub points: u64,
    pub body: Vec<u8>,
}

/// The spool (see the module docs). Not thread-safe by itself: the shipper wraps it in a mutex.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    seg_target: u64,
    segs: BTreeMap<u64, Seg>,
    recs: VecDeque<Rec>,
    attempted: usize,
    active: Option<Active>,
    next_id: u64,
    live_bytes: u64,
    /// What the spool counted since it was opened.
    pub counters: SpoolCounters,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn seg_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.seg")
}

fn parse_seg_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (a, b) = stem.split_once('-')?;
    let (first, last) = (a.parse().ok()?, b.parse().ok()?);
    (first <= last).then_some((first, last))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

fn record_bytes(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(payload.len() + RECORD_HEADER_BYTES as usize);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Counts the points (lines) of a line-protocol payload.
fn count_points(payload: &[u8]) -> u64 {
    payload.iter().filter(|&&b| b == b'\n').count() as u64
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Spool {
    /// Opens (creating if needed) and recovers the spool in `dir`, bounded by `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            seg_target: (max_bytes / 16).clamp(1, MAX_SEGMENT_BYTES),
            segs: BTreeMap::new(),
            recs: VecDeque::new(),
            attempted: 0,
            active: None,
            next_id: 1,
            live_bytes: 0,
            counters: SpoolCounters::default(),
        };
        let mut found: Vec<(u64, u64)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
            } else if let Some(range) = parse_seg_name(&name) {
                found.push(range);
            }
        }
        // Oldest first; of segments starting together, the widest (a fold) first.
        found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let (acked, attempted) = spool.read_cursor()?;
        let mut covered: Option<u64> = None;
        for (first, last) in found {
            spool.next_id = spool.next_id.max(last + 1);
            let path = dir.join(seg_name(first, last));
            if covered.is_some_and(|c| first <= c) {
                // Replaced by a fold whose deletions a crash interrupted.
                tracing::info!(path = %path.display(), "removing a spool segment already folded");
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            covered = Some(last);
            let size = spool.load_segment(first, &path, acked)?;
            spool.segs.insert(first, Seg { last, size });
        }
        // Segments wholly acknowledged are deleted, except the newest, kept for appending.
        let newest = spool.segs.keys().next_back().copied();
        let front = spool.recs.front().map(|r| r.seg);
        let done: Vec<u64> = spool
            .segs
            .keys()
            .copied()
            .filter(|&s| Some(s) != newest && front.is_none_or(|f| s < f))
            .collect();
        for s in done {
            spool.remove_segment(s)?;
        }
        if let Some((&first, seg)) = spool.segs.iter().next_back() {
            if seg.last == first && seg.size < spool.seg_target {
                let path = dir.join(seg_name(first, first));
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                spool.active = Some(Active {
                    first,
                    file,
                    size: seg.size,
                });
            }
        }
        spool.attempted = spool
            .recs
            .iter()
            .take_while(|r| r.pos() < attempted)
            .count();
        sync_dir(dir)?;
        if !spool.recs.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                batches = spool.recs.len(),
                bytes = spool.live_bytes,
                "recovered spooled batches to replay"
            );
        }
        Ok(spool)
    }

    /// Reads one segment's records at or after `acked` into the queue; cuts off a torn
    /// tail. Returns the segment's size after the cut.
    fn load_segment(&mut self, first: u64, path: &Path, acked: Pos) -> Result<u64, SpoolError> {
        let data = fs::read(path).map_err(io_err(path))?;
        let mut off = 0u64;
        let total = data.len() as u64;
        while off < total {
            let valid = (|| {
                let start = usize::try_from(off).ok()?;
                let header = data.get(start..start + RECORD_HEADER_BYTES as usize)?;
                let len = u64::from(u32::from_le_bytes(header[0..4].try_into().ok()?));
                let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
                if len == 0 || len > MAX_RECORD_BYTES {
                    return None;
                }
                let body_start = start + RECORD_HEADER_BYTES as usize;
                let payload = data.get(body_start..body_start + usize::try_from(len).ok()?)?;
                (crc32(payload) == crc).then(|| (len, count_points(payload)))
            })();
            let Some((len, points)) = valid else {
                self.counters.torn_records_total += 1;
                tracing::warn!(
                    path = %path.display(),
                    offset = off,
                    cut_bytes = total - off,
                    "torn or corrupt record at the end of a spool segment (a crash mid-write?); cutting it off"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                file.set_len(off).map_err(io_err(path))?;
                file.sync_all().map_err(io_err(path))?;
                return Ok(off);
            };
            let rec = Rec {
                seg: first,
                off,
                len,
                points,
            };
            if rec.pos() >= acked {
                self.live_bytes += rec.bytes();
                self.recs.push_back(rec);
            }
            off += rec.bytes();
        }
        Ok(total)
    }

    fn cursor_path(&self) -> PathBuf {
        self.dir.join("cursor")
    }

    fn read_cursor(&self) -> Result<(Pos, Pos), SpoolError> {
        let path = self.cursor_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(((0, 0), (0, 0))),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let nums: Vec<u64> = text
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match (text.starts_with("v1 "), nums.as_slice()) {
            (true, [a, b, c, d]) => Ok(((*a, *b), (*c, *d))),
            _ => {
                // Replaying everything is safe: the collector deduplicates.
                tracing::warn!(path = %path.display(), "unreadable spool cursor; replaying every spooled batch");
                Ok(((0, 0), (0, 0)))
            }
        }
    }

    /// Where the next appended record will go.
    fn end_pos(&self) -> Pos {
        match &self.active {
            Some(a) => (a.first, a.size),
            None => (self.next_id, 0),
        }
    }

    fn pos_at(&self, index: usize) -> Pos {
        self.recs
            .get(index)
            .map_or_else(|| self.end_pos(), Rec::pos)
    }

    fn write_cursor(&self) -> Result<(), SpoolError> {
        let (a, b) = (self.pos_at(0), self.pos_at(self.attempted));
        let text = format!("v1 {} {} {} {}\n", a.0, a.1, b.0, b.1);
        let tmp = self.dir.join("cursor.tmp");
        let path = self.cursor_path();
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)
    }

    fn remove_segment(&mut self, first: u64) -> Result<(), SpoolError> {
        if let Some(seg) = self.segs.remove(&first) {
            let path = self.dir.join(seg_name(first, seg.last));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        if self.active.as_ref().is_some_and(|a| a.first == first) {
            self.active = None;
        }
        Ok(())
    }

    /// Bytes of spooled batches not yet acknowledged (headers included).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Spooled batches not yet acknowledged.
    pub fn batches(&self) -> usize {
        self.recs.len()
    }

    /// Points in the oldest batches, counted up to `cap` (enough to decide on a send).
    pub fn pending_points(&self, cap: usize) -> u64 {
        let mut n = 0u64;
        for r in &self.recs {
            n += r.points;
            if n >= cap as u64 {
                break;
            }
        }
        n
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably appends one batch (line-protocol text, newline-terminated lines), folding
    /// the oldest batches first when it would not fit.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), SpoolError> {
        let incoming = RECORD_HEADER_BYTES + payload.len() as u64;
        if let Err(e) = self.make_room(incoming) {
            self.counters.refused_enqueues_total += 1;
            return Err(e);
        }
        if self.active.is_none() {
            let first = self.next_id;
            let path = self.dir.join(seg_name(first, first));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
            self.next_id += 1;
            self.segs.insert(
                first,
                Seg {
                    last: first,
                    size: 0,
                },
            );
            self.active = Some(Active {
                first,
                file,
                size: 0,
            });
        }
        let buf = record_bytes(payload);
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let path = self.dir.join(seg_name(active.first, active.first));
        let written = active
            .file
            .write_all(&buf)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = written {
            // Leave no partial record behind for the next append to follow.
            let _ = active.file.set_len(active.size);
            return Err(io_err(&path)(e));
        }
        let rec = Rec {
            seg: active.first,
            off: active.size,
            len: payload.len() as u64,
            points: count_points(payload),
        };
        active.size += rec.bytes();
        let (first, size) = (active.first, active.size);
        if let Some(seg) = self.segs.get_mut(&first) {
            seg.size = size;
        }
        if size >= self.seg_target {
            self.active = None;
        }
        self.live_bytes += rec.bytes();
        self.recs.push_back(rec);
        Ok(())
    }

    /// Takes the oldest batches, up to `max_points` points (at least one batch), marks
    /// them attempted (durably) and returns their concatenated body. Records found
    /// corrupt on reading are cut out of the queue, logged and counted.
    pub fn take_batch(&mut self, max_points: usize) -> Result<Option<Batch>, SpoolError> {
        loop {
            let mut n = 0;
            let mut points = 0u64;
            while let Some(r) = self.recs.get(n) {
                if n > 0 && points + r.points > max_points as u64 {
                    break;
                }
                points += r.points;
                n += 1;
            }
            if n == 0 {
                return Ok(None);
            }
            let mut body = Vec::new();
            let mut bad = None;
            for i in 0..n {
                let rec = self.recs[i];
                match self.read_payload(&rec)? {
                    Some(p) => body.extend_from_slice(&p),
                    None => {
                        bad = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = bad {
                let rec = self.recs[i];
                self.counters.torn_records_total += 1;
                tracing::error!(
                    segment = rec.seg,
                    offset = rec.off,
                    "spooled batch fails its CRC check on reading; skipping it"
                );
                self.recs.remove(i);
                self.live_bytes -= rec.bytes();
                if i < self.attempted {
                    self.attempted -= 1;
                }
                continue;
            }
            if n > self.attempted {
                self.attempted = n;
                self.write_cursor()?;
            }
            return Ok(Some(Batch {
                records: n,
                points,
                body,
            }));
        }
    }

    /// Reads a record's payload; `None` when it fails its CRC.
    fn read_payload(&self, rec: &Rec) -> Result<Option<Vec<u8>>, SpoolError> {
        let last = self.segs.get(&rec.seg).map_or(rec.seg, |s| s.last);
        let path = self.dir.join(seg_name(rec.seg, last));
        let mut f = File::open(&path).map_err(io_err(&path))?;
        f.seek(SeekFrom::Start(rec.off)).map_err(io_err(&path))?;
        let mut buf = vec![0u8; rec.bytes() as usize];
        f.read_exact(&mut buf).map_err(io_err(&path))?;
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let payload = buf.split_off(RECORD_HEADER_BYTES as usize);
        Ok((crc32(&payload) == crc).then_some(payload))
    }

    /// Drops the first `records` batches (delivered, or dead-lettered) durably, and
    /// deletes segments no longer needed.
    pub fn ack(&mut self, records: usize) -> Result<(), SpoolError> {
        for _ in 0..records {
            if let Some(r) = self.recs.pop_front() {
                self.live_bytes -= r.bytes();
            }
        }
        self.attempted = self.attempted.saturating_sub(records);
        self.write_cursor()?;
        let front = self.recs.front().map(|r| r.seg);
        let active = self.active.as_ref().map(|a| a.first);
        let done: Vec<u64> = self
            .segs
            .keys()
            .copied()
            .filter(|&s| Some(s) != active && front.is_none_or(|f| s < f))
            .collect();
        if !done.is_empty() {
            for s in done {
                self.remove_segment(s)?;
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Folds the oldest foldable segments until `incoming` more bytes fit, or fails.
    fn make_room(&mut self, incoming: u64) -> Result<(), SpoolError> {
        let full = |s: &Spool| s.live_bytes + incoming > s.max_bytes;
        for _ in 0..64 {
            if !full(self) {
                return Ok(());
            }
            // Fold down to three quarters of the bound, so folding is not per interval.
            let need = (self.live_bytes + incoming).saturating_sub(self.max_bytes / 4 * 3);
            let Some(selection) = self.fold_candidates(need) else {
                break;
            };
            let before = self.live_bytes;
            self.fold(&selection)?;
            if self.live_bytes >= before {
                break;
            }
        }
        if full(self) {
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                bytes: self.live_bytes,
                incoming,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// The oldest sealed segments never attempted, enough to free about `need` bytes;
    /// `None` when fewer than two batches could be folded.
    fn fold_candidates(&self, need: u64) -> Option<Vec<u64>> {
        let blocked = self.attempted.checked_sub(1).map(|i| self.recs[i].seg);
        let active = self.active.as_ref().map(|a| a.first);
        let mut selection: Vec<u64> = Vec::new();
        let (mut bytes, mut recs, mut largest) = (0u64, 0usize, 0u64);
        for rec in self.recs.iter().skip(self.attempted) {
            if Some(rec.seg) == blocked || Some(rec.seg) == active {
                if Some(rec.seg) == active {
                    break;
                }
                continue;
            }
            if selection.last() != Some(&rec.seg) {
                if recs >= 2 && bytes >= need + largest {
                    break;
                }
                selection.push(rec.seg);
            }
            bytes += rec.bytes();
            largest = largest.max(rec.bytes());
            recs += 1;
        }
        (recs >= 2).then_some(selection)
    }

    /// Folds the given consecutive segments into one record in one new segment.
    fn fold(&mut self, selection: &[u64]) -> Result<(), SpoolError> {
        let (Some(&first), Some(&tail)) = (selection.first(), selection.last()) else {
            return Ok(());
        };
        let last = self.segs.get(&tail).map_or(tail, |s| s.last);
        let start = self.recs.iter().position(|r| r.seg == first).unwrap_or(0);
        let end = start
            + self
                .recs
                .iter()
                .skip(start)
                .take_while(|r| selection.contains(&r.seg))
                .count();
        let mut points = Vec::new();
        let mut in_points = 0u64;
        for i in start..end {
            let rec = self.recs[i];
            let path = self.dir.join(seg_name(
                rec.seg,
                self.segs.get(&rec.seg).map_or(rec.seg, |s| s.last),
            ));
            let fold_err = |reason: String| SpoolError::Fold {
                path: path.clone(),
                offset: rec.off,
                reason,
            };
            let payload = self
                .read_payload(&rec)?
                .ok_or_else(|| fold_err("it fails its CRC check".into()))?;
            let decoded =
                decode(&payload, Precision::Nanoseconds, 0).map_err(|e| fold_err(e.to_string()))?;
            in_points += decoded.len() as u64;
            points.extend(decoded);
        }
        let folded = fold_points(points);
        let out_points = folded.len() as u64;
        let payload = encode(&folded)?;
        let buf = record_bytes(payload.as_bytes());
        let tmp = self.dir.join("fold.tmp");
        let path = self.dir.join(seg_name(first, last));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&buf).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        for &s in selection {
            let old_last = self.segs.get(&s).map_or(s, |x| x.last);
            if (s, old_last) != (first, last) {
                self.remove_segment(s)?;
            } else {
                self.segs.remove(&s);
            }
        }
        sync_dir(&self.dir)?;
        let folded_batches = (end - start) as u64;
        let removed: Vec<Rec> = self.recs.drain(start..end).collect();
        self.live_bytes -= removed.iter().map(Rec::bytes).sum::<u64>();
        let rec = Rec {
            seg: first,
            off: 0,
            len: payload.len() as u64,
            points: out_points,
        };
        self.live_bytes += rec.bytes();
        self.recs.insert(start, rec);
        self.segs.insert(
            first,
            Seg {
                last,
                size: rec.bytes(),
            },
        );
        self.counters.folded_batches_total += folded_batches;
        self.counters.folded_points_total += in_points.saturating_sub(out_points);
        tracing::warn!(
            batches = folded_batches,
            points_in = in_points,
            points_out = out_points,
            "spool over 'ship.spool_max_bytes': folded the oldest batches into coarser intervals"
        );
        Ok(())
    }
}
