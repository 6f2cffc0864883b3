//! Leases: the replicas of a sharded config that share a PostgreSQL history
//! tell each other they are alive, and take over the share of one that
//! stopped.
//!
//! Each replica writes a beat (its row in `replicas`) five times per lease
//! and reads every row back. Whether shard S runs a journey's tick at time T
//! is a function of those rows and T alone, so every replica that read the
//! same rows reaches the same answer for the same tick:
//! - S holds a lease at T when its last beat is at most one lease old and
//!   its lease began at least two beats before T (it is *late* when that
//!   beat is more than three beats old: its share has no live owner until
//!   the lease runs out);
//! - the tick goes to the journey's highest-scoring shard among those that
//!   hold a lease (rendezvous hashing, as without leases).
//!
//! A replica that dies keeps its share until its lease runs out; then the
//! survivors' next ticks are theirs, with no message exchanged. One that comes
//! back begins a new lease, and takes its share again only two beats later,
//! when every survivor has read its row and stopped. A clean shutdown ends
//! the lease at once.
//!
//! While this replica cannot read the rows (the database is down), it keeps
//! the view it had, evaluated no later than two beats after its last read:
//! it goes on running what it ran, and the others, if they can still reach
//! the database, take its share after a lease. Before its first read it runs
//! its own share by the hash alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::store::{Database, Replica, Store};
use waymark_load::Shard;

/// A shard's standing at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Beating, and its lease has begun: it runs its share.
    Live,
    /// Its lease holds but its beats stopped: its share waits for the lease
    /// to run out, with no live owner.
    Late,
    /// Came back; its share goes on with the others until they have seen it.
    Joining,
    /// No lease: its share is run by the others.
    Gone,
}

impl Standing {
    /// Whether its share stays with it.
    fn holds(self) -> bool {
        matches!(self, Standing::Live | Standing::Late)
    }
}

/// Every shard's standing at one instant, and what follows for journeys.
#[derive(Debug, Clone)]
pub struct Split {
    count: u32,
    /// None before the first read: the hash alone decides.
    standings: Option<Vec<Standing>>,
}

impl Split {
    /// Every shard's standing, or none before the first read.
    pub fn standings(&self) -> Option<&[Standing]> {
        self.standings.as_deref()
    }

    fn holder(&self, journey: &str) -> Option<u32> {
        let s = self.standings.as_deref()?;
        Shard::owner_among(self.count, journey, |i| {
            s.get(i as usize).is_some_and(|x| x.holds())
        })
    }

    /// The shard that runs `journey`: none when no shard holds a lease.
    pub fn owner(&self, journey: &str) -> Option<u32> {
        match &self.standings {
            None => Some(Shard::owner(self.count, journey)),
            Some(_) => self.holder(journey),
        }
    }

    /// Whether `journey` has no live owner: its shard's lease holds but the
    /// shard stopped beating, or no shard holds one.
    pub fn orphaned(&self, journey: &str) -> bool {
        let Some(s) = self.standings.as_deref() else {
            return false;
        };
        match self.holder(journey) {
            None => true,
            Some(o) => s.get(o as usize) == Some(&Standing::Late),
        }
    }
}

/// What the last read of the rows said.
#[derive(Debug, Clone)]
struct Seen {
    at: SystemTime,
    rows: Vec<Replica>,
}

/// One replica's leases: its own, and what it knows of the others.
#[derive(Debug)]
pub struct Leases {
    shard: Shard,
    location: String,
    lease: Duration,
    instance: String,
    seen: RwLock<Option<Seen>>,
    /// The last error of a beat, for `/status`.
    failing: Mutex<Option<String>>,
    /// Another process beats for this shard (said once).
    twin: AtomicBool,
}

impl Leases {
    /// Leases for `shard` of the replicas at `location`.
    pub fn new(shard: Shard, location: &str, lease: Duration) -> Leases {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Leases {
            shard,
            location: location.to_string(),
            lease,
            instance: format!(
                "{host}:{}:{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            seen: RwLock::new(None),
            failing: Mutex::new(None),
            twin: AtomicBool::new(false),
        }
    }

    /// This replica's shard index.
    pub fn index(&self) -> u32 {
        self.shard.index
    }

    /// The interval between beats.
    pub fn beat(&self) -> Duration {
        self.lease / 5
    }

    /// How long a new lease waits before its share moves to it.
    fn join_delay(&self) -> Duration {
        self.beat() * 2
    }

    /// How long a silent replica keeps its share.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Every shard's standing at `t`, or none before the first read.
    pub fn standings(&self, t: SystemTime) -> Option<Vec<Standing>> {
        let seen = self.seen.read().ok()?;
        let seen = seen.as_ref()?;
        // A view that could not be refreshed is kept as it was, rather than
        // letting every lease in it, this replica's own included, run out.
        let t = t.min(waymark_record::units::later_wall(
            seen.at,
            self.join_delay(),
        ));
        let mut out = vec![Standing::Gone; self.shard.count as usize];
        for r in &seen.rows {
            let Some(slot) = out.get_mut(r.shard as usize) else {
                continue;
            };
            let expires = waymark_record::units::later_wall(r.seen, self.lease);
            let begins = waymark_record::units::later_wall(r.joined, self.join_delay());
            // Three beats: a view frozen two beats after its read still
            // finds a replica that beat a beat before the read beating.
            let beating = waymark_record::units::later_wall(r.seen, self.beat() * 3) >= t;
            *slot = if expires < t {
                Standing::Gone
            } else if begins > t {
                Standing::Joining
            } else if beating {
                Standing::Live
            } else {
                Standing::Late
            };
        }
        Some(out)
    }

    /// Who runs what at `t`: the standings read once, for deciding about
    /// many journeys (a `/status` snapshot, the metrics).
    pub fn at(&self, t: SystemTime) -> Split {
        Split {
            count: self.shard.count,
            standings: self.standings(t),
        }
    }

    /// The shard that runs `journey`'s tick at `t`: none when no shard holds
    /// a lease (all of them are starting, or gone).
    pub fn owner_at(&self, journey: &str, t: SystemTime) -> Option<u32> {
        self.at(t).owner(journey)
    }

    /// Whether this replica runs `journey`'s tick at `t`.
    pub fn runs(&self, journey: &str, t: SystemTime) -> bool {
        self.owner_at(journey, t) == Some(self.shard.index)
    }

    /// Whether `journey` has no live owner at `t` (see [`Split::orphaned`]).
    pub fn orphaned(&self, journey: &str, t: SystemTime) -> bool {
        self.at(t).orphaned(journey)
    }

    /// The rows of the last read, with when it was made.
    pub fn rows(&self) -> Option<(SystemTime, Vec<Replica>)> {
        let seen = self.seen.read().ok()?;
        seen.as_ref().map(|s| (s.at, s.rows.clone()))
    }

    /// Why the last beat failed, if it did.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// One beat: writes this replica's row and reads them all.
    fn beat_once(&self, store: &Store, now: SystemTime) -> Result<(), crate::store::StoreError> {
        let me = Replica {
            shard: self.shard.index,
            instance: self.instance.clone(),
            joined: now,
            seen: now,
        };
        let expired_before = now.checked_sub(self.lease).unwrap_or(now);
        store.beat(&self.location, self.shard.count, &me, expired_before)?;
        let rows = store.replicas(&self.location, self.shard.count)?;
        for r in &rows {
            // Two processes were given the same shard: each beat takes the
            // row from the other, and both run the share. Said once.
            if r.shard == self.shard.index
                && r.instance != self.instance
                && !self.twin.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    shard = %self.shard,
                    other = %r.instance,
                    "another replica beats for this shard: two processes were given the same --shard"
                );
            }
        }
        if let Ok(mut s) = self.seen.write() {
            *s = Some(Seen { at: now, rows });
        }
        Ok(())
    }
}

/// How long a starting replica waits for its first beat.
pub const FIRST_BEAT_WAIT: Duration = Duration::from_secs(3);

/// The beating replica's connection to the history.
struct Link {
    leases: Arc<Leases>,
    database: Database,
    store: Option<Store>,
    /// Said that the history is out of reach, and not yet that it is back.
    warned: bool,
}

impl Link {
    /// One beat, connecting first if needed; true when it read the rows.
    fn beat(&mut self) -> bool {
        if self.store.is_none() {
            match Store::connect(&self.database) {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
        }
        let Some(store) = &self.store else {
            return false;
        };
        match self.leases.beat_once(store, SystemTime::now()) {
            Ok(()) => {
                if self.warned {
                    tracing::info!("lease: the history answers again");
                }
                self.warned = false;
                if let Ok(mut f) = self.leases.failing.lock() {
                    *f = None;
                }
                true
            }
            Err(e) => {
                self.failed(&e);
                self.store = None;
                false
            }
        }
    }

    fn failed(&mut self, e: &crate::store::StoreError) {
        if !self.warned {
            tracing::warn!(error = %e, "lease: cannot beat in the history; this replica keeps the shares it knew");
        }
        self.warned = true;
        if let Ok(mut f) = self.leases.failing.lock() {
            *f = Some(e.to_string());
        }
    }

    /// Ends the lease, so the others take the share at their next beat.
    fn release(&self) {
        let l = &self.leases;
        if let Some(s) = &self.store
            && let Err(e) = s.release(&l.location, l.shard.count, l.shard.index)
        {
            tracing::warn!(error = %e, "lease: could not end this replica's lease; the others take its share when it runs out");
        }
    }
}

/// The thread that beats for a replica; ends its lease when stopped.
pub struct Beater {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Beater {
    /// Beats for `leases` into `database`, calling `after` after each read.
    /// It waits (blocking, up to [`FIRST_BEAT_WAIT`]) for the first beat, so
    /// a replica that can reach the database does not start on the hash
    /// alone, running a share the others already run; one that cannot is
    /// not held up longer than that (its `/healthz` would fail meanwhile).
    pub fn start(
        leases: Arc<Leases>,
        database: Database,
        after: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Beater> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut link = Link {
            leases,
            database,
            store: None,
            warned: false,
        };
        let (first, first_done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("waymark-lease".into())
            .spawn(move || {
                let beat = link.leases.beat();
                // A database that answers slowly at start (another replica
                // migrating it) gets a few tries.
                for _ in 0..3 {
                    if link.beat() || flag.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(beat.min(Duration::from_millis(500)));
                }
                after();
                let _ = first.send(());
                let mut last = std::time::Instant::now();
                loop {
                    let until = waymark_record::units::later(last, beat);
                    while !flag.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                        std::thread::sleep(beat.min(Duration::from_millis(50)));
                    }
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    last = std::time::Instant::now();
                    if link.beat() {
                        after();
                    }
                }
                link.release();
            })?;
        let _ = first_done.recv_timeout(FIRST_BEAT_WAIT);
        Ok(Beater {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops beating and ends the lease.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn replicas(n: u32, lease: Duration) -> Vec<Leases> {
        (0..n)
            .map(|i| Leases::new(Shard { index: i, count: n }, "here", lease))
            .collect()
    }

    /// Three replicas on one history file, driven by hand through a death
    /// and a return: every tick has exactly one runner except while the
    /// dead one's lease runs out.
    #[test]
    fn a_dead_replicas_share_moves_after_its_lease_and_back_when_it_returns() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("h.db")).expect("open");
        let lease = Duration::from_millis(1000);
        let r = replicas(3, lease);
        let names: Vec<String> = (0..60).map(|i| format!("j{i}")).collect();
        let runners = |r: &[Leases], alive: &[usize], name: &str, t: SystemTime| -> Vec<usize> {
            alive
                .iter()
                .copied()
                .filter(|&i| r[i].runs(name, t))
                .collect()
        };
        // Before any read: the hash alone.
        assert!(
            names
                .iter()
                .all(|n| r[0].runs(n, at(0)) == Shard { index: 0, count: 3 }.owns(n))
        );
        // All beat from 0 ms every 200 ms.
        let beat = |alive: &[usize], now: u64| {
            for &i in alive {
                r[i].beat_once(&store, at(now)).expect("beat");
            }
            // A second pass, so every replica read the others' rows.
            for &i in alive {
                r[i].beat_once(&store, at(now)).expect("beat");
            }
        };
        beat(&[0, 1, 2], 10_000);
        // Starting together: nobody runs until the leases begin (two beats).
        assert_eq!(
            runners(&r, &[0, 1, 2], "j1", at(10_100)),
            Vec::<usize>::new()
        );
        assert!(r[0].orphaned("j1", at(10_100)));
        let mut now = 10_200;
        while now <= 12_000 {
            beat(&[0, 1, 2], now);
            now += 200;
        }
        for n in &names {
            assert_eq!(
                runners(&r, &[0, 1, 2], n, at(12_000)),
                vec![Shard::owner(3, n) as usize],
                "{n}"
            );
        }
        // Replica 2 dies after its beat at 12,000 ms.
        let theirs: Vec<&String> = names.iter().filter(|n| Shard::owner(3, n) == 2).collect();
        assert!(!theirs.is_empty());
        let mut late_seen = false;
        while now <= 13_400 {
            beat(&[0, 1], now);
            let t = at(now);
            let st = r[0].standings(t).expect("read");
            if now <= 12_600 {
                assert_eq!(st[2], Standing::Live, "{now}");
            } else if now <= 13_000 {
                assert_eq!(st[2], Standing::Late, "{now}");
                late_seen = true;
                for n in &theirs {
                    assert!(r[0].orphaned(n, t), "{n} at {now}");
                    assert_eq!(
                        runners(&r, &[0, 1], n, t),
                        Vec::<usize>::new(),
                        "{n} at {now}"
                    );
                }
            } else {
                assert_eq!(st[2], Standing::Gone, "{now}");
                for n in &names {
                    assert!(!r[1].orphaned(n, t));
                    let who = runners(&r, &[0, 1], n, t);
                    assert_eq!(who.len(), 1, "{n} at {now}: {who:?}");
                    if Shard::owner(3, n) != 2 {
                        assert_eq!(who, vec![Shard::owner(3, n) as usize], "{n} moved");
                    }
                }
            }
            now += 200;
        }
        assert!(late_seen);
        // It comes back (a new process) at 13,600 ms.
        let back = Leases::new(Shard { index: 2, count: 3 }, "here", lease);
        let all = [&r[0], &r[1], &back];
        back.beat_once(&store, at(13_600)).expect("beat");
        for t in [13_600, 13_700, 13_799] {
            assert!(theirs.iter().all(|n| !back.runs(n, at(t))), "{t}");
        }
        now = 13_600;
        while now <= 15_000 {
            for l in all {
                l.beat_once(&store, at(now)).expect("beat");
            }
            // From the survivors' first read of its row on, every replica
            // agrees about every tick: the handover is at 14,000 ms.
            for t in [now, now + 50, now + 150] {
                for n in &names {
                    let who: Vec<usize> = (0..3).filter(|&i| all[i].runs(n, at(t))).collect();
                    assert_eq!(who.len(), 1, "{n} at {t}: {who:?}");
                    if t >= 14_000 {
                        assert_eq!(who, vec![Shard::owner(3, n) as usize], "{n} at {t}");
                    }
                }
            }
            now += 200;
        }
        // A clean stop hands the share over at the next read.
        store.release("here", 3, 2).expect("release");
        r[0].beat_once(&store, at(15_200)).expect("beat");
        assert_eq!(r[0].standings(at(15_200)).expect("read")[2], Standing::Gone);
    }

    #[test]
    fn a_replica_that_cannot_read_keeps_the_view_it_had() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("h.db")).expect("open");
        let r = replicas(2, Duration::from_millis(1000));
        for now in [0, 200, 400, 600] {
            for l in &r {
                l.beat_once(&store, at(now)).expect("beat");
            }
        }
        // No read after 600 ms: an hour later it still runs its share.
        let mine: Vec<String> = (0..20)
            .map(|i| format!("j{i}"))
            .filter(|n| Shard::owner(2, n) == 0)
            .collect();
        assert!(mine.iter().all(|n| r[0].runs(n, at(3_600_000))));
        assert_eq!(
            r[0].standings(at(3_600_000)).expect("read"),
            vec![Standing::Live; 2]
        );
    }
}
