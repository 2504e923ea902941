//! A loopback TCP proxy that injects faults between a secondary and its
//! primary, or a client and its node (a fault of docs/reliability.md):
//! added latency, a bandwidth cap, a cut after N bytes, a blackhole (bytes
//! swallowed, connection kept) either way or from the target only, and one
//! flipped byte. The fault can be changed while connections run.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Each chunk waits this long before it is forwarded.
    Latency(Duration),
    /// At most this many bytes a second, each way.
    Bandwidth(usize),
    /// Each connection is closed after this many bytes, each way.
    CutAfter(usize),
    /// Bytes are read and dropped; connections stay open.
    Blackhole,
    /// Bytes from the target are dropped (a node's replies to a client
    /// never arrive); the other way flows.
    DropFromTarget,
    /// The byte at this offset of a connection's primary-to-secondary
    /// stream is flipped (xor 0x01): once, in the first connection that
    /// gets that far after the fault is set.
    FlipAt(usize),
}

/// A running proxy: `port` forwards to the target.
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    /// A `FlipAt` fault has flipped its byte.
    flipped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let stop = Arc::new(AtomicBool::new(false));
        let flipped = Arc::new(AtomicBool::new(false));
        let (f, s, once) = (fault.clone(), stop.clone(), flipped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // Towards the target, and from it (the direction whose
                // bytes `FlipAt` counts and `DropFromTarget` drops).
                let up = (f.clone(), s.clone(), once.clone());
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    up,
                    false,
                );
                pump(server, client, (f.clone(), s.clone(), once.clone()), true);
            }
        });
        Proxy {
            port,
            fault,
            flipped,
            stop,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.flipped.store(false, Ordering::Relaxed);
        *self.fault.lock().unwrap() = fault;
    }

    /// Whether a `FlipAt` fault has flipped its byte yet.
    pub fn has_flipped(&self) -> bool {
        self.flipped.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

type Shared = (Arc<Mutex<Fault>>, Arc<AtomicBool>, Arc<AtomicBool>);

fn pump(mut from: TcpStream, mut to: TcpStream, (fault, stop, flipped): Shared, downstream: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut moved = 0usize;
        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
        while !stop.load(Ordering::Relaxed) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let chunk = &mut buf[..n];
            match *fault.lock().unwrap() {
                Fault::None => {}
                Fault::Latency(d) => std::thread::sleep(d),
                Fault::Bandwidth(bytes_per_sec) => {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64))
                }
                Fault::CutAfter(limit) => {
                    if moved + n > limit {
                        break;
                    }
                }
                Fault::Blackhole => {
                    moved += n;
                    continue;
                }
                Fault::DropFromTarget if downstream => {
                    moved += n;
                    continue;
                }
                Fault::DropFromTarget => {}
                Fault::FlipAt(at) => {
                    if downstream
                        && (moved..moved + n).contains(&at)
                        && !flipped.swap(true, Ordering::Relaxed)
                    {
                        chunk[at - moved] ^= 0x01;
                    }
                }
            }
            moved += n;
            if to.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
