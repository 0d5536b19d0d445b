//! The readers' side of the ledger: every log read from its end, the
//! lines merged newest-written first, the records they name read until
//! the newest `limit` are known, and the answer given only where no
//! record can be missing from the logs.
//!
//! Never writes. Trusts nothing it cannot check: a log another user owns
//! or may write, a line that does not parse, or fewer lines than asked
//! for after the latest `since` make it say "cannot tell".

use std::collections::{BinaryHeap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{CHUNK, Header, Line, at};
use crate::record::Record;
use crate::spool::Spool;
use crate::spool::newest::Newest;

/// A log read from its end, a chunk at a time: lines newest-written last
/// in the file come out first.
struct Tail {
    file: File,
    /// Where the part not read yet ends.
    end: u64,
    /// Where the lines start (after the header).
    start: u64,
    /// The start of a line cut by the last chunk read.
    carry: Vec<u8>,
    /// Lines read, not handed out yet, in file order.
    ready: Vec<Line>,
    /// Whether the next chunk is the first, at the end as it was opened.
    first: bool,
    /// How much is read at a time ([`CHUNK`]; less in tests).
    chunk: u64,
}

impl Tail {
    /// Opens a log; `None` when it cannot be trusted (see `read_whole`).
    fn open(path: &Path, owner: u32) -> Option<(Header, Tail)> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.uid() != owner || meta.mode() & 0o022 != 0 {
            return None;
        }
        let mut head = [0u8; 256];
        let n = (&file).read(&mut head).ok()?;
        let nl = head.get(..n)?.iter().position(|b| *b == b'\n')?;
        let header = Header::parse(std::str::from_utf8(head.get(..nl)?).ok()?)?;
        let size = meta.len();
        Some((
            header,
            Tail {
                file,
                end: size,
                start: nl as u64 + 1,
                carry: Vec::new(),
                ready: Vec::new(),
                first: true,
                chunk: CHUNK,
            },
        ))
    }

    /// The next line from the end; `Err` when the log cannot be trusted
    /// (a line that does not parse, a read that fails).
    fn next(&mut self) -> Result<Option<Line>, ()> {
        loop {
            if let Some(l) = self.ready.pop() {
                return Ok(Some(l));
            }
            if self.end <= self.start {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                let text = std::mem::take(&mut self.carry);
                return self.parse_block(&text).map(|()| self.ready.pop());
            }
            let from = self.end.saturating_sub(self.chunk).max(self.start);
            let mut buf = vec![0u8; (self.end - from) as usize];
            (&self.file).seek(SeekFrom::Start(from)).map_err(drop)?;
            (&self.file).read_exact(&mut buf).map_err(drop)?;
            self.end = from;
            // A last line still being written (no newline yet) is left
            // out, however many chunks it spans: its record is renamed
            // into place only after it is whole.
            if self.first {
                match buf.iter().rposition(|b| *b == b'\n') {
                    Some(i) => {
                        buf.truncate(i + 1);
                        self.first = false;
                    }
                    None => continue,
                }
            }
            buf.extend_from_slice(&std::mem::take(&mut self.carry));
            // The first (partial) line waits for the chunk before it,
            // unless this chunk starts where the lines start.
            let cut = if from > self.start {
                match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None => {
                        self.carry = buf;
                        continue;
                    }
                }
            } else {
                0
            };
            self.carry = buf.get(..cut).map(<[u8]>::to_vec).unwrap_or_default();
            let block = buf.get(cut..).map(<[u8]>::to_vec).unwrap_or_default();
            self.parse_block(&block)?;
        }
    }

    fn parse_block(&mut self, block: &[u8]) -> Result<(), ()> {
        let text = std::str::from_utf8(block).map_err(drop)?;
        for l in text.split_terminator('\n') {
            self.ready.push(Line::parse(l).ok_or(())?);
        }
        Ok(())
    }
}

/// The newest `limit` finished jobs that `accept` takes (it reads the
/// record a line names: `None` when it is gone or filtered out), newest
/// first (ties: the larger id first), from the ledger; `None` when the
/// ledger cannot say (see the module's header): the caller lists `done/`.
pub(in crate::spool) fn newest<F>(
    spool: &Spool,
    limit: usize,
    skew: Duration,
    mut accept: F,
) -> Option<Vec<(SystemTime, String, Box<Record>)>>
where
    F: FnMut(&str) -> Option<(SystemTime, Box<Record>)>,
{
    if limit == 0 {
        return Some(Vec::new());
    }
    let dir = spool.ledger_dir();
    let owner = fs::symlink_metadata(spool.done_dir()).ok()?.uid();
    let meta = fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut tails = Vec::new();
    let mut since = 0u128;
    for name in spool.names(&dir).ok()? {
        if name.starts_with('.') {
            continue;
        }
        let (header, tail) = Tail::open(&dir.join(&name), owner)?;
        since = since.max(header.since);
        tails.push(tail);
    }
    if tails.is_empty() {
        return None;
    }
    // The newest-written line of every log, the newest of them on top.
    let mut heads: BinaryHeap<(u128, usize, String)> = BinaryHeap::new();
    for (i, t) in tails.iter_mut().enumerate() {
        if let Some(l) = t.next().ok()? {
            heads.push((l.written, i, l.id));
        }
    }
    let mut newest = Newest::new(limit, skew);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    while let Some((written, i, id)) = heads.pop() {
        if newest.done_before(at(written)) {
            break;
        }
        if let Some(t) = tails.get_mut(i)
            && let Some(l) = t.next().ok()?
        {
            heads.push((l.written, i, l.id));
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some((when, rec)) = accept(&id) {
            newest.take(when);
            out.push((when, id, rec));
        }
    }
    // Trusted only where no record can be missing: after the latest
    // `since`.
    let trusted = since == 0 || newest.all_since(at(since));
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    out.truncate(limit);
    trusted.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_newest_come_from_the_log_and_a_first_log_trusts_nothing_before_it() {
        let (_d, s) = spool();
        // A record of a daemon before ledgers.
        let old = record("old", SystemTime::now() - Duration::from_secs(60));
        fs::write(s.done_record("old"), old.to_toml().unwrap()).unwrap();
        // The folder made empty beforehand, as the package's tmpfiles does
        // on an upgrade: still the first log.
        fs::create_dir(s.ledger_dir()).unwrap();
        let mut l = s.open_ledger().unwrap();
        let recs = finished_now("j", 30);
        commit(&s, &mut l, &recs);
        let got = ids(newest(&s, 3, SKEW, read(&s)));
        assert_eq!(
            got,
            Some(vec!["j00029".into(), "j00028".into(), "j00027".into()])
        );
        assert_eq!(
            ids(newest(&s, 30, SKEW, read(&s))).map(|v| v.len()),
            Some(30)
        );
        // One more than the log holds after its start: not known here.
        assert_eq!(ids(newest(&s, 31, SKEW, read(&s))), None);
        // A line whose record is gone (expired) is skipped.
        fs::remove_file(s.done_record("j00029")).unwrap();
        assert_eq!(
            ids(newest(&s, 2, SKEW, read(&s))),
            Some(vec!["j00028".into(), "j00027".into()])
        );
    }

    #[test]
    fn a_dead_daemons_log_is_merged_and_a_failed_one_distrusts_the_past() {
        let (_d, s) = spool();
        let mut first = s.open_ledger().unwrap();
        commit(&s, &mut first, &finished_now("a", 5));
        // Its daemon dies (its lock goes with its descriptor).
        drop(first);
        let mut second = s.open_ledger().unwrap();
        let logs = s.names(&s.ledger_dir()).unwrap();
        assert_eq!(logs.len(), 1, "merged and removed: {logs:?}");
        commit(&s, &mut second, &finished_now("b", 1));
        // The merged lines count: the first log's records are trusted.
        assert_eq!(ids(newest(&s, 6, SKEW, read(&s))).map(|v| v.len()), Some(6));
        // A live daemon's log is left alone.
        let third = s.open_ledger().unwrap();
        assert_eq!(s.names(&s.ledger_dir()).unwrap().len(), 2);
        drop(third);
        // A log emptied by a failed write: readers list done/.
        fs::File::options()
            .write(true)
            .open(&second.path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(ids(newest(&s, 1, SKEW, read(&s))), None);
        // Its writer starts it again at its next write, since then only.
        second.file = None;
        let later = finished_now("c", 2);
        commit(&s, &mut second, &later);
        assert_eq!(
            ids(newest(&s, 2, SKEW, read(&s))),
            Some(vec!["c00001".into(), "c00000".into()])
        );
        assert_eq!(ids(newest(&s, 3, SKEW, read(&s))), None);
    }

    /// A member who makes `.finished` before the daemon (a symlink to a
    /// folder of forged logs, or a folder of their own) gets no ledger
    /// trusted: the daemon refuses to write there, readers list `done/`.
    #[test]
    fn a_ledger_folder_someone_else_made_is_never_trusted() {
        let (d, s) = spool();
        let forged = d.path().join("forged");
        fs::create_dir(&forged).unwrap();
        std::os::unix::fs::symlink(&forged, s.ledger_dir()).unwrap();
        assert!(s.open_ledger().is_err(), "wrote through a symlink");
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
        fs::remove_file(s.ledger_dir()).unwrap();
        // A real folder with a well-formed log, owned by someone else.
        let mut l = s.open_ledger().unwrap();
        commit(&s, &mut l, &finished_now("z", 1));
        assert!(newest(&s, 1, SKEW, read(&s)).is_some());
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&s.ledger_dir(), nobody, None).unwrap();
        assert!(
            newest(&s, 1, SKEW, read(&s)).is_none(),
            "a folder of another user"
        );
        assert!(s.open_ledger().is_err(), "wrote into another user's folder");
        nix::unistd::chown(&s.ledger_dir(), Some(nix::unistd::geteuid()), None).unwrap();
        nix::unistd::chown(&l.path, nobody, None).unwrap();
        assert!(
            newest(&s, 1, SKEW, read(&s)).is_none(),
            "a log of another user"
        );
    }

    #[test]
    fn a_log_others_may_write_or_a_line_that_does_not_parse_is_not_trusted() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        commit(&s, &mut l, &finished_now("x", 1));
        assert!(newest(&s, 1, SKEW, read(&s)).is_some());
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&l.path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
        fs::set_permissions(&l.path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(s.ledger_dir(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
        fs::set_permissions(s.ledger_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        l.write(b"garbage\n", false);
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
    }

    #[test]
    fn a_last_line_still_being_written_is_left_out() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        commit(&s, &mut l, &finished_now("y", 2));
        // Half a line: a writer's append caught in the middle (its record
        // is not in done/ yet). "y0000" would be another job's id.
        let half = Line::of(&record("y00001", SystemTime::now()), SystemTime::now()).text();
        let half = half.get(..half.len() - 2).unwrap().to_string();
        l.write(half.as_bytes(), false);
        assert_eq!(
            ids(newest(&s, 2, SKEW, read(&s))),
            Some(vec!["y00001".into(), "y00000".into()])
        );
    }

    #[test]
    fn many_lines_read_backwards_across_chunks_in_written_order() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        // Enough lines for several chunks, committed in batches written
        // in another order than they finished.
        let mut all = Vec::new();
        for batch in 0..40 {
            let mut recs = finished_now(&format!("r{batch:02}-"), 100);
            recs.reverse();
            commit(&s, &mut l, &recs);
            all.extend(recs);
        }
        let mut want: Vec<(SystemTime, String)> = all
            .iter()
            .map(|r| (r.finished_at().unwrap(), r.id.clone()))
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        for limit in [1, 7, 150, 4000] {
            let got = ids(newest(&s, limit, SKEW, read(&s))).unwrap();
            let w: Vec<String> = want.iter().take(limit).map(|(_, id)| id.clone()).collect();
            assert_eq!(got, w, "{limit}");
        }
    }

    /// Every line of the log at `path` read from its end `chunk` bytes at
    /// a time, put back in file order; `Err` when refused.
    fn read_back(s: &Spool, path: &Path, chunk: u64) -> Result<Vec<Line>, ()> {
        let owner = fs::symlink_metadata(s.done_dir()).unwrap().uid();
        let (_, mut tail) = Tail::open(path, owner).unwrap();
        tail.chunk = chunk;
        let mut got = Vec::new();
        while let Some(line) = tail.next()? {
            got.push(line);
        }
        got.reverse();
        Ok(got)
    }

    fn any_line() -> impl Strategy<Value = Line> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}",
        )
            .prop_map(|(f, w, e, id)| Line {
                finished: u128::from(f),
                written: u128::from(w),
                expires: u64::from(e),
                id,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Read backwards at any chunk size, a log gives exactly its
        /// whole lines, last first; a last line still being written is
        /// left out.
        #[test]
        fn a_log_read_from_its_end_gives_its_lines_last_first(
            lines in proptest::collection::vec(any_line(), 0..60),
            half in 0usize..40,
            chunk in 1u64..200,
        ) {
            let (_d, s) = spool();
            let mut l = s.open_ledger().unwrap();
            l.append_lines(&lines, false);
            let mut text = String::new();
            if let Some(last) = lines.last() {
                let t = last.text();
                text.push_str(t.get(..half.min(t.len() - 1)).unwrap());
            }
            l.write(text.as_bytes(), false);
            prop_assert_eq!(read_back(&s, &l.path, chunk), Ok(lines));
        }

        /// Whatever bytes follow a header, reading never panics, and a
        /// line that does not parse makes the log untrusted.
        #[test]
        fn a_damaged_log_is_refused_never_misread(
            lines in proptest::collection::vec(any_line(), 1..30),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            chunk in 1u64..200,
        ) {
            let (_d, s) = spool();
            let mut l = s.open_ledger().unwrap();
            l.append_lines(&lines, false);
            let path = l.path.clone();
            drop(l);
            let mut bytes = fs::read(&path).unwrap();
            let header = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
            let i = header + at.index(bytes.len() - header);
            bytes[i] = byte;
            fs::write(&path, &bytes).unwrap();
            // Unless refused, every line given is one a whole line of the
            // damaged text says.
            if let Ok(got) = read_back(&s, &path, chunk) {
                let text = String::from_utf8_lossy(&bytes[header..]).to_string();
                let whole: Vec<Line> = text
                    .split_inclusive('\n')
                    .filter_map(|l| l.strip_suffix('\n'))
                    .filter_map(Line::parse)
                    .collect();
                prop_assert_eq!(got, whole);
            }
        }
    }
}
