//! The connection table under connections that move on while it is read.

use super::*;

/// Evicting the oldest idle connection while every connection's time
/// changes under it (as connections go idle and busy on other threads)
/// picks one and never panics: a sort whose keys change while it runs may
/// panic on the order it breaks, and here it ran in the accept loop.
#[test]
fn evicting_while_connections_move_on_picks_one_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        tailwater_store::Store::open(dir.path(), tailwater_store::StoreOptions::default()).unwrap(),
    );
    let shared = Arc::new(Shared {
        limits: ConnectionLimits::default(),
        metrics: Arc::new(Metrics::new(store)),
        start: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(std::collections::HashMap::new()),
        places: Arc::new(Semaphore::new(1)),
    });
    let conns: Vec<Arc<Conn>> = (0..64)
        .map(|id| {
            let conn = Arc::new(Conn {
                phase: AtomicU8::new(IDLE),
                since_ms: AtomicU64::new(id),
                wake: Notify::new(),
                dispatched: AtomicBool::new(false),
            });
            shared.open.lock().unwrap().insert(id, conn.clone());
            conn
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let (conns, stop) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                for conn in &conns {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    conn.since_ms.store(n >> 40, Ordering::Release);
                }
            }
        })
    };
    for _ in 0..3000 {
        for conn in &conns {
            conn.phase.store(IDLE, Ordering::Release);
        }
        assert!(shared.evict_oldest(), "an idle connection is evicted");
        let evicted = conns.iter().filter(|conn| conn.phase() == EVICTED).count();
        assert_eq!(evicted, 1);
    }
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
}
