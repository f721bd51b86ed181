//! The one shape of background work: a [`Service`] is a `run_once` and a [`Wake`] (interval,
//! NOTIFY channel, commit signal), run by [`run`] with one [`Backoff`] after failures until
//! shutdown, started and stopped together in [`Services`], whose [`Services::listen`] turns a
//! NOTIFY channel into a wake signal that survives reconnects.

use std::{
    fmt::Display,
    future::{poll_fn, Future},
    pin::Pin,
    task::Poll,
    time::Duration,
};

use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgPool,
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Exponential backoff: `base`, doubling per failure up to `max`; with full jitter, uniform in
/// `[0, that]` instead (so that many clients retrying after one outage spread out).
///
/// ```
/// use std::time::Duration;
/// use thryve_bridge::service::Backoff;
/// let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
/// let waits: Vec<_> = (0..4).map(|_| backoff.failed().as_millis()).collect();
/// assert_eq!(waits, [250, 500, 1000, 1000]);
/// backoff.reset();
/// assert_eq!(backoff.failed(), Duration::from_millis(250));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    full_jitter: bool,
    failures: u32,
}

impl Backoff {
    /// `max` below `base` is taken as `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            full_jitter: false,
            failures: 0,
        }
    }

    pub fn with_full_jitter(mut self) -> Self {
        self.full_jitter = true;
        self
    }

    /// The wait after `failures_before` failures in a row (0: the first): `base * 2^n`, at
    /// most `max`, jittered if so configured. Pure but for the jitter.
    pub fn delay(&self, failures_before: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(failures_before).unwrap_or(u32::MAX))
            .min(self.max);
        if self.full_jitter {
            let unit = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
            ceiling.mul_f64(unit)
        } else {
            ceiling
        }
    }

    /// One more failure: the wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let delay = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What one pass of a service found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// There is more to do: run again at once.
    More,
    /// Nothing left for now: wait for the next wake.
    Idle,
    /// The service's work is over (its claim lost, its channel closed for good).
    Done,
}

/// A named background task: [`run`] calls `run_once` until shutdown, waiting between passes
/// as its [`Wake`] says and after failures as its [`Backoff`] says.
pub trait Service: Send {
    /// Names the service in its log lines (`"poller"`).
    const NAME: &'static str;
    /// Logged (warn) with the error and the wait when a pass fails, e.g. `"spool not loaded
    /// yet"`.
    const FAILED: &'static str;
    type Error: Display + Send;

    /// One pass. `shutdown` is for passes that wait (a rate cap, a pause); a pass under way
    /// when shutdown begins is otherwise finished.
    fn run_once(
        &mut self,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Pass, Self::Error>> + Send;

    /// How long to wait after failed passes.
    fn backoff(&self) -> Backoff;

    /// Logged once the service has stopped.
    fn stopped(&self) {
        tracing::info!("{} stopped", Self::NAME);
    }
}

/// What ends the wait between two passes: an interval, and any number of signals (a
/// `watch` whose value changes: this process's commits, a [`listen`]ed channel). The default
/// has neither: only a pass that finds more work, or the backoff after a failure, brings
/// the next one.
#[derive(Debug, Clone, Default)]
pub struct Wake {
    every: Option<Duration>,
    /// Wait a whole interval before the first pass.
    delayed: bool,
    signals: Vec<watch::Receiver<u64>>,
}

impl Wake {
    /// A pass at once, then one each `interval` (or sooner, on a signal).
    pub fn every(interval: Duration) -> Self {
        Self {
            every: Some(interval),
            delayed: false,
            signals: Vec::new(),
        }
    }

    /// A pass each `interval`, the first after one interval.
    pub fn after(interval: Duration) -> Self {
        Self {
            delayed: true,
            ..Self::every(interval)
        }
    }

    /// A pass at once, then one per change of `signal` (several changes while a pass runs
    /// make one more pass).
    pub fn on(signal: watch::Receiver<u64>) -> Self {
        Self {
            every: None,
            delayed: false,
            signals: vec![signal],
        }
    }

    /// Also wake when `signal` changes.
    pub fn or(mut self, signal: watch::Receiver<u64>) -> Self {
        self.signals.push(signal);
        self
    }

    /// Forgets changes so far: the next wait ends only on changes made after this.
    fn mark_seen(&mut self) {
        for signal in &mut self.signals {
            signal.borrow_and_update();
        }
    }

    /// Ends when a signal changes, `pause` (if any) passes, or never.
    async fn wait(&mut self, pause: Option<Duration>) {
        let sleep = async {
            match pause {
                Some(pause) => tokio::time::sleep(pause).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = changed(&mut self.signals) => {}
        }
    }
}

/// Ends when any of `signals` changes; a signal whose sender is gone is dropped from the list
/// (it can never change again), and with none left this never ends.
async fn changed(signals: &mut Vec<watch::Receiver<u64>>) {
    loop {
        if signals.is_empty() {
            return std::future::pending().await;
        }
        let (index, result) = {
            let mut waits: Vec<Pin<Box<_>>> =
                signals.iter_mut().map(|s| Box::pin(s.changed())).collect();
            poll_fn(|cx| {
                for (i, wait) in waits.iter_mut().enumerate() {
                    if let Poll::Ready(result) = wait.as_mut().poll(cx) {
                        return Poll::Ready((i, result));
                    }
                }
                Poll::Pending
            })
            .await
        };
        match result {
            Ok(()) => return,
            Err(_) => {
                signals.remove(index);
            }
        }
    }
}

/// Runs `service` until `shutdown`: a pass, then (unless it found more to do) a wait for
/// `wake`, or after a failed pass for the service's [`Backoff`] (a signal still ends that
/// wait early). Every background task of `serve` is started through this.
pub async fn run<S: Service>(mut service: S, mut wake: Wake, shutdown: CancellationToken) {
    let mut backoff = service.backoff();
    if wake.delayed {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = wake.wait(wake.every) => {}
        }
    }
    while !shutdown.is_cancelled() {
        wake.mark_seen();
        let pause = match service.run_once(&shutdown).await {
            Ok(Pass::More) => {
                backoff.reset();
                continue;
            }
            Ok(Pass::Idle) => {
                backoff.reset();
                wake.every
            }
            Ok(Pass::Done) => break,
            Err(error) => {
                let retry_in = backoff.failed();
                tracing::warn!(
                    service = S::NAME,
                    %error,
                    failures = backoff.failures(),
                    retry_in_ms = retry_in.as_millis() as u64,
                    "{}",
                    S::FAILED
                );
                Some(retry_in)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.wait(pause) => {}
        }
    }
    service.stopped();
}

/// The first wait after a LISTEN fails to connect, doubling up to [`LISTEN_BACKOFF_MAX`];
/// the services it wakes still run on their intervals meanwhile.
const LISTEN_BACKOFF: Duration = Duration::from_millis(500);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a LISTEN waits to connect before the pass fails and backs off.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The background services of one process, started into one set and stopped together: where
/// `serve` (and anything else that runs services) starts them and waits for them to finish.
pub struct Services {
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Services {
    /// Services that stop when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            shutdown,
        }
    }

    /// Runs `service` ([`run`]) until shutdown.
    pub fn start<S: Service + 'static>(&mut self, service: S, wake: Wake) {
        self.tasks.spawn(run(service, wake, self.shutdown.clone()));
    }

    /// A signal that changes on every `NOTIFY channel`, and after each (re)connection of the
    /// LISTEN (work may have come while it was down): the one LISTEN of this process on
    /// `channel`, reconnected with a backoff until shutdown. Give clones of the signal to
    /// every service it should wake.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::PgPool) {
    /// use thryve_bridge::service::{Services, Wake};
    /// let mut services = Services::new(tokio_util::sync::CancellationToken::new());
    /// let notified = services.listen(pool, "thryve_dirty_ranges");
    /// let wake = Wake::every(std::time::Duration::from_secs(5)).or(notified);
    /// # }
    /// ```
    pub fn listen(&mut self, pool: PgPool, channel: &'static str) -> watch::Receiver<u64> {
        let (signal, notified) = watch::channel(0);
        let listen = Listen {
            pool,
            channel,
            signal,
        };
        self.start(listen, Wake::default());
        notified
    }

    /// Waits until every service has stopped (after shutdown began, or on their own).
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One LISTEN connection per pass, of its own: a pass ends when the connection does.
struct Listen {
    /// Where to connect: its options only, never its connections.
    pool: PgPool,
    channel: &'static str,
    signal: watch::Sender<u64>,
}

impl Service for Listen {
    const NAME: &'static str = "listen";
    const FAILED: &'static str =
        "LISTEN failed; the services it wakes run on their intervals meanwhile";
    type Error = sqlx::Error;

    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<Pass, sqlx::Error> {
        // A connection of its own, never one of the process pool's: a connection that ran
        // LISTEN keeps receiving notifications, and back in the pool every statement on it
        // would fail (`unexpected message: NotificationResponse`), e.g. after a reconnect that
        // fails halfway, which returns it there. The pool of one lives for this pass only, so
        // whatever connection the listener ends with is closed with it, never reused.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(LISTEN_CONNECT_TIMEOUT)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let listened = self.listen(&own, shutdown).await;
        // Marks it closed at once (the listener's connection, returned by its drop, is closed
        // then); not waited for, as a connection that hangs must not hold up the next pass.
        drop(own.close());
        listened
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(LISTEN_BACKOFF, LISTEN_BACKOFF_MAX)
    }

    fn stopped(&self) {
        tracing::debug!(channel = self.channel, "LISTEN stopped");
    }
}

impl Listen {
    /// LISTEN on a connection of `own` until it is lost or shutdown.
    async fn listen(
        &self,
        own: &PgPool,
        shutdown: &CancellationToken,
    ) -> Result<Pass, sqlx::Error> {
        let mut listener = PgListener::connect_with(own).await?;
        // A lost connection ends the pass (the next one signals, as work may have come
        // meanwhile), rather than being replaced inside `try_recv` without a word.
        listener.eager_reconnect(false);
        listener.listen(self.channel).await?;
        self.signal.send_modify(|n| *n += 1);
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => self.signal.send_modify(|n| *n += 1),
                    Ok(None) => {
                        tracing::debug!(channel = self.channel, "LISTEN connection lost; reconnecting");
                        return Ok(Pass::More);
                    }
                    Err(error) => {
                        // It was up: reconnect at once, and back off only if that fails.
                        tracing::debug!(channel = self.channel, %error, "LISTEN connection lost; reconnecting");
                        return Ok(Pass::More);
                    }
                },
                _ = shutdown.cancelled() => return Ok(Pass::Done),
                _ = self.signal.closed() => return Ok(Pass::Done),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_to_max_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let waits: Vec<u128> = (0..9).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(backoff.failures(), 9);
        backoff.reset();
        assert_eq!(backoff.failed(), Duration::from_millis(10));
        // A long outage neither overflows nor falls below the cap.
        assert_eq!(backoff.delay(200), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling() {
        let backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(60)).with_full_jitter();
        for failures in 0..20 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << failures.min(19))
                .min(Duration::from_secs(60));
            assert!(backoff.delay(failures) <= ceiling);
        }
    }

    #[test]
    fn a_max_below_the_base_is_the_base() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(backoff.delay(0), Duration::from_secs(2));
        assert_eq!(backoff.delay(5), Duration::from_secs(2));
    }

    /// Counts passes; fails the passes listed in `fail`, and reports more work `more` times.
    struct Counter {
        passes: watch::Sender<u32>,
        fail: Vec<u32>,
        more: u32,
        backoff: Backoff,
    }

    impl Service for Counter {
        const NAME: &'static str = "counter";
        const FAILED: &'static str = "counter failed";
        type Error = String;

        async fn run_once(&mut self, _: &CancellationToken) -> Result<Pass, String> {
            let pass = *self.passes.borrow();
            self.passes.send_replace(pass + 1);
            if self.fail.contains(&pass) {
                return Err(format!("pass {pass}"));
            }
            if self.more > 0 {
                self.more -= 1;
                return Ok(Pass::More);
            }
            Ok(Pass::Idle)
        }

        fn backoff(&self) -> Backoff {
            self.backoff.clone()
        }
    }

    async fn passes_reach(passes: &mut watch::Receiver<u32>, n: u32) {
        passes.wait_for(|p| *p >= n).await.unwrap();
    }

    #[tokio::test]
    async fn more_work_runs_at_once_and_a_signal_wakes_an_idle_service() {
        let (passes, mut seen) = watch::channel(0);
        let (signal, wake) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let counter = Counter {
            passes,
            fail: vec![],
            more: 2,
            backoff: Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
        };
        // An interval no test waits for: only More and the signal can bring passes.
        let task = tokio::spawn(run(
            counter,
            Wake::every(Duration::from_secs(3600)).or(wake),
            shutdown.clone(),
        ));
        passes_reach(&mut seen, 3).await;
        signal.send_modify(|n| *n += 1);
        passes_reach(&mut seen, 4).await;
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pass_waits_the_backoff_not_the_interval() {
        let (passes, mut seen) = watch::channel(0);
        let shutdown = CancellationToken::new();
        let counter = Counter {
            passes,
            fail: vec![0, 1],
            more: 0,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        };
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(run(
            counter,
            Wake::every(Duration::from_secs(3600)),
            shutdown.clone(),
        ));
        // Two failures: waits of 1 s and 2 s, then the third pass.
        passes_reach(&mut seen, 3).await;
        assert_eq!(started.elapsed().as_secs(), 3);
        shutdown.cancel();
        task.await.unwrap();
    }
}
