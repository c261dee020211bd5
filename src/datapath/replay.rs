//! Offline datapath: every frame of a pcap file through a [`Pipeline`], with what leaves
//! written per output as pcap files.
//!
//! Owns: pcap reading/writing and virtual time. The pcap's own timestamps are the clock, so
//! a replay is deterministic: the same file and settings give the same bytes out.
//!
//! Outputs in the output directory (created if missing; a file is created only for an
//! output that received frames):
//! - `port<N>.pcap`: frames the pipeline sent out of port N (verdict `Out(N)`),
//! - `nf<S>.pcap`: frames handed to service S (`ToNf(S)`),
//! - `next.pcap`: frames passed on to the next chain stage (`Next`),
//! - `emitted-port<N>.pcap` / `emitted-nf<S>.pcap`: frames the pipeline emitted itself
//!   (replica writes, probes, ARP), stamped with the time of the frame or tick that caused
//!   them.
//!
//! Frames go to the pipeline in bursts through the shared [`Driver`], with its capture-time
//! tick rule ([`Ticking::Capture`]): before each frame, a tick at every [`TICK`] of capture
//! time since the last one. The pipeline gets one `now` per burst, so a burst is a run of
//! consecutive frames with the same capture time (at most 32): between two such frames no
//! tick falls due, so the pipeline decides exactly what it would frame by frame, and the
//! outputs are the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};

use super::driver::{Driver, Ticking};
use crate::clock::Instant;
use crate::nf::{Dest, Pipeline, PortId, Verdict, MAX_FRAME};

/// What can go wrong in a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable pcap file: {reason}", path.display())]
    BadPcap { path: PathBuf, reason: String },
    #[error("{}: link type {link:?} is not Ethernet", path.display())]
    NotEthernet { path: PathBuf, link: DataLink },
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

/// Per-run counts, written into `stats.json` by the CLI next to the pipeline's own stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    pub frames_in: u64,
    /// Frames written to any output, forwarded and emitted.
    pub frames_out: u64,
    /// Frames the datapath could not hand to the pipeline (larger than [`MAX_FRAME`]).
    pub oversized: u64,
    /// Frames per output file name.
    pub outputs: BTreeMap<String, u64>,
    /// Timestamp of the last frame, in nanoseconds of the capture's clock.
    pub last_timestamp_ns: u64,
}

struct Outputs {
    dir: PathBuf,
    writers: BTreeMap<String, PcapWriter<BufWriter<File>>>,
    summary: ReplaySummary,
}

impl Outputs {
    fn write(&mut self, name: String, ts: Duration, frame: &[u8]) -> Result<(), ReplayError> {
        let path = self.dir.join(&name);
        let w = match self.writers.entry(name.clone()) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let file = File::create(&path).map_err(|e| ReplayError::Write {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let header = PcapHeader {
                    datalink: DataLink::ETHERNET,
                    ts_resolution: TsResolution::NanoSecond,
                    snaplen: 65535,
                    ..PcapHeader::default()
                };
                let w = PcapWriter::with_header(BufWriter::new(file), header).map_err(|e| {
                    ReplayError::Write {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                v.insert(w)
            }
        };
        let pkt = PcapPacket::new(ts, frame.len() as u32, frame);
        w.write_packet(&pkt).map_err(|e| ReplayError::Write {
            path,
            reason: e.to_string(),
        })?;
        self.summary.frames_out += 1;
        *self.summary.outputs.entry(name).or_insert(0) += 1;
        Ok(())
    }

    /// Drains what the pipeline emitted into the `emitted-*` outputs, each frame stamped
    /// with the time of the burst or tick that produced it.
    fn drain<P: Pipeline>(
        &mut self,
        driver: &mut Driver<'_, P>,
        at: Instant,
    ) -> Result<(), ReplayError> {
        let mut err = None;
        driver.drain(at, &mut |at, dest, frame| {
            self.emitted(at, dest, frame, &mut err)
        });
        err.map_or(Ok(()), Err)
    }

    /// Ticks due at `now` (capture time), their emitted frames written behind each.
    fn tick<P: Pipeline>(
        &mut self,
        driver: &mut Driver<'_, P>,
        now: Instant,
    ) -> Result<(), ReplayError> {
        let mut err = None;
        driver.tick(now, &mut |at, dest, frame| {
            self.emitted(at, dest, frame, &mut err)
        });
        err.map_or(Ok(()), Err)
    }

    /// Writes one emitted frame unless an earlier write failed (then keeps that error).
    fn emitted(&mut self, at: Instant, dest: Dest, frame: &[u8], err: &mut Option<ReplayError>) {
        if err.is_some() {
            return;
        }
        let name = match dest {
            Dest::Port(n) => format!("emitted-port{n}.pcap"),
            Dest::Nf(s) => format!("emitted-nf{s}.pcap"),
        };
        if let Err(e) = self.write(name, Duration::from_nanos(at.as_nanos()), frame) {
            *err = Some(e);
        }
    }

    /// Hands the burst `frames` (all captured at `now`) to the pipeline, writes each frame
    /// to the output its verdict names, then what the pipeline emitted.
    fn burst<P: Pipeline>(
        &mut self,
        driver: &mut Driver<'_, P>,
        now: Instant,
        ts: Duration,
        in_port: PortId,
        frames: &mut [Vec<u8>],
    ) -> Result<(), ReplayError> {
        let verdicts = driver.process_burst(now, in_port, frames);
        for (frame, verdict) in frames.iter().zip(verdicts) {
            let name = match verdict {
                Verdict::Out(n) => format!("port{n}.pcap"),
                Verdict::ToNf(s) => format!("nf{s}.pcap"),
                Verdict::Next => "next.pcap".to_string(),
                Verdict::Drop(_) => continue,
            };
            self.write(name, ts, frame)?;
        }
        self.drain(driver, now)
    }

    fn finish(mut self) -> Result<ReplaySummary, ReplayError> {
        for (name, w) in std::mem::take(&mut self.writers) {
            let mut inner = w.into_writer();
            std::io::Write::flush(&mut inner).map_err(|e| ReplayError::Write {
                path: self.dir.join(name),
                reason: e.to_string(),
            })?;
        }
        Ok(self.summary)
    }
}

/// How often virtual time ticks the pipeline's timers between frames.
pub const TICK: Duration = Duration::from_millis(1);

/// Most frames handed to the pipeline at once.
const BURST: usize = 32;

/// Replays `input` through `pipeline`, with every frame arriving on `in_port`, writing
/// outputs under `out_dir`.
pub fn replay<P: Pipeline>(
    pipeline: &mut P,
    input: &Path,
    in_port: PortId,
    out_dir: &Path,
) -> Result<ReplaySummary, ReplayError> {
    let file = File::open(input).map_err(|source| ReplayError::Open {
        path: input.to_path_buf(),
        source,
    })?;
    replay_from(pipeline, BufReader::new(file), input, in_port, out_dir)
}

fn replay_from<P: Pipeline, R: Read>(
    pipeline: &mut P,
    reader: R,
    input: &Path,
    in_port: PortId,
    out_dir: &Path,
) -> Result<ReplaySummary, ReplayError> {
    let bad = |reason: String| ReplayError::BadPcap {
        path: input.to_path_buf(),
        reason,
    };
    let mut reader = PcapReader::new(reader).map_err(|e| bad(e.to_string()))?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(ReplayError::NotEthernet {
            path: input.to_path_buf(),
            link,
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|e| ReplayError::Write {
        path: out_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Outputs {
        dir: out_dir.to_path_buf(),
        writers: BTreeMap::new(),
        summary: ReplaySummary::default(),
    };
    let mut driver = Driver::new(pipeline, Ticking::Capture(TICK), BURST);
    // The burst being gathered: frames captured at one time (see the module doc).
    let mut frames: Vec<Vec<u8>> = (0..BURST).map(|_| Vec::with_capacity(MAX_FRAME)).collect();
    let mut n = 0;
    let (mut burst_now, mut burst_ts) = (Instant::ZERO, Duration::ZERO);
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| bad(e.to_string()))?;
        let ts = pkt.timestamp;
        let now = Instant::from_nanos(u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX));
        if n > 0 && (now != burst_now || n == BURST) {
            out.burst(&mut driver, burst_now, burst_ts, in_port, &mut frames[..n])?;
            n = 0;
        }
        // Timers first, at every TICK of virtual time that passed since the last tick.
        out.tick(&mut driver, now)?;

        out.summary.frames_in += 1;
        out.summary.last_timestamp_ns = now.as_nanos();
        if pkt.data.len() > MAX_FRAME {
            out.summary.oversized += 1;
            continue;
        }
        frames[n].clear();
        frames[n].extend_from_slice(&pkt.data);
        n += 1;
        (burst_now, burst_ts) = (now, ts);
    }
    if n > 0 {
        out.burst(&mut driver, burst_now, burst_ts, in_port, &mut frames[..n])?;
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nf::{DropReason, FrameBuf, ServiceId};

    /// Swaps MACs and sends everything back out of port 1; frames starting with 0xff are
    /// dropped; every frame also emits a copy to NF 7, and every tick one frame to port 2.
    #[derive(Default)]
    struct Swap {
        ticks: Vec<Instant>,
        emitted: Vec<(Dest, Vec<u8>)>,
        drops: u64,
    }

    impl Pipeline for Swap {
        fn process_frame<F: FrameBuf + ?Sized>(
            &mut self,
            _now: Instant,
            _in_port: PortId,
            frame: &mut F,
        ) -> Verdict {
            let b = frame.bytes_mut();
            if b.first() == Some(&0xff) {
                return Verdict::Drop(DropReason::NotForUs);
            }
            self.emitted.push((Dest::Nf(ServiceId(7)), b.to_vec()));
            if b.len() >= 12 {
                let (dst, src) = b[..12].split_at_mut(6);
                dst.swap_with_slice(src);
            }
            Verdict::Out(PortId(1))
        }
        fn on_tick(&mut self, now: Instant) {
            self.ticks.push(now);
            self.emitted.push((Dest::Port(PortId(2)), vec![0xee; 20]));
        }
        fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8])) {
            for (d, f) in self.emitted.drain(..) {
                send(d, &f);
            }
        }
        fn count_drop(&mut self, _: DropReason) {
            self.drops += 1;
        }
        fn is_idle(&self) -> bool {
            true
        }
    }

    fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
        let mut w = PcapWriter::new(File::create(path).unwrap()).unwrap();
        for (us, f) in frames {
            w.write_packet(&PcapPacket::new(
                Duration::from_micros(*us),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
    }

    fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
        let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
        let mut v = vec![];
        while let Some(p) = r.next_packet() {
            v.push(p.unwrap().data.into_owned());
        }
        v
    }

    #[test]
    fn frames_reach_their_outputs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pcap");
        let mut a = vec![1u8; 60];
        a[..6].copy_from_slice(&[2, 2, 2, 2, 2, 2]);
        let dropped = vec![0xffu8; 60];
        let b = vec![3u8; 64];
        write_pcap(
            &input,
            &[(1000, a.clone()), (1000, dropped), (3500, b.clone())],
        );
        let out = dir.path().join("out");
        let mut p = Swap::default();
        let s = replay(&mut p, &input, PortId(0), &out).unwrap();
        assert_eq!(s.frames_in, 3);
        // Ticks at 1.000, 2.000, 3.000 ms of virtual time.
        assert_eq!(
            p.ticks,
            vec![
                Instant::from_nanos(1_000_000),
                Instant::from_nanos(2_000_000),
                Instant::from_nanos(3_000_000)
            ]
        );
        let fwd = read_pcap(&out.join("port1.pcap"));
        let mut a_swapped = a.clone();
        a_swapped[..6].copy_from_slice(&[1; 6]);
        a_swapped[6..12].copy_from_slice(&[2; 6]);
        assert_eq!(fwd, vec![a_swapped, b.clone()]);
        assert_eq!(read_pcap(&out.join("emitted-nf7.pcap")), vec![a, b]);
        assert_eq!(read_pcap(&out.join("emitted-port2.pcap")).len(), 3);
        assert_eq!(s.frames_out, 2 + 2 + 3);
        assert_eq!(s.outputs["port1.pcap"], 2);
        assert!(!out.join("next.pcap").exists());
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pcap");
        std::fs::write(&input, b"definitely not a pcap").unwrap();
        let e = replay(&mut Swap::default(), &input, PortId(0), dir.path()).unwrap_err();
        assert!(e.to_string().contains("in.pcap"), "{e}");
        let e = replay(
            &mut Swap::default(),
            &dir.path().join("missing.pcap"),
            PortId(0),
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(e, ReplayError::Open { .. }));
    }
}
