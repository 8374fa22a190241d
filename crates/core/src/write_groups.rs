//! Group commit for small concurrent writes of any shape ([`Db::write_grouped`]: Twilio status
//! callbacks, Messenger delivery and read events); and [`WriteBatcher`], which writes many
//! requests' items of one kind (inbound messages, send starts and outcomes) with a few
//! set-based statements for a whole batch.
//!
//! Each such write on its own is a transaction with a durable commit: on PostgreSQL a WAL flush
//! and a BEGIN/COMMIT round trip each, on SQLite a turn at the single write lock. Here the
//! writes that arrive while a group is being written wait for the next group, which runs them
//! in one transaction, each in a savepoint of its own: one that fails is rolled back alone and
//! gets its error, the others commit together. Callers get their result once the group has
//! committed, so an answer never promises what is not durable.
//!
//! One group writer per process, on both backends: two groups of arbitrary closures written at
//! once can touch the same rows in opposite orders and deadlock, which several PostgreSQL group
//! writers did under load. A batcher knows its items, so it can do better: lanes by key that
//! never share rows (see [`WriteBatcher`]).

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::db::{BackendKind, Db, DbConnection};
use crate::error::{CoreError, CoreResult};

/// Most writes in one group: a burst's transactions stay short.
const GROUP_MAX: usize = 128;

/// Runs one write in the group's transaction and returns what tells its caller the group's
/// fate (`Some(reason)`: not committed).
type Job = Box<dyn FnOnce(&mut DbConnection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

#[derive(Default)]
pub(crate) struct WriteGroups {
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl WriteGroups {
    fn submit(&self, db: &Db, job: Job) -> Result<(), CoreError> {
        self.queue
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                // The writer holds the pool, not the `Db`: it ends when the last sender (the
                // last clone of the `Db`) is gone.
                tokio::spawn(write_groups(db.without_groups(), rx));
                tx
            })
            .send(job)
            .map_err(|_| not_written())
    }
}

fn not_written() -> CoreError {
    CoreError::Unavailable("the write did not complete".into())
}

async fn write_groups(db: Db, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    loop {
        let taken = jobs.recv_many(&mut group, GROUP_MAX).await;
        if taken == 0 {
            return;
        }
        metrics::histogram!("herald_db_write_group_size").record(taken as f64);
        let group = std::mem::take(&mut group);
        // A pool failure drops the group: its callers see their reply channel closed.
        let _ = db
            .run(move |conn| {
                write_group(conn, group);
                Ok::<_, CoreError>(())
            })
            .await;
    }
}

fn write_group(conn: &mut DbConnection, group: Vec<Job>) {
    let mut replies = Vec::with_capacity(group.len());
    let committed = conn.write(|conn| {
        for job in group {
            replies.push(job(conn));
        }
        Ok::<_, diesel::result::Error>(())
    });
    let failed = committed.err().map(|e| e.to_string());
    for reply in replies {
        reply(failed.as_deref());
    }
}

impl Db {
    /// Runs `f` in a write transaction shared with the other grouped writes waiting at the same
    /// time, in a savepoint of its own (see the module's notes); returns once it is committed.
    /// For small, independent writes that many requests make at once.
    pub async fn write_grouped<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<CoreError> + From<diesel::result::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = conn.write(f);
            Box::new(move |failed: Option<&str>| {
                let _ = tx.send(match failed {
                    None => result,
                    Some(reason) => Err(E::from(CoreError::Unavailable(format!(
                        "the write was not committed: {reason}"
                    )))),
                });
            })
        });
        self.groups().submit(self, job)?;
        rx.await.map_err(|_| not_written())?
    }
}

/// Writes a batch of items, returning one output per item in their order.
pub type BatchWrite<I, O> = fn(&mut DbConnection, &[I]) -> CoreResult<Vec<O>>;

type Pending<I, O> = (I, oneshot::Sender<CoreResult<O>>);

/// Which lane an item goes to: items with the same key are written by the same lane, in order.
pub type LaneKey<I> = fn(&I) -> u64;

/// Items of one kind from many concurrent requests, written by one function over the whole batch
/// (a few set-based statements instead of a few per item), each batch in a transaction of its
/// own. Items go to lanes by a key (for inbound messages the contact): a lane writes one batch
/// at a time, the items arriving meanwhile making its next one, so items of one key are written
/// in order and two lanes never take the same rows. PostgreSQL gets two lanes, whose commits
/// overlap; SQLite one (it has one writer anyway), as does a batcher without a key. When a batch
/// fails, its items are written again one by one, so a bad item fails alone and the others are
/// stored.
pub struct WriteBatcher<I, O> {
    db: Db,
    write: BatchWrite<I, O>,
    lane_key: Option<LaneKey<I>>,
    lanes: Vec<OnceLock<mpsc::UnboundedSender<Pending<I, O>>>>,
}

impl<I, O> WriteBatcher<I, O>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    /// Two measured best: four made smaller batches, and their commits no faster.
    const POSTGRES_LANES: usize = 2;

    /// Without a lane key, one lane: for items that share no rows and need no order among
    /// themselves, where bigger batches beat overlapping commits.
    pub fn new(db: Db, write: BatchWrite<I, O>, lane_key: Option<LaneKey<I>>) -> Self {
        let lanes = match (db.backend(), lane_key) {
            (BackendKind::Postgres, Some(_)) => Self::POSTGRES_LANES,
            _ => 1,
        };
        Self {
            db,
            write,
            lane_key,
            lanes: (0..lanes).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Writes `item` with the others waiting meanwhile; returns its output once committed.
    pub async fn write(&self, item: I) -> CoreResult<O> {
        let (tx, rx) = oneshot::channel();
        let key = self.lane_key.map_or(0, |key| key(&item));
        let lane = usize::try_from(key % self.lanes.len() as u64).unwrap_or(0);
        self.lanes[lane]
            .get_or_init(|| {
                let (queue, pending) = mpsc::unbounded_channel();
                tokio::spawn(write_batches(self.db.clone(), self.write, pending));
                queue
            })
            .send((item, tx))
            .map_err(|_| not_written())?;
        rx.await.map_err(|_| not_written())?
    }
}

async fn write_batches<I, O>(
    db: Db,
    write: BatchWrite<I, O>,
    mut pending: mpsc::UnboundedReceiver<Pending<I, O>>,
) where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    let mut taken = Vec::with_capacity(GROUP_MAX);
    loop {
        if pending.recv_many(&mut taken, GROUP_MAX).await == 0 {
            return;
        }
        metrics::histogram!("herald_db_write_batch_size").record(taken.len() as f64);
        let (items, replies): (Vec<I>, Vec<_>) = taken.drain(..).unzip();
        write_batch(&db, write, items, replies).await;
    }
}

async fn write_batch<I, O>(
    db: &Db,
    write: BatchWrite<I, O>,
    items: Vec<I>,
    replies: Vec<oneshot::Sender<CoreResult<O>>>,
) where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    let items = Arc::new(items);
    let batch = Arc::clone(&items);
    let written = db
        .run(move |conn| conn.write(|conn| write(conn, &batch)))
        .await;
    match written {
        Ok(outputs) => {
            // A reply left without an output (a write that broke its contract) sees its channel
            // closed: "not written".
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
        }
        Err(e) if replies.len() == 1 => {
            let _ = replies.into_iter().next().map(|reply| reply.send(Err(e)));
        }
        Err(_) => {
            // Each alone, all at once: one bad item costs its batch one more round.
            let alone: Vec<_> = (0..replies.len())
                .map(|n| {
                    let items = Arc::clone(&items);
                    db.run(move |conn| {
                        conn.write(|conn| write(conn, std::slice::from_ref(&items[n])))
                    })
                })
                .collect();
            let results = futures::future::join_all(alone).await;
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result.and_then(|mut one| one.pop().ok_or_else(not_written)));
            }
        }
    }
}
