//! How registry requests behave when the network misbehaves: bounded retries with exponential
//! backoff (connection errors, 5xx, 429), the wait a 429 or 503 asks for with Retry-After
//! (bounded by the deadline and `MAX_RETRY_AFTER`), a stall limit on every wait for bytes,
//! cancellation of every wait, and a hook that tells the caller about each retry (progress
//! events).

use crate::error::{Error, Result, Status};
use crate::runtime::CancelFlag;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest Retry-After waited for; a registry that asks for more (rate limits of hours)
/// gets its error reported instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A failed attempt: the error, and how long the server asked us to wait before the next one
/// (its Retry-After), if it said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: Error,
    pub retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// A Retry-After value: delay-seconds or an HTTP-date (IMF-fixdate, RFC 9110 5.6.7), as a
/// wait from `now`; a date in the past is no wait. None when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurd numbers saturate; they are capped by MAX_RETRY_AFTER anyway.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(0..24).contains(h) || !(0..60).contains(m) || !(0..61).contains(s) {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// containers/image's `maxRetries`-style bound and a backoff that stays short enough for an
/// interactive pull: 0.2 s, 0.4 s, 0.8 s, 1.6 s (±20 %), capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retry).
    pub max_retries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): exponential, capped, with ±20 % jitter
    /// so that many clients hit by one outage do not come back in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .initial_delay
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        let mut b = [0u8; 2];
        let jitter = if getrandom::getrandom(&mut b).is_ok() {
            // 0.8 ..= 1.2
            0.8 + 0.4 * (u16::from_le_bytes(b) as f64 / u16::MAX as f64)
        } else {
            1.0
        };
        capped.mul_f64(jitter).min(self.max_delay)
    }
}

/// A retry about to happen, for progress reporting.
#[derive(Debug, Clone)]
pub struct RetryNotice {
    /// The blob or manifest digest, or "" when the request has none (a tag, the API root).
    pub digest: String,
    /// 1 for the first retry.
    pub retry: u32,
    pub delay: Duration,
    pub error: Error,
}

pub type RetryHook = Arc<dyn Fn(&RetryNotice) + Send + Sync>;

/// What every registry request of one operation (a pull, an inspect) shares.
#[derive(Clone)]
pub struct RequestPolicy {
    pub retry: RetryPolicy,
    /// No byte (or no answer) for this long ends the attempt with TIMEOUT.
    pub stall: Duration,
    pub cancel: CancelFlag,
    pub on_retry: Option<RetryHook>,
    /// When the whole operation must be done: a Retry-After that ends later is not waited for.
    pub deadline: Option<Instant>,
}

/// containers/image gives up on a silent connection after about this long, too.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy {
            retry: RetryPolicy::default(),
            stall: DEFAULT_STALL,
            cancel: CancelFlag::new(),
            on_retry: None,
            deadline: None,
        }
    }
}

impl std::fmt::Debug for RequestPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestPolicy")
            .field("retry", &self.retry)
            .field("stall", &self.stall)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

impl RequestPolicy {
    pub fn notify(&self, notice: &RetryNotice) {
        crate::log::debug(format!(
            "retry {} of {} in {:?}: {}",
            notice.retry,
            if notice.digest.is_empty() {
                "request"
            } else {
                &notice.digest
            },
            notice.delay,
            notice.error.message
        ));
        if let Some(hook) = &self.on_retry {
            hook(notice);
        }
    }

    /// Sleeps for `delay` unless cancelled first.
    pub async fn pause(&self, delay: Duration) -> Result<()> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.cancel.cancelled() => Err(Error::cancelled()),
        }
    }

    /// Runs `attempt` under the stall limit and the cancel flag.
    pub async fn bounded<T>(
        &self,
        what: &str,
        attempt: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.cancel.check()?;
        tokio::select! {
            r = tokio::time::timeout(self.stall, attempt) => match r {
                Ok(r) => r,
                Err(_) => Err(stalled(what, self.stall)),
            },
            _ = self.cancel.cancelled() => Err(Error::cancelled()),
        }
    }

    /// Runs a whole request (each attempt bounded by the stall limit), retrying transient
    /// failures with backoff. `digest` names the object for retry notices.
    pub async fn run<T, F, Fut>(&self, what: &str, digest: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run_hinted(what, digest, || {
            let fut = attempt();
            async move { fut.await.map_err(Failure::from) }
        })
        .await
    }

    /// As `run`, for attempts that can say how long the server asked to wait (Retry-After of
    /// a 429 or 503): that wait replaces the backoff, unless it is longer than
    /// `MAX_RETRY_AFTER` or would end after the deadline (then the error is final).
    pub async fn run_hinted<T, F, Fut>(&self, what: &str, digest: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut retry = 0;
        loop {
            self.cancel.check()?;
            let outcome = tokio::select! {
                r = tokio::time::timeout(self.stall, attempt()) => match r {
                    Ok(r) => r,
                    Err(_) => Err(Failure::from(stalled(what, self.stall))),
                },
                _ = self.cancel.cancelled() => return Err(Error::cancelled()),
            };
            let failure = match outcome {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if retry >= self.retry.max_retries || !is_transient(&failure.error) {
                return Err(failure.error);
            }
            let delay = match failure.retry_after {
                Some(asked) => self.check_retry_after(asked, &failure.error)?,
                None => self.retry.delay(retry),
            };
            retry += 1;
            self.notify(&RetryNotice {
                digest: digest.to_string(),
                retry,
                delay,
                error: failure.error,
            });
            self.pause(delay).await?;
        }
    }

    /// The wait a Retry-After asks for, or the error when it is too long to wait.
    fn check_retry_after(&self, asked: Duration, error: &Error) -> Result<Duration> {
        let too_long = |limit: String| {
            let mut e = error.clone();
            e.message = format!(
                "{} (the registry asks to retry after {}, {limit})",
                e.message,
                human_duration(Duration::from_secs(asked.as_secs()))
            );
            Err(e)
        };
        if asked > MAX_RETRY_AFTER {
            return too_long(format!(
                "more than the {} cimage waits",
                human_duration(MAX_RETRY_AFTER)
            ));
        }
        if let Some(deadline) = self.deadline {
            if Instant::now() + asked > deadline {
                return too_long("after the deadline".to_string());
            }
        }
        Ok(asked)
    }
}

/// The TIMEOUT error of a wait that saw nothing for the stall limit.
pub fn stalled(what: &str, limit: Duration) -> Error {
    Error::new(
        Status::Timeout,
        format!(
            "{what}: nothing received for {} (stall limit)",
            human_duration(limit)
        ),
    )
}

pub fn human_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Whether another attempt may succeed: connection failures, 5xx (but not "not implemented"),
/// 408 and 429. A stall is not retried here: a server that sends nothing would then cost
/// several stall limits; blob bodies resume after a stall only when bytes had been arriving.
pub fn is_transient(e: &Error) -> bool {
    match e.status {
        Status::Network => true,
        Status::Registry => match e.http_status {
            408 | 429 => true,
            501 | 505 => false,
            code => (500..600).contains(&code),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    fn fast() -> RequestPolicy {
        RequestPolicy {
            retry: RetryPolicy {
                max_retries: 3,
                initial_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            stall: Duration::from_millis(200),
            ..RequestPolicy::default()
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(946_684_800))
        );
        // In the past: no wait.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "-1",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "1.5",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_retry_after_replaces_the_backoff_and_is_bounded() {
        let mut p = fast();
        let delays = Arc::new(Mutex::new(Vec::new()));
        let d2 = delays.clone();
        p.on_retry = Some(Arc::new(move |n: &RetryNotice| {
            d2.lock().unwrap().push(n.delay)
        }));
        let calls = AtomicU32::new(0);
        let busy = || Failure {
            error: Error::new(Status::Registry, "busy").with_http_status(429),
            retry_after: Some(Duration::from_millis(300)),
        };
        let started = std::time::Instant::now();
        let r = p
            .run_hinted("GET x", "", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(busy())
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 1);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(*delays.lock().unwrap(), vec![Duration::from_millis(300)]);

        // Longer than the maximum, or past the deadline: the error, at once.
        let r: Result<()> = p
            .run_hinted("GET x", "", || async {
                Err(Failure {
                    retry_after: Some(MAX_RETRY_AFTER * 2),
                    ..busy()
                })
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.http_status, 429);
        assert!(e.message.contains("retry after 120 s"), "{}", e.message);
        p.deadline = Some(Instant::now() + Duration::from_millis(100));
        let started = std::time::Instant::now();
        let r: Result<()> = p.run_hinted("GET x", "", || async { Err(busy()) }).await;
        assert!(r.unwrap_err().message.contains("deadline"));
        assert!(started.elapsed() < Duration::from_millis(250));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let d0 = p.delay(0);
        assert!(d0 >= Duration::from_millis(80) && d0 <= Duration::from_millis(120));
        let d3 = p.delay(3);
        assert!(d3 >= Duration::from_millis(640) && d3 <= Duration::from_secs(1));
        assert!(p.delay(30) <= Duration::from_secs(1));
    }

    #[test]
    fn transient_errors_are_the_network_5xx_and_429() {
        let reg = |code| Error::new(Status::Registry, "x").with_http_status(code);
        assert!(is_transient(&Error::new(Status::Network, "reset")));
        assert!(is_transient(&reg(503)));
        assert!(is_transient(&reg(429)));
        assert!(is_transient(&reg(599)));
        assert!(!is_transient(&reg(501)));
        assert!(!is_transient(&reg(404)));
        assert!(!is_transient(&Error::new(Status::AuthRequired, "x")));
        assert!(!is_transient(&Error::new(Status::DigestMismatch, "x")));
        assert!(!is_transient(&Error::new(Status::Timeout, "x")));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_reported() {
        let mut p = fast();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        p.on_retry = Some(Arc::new(move |n: &RetryNotice| {
            s2.lock().unwrap().push((n.retry, n.digest.clone()))
        }));
        let calls = AtomicU32::new(0);
        let r = p
            .run("GET x", "sha256:ab", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(Error::new(Status::Registry, "boom").with_http_status(500))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(1, "sha256:ab".to_string()), (2, "sha256:ab".to_string())]
        );
    }

    #[tokio::test]
    async fn retries_are_bounded_and_permanent_errors_are_not_retried() {
        let p = fast();
        let calls = AtomicU32::new(0);
        let r: Result<()> = p
            .run("GET x", "", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::new(Status::Network, "refused")) }
            })
            .await;
        assert_eq!(r.unwrap_err().status, Status::Network);
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = p
            .run("GET x", "", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::new(Status::ManifestUnknown, "no")) }
            })
            .await;
        assert_eq!(r.unwrap_err().status, Status::ManifestUnknown);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_silent_request_times_out_and_cancel_interrupts() {
        let p = fast();
        let started = std::time::Instant::now();
        let r: Result<()> = p
            .run("GET slow", "", || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.status, Status::Timeout);
        assert!(e.message.contains("GET slow"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(2));

        let p = fast();
        let cancel = p.cancel.clone();
        let p = RequestPolicy {
            stall: Duration::from_secs(30),
            ..p
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let r: Result<()> = p
            .run("GET slow", "", || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .await;
        assert_eq!(r.unwrap_err().status, Status::Cancelled);
    }
}
