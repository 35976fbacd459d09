//! A board in a labgrid farm: the place acquired through labgrid's
//! coordinator, its `NetworkSerialPort` reached over RFC 2217 (ser2net on
//! the exporter), the place released when the link is dropped.
//!
//! Nothing of the farm is edgehil's: places, locks and exporters are
//! labgrid's, and `labgrid-client`, the command line labgrid documents for
//! scripts, is driven as a subprocess (labgrid's gRPC protocol has no Rust
//! client and is not a stable interface). The coordinator is the one
//! `labgrid-client` would use: `$LG_COORDINATOR`, else labgrid's default.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process;
use crate::rfc2217::Rfc2217Link;
use crate::{HilError, Link};

/// labgrid's own default when `LG_COORDINATOR` is not set.
pub const DEFAULT_COORDINATOR: &str = "127.0.0.1:20408";

/// Longest one `labgrid-client` call may take (each took about 1 s here).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabgridError {
    /// labgrid's client is not installed
    #[error("cannot run labgrid-client: {0}; install labgrid (`pip install labgrid==26.0.1`) and put its bin folder on PATH")]
    NoClient(std::io::Error),
    /// another user holds the place
    #[error("labgrid place {place} is acquired by {holder}: wait for its release, or ask {holder} to release it")]
    Held { place: String, holder: String },
    /// labgrid-client refused or failed
    #[error("labgrid-client {command} of place {place} (coordinator {coordinator}) failed: {message}")]
    Client { command: &'static str, place: String, coordinator: String, message: String },
    /// labgrid-client did not finish in time
    #[error("labgrid-client {command} of place {place} (coordinator {coordinator}) did not finish within {waited:?}; it was killed")]
    ClientTimeout { command: &'static str, place: String, coordinator: String, waited: Duration },
    /// the place has no serial port on the network
    #[error("labgrid place {place} has no NetworkSerialPort (its resources: {resources}); add-match an exporter's RawSerialPort or USBSerialPort")]
    NoSerialPort { place: String, resources: String },
}

/// Where a place's serial port is served (RFC 2217), as `labgrid-client env` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSerialPort {
    pub host: String,
    pub port: u16,
}

/// A place acquired through the coordinator; released when dropped.
pub struct Place(Client);

impl Place {
    /// Acquires `name`; an error names the holder if someone else has it.
    pub fn acquire(name: &str) -> Result<Self, LabgridError> {
        let client = Client::new(name);
        match client.run("acquire") {
            Ok(_) => Ok(Self(client)),
            Err(LabgridError::Client { message, .. }) if holder(&message).is_some() => {
                Err(LabgridError::Held { place: name.into(), holder: holder(&message).unwrap_or_default() })
            }
            Err(e) => Err(e),
        }
    }

    pub fn name(&self) -> &str {
        &self.0.place
    }

    /// The place's serial port on the network (its first, if it has several).
    pub fn serial_port(&self) -> Result<NetworkSerialPort, LabgridError> {
        let env = self.0.run("env")?;
        network_serial_port(&env).ok_or_else(|| LabgridError::NoSerialPort {
            place: self.0.place.clone(),
            resources: match resource_classes(&env).join(", ") {
                none if none.is_empty() => "none".into(),
                some => some,
            },
        })
    }
}

/// Releases `place` for a run that could not (one killed at its timeout).
pub fn release(place: &str) -> Result<(), LabgridError> {
    Client::new(place).run("release").map(|_| ())
}

/// `labgrid-client` for one place.
struct Client {
    place: String,
    coordinator: String,
}

impl Client {
    fn new(place: &str) -> Self {
        let coordinator = std::env::var("LG_COORDINATOR").unwrap_or_else(|_| DEFAULT_COORDINATOR.into());
        Self { place: place.into(), coordinator }
    }

    /// Runs `labgrid-client -x COORDINATOR -p PLACE COMMAND`; its stdout, or
    /// its last stderr line as the error.
    fn run(&self, command: &'static str) -> Result<String, LabgridError> {
        let mut child = Command::new("labgrid-client")
            .args(["-x", &self.coordinator, "-p", &self.place, command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(LabgridError::NoClient)?;
        let finished = process::wait_until(&mut child, Instant::now() + CLIENT_TIMEOUT, |c| {
            let _ = c.kill();
        })
        .map_err(LabgridError::NoClient)?;
        match finished.status {
            Some(s) if s.success() => Ok(finished.stdout),
            Some(s) => Err(LabgridError::Client {
                command,
                place: self.place.clone(),
                coordinator: self.coordinator.clone(),
                message: finished
                    .stderr
                    .lines()
                    .rev()
                    .map(|l| l.trim().trim_start_matches("labgrid-client: "))
                    .find(|l| !l.is_empty())
                    .map_or_else(|| s.to_string(), str::to_string),
            }),
            None => Err(LabgridError::ClientTimeout {
                command,
                place: self.place.clone(),
                coordinator: self.coordinator.clone(),
                waited: CLIENT_TIMEOUT,
            }),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // Drop has no caller to tell: a place left acquired blocks the farm, so say so.
        if let Err(e) = self.0.run("release") {
            eprintln!("warning: {e}; release it with `labgrid-client -p {} release`", self.0.place);
        }
    }
}

/// Who holds a place, from labgrid's refusal: "Place P is already acquired by HOST/USER. ..."
fn holder(message: &str) -> Option<String> {
    let rest = message.split_once("already acquired by ")?.1;
    let holder = rest.split_once(". ").map_or(rest, |(h, _)| h).trim_end_matches('.').trim();
    (!holder.is_empty()).then(|| holder.to_string())
}

/// The first `NetworkSerialPort` of `labgrid-client env`'s YAML:
/// `targets: PLACE: resources: - NetworkSerialPort: {host, port, ...}`.
fn network_serial_port(env: &str) -> Option<NetworkSerialPort> {
    let mut lines = env.lines().skip_while(|l| l.trim() != "- NetworkSerialPort:");
    let indent = lines.next()?.find('-')?;
    let (mut host, mut port) = (None, None);
    for line in lines.take_while(|l| l.find(|c: char| c != ' ').is_some_and(|i| i > indent + 1)) {
        match line.trim().split_once(": ") {
            Some(("host", v)) => host = Some(v.trim_matches(['\'', '"']).to_string()),
            Some(("port", v)) => port = v.parse().ok(),
            _ => {}
        }
    }
    Some(NetworkSerialPort { host: host?, port: port? })
}

/// The resource classes `labgrid-client env` lists, for an error.
fn resource_classes(env: &str) -> Vec<&str> {
    env.lines().filter_map(|l| l.trim().strip_prefix("- ")?.strip_suffix(':')).collect()
}

/// A labgrid place's board: the place held, its serial port over RFC 2217.
pub struct LabgridBoard {
    // Fields drop in order: the connection closes before the place is released.
    link: Rfc2217Link,
    place: Place,
}

impl LabgridBoard {
    /// Acquires `place` and opens its serial port at `baud`; the place is
    /// released again if the port cannot be opened.
    pub fn open(place: &str, baud: u32) -> Result<Self, HilError> {
        let place = Place::acquire(place)?;
        let at = place.serial_port()?;
        let link = Rfc2217Link::open(&at.host, at.port, baud)?;
        Ok(Self { link, place })
    }

    pub fn place(&self) -> &Place {
        &self.place
    }
}

impl Link for LabgridBoard {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        self.link.send(bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        self.link.recv(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As labgrid-client 26.0.1 printed it for a place with an exporter's RawSerialPort.
    const ENV: &str = "targets:\n  p1:\n    resources:\n    - NetworkSerialPort:\n        name: RawSerialPort\n        speed: 115200\n        port: 47301\n        host: 127.0.0.1\n    - NetworkPowerPort:\n        model: gude\n";

    #[test]
    fn reads_the_serial_port_from_labgrid_env() {
        assert_eq!(network_serial_port(ENV), Some(NetworkSerialPort { host: "127.0.0.1".into(), port: 47301 }));
        let no_serial = "targets:\n  p1:\n    resources:\n    - NetworkPowerPort:\n        model: gude\n";
        assert_eq!(network_serial_port(no_serial), None);
        assert_eq!(resource_classes(ENV), ["NetworkSerialPort", "NetworkPowerPort"]);
    }

    #[test]
    fn names_the_holder_from_labgrids_refusal() {
        let refusal = "Error: Place p1 is already acquired by vm/root. To work simultaneously, root can execute 'labgrid-client -p p1 allow vm/alice' on vm.";
        assert_eq!(holder(refusal).as_deref(), Some("vm/root"));
        assert_eq!(
            holder("Error: Place p1 is already acquired by lab.example.com/ci.").as_deref(),
            Some("lab.example.com/ci")
        );
        assert_eq!(holder("Error: You have already acquired place p1."), None);
    }
}
