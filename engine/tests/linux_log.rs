//! The log on the real Linux disk: every writer mode round-trips, and a process killed with
//! SIGKILL mid-stream loses nothing it reported durable.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use raftline::codec::{FrameMeta, FrameType, Frames};
use raftline::io::Disk;
use raftline::log::{Durability, Log, LogConfig, LogError};
use raftline::sys::{LinuxDisk, LinuxDiskOptions};

const SEGMENT: u64 = 256 << 10;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT,
        write_bytes_max: 64 << 10,
        durability: Durability::Fdatasync,
    }
}

fn payload(id: u64) -> Vec<u8> {
    let len = (id * 7919 % 700) as usize;
    (0..len)
        .map(|j| (id as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

fn meta(id: u64) -> FrameMeta {
    FrameMeta {
        frame_type: FrameType::SessionMessage as u16,
        flags: 0,
        term: 1,
        session_id: id,
        timestamp_ns: 0,
    }
}

/// Session ids of the frames in the log, checking each payload against `payload(id)`.
fn verify<D: Disk>(log: &mut Log<D>) -> Vec<u64> {
    let mut bytes = vec![0u8; log.appended_position() as usize];
    log.read(0, &mut bytes).unwrap();
    let mut ids = Vec::new();
    for item in Frames::new(&bytes) {
        let (at, frame) = item.expect("valid frame");
        if frame.meta.frame_type == FrameType::Padding as u16 {
            continue;
        }
        assert_eq!(
            frame.payload,
            &payload(frame.meta.session_id)[..],
            "payload of frame at {at}"
        );
        ids.push(frame.meta.session_id);
    }
    ids
}

fn append(log: &mut Log<LinuxDisk>, id: u64) -> u64 {
    loop {
        match log.append(&meta(id), &payload(id)) {
            Ok(p) => return p,
            Err(LogError::Full { .. }) => {
                log.do_work().unwrap();
                log.disk_mut().wait().unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The disk options and log config of a writer mode: (io_uring, O_DIRECT), or the page cache
/// (`durability = none`).
fn mode(io_uring: bool, direct: bool, page_cache: bool) -> (LinuxDiskOptions, LogConfig) {
    let options = LinuxDiskOptions {
        io_uring,
        direct,
        page_cache,
    };
    let durability = if page_cache {
        Durability::None
    } else {
        Durability::Fdatasync
    };
    (
        options,
        LogConfig {
            durability,
            ..config()
        },
    )
}

const MODES: [(bool, bool, bool); 5] = [
    (true, true, false),
    (true, false, false),
    (false, true, false),
    (false, false, false),
    (true, true, true),
];

#[test]
fn every_writer_mode_round_trips_and_recovers() {
    for (io_uring, direct, page_cache) in MODES {
        let dir = tempfile::tempdir().unwrap();
        let (options, config) = mode(io_uring, direct, page_cache);
        let disk = LinuxDisk::open(dir.path(), options).unwrap();
        // The page cache takes neither the ring nor O_DIRECT, whatever else is allowed.
        assert_eq!(disk.mode().io_uring, io_uring && !page_cache);
        assert_eq!(disk.mode().direct, direct && !page_cache);
        assert_eq!(disk.mode().page_cache, page_cache);
        let (mut log, report) = Log::open(disk, config.clone()).unwrap();
        assert_eq!(report.recovered_position, 0);
        for id in 0..3000 {
            append(&mut log, id);
            if id % 3 == 0 {
                log.do_work().unwrap();
            }
        }
        log.flush_to(log.appended_position()).unwrap();
        let end = log.durable_position();
        assert!(end > 3 * SEGMENT);
        log.truncate(SEGMENT + 8 * 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(log);
        let disk = LinuxDisk::open(dir.path(), options).unwrap();
        let (mut log, report) = Log::open(disk, config.clone()).unwrap();
        let ids = verify(&mut log);
        assert_eq!(
            ids,
            (0..ids.len() as u64).collect::<Vec<_>>(),
            "mode {}",
            report.writer
        );
        assert!(report.recovered_position <= SEGMENT + 8000 && report.recovered_position > SEGMENT);
    }
}

/// The writer mode of the crash test's child, from its environment.
fn crash_mode() -> (LinuxDiskOptions, LogConfig) {
    let page_cache = std::env::var("RAFTLINE_CRASH_PAGE_CACHE").is_ok();
    mode(true, true, page_cache)
}

/// The child side of the crash test: appends forever, printing each new durable position.
fn crash_child(dir: &str) {
    let (options, config) = crash_mode();
    let disk = LinuxDisk::open(dir, options).unwrap();
    let (mut log, _) = Log::open(disk, config).unwrap();
    let mut next = verify(&mut log).last().map_or(0, |id| id + 1);
    let mut out = std::io::stdout().lock();
    writeln!(out, "start {next}").unwrap();
    out.flush().unwrap();
    let mut reported = log.durable_position();
    loop {
        for _ in 0..(next % 5 + 1) {
            append(&mut log, next);
            next += 1;
        }
        log.do_work().unwrap();
        if log.durable_position() > reported {
            reported = log.durable_position();
            writeln!(out, "durable {reported}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_mid_stream_loses_no_reported_position() {
    if let Ok(dir) = std::env::var("RAFTLINE_CRASH_CHILD") {
        crash_child(&dir);
        return;
    }
    sigkill_mid_stream(false);
}

/// With `durability = none` a position is reported once its bytes are in the page cache: a
/// killed process (not a lost host) still loses none of them.
#[test]
fn sigkill_mid_stream_loses_nothing_written_to_the_page_cache() {
    if let Ok(dir) = std::env::var("RAFTLINE_CRASH_CHILD") {
        crash_child(&dir);
        return;
    }
    sigkill_mid_stream(true);
}

fn sigkill_mid_stream(page_cache: bool) {
    let test = if page_cache {
        "sigkill_mid_stream_loses_nothing_written_to_the_page_cache"
    } else {
        "sigkill_mid_stream_loses_no_reported_position"
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_ids = 0;
    for kill in 0..6u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("RAFTLINE_CRASH_CHILD", dir.path())
            .envs(page_cache.then_some(("RAFTLINE_CRASH_PAGE_CACHE", "1")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reported = 0u64;
        let mut seen = 0u64;
        // Kill after a varying number of durable reports, at whatever instant that is.
        let target = 20 + kill * 37;
        while let Some(Ok(line)) = lines.next() {
            if let Some(p) = line.strip_prefix("durable ") {
                reported = p.parse().unwrap();
                seen += 1;
                if seen == target {
                    break;
                }
            }
        }
        assert!(
            seen == target,
            "child stopped reporting after {seen} positions"
        );
        // SAFETY: plain syscall on the child's pid, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();

        let (options, config) = mode(true, true, page_cache);
        let disk = LinuxDisk::open(dir.path(), options).unwrap();
        let (mut log, report) = Log::open(disk, config).unwrap();
        assert!(
            report.recovered_position >= reported,
            "kill {kill}: recovered {} < reported durable {reported}",
            report.recovered_position
        );
        let ids = verify(&mut log);
        assert_eq!(
            ids,
            (0..ids.len() as u64).collect::<Vec<_>>(),
            "frames are the ones appended, in order"
        );
        assert!(ids.len() > last_ids, "the log grew across kill {kill}");
        last_ids = ids.len();
    }
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_writer_with_the_segment_name_and_keeps_durable_frames() {
    // Two 256 KiB segments and the two 64 KiB slots of the term index and of the log-reach
    // record fit; a third segment does not.
    let Some(fs) = SmallTmpfs::mount("860k") else {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CAP_SYS_ADMIN); ENOSPC is covered by the simulated disk");
        return;
    };
    let disk = LinuxDisk::open(fs.dir.path(), LinuxDiskOptions::default()).unwrap();
    assert!(
        !disk.mode().filesystem_durable,
        "tmpfs is detected as not durable"
    );
    assert!(disk.describe().contains("tmpfs: not durable"));
    let (mut log, _) = Log::open(disk, config()).unwrap();
    let mut id = 0;
    let err = loop {
        match log.append(&meta(id), &payload(id)) {
            Ok(_) => id += 1,
            Err(LogError::Full { .. }) => {}
            Err(e) => break e,
        }
        if let Err(e) = log.do_work() {
            break e;
        }
        if id % 64 == 0 {
            if let Err(e) = log.flush_to(log.appended_position()) {
                break e;
            }
        }
    };
    let text = err.to_string();
    assert!(
        text.contains("00000000000000524288.seg") && text.contains("No space left on device"),
        "{text}"
    );
    assert!(
        text.contains("free space in the log directory"),
        "the error says what to do: {text}"
    );
    let durable = log.durable_position();
    assert_eq!(
        durable,
        2 * SEGMENT,
        "both segments that fit were filled and made durable"
    );
    drop(log);
    let disk = LinuxDisk::open(fs.dir.path(), LinuxDiskOptions::default()).unwrap();
    let (mut log, report) = Log::open(disk, config()).unwrap();
    assert_eq!(report.recovered_position, durable);
    let ids = verify(&mut log);
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
}
