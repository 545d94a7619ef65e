//! Logging: a level, and either stderr or a caller's callback. `CIMAGE_LOG=debug` (or error,
//! warn, info) in the environment turns logging on without any code.

use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

pub const OFF: i32 = 0;
pub const ERROR: i32 = 1;
pub const WARN: i32 = 2;
pub const INFO: i32 = 3;
pub const DEBUG: i32 = 4;

/// A sink for log lines; called from any thread, possibly concurrently.
pub type Sink = Box<dyn Fn(i32, &str) + Send + Sync>;

static LEVEL: Lazy<AtomicI32> = Lazy::new(|| {
    let level = match std::env::var("CIMAGE_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "debug" | "trace" | "1" => DEBUG,
        "info" => INFO,
        "warn" | "warning" => WARN,
        "error" => ERROR,
        _ => OFF,
    };
    AtomicI32::new(level)
});

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

pub fn set_level(level: i32) {
    LEVEL.store(level.clamp(OFF, DEBUG), Ordering::Relaxed);
}

pub fn level() -> i32 {
    LEVEL.load(Ordering::Relaxed)
}

/// Replaces the sink; None restores stderr.
pub fn set_sink(sink: Option<Sink>) {
    if let Ok(mut s) = SINK.write() {
        *s = sink;
    }
}

pub fn enabled(level: i32) -> bool {
    level <= self::level() && level > OFF
}

pub fn log(level: i32, message: &str) {
    if !enabled(level) {
        return;
    }
    if let Ok(s) = SINK.read() {
        if let Some(sink) = s.as_ref() {
            sink(level, message);
            return;
        }
    }
    let name = match level {
        ERROR => "error",
        WARN => "warn",
        INFO => "info",
        _ => "debug",
    };
    eprintln!("cimage[{name}]: {message}");
}

pub fn debug(message: impl AsRef<str>) {
    if enabled(DEBUG) {
        log(DEBUG, message.as_ref());
    }
}

pub fn info(message: impl AsRef<str>) {
    if enabled(INFO) {
        log(INFO, message.as_ref());
    }
}

pub fn warn(message: impl AsRef<str>) {
    if enabled(WARN) {
        log(WARN, message.as_ref());
    }
}
