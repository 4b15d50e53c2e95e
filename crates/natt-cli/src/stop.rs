//! Waiting for the signal to stop: SIGINT, SIGTERM, or (when asked) the end of standard input.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// Blocks until SIGINT or SIGTERM arrives, or, with `stdin_eof`, standard input ends.
pub fn wait(stdin_eof: bool) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    if stdin_eof {
        let flag = Arc::clone(&stop);
        thread::Builder::new()
            .name("stdin-eof".into())
            .spawn(move || {
                let mut sink = [0u8; 4096];
                let mut stdin = std::io::stdin().lock();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                flag.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("cannot watch standard input: {e}"))?;
    }
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
