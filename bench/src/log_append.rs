//! `raftline-bench log-append`: raftline's durable log next to the raw disk, in one run.
//!
//! 1. Raw floor: a 4 KiB O_DIRECT pwrite + fdatasync on a zero-filled file, one at a time;
//!    and the same with one pwritev2(RWF_DSYNC) instead of the pair.
//! 2. Durable append: one small frame appended, then wait until the log reports it durable.
//! 3. Group commit: frames appended as fast as the log takes them, next to raw sequential
//!    1 MiB O_DIRECT writes + fdatasync on a zero-filled file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftline::codec::{FrameMeta, FrameType};
use raftline::io::{AlignedBuf, Disk};
use raftline::log::{Durability, Log, LogConfig, LogError};
use raftline::sys::{LinuxDisk, LinuxDiskOptions};
use serde::Serialize;

use crate::report::{histogram, remove_run_dir, write_json, Latency, Machine};

const MIB: u64 = 1 << 20;
const FLOOR_FILE_BYTES: u64 = 64 * MIB;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Directory for the log and the raw files (on the disk to measure; removed afterwards).
    #[arg(long, default_value = "bench-out/log-append")]
    dir: PathBuf,
    /// Seconds for each of the three latency phases together (split evenly).
    #[arg(long, default_value_t = 9.0)]
    seconds: f64,
    /// MiB written by each throughput phase (raw bandwidth, group commit).
    #[arg(long = "mib", default_value_t = 1024)]
    mib: u64,
    /// Payload bytes of each frame in the durable-append phase.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// Payload bytes of each frame in the group-commit bandwidth phase.
    #[arg(long, default_value_t = 4056)]
    bulk_payload: usize,
    /// Log segment size in MiB.
    #[arg(long, default_value_t = 128)]
    segment_mib: u64,
    /// Most bytes one write round carries (log.write_bytes_max), in KiB.
    #[arg(long, default_value_t = 1024)]
    write_kib: usize,
    /// Write the JSON summary to this path, or - for stdout.
    #[arg(long)]
    json: Option<String>,
}

#[derive(Serialize)]
struct Settings {
    machine: Machine,
    writer: String,
    durability: String,
    segment_bytes: u64,
    write_bytes_max: usize,
    payload_bytes: usize,
    bulk_payload_bytes: usize,
    threading: &'static str,
    idle_strategy: &'static str,
}

#[derive(Serialize)]
struct Summary {
    raw_floor: Latency,
    raw_dsync: Latency,
    durable_append: Latency,
    ratio_p50: f64,
    ratio_p99: f64,
    raw_bandwidth_mb_s: f64,
    group_commit_mb_s: f64,
    group_commit_ratio: f64,
    frames_per_s: f64,
    rounds_per_s: f64,
    targets_met: bool,
    settings: Settings,
}

fn open_direct(path: &Path, bytes: u64) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let zeros = AlignedBuf::new(MIB as usize);
    let mut at = 0;
    while at < bytes {
        f.write_all_at(&zeros, at)?;
        at += MIB;
    }
    f.sync_all()?;
    Ok(f)
}

/// 4 KiB O_DIRECT writes at consecutive offsets, each made durable before the next.
fn raw_floor(path: &Path, duration: Duration, dsync: bool) -> std::io::Result<Latency> {
    let f = open_direct(path, FLOOR_FILE_BYTES)?;
    let mut buf = AlignedBuf::new(4096);
    buf.fill(0x5a);
    let mut h = histogram();
    let deadline = Instant::now() + duration;
    let mut offset = 0u64;
    let mut i = 0u64;
    while Instant::now() < deadline {
        let start = Instant::now();
        if dsync {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: iov points to 4096 bytes of a live buffer; the fd is open.
            let n =
                unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, offset as i64, libc::RWF_DSYNC) };
            if n != 4096 {
                return Err(std::io::Error::last_os_error());
            }
        } else {
            f.write_all_at(&buf, offset)?;
            f.sync_data()?;
        }
        if i >= 50 {
            h.record(start.elapsed().as_nanos() as u64)
                .expect("in range");
        }
        i += 1;
        offset = (offset + 4096) % FLOOR_FILE_BYTES;
    }
    Ok(Latency::of(&h))
}

/// Sequential 1 MiB O_DIRECT writes, fdatasync after each; bytes per second.
fn raw_bandwidth(path: &Path, bytes: u64) -> std::io::Result<f64> {
    let f = open_direct(path, bytes)?;
    let mut buf = AlignedBuf::new(MIB as usize);
    buf.fill(0x5a);
    let start = Instant::now();
    let mut at = 0;
    while at < bytes {
        f.write_all_at(&buf, at)?;
        f.sync_data()?;
        at += MIB;
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

fn meta(i: u64) -> FrameMeta {
    FrameMeta {
        frame_type: FrameType::SessionMessage as u16,
        flags: 0,
        term: 1,
        session_id: 1,
        timestamp_ns: i,
    }
}

fn open_log(dir: &Path, config: &LogConfig) -> Result<Log<LinuxDisk>, String> {
    let _ = std::fs::remove_dir_all(dir);
    let disk = LinuxDisk::open(dir, LinuxDiskOptions::default())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let (log, _) = Log::open(disk, config.clone()).map_err(|e| e.to_string())?;
    Ok(log)
}

/// One frame at a time: append, then wait until the log reports it durable.
fn durable_append(
    dir: &Path,
    config: &LogConfig,
    payload: usize,
    duration: Duration,
) -> Result<Latency, String> {
    let mut log = open_log(dir, config)?;
    log.prepare_segments(1).map_err(|e| e.to_string())?;
    let data = vec![0x42u8; payload];
    let mut h = histogram();
    let deadline = Instant::now() + duration;
    let mut i = 0u64;
    while Instant::now() < deadline {
        let start = Instant::now();
        let position = log.append(&meta(i), &data).map_err(|e| e.to_string())?;
        let end = position + raftline::codec::encoded_len(payload) as u64;
        while log.durable_position() < end {
            if log.do_work().map_err(|e| e.to_string())? == 0 {
                log.disk_mut().wait().map_err(|e| e.to_string())?;
            }
        }
        if i >= 50 {
            h.record(start.elapsed().as_nanos() as u64)
                .expect("in range");
        }
        i += 1;
        if i % 1024 == 0 {
            // Housekeeping off the measured path: keep the next segment ready.
            log.prepare_segments(1).map_err(|e| e.to_string())?;
        }
    }
    Ok(Latency::of(&h))
}

/// Appends as fast as the log accepts until `bytes` are durable. Returns (bytes/s, frames/s,
/// rounds/s).
fn group_commit(
    dir: &Path,
    config: &LogConfig,
    payload: usize,
    bytes: u64,
) -> Result<(f64, f64, f64), String> {
    let mut log = open_log(dir, config)?;
    log.prepare_segments(bytes.div_ceil(config.segment_bytes) + 1)
        .map_err(|e| e.to_string())?;
    let data = vec![0x42u8; payload];
    let start = Instant::now();
    let rounds_before = log.stats().rounds;
    let mut frames = 0u64;
    while log.durable_position() < bytes {
        let mut room = true;
        while room && log.appended_position() < bytes {
            match log.append(&meta(frames), &data) {
                Ok(_) => frames += 1,
                Err(LogError::Full { .. }) => room = false,
                Err(e) => return Err(e.to_string()),
            }
        }
        if log.do_work().map_err(|e| e.to_string())? == 0 && !room {
            log.disk_mut().wait().map_err(|e| e.to_string())?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rounds = log.stats().rounds - rounds_before;
    Ok((
        log.durable_position() as f64 / secs,
        frames as f64 / secs,
        rounds as f64 / secs,
    ))
}

pub fn run(args: Args) -> Result<bool, String> {
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let machine = Machine::detect();
    let config = LogConfig {
        segment_bytes: args.segment_mib * MIB,
        write_bytes_max: args.write_kib * 1024,
        durability: Durability::Fdatasync,
    };
    config.validate().map_err(|e| e.to_string())?;
    let writer = open_log(&args.dir.join("log"), &config)?.disk().describe();
    eprintln!("log-append on {machine}");
    eprintln!(
        "writer: {writer}; durability: fdatasync; segment {} MiB; round up to {} KiB; threading: one thread; idle: block on io_uring completion",
        args.segment_mib, args.write_kib
    );
    let phase = Duration::from_secs_f64(args.seconds / 3.0);
    let io = |e: std::io::Error| e.to_string();

    eprintln!("[1/5] raw floor: 4 KiB O_DIRECT pwrite + fdatasync ...");
    let raw = raw_floor(&args.dir.join("raw-floor.dat"), phase, false).map_err(io)?;
    eprintln!("[2/5] raw floor: 4 KiB O_DIRECT pwritev2(RWF_DSYNC) ...");
    let raw_dsync = raw_floor(&args.dir.join("raw-floor.dat"), phase, true).map_err(io)?;
    eprintln!(
        "[3/5] durable append of one {}-byte frame at a time ...",
        args.payload + 40
    );
    let append = durable_append(&args.dir.join("log"), &config, args.payload, phase)?;
    eprintln!(
        "[4/5] raw bandwidth: {} MiB in 1 MiB O_DIRECT writes + fdatasync ...",
        args.mib
    );
    let raw_bw = raw_bandwidth(&args.dir.join("raw-bandwidth.dat"), args.mib * MIB).map_err(io)?;
    let _ = std::fs::remove_file(args.dir.join("raw-bandwidth.dat"));
    eprintln!(
        "[5/5] group commit: {} MiB of {}-byte frames, then {}-byte frames ...",
        args.mib,
        args.bulk_payload + 40,
        args.payload + 40
    );
    let (gc_bw, _, _) = group_commit(
        &args.dir.join("log"),
        &config,
        args.bulk_payload,
        args.mib * MIB,
    )?;
    let small_bytes = (args.mib * MIB / 4).max(16 * MIB);
    let (_, frames_per_s, rounds_per_s) =
        group_commit(&args.dir.join("log"), &config, args.payload, small_bytes)?;
    remove_run_dir(&args.dir);

    let ratio_p50 = append.p50_us / raw.p50_us;
    let ratio_p99 = append.p99_us / raw.p99_us;
    let gc_ratio = gc_bw / raw_bw;
    let targets_met = ratio_p50 <= 1.2 && gc_ratio >= 0.8 && frames_per_s >= 1e6;
    let summary = Summary {
        raw_floor: raw,
        raw_dsync,
        durable_append: append,
        ratio_p50,
        ratio_p99,
        raw_bandwidth_mb_s: raw_bw / 1e6,
        group_commit_mb_s: gc_bw / 1e6,
        group_commit_ratio: gc_ratio,
        frames_per_s,
        rounds_per_s,
        targets_met,
        settings: Settings {
            machine,
            writer,
            durability: "fdatasync".into(),
            segment_bytes: config.segment_bytes,
            write_bytes_max: config.write_bytes_max,
            payload_bytes: args.payload,
            bulk_payload_bytes: args.bulk_payload,
            threading: "single thread",
            idle_strategy: "block on io_uring completion",
        },
    };
    print_table(&summary);
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(true)
}

fn print_table(s: &Summary) {
    let row = |name: &str, l: &Latency| {
        println!(
            "{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            l.p50_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us, l.count
        )
    };
    println!();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (µs)", "p50", "p99", "p99.9", "p99.99", "max", "count"
    );
    row("raw 4 KiB pwrite + fdatasync", &s.raw_floor);
    row("raw 4 KiB pwritev2 RWF_DSYNC", &s.raw_dsync);
    row(
        &format!(
            "raftline durable append ({} B)",
            s.settings.payload_bytes + 40
        ),
        &s.durable_append,
    );
    println!();
    let mark = |ok: bool| if ok { "meets target" } else { "MISSES target" };
    println!(
        "durable append / raw floor:  p50 {:.2}x  p99 {:.2}x   ({} ≤ 1.2x at p50)",
        s.ratio_p50,
        s.ratio_p99,
        mark(s.ratio_p50 <= 1.2)
    );
    println!(
        "group commit:  {:.0} MB/s vs raw 1 MiB write + fdatasync {:.0} MB/s = {:.0} %   ({} ≥ 80 %)",
        s.group_commit_mb_s,
        s.raw_bandwidth_mb_s,
        s.group_commit_ratio * 100.0,
        mark(s.group_commit_ratio >= 0.8)
    );
    println!(
        "small frames:  {:.2} M frames/s of {} B durable, {:.0} write rounds/s   ({} ≥ 1 M/s)",
        s.frames_per_s / 1e6,
        s.settings.payload_bytes + 40,
        s.rounds_per_s,
        mark(s.frames_per_s >= 1e6)
    );
    println!(
        "machine: {}; writer: {}",
        s.settings.machine, s.settings.writer
    );
}
