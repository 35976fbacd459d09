//! Waiting for a helper process (a suite's worker, labgrid's client) with a
//! deadline, its output read as it writes so a large one cannot block it.

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a waited-for process ended and what it wrote.
#[derive(Debug)]
pub struct Finished {
    /// `None`: it ran past the deadline and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` (spawned with piped stdout and stderr) until
/// `deadline`; past it, `kill` ends it and it is reaped.
pub fn wait_until(child: &mut Child, deadline: Instant, kill: impl FnOnce(&mut Child)) -> std::io::Result<Finished> {
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => {
                kill(child);
                let _ = child.wait();
                break Ok(None);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                // Not waitable: ended, so that its pipes close and the readers return.
                let _ = child.kill();
                let _ = child.wait();
                break Err(e);
            }
        }
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    Ok(Finished { status: status?, stdout, stderr })
}

fn drain(pipe: Option<Box<dyn Read + Send>>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}
